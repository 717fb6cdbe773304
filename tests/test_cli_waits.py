"""Issue 15 as a user types it, against real worlds: ``--wait`` tells each step and ends at once
on a refusal (exit codes 0/1/2/3/4), a timed-out ``buy`` is withdrawn and never carried out,
XIDs by unique prefix, amounts as ``12.34 EUR`` / ``{amount, currency, minor}``, ``cancel``,
purchases that expire (world.toml ``[world] purchase_expiry``), ``tx list`` filters, errors in
the user's words (detail under ``--verbose``)."""
from __future__ import annotations

import contextlib
import json
import re
import time

import pytest

from setmail.agent import commands as cmdq
from tests.e2e_world import RunningWorld, run_cli

#: seconds a purchase nobody continues lives (short, so one test sees it expire)
EXPIRY = 20
MONEY_KEYS = {"amount", "currency", "minor"}


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    home = tmp_path_factory.mktemp("waits") / "world"
    world = RunningWorld(home)
    text = (home / "world.toml").read_text()
    (home / "world.toml").write_text(text.replace("[world]\n", f"[world]\npurchase_expiry = "
                                                  f"{EXPIRY}\n", 1))
    with running(world):  # the agents read world.toml as they start
        code, _, err = run_cli("register", "alice", "--wait", "90", "--home", str(home))
        assert code == 0, err + world.log("alice")
        yield world


@contextlib.contextmanager
def running(world, *names):
    world.start_smtp()
    world.start(*names)
    try:
        yield world
    finally:
        world.stop()


def cli(w, *args):
    return run_cli(*args, "--home", str(w.home))


def buy(w, amount="12.34", *more, holder="alice", wait="60"):
    return cli(w, "buy", "--cardholder", holder, "--merchant", "shop", "--amount", amount,
               "--wait", wait, *more)


