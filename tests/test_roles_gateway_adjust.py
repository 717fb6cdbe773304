"""The gateway's lifecycle after an authorisation (docs/lifecycle.md): void and reduction
(AuthRevReq), refunds (CredReq), their reversal (CredRevReq) and capture reversal (CapRevReq),
each carried to the real issuer role and answered to the directory address of the merchant, with
the refusals issue 13 names: refund above captured, second full refund, void after capture,
capture reversal after settlement, credit of an unknown or another merchant's XID, another
merchant's CapToken.  Real keys, the real Issuer, the merchant's requests built by hand."""
from __future__ import annotations

import json

import pytest

from setmail.asn1 import gateway as gw
from setmail.asn1.base import decode
from setmail.crypto.operators import open_EncX
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.roles.base import Inbound
from setmail.vectors.build import PAN, Parties
from tests.gateway_cast import (BANK, GW, SHOP, Purchase, adjust_code, approved, auth_rev_code,
                                batch_admin_req, book, cap_batch, capture, card, deliver, eur,
                                gw_state, keyed, kept, open_batch_res, shop2)
from tests.ledger_check import assert_ledger_holds


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def captured(p, amount: int | None = None):
    """An authorised and captured purchase: (net, purchase, CapToken)."""
    net, pur, token = approved(p)
    done = capture(net, pur.cap_req(token, amount=eur(amount) if amount else None))
    assert cap_batch(p, done)[0] == "success"
    return net, pur, token


def sent(net, start: int) -> list[str]:
    return [t for _, _, t in net.log[start:]]


# --- AuthRevReq -----------------------------------------------------------------------------------
def test_a_full_void_releases_the_hold_and_wipes_the_card(p):
    net, pur, token = approved(p)
    log = len(net.log)
    done = deliver(net, "AuthRevReq", pur.auth_rev_req(token, new_amount=0))
    assert sent(net, log) == ["IssRevReq", "IssRevRes", "AuthRevRes"]
    code, new_amt, baggage = auth_rev_code(p, done)
    assert (code, new_amt, baggage) == ("approved", 0, None)  # the Enc form: no new token
    state = gw_state(net, pur)
    assert state["state"] == "VOIDED" and "secret" not in state and PAN not in json.dumps(state)
    assert not [k for k in net.timers if k[0] == GW]
    assert card(net) == {"held": 0, "posted": 0}
    answer = [s for _, out in done for s in out.sends if s.message_type == "AuthRevRes"][0]
    assert answer.answers == Inbound("AuthRevReq", net.delivered["AuthRevReq"], SHOP).digest.hex()
    # a capture now finds no authorisation; a second void is a duplicate
    assert cap_batch(p, capture(net, pur.cap_req(token)))[0] == "invalidAuthData"
    again = deliver(net, "AuthRevReq", pur.auth_rev_req(token, new_amount=0))
    assert auth_rev_code(p, again)[0] == "duplicateRequest"
    assert_ledger_holds(net)


def test_a_reduction_gives_a_new_cap_token_for_the_new_amount(p):
    net, pur, token = approved(p)
    done = deliver(net, "AuthRevReq", pur.auth_rev_req(token, new_amount=1000))
    code, new_amt, baggage = auth_rev_code(p, done)
    assert (code, new_amt) == ("approved", 1000)
    new_token = baggage["cap_token_new"].untag().dump()
    inner = open_EncX(new_token, p.gateway_kex, "CapTokenTBEX", "CapTokenTBS", "PANToken",
                      certs=(p.gateway_sig.cert,))
    assert decode(gw.CapTokenData, inner.content)["auth_amt"].native == eur(1000)
    state = gw_state(net, pur)
    assert (state["state"], state["auth_amt"], state["rev_code"]) == ("AUTHORIZED", 1000, "00")
    assert card(net) == {"held": 1000, "posted": 0}
    # the authorisation is now 1000: 1001 is too much, 1000 is captured
    assert cap_batch(p, capture(net, pur.cap_req(new_token, amount=eur(1001))))[0] == \
        "amountTooLarge"
    assert cap_batch(p, capture(net, pur.cap_req(new_token, amount=eur(1000))))[:2] == \
        ("success", 1000)
    assert card(net) == {"held": 0, "posted": 1000}
    assert_ledger_holds(net)


@pytest.mark.parametrize("new_amount", [1234, 1500, -1])
def test_a_reduction_must_be_below_the_authorisation(p, new_amount):
    net, pur, token = approved(p)
    log = len(net.log)
    code, new_amt, _ = auth_rev_code(p, deliver(net, "AuthRevReq",
                                                pur.auth_rev_req(token, new_amount=new_amount)))
    assert (code, new_amt) == ("amountError", 1234) and sent(net, log) == ["AuthRevRes"]
    assert gw_state(net, pur)["state"] == "AUTHORIZED"
    assert_ledger_holds(net)


