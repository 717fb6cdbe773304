"""The exhaustive exploration of the purchase roles (setmail/check, docs/modelcheck.md) with a
small bound: every order of delivery, a duplicate, a loss, a crash and a replay per path for one
purchase, and every interleaving of two; the checker's own findings (a shortest trace, the
invariants seeing a double hold and a PAN where it must not be) on real role output.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from setmail.check.explore import Bounds, Explorer
from setmail.check.invariants import violations
from setmail.check.world import ModelWorld, settle

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return ModelWorld(tmp_path_factory.mktemp("modelcheck") / "world")


def _explore(world, n: int, bounds: Bounds, **options):
    roles, initial, purchases = world.system(n, track_seen=bounds.replay > 0, options=options)
    return Explorer(roles, initial, purchases, bounds).run()


def test_one_purchase_under_every_fault_keeps_every_invariant(world):
    """Depth 5 with one duplicate, one loss, one crash and one replay per path: thousands of
    states, each checked and settled to an agreed end."""
    report = _explore(world, 1, Bounds(depth=5, duplicate=1, lose=1, crash=1, replay=1))
    assert report.findings == [], report.findings[0]
    assert report.depth == 5 and report.states > 2000
    assert report.settled > 0 and report.role_computed < report.role_steps


def test_two_concurrent_purchases_keep_every_invariant(world):
    report = _explore(world, 2, Bounds(depth=4, duplicate=1, lose=1))
    assert report.findings == [], report.findings[0]
    assert report.depth == 4 and report.states > 500


def test_a_lost_answer_a_wallet_without_retries_cannot_recover_is_found(world):
    """A wallet that never re-sends (max_retries 0) loses its PRes for good: the checker
    reports the cardholder told FAILED while charged, with the shortest trace (the loss, then
    the settling run that ends quiet)."""
    roles, initial, purchases = world.system(1, options={"alice": {"max_retries": 0}})
    initial, path, _ = settle(roles, initial, 7)  # up to the AuthRes: PRes and CapReq in flight
    assert [m.type for m in initial.mails()] == ["PRes", "CapReq"]
    report = Explorer(roles, initial, purchases, Bounds(depth=2, duplicate=0, lose=1)).run()
    assert len(report.findings) == 1
    finding = report.findings[0]
    assert "wallet says FAILED, the merchant CAPTURED" in finding.problem
    assert finding.trace[0].startswith("lose PRes shop→alice")
    assert finding.trace[1] == "— then, settling —"
    assert any(step.startswith("timer retry at alice") for step in finding.trace)
    assert finding.trace[-1].startswith("(quiet")


def test_the_invariants_see_a_double_hold_and_a_pan_at_the_merchant(world):
    """The settled end of a genuine purchase is clean; with its issuer's hold committed twice,
    or the PAN in a merchant state, it is not."""
    roles, initial, purchases = world.system(1)
    end, _, problem = settle(roles, initial)
    index = {a: i for i, a in enumerate(roles.addresses)}
    assert problem is None and violations(end, index, purchases) == []
    p = purchases[0]
    bank, shop = index[p.issuer], index[p.merchant]
    issuer = end.parties[bank]
    hold = next(e for e in issuer.effects if e[0] == "ledger.hold")
    twice = dataclasses.replace(issuer, effects=issuer.effects + (hold,))
    found = violations(_with(end, bank, twice), index, purchases)
    assert any("2 hold rows" in v for v in found) and any(v.startswith("ledger:") for v in found)
    merchant = end.parties[shop]
    states = {**merchant.states, "leak": json.dumps({"state": "X", "note": p.pan.encode().hex()})}
    found = violations(_with(end, shop, dataclasses.replace(merchant, states=states)), index,
                       purchases)
    assert found == [f"merchant {p.merchant} stores the PAN …{p.pan[-4:]}"]


def _with(system, i, local):
    return dataclasses.replace(system, parties=system.parties[:i] + (local,)
                               + system.parties[i + 1:])


def test_the_script_prints_its_figures():
    run = subprocess.run([sys.executable, "-m", "setmail.check", "--depth", "2", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "explored" in run.stdout and "to depth 2" in run.stdout
    assert "no finding" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "setmail.check", "--purchases", "3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