def test_an_approved_purchase_tells_each_step_and_exits_0(w):
    code, out, err = buy(w)
    assert code == 0, out + err
    for step in ("PInitReq sent", "PReq sent", "AuthReq sent to the gateway",
                 "authorised", "captured"):
        assert step in err, (step, err)  # plain lines on stderr when not a terminal
    assert out.splitlines()[-1].startswith("approved: 12.34 EUR by alice at shop")
    code, out, _ = buy(w, "1.00", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["outcome"] == "approved" and doc["exit"] == 0
    assert doc["amount"] == {"amount": "1.00", "currency": "EUR", "minor": 100}
    assert doc["captured"] and len(doc["xid"]) == 40
    assert any("PRes received" in s["step"] for s in doc["steps"])


def test_a_decline_exits_1_with_the_issuers_words(w):
    code, out, err = buy(w, "4999.00")
    code2, out2, err2 = buy(w, "4999.00", "--json")
    assert code == 1 and "declined" in out and "51" in out, out + err
    assert code2 == 1 and json.loads(out2)["iso_code"] in ("51", 51)


def test_a_refusal_ends_the_wait_at_once(w):
    """bob has no certificate: his wallet refuses the buy; the wait (60 s) returns within
    seconds, naming the party and saying what to do, no class names."""
    began = time.monotonic()
    code, out, err = buy(w, "2.00", holder="bob")
    elapsed = time.monotonic() - began
    assert code == 3 and elapsed < 20, (code, elapsed, out, err)
    assert "bob has no certificate for card ending" in err and "setmail register bob" in err
    assert "Error:" not in err and "ProtocolError" not in err
    # a command the merchant cannot carry out: refused at once, in words
    code, out, _ = buy(w, "3.00", "--json")
    xid = json.loads(out)["xid"]
    began = time.monotonic()
    code, out, err = cli(w, "capture", xid[:10], "--wait", "60")
    assert code == 3 and time.monotonic() - began < 20, out + err
    assert "shop refused the capture command" in err and "CAPTURED" in err
    assert "ProtocolError" not in err and "merchant:" not in err
    code, _, err = cli(w, "--verbose", "capture", xid[:10], "--wait", "60")
    assert code == 3 and "detail:" in err
    # the gateway refuses: its SET code in a sentence, and what to do instead
    code, out, err = cli(w, "void", xid[:10], "--wait", "60")
    assert code == 3 and "alreadyCaptured" in err and "refund" in err, out + err


def test_bad_input_exits_2_in_the_users_words(w):
    code, _, err = buy(w, "1.00", "--currency", "USD")
    assert code == 2 and "is in EUR" in err and "--currency" in err
    code, _, err = cli(w, "ledger", "--issuer", "alice")
    assert code == 2 and "alice is a cardholder, not an issuer" in err
    code, out, _ = run_cli("--help")
    assert code == 0 and "4 timed out" in out and "3 refused" in out
    code, out, _ = run_cli("capture", "--help")
    assert code == 0 and "2 bad input" in out


def test_xids_by_unique_prefix_and_amounts_everywhere(w):
    xids = ["abcd0" + "1" * 35, "abcd1" + "2" * 35]
    for xid in xids:
        code, out, err = buy(w, "0.50", "--xid", xid, "--json")
        assert code == 0, out + err
    code, _, err = cli(w, "tx", "show", "abcd")
    assert code == 2 and "ambiguous" in err and "abcd01111111" in err and "abcd12222222" in err
    code, out, _ = cli(w, "tx", "show", "abcd1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["xid"] == xids[1]
    assert doc["agents"]["alice"]["amount"] == {"amount": "0.50", "currency": "EUR",
                                                "minor": 50}
    code, out, _ = cli(w, "tx", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and all(set(r["amount"]) == MONEY_KEYS for r in rows if r["amount"])
    code, out, _ = cli(w, "tx", "list")
    assert re.search(r"^abcd01111111 +0.50 EUR ", out, re.M) and xids[0] not in out
    code, out, _ = cli(w, "ledger", "--json")
    (alice,) = [a for a in json.loads(out) if a["holder"] == "alice"]
    assert set(alice["held"]) == MONEY_KEYS and alice["limit"]["currency"] == "EUR"
    code, out, _ = cli(w, "trace", "abcd0", "--json")
    assert code == 0 and json.loads(out)
    code, _, err = cli(w, "tx", "show", "ffff")
    assert code == 2 and "no purchase of this world has an XID starting with 'ffff'" in err


def test_an_order_nobody_pays_is_cancelled_or_expires(w):
    code, out, err = cli(w, "order", "--merchant", "shop", "--amount", "7.00",
                         "--cardholder-address", "alice@cardholder.example", "--wait", "30",
                         "--json")
    doc = json.loads(out)
    assert code == 0 and doc["outcome"] == "done" and doc["state"] == "ORDERED", out + err
    xid = doc["xid"]
    assert w.state("shop", xid)["state"] == "ORDERED"  # taken when the wait said so
    code, out, err = cli(w, "cancel", xid[:8], "--wait", "30")
    assert code == 0 and "cancelled at shop" in out, out + err
    code, out, err = cli(w, "cancel", xid[:8])
    assert code == 3 and "Already cancelled" in err
    code, out, _ = cli(w, "tx", "list", "--state", "cancelled", "--json")
    assert [r["xid"] for r in json.loads(out)] == [xid]
    # another order nobody pays: EXPIRED after [world] purchase_expiry
    code, other, _ = cli(w, "order", "--merchant", "shop", "--amount", "8.00",
                         "--cardholder-address", "alice@cardholder.example")
    other = other.strip()
    expired = w.wait_state("shop", other, "EXPIRED", timeout=EXPIRY + 60)
    assert "expired" in expired
    code, out, _ = cli(w, "tx", "list", "--state", "EXPIRED", "--older-than", "5s")
    assert code == 0 and other[:12] in out and xid[:12] not in out
    code, out, err = cli(w, "tx", "list", "--limit", "1")
    assert code == 0 and len(out.strip().splitlines()) == 1 and "not shown" in err


def test_a_timed_out_buy_is_withdrawn_and_never_carried_out(tmp_path):
    world = RunningWorld(tmp_path / "idle")  # nobody runs yet
    home = str(world.home)
    began = time.monotonic()
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             "9.00", "--wait", "1", "--json", "--home", home)
    doc = json.loads(out)
    assert code == 4 and doc["outcome"] == "timed out" and time.monotonic() - began < 15
    assert sorted(doc["withdrawn"]) == sorted(doc["commands"]) and len(doc["commands"]) == 2
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             "9.00", "--wait", "0.5", "--home", home)
    assert code == 4 and "withdrawn" in err and "is `setmail run` running?" in err
    code, out, err = run_cli("order", "--merchant", "shop", "--amount", "9.00",
                             "--cardholder-address", "alice@cardholder.example", "--wait", "0.5",
                             "--home", home)
    assert code == 4 and "withdrawn" in err and out == "", (out, err)
    with running(world, "alice", "shop"):
        time.sleep(3)  # the agents poll every 0.05 s: anything runnable would have run
        for agent in ("alice", "shop"):
            store = cmdq.open_store(world.world.store_path(agent))
            try:
                rows = store.query("SELECT status FROM agent_commands")
                assert {s for s, in rows} == {"withdrawn"}, rows
                assert not [k for k in store.state_keys() if k.startswith("tx/")
                            and len(k) == 43]
            finally:
                store.close()
    code, out, _ = run_cli("tx", "list", "--home", home)
    assert code == 0 and "no purchases yet" in out
