"""Every lifecycle refusal of issue 13 over real SMTP, every agent in its own process
(tests/e2e_world.py): refund above what was captured, a second full refund, void after capture,
capture reversal after settlement, a credit of an XID the gateway never saw and of another
merchant's XID (a validly signed CredReq from a second certified merchant), split captures above
the authorised total, a recurring payment too soon, totals that disagree, a batch closed twice,
and the renewal of a revoked certificate (last: it revokes shop4).

Each test drives the merchant as its back office does (the CLI, or its command queue where the
CLI cannot name the purchase), and asserts three things: SET's code reaches the party that asked
(the merchant's state, and the CLI's exit code), the other parties' books did not move (gateway
and issuer states), and nothing was posted twice (the issuer's ledger rows of the XID, counted,
and ``assert_ledger_holds``; for the renewal: no certificate issued).
"""
from __future__ import annotations

import datetime as dt
import time

import pytest

from setmail.asn1.base import TransIDs
from setmail.crypto.suite import fresh
from setmail.mail import maildir
from setmail.world.config import AgentSpec
from tests.adversary.judge import ledger, settle, states
from tests.e2e_world import EXTRA_AGENTS, run_cli, started
from tests.ledger_check import assert_ledger_holds
from tests.test_merchant_lifecycle_e2e import buy, cli

#: a merchant that gives up on its gateway after 6 s (no re-send): its answer then comes late
SHOP4 = AgentSpec("shop4", "merchant", "shop4@merchant4.example",
                  options={"gateway": "gateway", "mer_id": "SHOP-0004", "acquirer_bin": "41111111",
                           "display_name": "Fourth Shop", "retry_after": 6, "max_retries": 0})
#: what of the gateway's purchase record a refusal must leave as it was
BOOKED = ("state", "auth_amt", "cap_amt", "cred_amt", "captures", "credits", "auths")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with started(tmp_path_factory.mktemp("refusals") / "world",
                 extra_agents=(*EXTRA_AGENTS, SHOP4)) as world:
        yield world


def books(w, xid: str) -> tuple:
    """(the gateway's booked fields of each merchant's purchase ``xid``, the issuer's states,
    the issuer's ledger rows): what no refusal may change."""
    gateway = {k: {f: s.get(f) for f in BOOKED} for k, s in states(w, "gateway", xid).items()}
    bank = states(w, "bank", xid)
    assert gateway and bank, f"the gateway or the issuer holds no {xid[:12]}"
    return gateway, bank, ledger(w, xid)


def kinds(w, xid: str) -> list[tuple[str, int]]:
    return [(kind, amount) for kind, _, amount in ledger(w, xid)]


def mails(w, agent: str, message_type: str) -> int:
    """How many ``message_type`` mails reached ``agent`` (new, cur or quarantined)."""
    return sum(1 for e in maildir.list_messages(w.world.maildir(agent), include_quarantine=True)
               if w.mail(agent, e.key).header("X-SET-Message-Type") == message_type)


def plant(w, merchant: str, state: dict) -> None:
    """Put a purchase record into ``merchant``'s store: what a merchant (or a dishonest one that
    learnt another's XID, TransIDs and CapToken) holds when it asks about a purchase."""
    from setmail.agent.commands import open_store
    store = open_store(w.world.store_path(merchant))
    try:
        with store.transaction(now=time.time()) as tx:
            tx.put_state("tx/" + state["xid"], state)
    finally:
        store.close()


def wait_for(what: str, check, w, *logs: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s\n" + "\n".join(
                f"--- {n}\n{w.log(n)[-2500:]}" for n in logs))
        time.sleep(0.1)


# --- refunds ---------------------------------------------------------------------------------
def test_a_refund_above_what_was_captured_and_a_second_full_refund_are_refused(w):
    xid = buy(w, "shop", "12.34")  # shop captures at once
    w.wait_state("shop", xid, "CAPTURED")
    w.wait_state("bank", xid, "POSTED")
    before = books(w, xid)
    code, out, err = cli(w, "refund", xid, "--amount", "20.00", "--wait", "30", "--json")
    assert code == 3 and (out["request"], out["code"]) == ("CredReq", "amountTooLarge"), (out, err)
    assert (out["state"], out["credited"]) == ("CAPTURED", "0.00 EUR")
    assert books(w, xid) == before  # the gateway asked nobody
    code, out, err = cli(w, "refund", xid, "--wait", "30", "--json")  # what is refundable
    assert code == 0 and (out["state"], out["credited"]) == ("REFUNDED", "12.34 EUR"), (out, err)
    refunded = books(w, xid)
    code, out, err = cli(w, "refund", xid, "--amount", "12.34", "--wait", "30", "--json")
    assert code == 3 and out["code"] == "amountTooLarge" and out["credited"] == "12.34 EUR", out
    code, out, err = cli(w, "refund", xid, "--wait", "30")  # no amount: the merchant says why
    assert code == 3 and "nothing is left to refund" in err and len(err.strip().splitlines()) == 1
    assert books(w, xid) == refunded
    (gateway,) = refunded[0].values()
    assert gateway["cred_amt"] == 1234 and len(gateway["credits"]) == 1
    assert kinds(w, xid) == [("hold", 1234), ("release", 1234), ("post", 1234), ("credit", 1234)]
    assert [c["amount"] for c in w.state("shop", xid)["credits"]] == [1234]
    assert mails(w, "shop", "Error") == 0
    assert_ledger_holds(w)


