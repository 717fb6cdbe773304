"""A late issuer approval over real SMTP, every agent in its own process (tests/e2e_world.py):
the issuer is stopped, the gateway gives up (retry_after 1 s, no re-sends) and answers the
merchant noReply; the issuer, started again, approves and holds; the gateway reverses the hold
(IssRevReq 0400, D-133) and the issuer's ledger ends with only what was captured.
"""
from __future__ import annotations

import json
import time

import pytest

from setmail.world.config import AgentSpec
from tests.e2e_world import RunningWorld, minor_units, run_cli

#: a merchant whose gateway gives up on the issuer after one second without re-sending
IMPATIENT = (
    AgentSpec("shop3", "merchant", "shop3@merchant3.example",
              options={"gateway": "gateway3", "auto_capture": True, "mer_id": "SHOP-0003",
                       "acquirer_bin": "41111111", "display_name": "Third Shop"}),
    AgentSpec("gateway3", "gateway", "gateway3@gateway3.example",
              options={"issuer": "bank", "retry_after": 1, "max_retries": 0}),
)


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    world = RunningWorld(tmp_path_factory.mktemp("reversal") / "world", extra_agents=IMPATIENT)
    world.start_smtp()
    world.start()
    try:
        code, _, err = run_cli("register", "alice", "--wait", "90", "--home", str(world.home))
        assert code == 0, err + world.log("alice")
        yield world
    finally:
        world.stop()


def keyed(w, agent: str, xid: str) -> dict:
    """The gateway's or issuer's state of purchase ``xid``: keyed ``tx/<xid>.<tag>`` (one
    merchant's XID, D-141), the only one of that XID here."""
    from setmail.agent.commands import open_store
    store = open_store(w.world.store_path(agent))
    try:
        keys = [k for k in store.state_keys() if k.startswith(f"tx/{xid}.")]
        assert len(keys) <= 1, keys
        return (store.get_state(keys[0]) or {}) if keys else {}
    finally:
        store.close()


def wait_keyed(w, agent: str, xid: str, state: str, check=lambda s: True,
               timeout: float = 30) -> dict:
    deadline, found = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        found = keyed(w, agent, xid)
        if found.get("state") == state and check(found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"{agent} {xid[:12]}: wanted {state}, have {found.get('state')}\n"
                         + w.log(agent)[-3000:])


def buy(w, merchant, amount):
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", merchant, "--amount",
                             amount, "--description", f"reversal test {time.time_ns()}",
                             "--home", str(w.home), "--wait", "60", "--json")
    assert code in (0, 1), err
    return json.loads(out)


def test_late_approval_is_reversed_and_the_ledger_holds_only_what_was_captured(w):
    home = str(w.home)
    captured = buy(w, "shop", "12.34")          # completes, through the patient gateway
    assert captured["state"] == "APPROVED" and captured.get("captured"), captured
    wait_keyed(w, "bank", captured["xid"], "POSTED")

    w.stop("bank")                              # away: the IssAuthReq waits in its Maildir
    late = buy(w, "shop3", "25.00")
    xid = late["xid"]
    assert (late["state"], late["auth_code"]) == ("DECLINED", "noReply"), late
    assert wait_keyed(w, "gateway3", xid, "DECLINED")["auth_code"] == "noReply"
    assert w.issuer_sql("SELECT COUNT(*) FROM issuer_ledger WHERE xid = ?", (xid,)) == [(0,)]

    w.start("bank")                             # it approves and holds; the gateway reverses
    bank = wait_keyed(w, "bank", xid, "REVERSED")
    assert (bank["response_code"], bank["authorized"], bank["held"]) == ("00", 2500, 0)
    gateway = wait_keyed(w, "gateway3", xid, "DECLINED", check=lambda s: "rev_code" in s)
    assert (gateway["rev_code"], gateway["rev_amt"], gateway["late_amt"]) == ("00", 2500, 2500)
    assert gateway["late_approval_code"] == bank["approval_code"]
    assert gateway["auth_code"] == "noReply" and "secret" not in gateway
    assert w.issuer_sql("SELECT kind, amount FROM issuer_ledger WHERE xid = ? ORDER BY id",
                        (xid,)) == [("hold", 2500), ("reversal", 2500)]

    # the merchant and the cardholder heard nothing more than the noReply
    assert w.state("shop3", xid)["state"] == "DECLINED"
    assert len(w.wait_mail("shop3", "AuthRes")) == 1
    assert w.state("alice", xid)["state"] == "DECLINED"

    # the ledger: what is held is what is approved and still valid (nothing), posted is captured
    code, out, err = run_cli("ledger", "--json", "--home", home)
    assert code == 0, err
    (alice,) = [a for a in minor_units(json.loads(out)) if a["holder"] == "alice"]
    by_kind: dict[str, int] = {}
    for entry in alice["entries"]:
        by_kind[entry["kind"]] = by_kind.get(entry["kind"], 0) + entry["amount"]
    assert (alice["held"], alice["posted"]) == (0, 1234)
    assert alice["held"] == by_kind["hold"] - by_kind["release"] - by_kind["reversal"]
    assert alice["posted"] == by_kind["post"] == w.state("shop", captured["xid"])["cap_amt"]
    assert alice["held"] + alice["posted"] + alice["available"] == alice["limit"]

    # the reversal is on the record: tx show (which finds the gateway's and issuer's records by
    # the XID prefix of their keys) and the trace
    code, out, _ = run_cli("tx", "show", xid, "--json", "--home", home)
    shown = json.loads(out)["agents"]
    assert code == 0 and shown["gateway3"]["rev_code"] == "00" and shown["bank"]["state"] == \
        "REVERSED"
    assert "_reversal" not in out and "4111111111111111" not in out
    code, out, _ = run_cli("tx", "show", xid, "--home", home)  # for people: amounts with currency
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert code == 0 and lines["rev_amt"] == lines["late_amt"] == lines["authorized"] == [
        "25.00", "EUR"] and lines["held"] == ["0.00", "EUR"], out
    code, out, _ = run_cli("trace", xid, "--json", "--home", home)
    trace = [(e["message_type"], e["recipient"], e["result"]) for e in json.loads(out)]
    assert ("IssRevReq", "bank", "accepted") in trace and \
        ("IssRevRes", "gateway3", "accepted") in trace, trace
