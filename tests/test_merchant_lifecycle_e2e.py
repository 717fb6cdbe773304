"""The merchant's lifecycle commands end to end over real SMTP, every agent in its own process
(tests/e2e_world.py): void and reduce, refund and its reversal, capture reversal before and after
the batch settles, split shipment, instalments, and a batch closed (reconciled) and closed again,
all through the CLI as a merchant's back office uses it; SET's codes reach the merchant and its
exit codes say so; the issuer's ledger keeps its invariant."""
from __future__ import annotations

import json
import time

import pytest

from setmail.world.config import AgentSpec
from tests.e2e_world import EXTRA_AGENTS, RunningWorld, run_cli
from tests.ledger_check import assert_ledger_holds


#: a third merchant that sells (CaptureNow) and closes its batches 2 s after their first item
SHOP3 = AgentSpec("shop3", "merchant", "shop3@merchant3.example",
                  options={"gateway": "gateway", "mer_id": "SHOP-0003", "acquirer_bin": "41111111",
                           "display_name": "Third Shop", "sale": True, "auto_close": 2})


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    world = RunningWorld(tmp_path_factory.mktemp("lifecycle") / "world",
                         extra_agents=(*EXTRA_AGENTS, SHOP3))
    world.start_smtp()
    world.start()
    try:
        code, out, err = run_cli("register", "alice", "--wait", "90", "--home", str(world.home))
        assert code == 0, err + world.log("alice")
        yield world
    finally:
        world.stop()


def cli(w, *args) -> tuple[int, dict | str, str]:
    """A CLI command on the world; its JSON output parsed when it printed some."""
    code, out, err = run_cli(*args, "--home", str(w.home))
    try:
        return code, _as_text(json.loads(out)), err
    except ValueError:
        return code, out, err