def test_void_after_capture_is_already_captured(p):
    net, pur, token = captured(p)
    log = len(net.log)
    done = deliver(net, "AuthRevReq", pur.auth_rev_req(token, new_amount=0))
    assert auth_rev_code(p, done)[:2] == ("alreadyCaptured", 1234)
    assert sent(net, log) == ["AuthRevRes"] and gw_state(net, pur)["state"] == "CAPTURED"
    assert_ledger_holds(net)


def test_void_of_an_unknown_xid_or_with_another_merchants_token(p):
    net, pur, token = approved(p)
    stranger = Purchase(p)
    stranger.auth_req_data = pur.auth_req_data
    assert auth_rev_code(p, deliver(net, "AuthRevReq", stranger.auth_rev_req(
        token, new_amount=0)))[0] == "unknownXID"
    assert gw_state(net, stranger) is None
    _, other, other_token = approved(p, net, Purchase(p, merchant=shop2(p)))
    assert auth_rev_code(p, deliver(net, "AuthRevReq", pur.auth_rev_req(
        other_token, new_amount=0)))[0] == "unknownXID"  # shop2's token names its purchase
    assert auth_rev_code(p, deliver(net, "AuthRevReq", pur.auth_rev_req(
        None, new_amount=0)))[0] == "unspecifiedFailure"  # no token at all
    assert gw_state(net, pur)["state"] == gw_state(net, other)["state"] == "AUTHORIZED"
    assert_ledger_holds(net)


def test_a_void_replayed_under_a_new_header_changes_nothing(p):
    from tests.test_roles_gateway_attacker import rewrap
    net, pur, token = approved(p)
    der = pur.auth_rev_req(token, new_amount=500)
    deliver(net, "AuthRevReq", der)
    before, log = gw_state(net, pur), len(net.log)
    done = deliver(net, "AuthRevReq", rewrap(der))
    assert done[0][1].state == before and sent(net, log) == [] and done[0][1].peer == SHOP


# --- CredReq ------------------------------------------------------------------------------------
    assert_ledger_holds(net)
def test_refunds_up_to_the_captured_amount_each_in_the_open_batch(p):
    net, pur, token = captured(p, 1000)
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=400))
    assert adjust_code(p, done, "CredRes") == ("success", 400, 1, 2)  # the capture was seq 1
    assert sent(net, len(net.log) - 3) == ["IssCredReq", "IssCredRes", "CredRes"]
    log = len(net.log)  # refund above what is left: the issuer is not asked
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=601))
    assert adjust_code(p, done, "CredRes")[:2] == ("amountTooLarge", 0)
    assert sent(net, log) == ["CredRes"]
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", token))  # the rest: 600
    assert adjust_code(p, done, "CredRes") == ("success", 600, 1, 3)
    state = gw_state(net, pur)
    assert (state["state"], state["cap_amt"], state["cred_amt"]) == ("CAPTURED", 1000, 1000)
    assert [(c["amount"], c["batch"], c["seq"]) for c in state["credits"]] == [
        (400, 1, 2), (600, 1, 3)]
    assert [i["kind"] for i in book(net)["live"]["1"]["items"]] == ["capture", "credit", "credit"]
    # a second full refund: nothing is left to refund
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", token))
    assert adjust_code(p, done, "CredRes")[:2] == ("amountTooLarge", 0)
    assert keyed(net, BANK, pur)["credited"] == 1000
    assert_ledger_holds(net)


def test_credit_of_an_uncaptured_unknown_or_other_merchants_purchase(p):
    net, pur, token = approved(p)
    assert adjust_code(p, deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=1)),
                       "CredRes")[0] == "originalNotFound"
    stranger = Purchase(p)
    stranger.auth_rrpid = pur.auth_rrpid
    assert adjust_code(p, deliver(net, "CredReq", stranger.adjust_req("CredReq", token)),
                       "CredRes")[0] == "unknownXID"
    assert gw_state(net, stranger) is None
    # shop2 names shop's XID: its own (unknown) purchase, never shop's
    thief = Purchase(p, xid=pur.xid, merchant=shop2(p))
    thief.auth_rrpid = pur.auth_rrpid
    done = deliver(net, "CredReq", thief.adjust_req("CredReq", token), sender=SHOP)
    assert adjust_code(p, done, "CredRes", shop2(p))[0] == "unknownXID"
    assert not [s for _, out in done for s in out.sends if s.to == SHOP]
    # shop with its purchase but shop2's token
    net2, pur2, token2 = captured(p)
    _, _, other_token = approved(p, net2, Purchase(p, merchant=shop2(p)))
    assert adjust_code(p, deliver(net2, "CredReq", pur2.adjust_req("CredReq", other_token)),
                       "CredRes")[0] == "invalidCapToken"
    assert adjust_code(p, deliver(net2, "CredReq", pur2.adjust_req("CredReq", None)),
                       "CredRes")[0] == "missingCapToken"
    assert gw_state(net2, pur2).get("cred_amt", 0) == 0
    assert_ledger_holds(net)
    assert_ledger_holds(net2)