# --- void ------------------------------------------------------------------------------------
def test_a_void_after_capture_is_already_captured(w):
    xid = buy(w, "shop2", "8.00")
    code, out, err = cli(w, "capture", xid, "--wait", "30")
    assert code == 0 and "CapReq success" in out, out + err
    w.wait_state("bank", xid, "POSTED")
    before = books(w, xid)
    code, out, err = cli(w, "void", xid, "--wait", "30", "--json")
    assert code == 3 and (out["request"], out["code"]) == ("AuthRevReq", "alreadyCaptured"), out
    assert out["state"] == "CAPTURED" and "refund" in out["advice"]
    code, out, err = cli(w, "void", xid, "--amount", "1.00", "--wait", "30", "--json")
    assert code == 3 and out["code"] == "alreadyCaptured" and out["authorized"] == "8.00 EUR"
    assert books(w, xid) == before
    assert kinds(w, xid) == [("hold", 800), ("release", 800), ("post", 800)]  # no reversal
    assert mails(w, "shop2", "AuthRevRes") == 2 and mails(w, "shop2", "Error") == 0
    assert_ledger_holds(w)


# --- capture reversal ------------------------------------------------------------------------
def test_a_capture_reversal_after_settlement_is_original_processed(w):
    xid = buy(w, "shop", "6.00")
    w.wait_state("shop", xid, "CAPTURED")
    code, out, err = cli(w, "batch", "close", "--merchant", "shop", "--wait", "60", "--json")
    assert code == 0 and out["result"]["reconciliation"] == "BALANCED", (out, err)
    batch_id = out["result"]["batch_id"]
    wait_for("the issuer settles the batch", lambda: "settle" in [k for k, _ in kinds(w, xid)],
             w, "gateway", "bank")
    before = books(w, xid)
    code, out, err = cli(w, "capture-reverse", xid, "--wait", "30", "--json")
    assert code == 3 and (out["request"], out["code"]) == ("CapRevReq", "originalProcessed"), out
    assert out["state"] == "CAPTURED" and out["captured"] == "6.00 EUR" and "refund" in out[
        "advice"]
    assert books(w, xid) == before
    assert kinds(w, xid) == [("hold", 600), ("release", 600), ("post", 600), ("settle", 600)]
    gateway = next(s for k, s in states(w, "gateway", "batch/").items()
                   if s.get("batch_id") == batch_id and s.get("mer_id") == "SHOP-0001")
    assert gateway["state"] == "SETTLED"
    assert_ledger_holds(w)


# --- credits of an XID the gateway does not hold for this merchant ---------------------------
@pytest.fixture(scope="module")
def sold(w) -> str:
    """A purchase shop sold and captured, and nothing else."""
    xid = buy(w, "shop", "9.99")
    w.wait_state("shop", xid, "CAPTURED")
    w.wait_state("bank", xid, "POSTED")
    return xid


def test_a_credit_of_an_xid_the_gateway_never_saw_is_unknown_xid(w, sold):
    """shop's record of a purchase whose XID no gateway ever authorised (a record restored from
    elsewhere): the CredReq is validly signed by shop, the gateway answers unknownXID."""
    record = dict(w.state("shop", sold))
    trans_ids = TransIDs.load(bytes.fromhex(record["trans_ids"]))
    xid = fresh(20)
    trans_ids["xid"] = xid
    record.update(xid=xid.hex(), trans_ids=trans_ids.dump(force=True).hex())
    plant(w, "shop", record)
    cred_res = mails(w, "shop", "CredRes")
    code, out, err = cli(w, "refund", xid.hex(), "--amount", "1.00", "--wait", "30", "--json")
    assert code == 3 and (out["request"], out["code"]) == ("CredReq", "unknownXID"), (out, err)
    assert out["state"] == "CAPTURED" and out["credited"] == "0.00 EUR"
    assert mails(w, "shop", "CredRes") == cred_res + 1 and mails(w, "shop", "Error") == 0
    assert states(w, "gateway", xid.hex()) == {} and ledger(w, xid.hex()) == []
    assert kinds(w, sold) == [("hold", 999), ("release", 999), ("post", 999)]
    assert_ledger_holds(w)