def _as_text(value):
    """JSON amounts ({amount, currency, minor}) as the text the CLI shows ("12.34 EUR")."""
    if isinstance(value, dict):
        if set(value) == {"amount", "currency", "minor"}:
            return f"{value['amount']} {value['currency']}"
        return {k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    return value


def buy(w, merchant: str, amount: str, *extra: str) -> str:
    code, out, err = cli(w, "buy", "--cardholder", "alice", "--merchant", merchant, "--amount",
                         amount, "--description", f"lifecycle {time.time_ns()}", *extra,
                         "--wait", "60", "--json")
    assert code == 0 and out["state"] in ("APPROVED", "CAPTURED"), (out, err)
    w.wait_state(merchant, out["xid"], ("AUTHORIZED", "CAPTURED"))
    return out["xid"]


def test_void_reduces_then_cancels(w):
    xid = buy(w, "shop2", "20.00")
    code, out, err = cli(w, "void", xid, "--amount", "5.00", "--wait", "30", "--json")
    assert code == 0 and out["code"] == "approved" and out["authorized"].startswith("5.00"), err
    code, out, err = cli(w, "void", xid, "--wait", "30", "--json")
    assert code == 0 and out["state"] == "VOIDED", (out, err)
    assert w.wait_state("gateway", xid, "VOIDED")
    code, _, err = cli(w, "capture", xid, "--wait", "10")
    assert code == 3 and "VOIDED" in err
    assert_ledger_holds(w)


def test_refunds_their_reversal_and_a_second_full_refund(w):
    xid = buy(w, "shop", "12.34")  # shop captures at once
    w.wait_state("shop", xid, "CAPTURED")
    code, out, err = cli(w, "refund", xid, "--amount", "2.00", "--wait", "30", "--json")
    assert code == 0 and (out["state"], out["credited"]) == ("PARTLY_REFUNDED", "2.00 EUR"), err
    code, out, err = cli(w, "refund", xid, "--reverse", "--wait", "30", "--json")
    assert code == 0 and (out["state"], out["request"]) == ("CAPTURED", "CredRevReq"), err
    code, out, err = cli(w, "refund", xid, "--wait", "30", "--json")
    assert code == 0 and out["state"] == "REFUNDED", err
    code, out, err = cli(w, "refund", xid, "--amount", "12.34", "--wait", "30", "--json")
    assert code == 3 and out["code"] == "amountTooLarge" and out["credited"] == "12.34 EUR"
    assert_ledger_holds(w)


def test_capture_reversal_settlement_and_batches(w):
    xid = buy(w, "shop2", "7.50")
    code, out, err = cli(w, "capture", xid, "--wait", "30")
    assert code == 0, out + err
    code, out, err = cli(w, "capture", "--reverse", xid, "--wait", "30")
    assert code == 0 and "AUTHORIZED  CapRevReq success" in out, (out, err)
    state = w.wait_state("shop2", xid, "AUTHORIZED")
    assert state["result"]["request"] == "CapRevReq" and state["captured"] == 0
    code, out, err = cli(w, "capture", xid, "--wait", "30")
    assert code == 0, out + err
    code, out, err = cli(w, "batch", "close", "--merchant", "shop2", "--wait", "60")
    assert code == 0 and "BALANCED" in out and "OUT_OF_BALANCE" not in out, out + err
    batch_id = out.split()[2]  # "done: batch 1 close: …"
    code, out, err = cli(w, "capture-reverse", xid, "--wait", "30", "--json")
    assert code == 3 and out["code"] == "originalProcessed" and "refund" in out["advice"]
    code, out, err = cli(w, "batch", "close", batch_id, "--merchant", "shop2", "--wait", "60")
    assert code == 3 and "batchIDUnavailable" in err, out + err
    code, out, err = cli(w, "batch", "list", "--merchant", "shop2")
    assert code == 0 and f"batch {batch_id}" in out and "closed" in out
    code, out, err = cli(w, "batch", "show", batch_id, "--merchant", "shop2")
    assert code == 0 and "reconciliation" in out and "BALANCED" in out
    assert_ledger_holds(w)


def test_split_shipment_and_instalments(w):
    xid = buy(w, "shop2", "10.00", "--ship-now", "4.00")
    code, out, err = cli(w, "capture", xid, "--wait", "30")
    assert code == 0, out + err
    code, out, err = cli(w, "authorize", xid, "--wait", "30", "--json")
    assert code == 0 and out["authorized"] == "10.00 EUR", (out, err)
    code, out, err = cli(w, "capture", xid, "--wait", "30")
    assert code == 0, out + err
    assert w.state("shop2", xid)["captured"] == 1000
    xid = buy(w, "shop2", "9.00", "--instalments", "3")
    for _ in range(2):
        code, out, err = cli(w, "authorize", xid, "--wait", "30", "--json")
        assert code == 0, (out, err)
    assert out["authorized"] == "9.00 EUR"
    code, out, err = cli(w, "authorize", xid, "--amount", "1.00", "--wait", "10")
    assert code == 3 and "no AuthToken" in err
    assert_ledger_holds(w)


def test_a_sale_is_captured_at_once_and_its_batch_closes_itself(w):
    code, out, err = cli(w, "buy", "--cardholder", "alice", "--merchant", "shop3", "--amount",
                         "4.20", "--wait", "60", "--json")
    assert code == 0 and out["state"] == "CAPTURED", (out, err)
    state = w.wait_state("shop3", out["xid"], "CAPTURED")
    assert state["captures"][0]["batch_id"] == 1 and w.wait_state("gateway", out["xid"],
                                                                  "CAPTURED")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # auto_close: 2 s after the batch's first item
        code, rows, err = cli(w, "batch", "list", "--merchant", "shop3", "--json")
        if code == 0 and rows and rows[0]["status"] == "closed":
            break
        time.sleep(0.2)
    assert rows[0]["status"] == "closed", rows
    assert rows[0]["reconciliation"]["result"] == "BALANCED"
    assert rows[0]["items"] == [{"seq": 1, "kind": "capture", "xid": out["xid"],
                                 "amount": "4.20 EUR"}]
    assert_ledger_holds(w)


def test_bad_lifecycle_commands_say_why_in_one_line(w):
    xid = buy(w, "shop2", "3.00")
    for args, why in ((("refund", xid, "--reverse", "--amount", "1"), "no --amount"),
                      (("refund", "nonsense"), "not an XID"),
                      (("void", xid, "--amount", "abc"), "not an amount"),
                      (("batch", "close", "--merchant", "alice"), "no merchant"),
                      (("buy", "--cardholder", "alice", "--merchant", "shop2", "--amount", "1",
                        "--recurring", "30"), "go together")):
        code, out, err = cli(w, *args)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, (args, err)