def test_a_request_with_two_items_is_an_error(p):
    from tests.gateway_cast import error_of
    net, pur, token = captured(p)
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", token, items=2))
    (send,) = [s for _, out in done for s in out.sends]
    assert send.to == SHOP and error_of(p, send)[0] == "messageNotSupported"


# --- CredRevReq ---------------------------------------------------------------------------------
def test_a_credit_reversal_takes_the_credit_out_of_its_batch(p):
    net, pur, token = captured(p)
    deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=300))
    done = deliver(net, "CredRevReq", pur.adjust_req("CredRevReq", token, amount=300))
    assert adjust_code(p, done, "CredRevRes") == ("success", 300, 1, 2)
    state = gw_state(net, pur)
    assert state["cred_amt"] == 0 and state["credits"][0]["reversed"] is True
    assert [i["kind"] for i in book(net)["live"]["1"]["items"]] == ["capture"]
    # nothing left to reverse
    done = deliver(net, "CredRevReq", pur.adjust_req("CredRevReq", token, amount=300))
    assert adjust_code(p, done, "CredRevRes")[0] == "originalNotFound"
    assert_ledger_holds(net)


def test_a_credit_of_a_closed_batch_is_processed(p):
    net, pur, token = captured(p)
    deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=300))
    deliver(net, "BatchAdminReq", batch_admin_req(p, "close"))
    log = len(net.log)
    done = deliver(net, "CredRevReq", pur.adjust_req("CredRevReq", token))
    assert adjust_code(p, done, "CredRevRes")[0] == "originalProcessed"
    assert sent(net, log) == ["CredRevRes"]


# --- CapRevReq ----------------------------------------------------------------------------------
    assert_ledger_holds(net)
def test_a_capture_reversal_before_settlement_makes_the_purchase_authorized_again(p):
    net, pur, token = captured(p, 1000)
    done = deliver(net, "CapRevReq", pur.adjust_req("CapRevReq", token))
    assert adjust_code(p, done, "CapRevRes") == ("success", 1000, 1, 1)
    state = gw_state(net, pur)
    assert (state["state"], state["cap_amt"], state["auth_amt"]) == ("AUTHORIZED", 0, 1234)
    assert state["secret"]["pan"] == PAN and book(net)["live"]["1"]["items"] == []
    assert card(net) == {"held": 1234, "posted": 0}  # the hold is back
    assert any(k[2] == "auth_expiry" for k in net.timers if k[0] == GW)
    # capture again (the same CapToken), then void is refused, refund works
    assert cap_batch(p, capture(net, pur.cap_req(token)))[:2] == ("success", 1234)
    assert card(net) == {"held": 0, "posted": 1234}
    assert_ledger_holds(net)


def test_a_capture_reversal_after_settlement_sends_the_merchant_to_a_refund(p):
    net, pur, token = captured(p)
    deliver(net, "BatchAdminReq", batch_admin_req(p, "close"))
    log = len(net.log)
    done = deliver(net, "CapRevReq", pur.adjust_req("CapRevReq", token))
    assert adjust_code(p, done, "CapRevRes")[:2] == ("originalProcessed", 0)
    assert sent(net, log) == ["CapRevRes"] and gw_state(net, pur)["state"] == "CAPTURED"
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", token))
    assert adjust_code(p, done, "CredRes") == ("success", 1234, 2, 1)  # into the next batch
    assert_ledger_holds(net)


def test_a_credited_capture_cannot_be_reversed(p):
    net, pur, token = captured(p)
    deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=100))
    done = deliver(net, "CapRevReq", pur.adjust_req("CapRevReq", token))
    assert adjust_code(p, done, "CapRevRes")[0] == "originalProcessed"
    assert_ledger_holds(net)


def test_a_refused_reversal_goes_back_into_its_batch(p):
    """The issuer refuses (the capture is unknown there): the item the gateway took out of the
    batch while asking goes back, at its sequence number."""
    net, pur, token = captured(p)
    bank_state = keyed(net, BANK, pur)
    bank_state["captures"] = {}  # the issuer has lost the completion: 25
    done = deliver(net, "CapRevReq", pur.adjust_req("CapRevReq", token))
    assert adjust_code(p, done, "CapRevRes")[0] == "originalNotFound"
    assert [i["seq"] for i in book(net)["live"]["1"]["items"]] == [1]
    assert gw_state(net, pur)["state"] == "CAPTURED"