def test_a_credit_of_another_merchants_xid_is_refused_to_the_asker_only(w, sold):
    """shop2, certified and in the directory, holds shop's purchase record (XID, TransIDs, shop's
    CapToken) and asks for a credit: its CredReq is signed by shop2, so the gateway looks for
    shop2's purchase of that XID, finds none and answers shop2 unknownXID; shop hears nothing,
    shop's purchase and the card are untouched."""
    from setmail.agent import commands as cmdq
    shop_before, before = w.state("shop", sold), books(w, sold)
    cred_res_at_shop = mails(w, "shop", "CredRes")
    plant(w, "shop2", shop_before)
    store = cmdq.open_store(w.world.store_path("shop2"))
    try:
        cmdq.submit(store, "refund", {"xid": sold, "amount": 999})
    finally:
        store.close()
    stolen = w.wait_state("shop2", sold, "CAPTURED",
                          check=lambda s: (s.get("result") or {}).get("request") == "CredReq")
    assert stolen["result"]["code"] == "unknownXID" and stolen.get("credited", 0) == 0
    assert mails(w, "shop2", "CredRes") == 1 and mails(w, "shop2", "Error") == 0
    settle(w)
    assert books(w, sold) == before  # shop's purchase at the gateway, and the card
    assert w.state("shop", sold) == shop_before
    assert mails(w, "shop", "CredRes") == cred_res_at_shop
    assert list(states(w, "gateway", sold)) == list(before[0])  # none for shop2
    assert kinds(w, sold) == [("hold", 999), ("release", 999), ("post", 999)]
    assert_ledger_holds(w)


# --- split shipment and recurring --------------------------------------------------------------
def test_split_captures_above_the_authorised_total_are_refused(w):
    xid = buy(w, "shop2", "10.00", "--ship-now", "4.00")
    code, out, err = cli(w, "capture", xid, "--amount", "4.01", "--wait", "30")
    assert code == 3 and "CapReq amountTooLarge" in err, out + err
    code, out, err = cli(w, "capture", xid, "--wait", "30")  # the first shipment: 4.00
    assert code == 0 and "CapReq success" in out, out + err
    code, out, err = cli(w, "authorize", xid, "--wait", "30", "--json")
    assert code == 0 and out["authorized"] == "10.00 EUR", (out, err)
    before = books(w, xid)
    code, out, err = cli(w, "capture", xid, "--amount", "6.01", "--wait", "30")
    assert code == 3 and "CapReq amountTooLarge" in err and "captured 4.00 EUR" in err, out + err
    assert books(w, xid) == before
    code, out, err = cli(w, "capture", xid, "--wait", "30")
    assert code == 0 and "CapReq success" in out and "captured 10.00 EUR" in out, out + err
    state = w.state("shop2", xid)
    assert [c["amount"] for c in state["captures"]] == [400, 600]
    wait_for("both posted", lambda: [k for k, _ in kinds(w, xid)].count("post") == 2, w, "bank")
    assert kinds(w, xid) == [("hold", 400), ("release", 400), ("post", 400),
                             ("hold", 600), ("release", 600), ("post", 600)]
    (gateway,) = books(w, xid)[0].values()
    assert (gateway["cap_amt"], gateway["auth_amt"], len(gateway["captures"])) == (1000, 1000, 2)
    assert_ledger_holds(w)


def test_a_recurring_payment_too_soon_is_refused(w):
    until = (dt.date.today() + dt.timedelta(days=365)).strftime("%Y%m%d")
    xid = buy(w, "shop2", "3.00", "--recurring", "30", "--until", until)
    w.wait_state("bank", xid, "HELD")
    before = books(w, xid)
    code, out, err = cli(w, "authorize", xid, "--wait", "30", "--json")
    assert code == 3 and (out["request"], out["code"]) == ("AuthReq", "recurringTooSoon"), (
        out, err)
    assert out["state"] == "AUTHORIZED" and out["authorized"] == "3.00 EUR"
    assert books(w, xid) == before
    assert kinds(w, xid) == [("hold", 300)]
    assert w.state("shop2", xid).get("auth_token")  # kept for when it is due
    assert_ledger_holds(w)