def test_no_answer_to_a_credit_gives_the_merchant_unspecified_failure(p):
    from tests.gateway_cast import fire_retry
    net, pur, token = captured(p)
    bank = net.roles.pop(BANK)
    deliver(net, "CredReq", pur.adjust_req("CredReq", token))
    assert gw_state(net, pur)["state"] == "ISSUER_CRED"
    # meanwhile another request of the purchase is a duplicate
    assert adjust_code(p, deliver(net, "CredReq", pur.adjust_req("CredReq", token)),
                       "CredRes")[0] == "duplicateRequest"
    for _ in range(3):
        fire_retry(net)
    done = fire_retry(net)
    assert adjust_code(p, done, "CredRes")[:2] == ("unspecifiedFailure", 0)
    state = gw_state(net, pur)
    assert state["state"] == "CAPTURED" and not state.get("cred_amt")
    assert kept(state)["last_adjust"]["code"] == "unspecifiedFailure"
    net.roles[BANK] = bank
    assert_ledger_holds(net)


def test_batch_ids_in_every_answer_and_the_query(p):
    net, pur, token = captured(p, 1000)
    deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=250))
    data = open_batch_res(p, deliver(net, "BatchAdminReq", batch_admin_req(
        p, "query", summary=True, detail=True)))
    assert data["ba_status"].native == "success" and data["batch_id"].native == 1
    totals = data["batch_status"]["batch_totals"].native
    assert (totals["trans_count_debit"], totals["trans_total_debit"]["amount"]) == (1, 1000)
    assert (totals["trans_count_credit"], totals["trans_total_credit"]["amount"]) == (1, 250)
    assert totals["batch_total"]["amount"] == 750
    assert [(d["cap_amt"]["amount"].native, d["batch_sequence_num"].native)
            for d in data["trans_detail_seq"]] == [(1000, 1), (250, 2)]
    assert data["trans_detail_seq"][0]["trans_ids"].dump() == pur.trans_ids
    assert_ledger_holds(net)


# --- the attacker's rules hold for the new requests -----------------------------------------------
def test_a_refund_replayed_under_a_new_header_is_not_refunded_twice(p):
    from tests.test_roles_gateway_attacker import EVIL, rewrap
    net, pur, token = captured(p)
    der = pur.adjust_req("CredReq", token, amount=100)
    done = deliver(net, "CredReq", der, sender=EVIL)  # From proves nothing: the answer goes
    (answer,) = [s for _, out in done for s in out.sends if s.message_type == "CredRes"]
    assert answer.to == SHOP and done[0][1].peer == SHOP
    assert answer.answers == Inbound("CredReq", der, EVIL).digest.hex()  # exact repeats: dedupe
    before, log = gw_state(net, pur), len(net.log)
    again = deliver(net, "CredReq", rewrap(der), sender=EVIL)
    assert sent(net, log) == [] and again[0][1].state == before
    state = gw_state(net, pur)
    assert state["cred_amt"] == 100 and PAN not in json.dumps(state)
    assert keyed(net, BANK, pur)["credited"] == 100
    assert_ledger_holds(net)


def test_a_request_whose_clear_header_disagrees_gets_a_signed_error(p):
    from tests.gateway_cast import error_of
    from tests.test_roles_gateway_attacker import EVIL, rewrap
    net, pur, token = captured(p)
    der = rewrap(pur.adjust_req("CapRevReq", token), rrpid=b"\x01" * 32)
    done = deliver(net, "CapRevReq", der, sender=EVIL)
    (send,) = [s for _, out in done for s in out.sends]
    assert send.to == SHOP and error_of(p, send) == (
        "badMessageHeader", Inbound("CapRevReq", der, EVIL).digest)
    assert gw_state(net, pur)["state"] == "CAPTURED" and net.log[-1][2] == "Error"
    assert [t for _, _, t in net.log].count("IssCapRevReq") == 0
    assert_ledger_holds(net)


def test_a_void_while_the_capture_is_with_the_issuer_is_already_captured(p):
    from tests.gateway_cast import fire_retry, network
    net, pur, token = approved(p, network(p, max_retries=0))
    bank = net.roles.pop(BANK)
    capture(net, pur.cap_req(token))
    assert gw_state(net, pur)["state"] == "ISSUER_CAP"
    done = deliver(net, "AuthRevReq", pur.auth_rev_req(token, new_amount=0))
    assert auth_rev_code(p, done)[:2] == ("alreadyCaptured", 1234)
    assert cap_batch(p, fire_retry(net))[0] == "unspecifiedFailure"  # the issuer stays away
    net.roles[BANK] = bank
    done = deliver(net, "AuthRevReq", pur.auth_rev_req(token, new_amount=0))
    assert auth_rev_code(p, done)[0] == "approved" and gw_state(net, pur)["state"] == "VOIDED"
    assert_ledger_holds(net)