# --- batches -----------------------------------------------------------------------------------
def test_totals_that_disagree_then_the_batch_closed_twice(w):
    """shop4 gives up on a capture while its gateway is down (6 s); the gateway captures when it is
    back, and shop4 absorbs the late CapRes: the close is OUT_OF_BALANCE with the differing item
    shown, the batch is cleared once, a second close is batchIDUnavailable, and capturing again
    (shop4 thinks nothing was) is duplicateRequest: the card is posted once."""
    xid = buy(w, "shop4", "5.00")
    w.stop("gateway")
    code, out, err = cli(w, "capture", xid)
    assert code == 0, err
    gave_up = w.wait_state("shop4", xid, "AUTHORIZED", check=lambda s: (
        s.get("result") or {}).get("code") == "noReply")
    assert gave_up.get("captured", 0) == 0
    w.start("gateway")
    wait_for("the late CapRes", lambda: mails(w, "shop4", "CapRes") == 1, w, "gateway", "shop4")
    settle(w)
    assert w.state("shop4", xid).get("captured", 0) == 0  # absorbed, not booked
    (gateway,) = books(w, xid)[0].values()
    assert (gateway["state"], gateway["cap_amt"]) == ("CAPTURED", 500)
    clear_reqs = mails(w, "bank", "IssClearReq")

    code, out, err = cli(w, "batch", "close", "--merchant", "shop4", "--wait", "60", "--json")
    assert code == 1 and out["result"]["code"] == "success", (out, err)
    assert out["result"]["reconciliation"] == "OUT_OF_BALANCE"
    rec = out["batch"]["reconciliation"]
    assert rec["result"] == "OUT_OF_BALANCE" and rec["ours"]["debit_total"] == 0
    assert (rec["gateway"]["debit_count"], rec["gateway"]["debit_total"]) == (1, 500)
    assert rec["differences"] == [{"seq": 1, "ours": None, "gateway": {"xid": xid, "amount": 500}}]
    batch_id = out["result"]["batch_id"]
    wait_for("the issuer settles the batch", lambda: "settle" in [k for k, _ in kinds(w, xid)],
             w, "gateway", "bank")
    assert mails(w, "bank", "IssClearReq") == clear_reqs + 1
    settled = books(w, xid)

    code, out, err = cli(w, "batch", "close", str(batch_id), "--merchant", "shop4", "--wait",
                         "60", "--json")
    assert code == 3 and out["result"]["code"] == "batchIDUnavailable", (out, err)
    code, out, err = cli(w, "capture", xid, "--wait", "30")
    assert code == 3 and "CapReq duplicateRequest" in err, out + err
    settle(w)
    assert mails(w, "bank", "IssClearReq") == clear_reqs + 1  # cleared once
    assert books(w, xid) == settled
    assert kinds(w, xid) == [("hold", 500), ("release", 500), ("post", 500), ("settle", 500)]
    (batch,) = [s for s in states(w, "gateway", "batch/").values() if s["mer_id"] == "SHOP-0004"]
    assert (batch["state"], batch["batch_id"], len(batch["items"])) == ("SETTLED", batch_id, 1)
    assert_ledger_holds(w)


# --- certificates (last: it revokes shop4) -----------------------------------------------------
def test_a_revoked_certificate_is_not_renewed_and_nothing_is_issued(w):
    from setmail.agent import commands as cmdq
    from setmail.world.create import registration_args
    keys = w.world.keys_dir("shop4")
    certs = {p.name: p.read_bytes() for p in keys.glob("*.cert.pem")}
    code, _, err = run_cli("revoke", "shop4", "--home", str(w.home))
    assert code == 0, err
    wait_for("shop4 on the new CRLs", lambda: "crl.pem changed" in w.log("shop4"), w, "shop4")
    code, _, err = cli(w, "renew", "shop4", "--wait", "30")
    assert code == 3 and "cannot be renewed" in err and len(err.strip().splitlines()) == 1
    # the CLI refuses first; a renewal that reaches the MCA all the same gets its rejectByCA
    store = cmdq.open_store(w.world.store_path("shop4"))
    try:
        command = cmdq.submit(store, "renew", registration_args(w.world, w.world.agent("shop4")))
        txkey = None
        deadline = time.monotonic() + 30
        while txkey is None and time.monotonic() < deadline:
            txkey = cmdq.get(store, command).txkey
            time.sleep(0.1)
    finally:
        store.close()
    assert txkey, w.log("shop4")[-2000:]

    def renewal() -> dict:
        return states(w, "shop4", txkey).get("tx/" + txkey) or {}

    wait_for("the MCA's answer", lambda: renewal().get("state") == "FAILED", w, "shop4", "mca")
    assert renewal()["error_code"] == "rejectByCA" and "is revoked" in renewal()["reason"]
    assert mails(w, "shop4", "CertRes") == 1 and "REFUSED CertReq" in w.log("mca")
    assert {p.name: p.read_bytes() for p in keys.glob("*.cert.pem")} == certs  # none issued
    assert not list(keys.glob("old-*"))
