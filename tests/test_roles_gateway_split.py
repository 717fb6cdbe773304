"""Split shipments, instalments and recurring payments at the gateway (docs/lifecycle.md): the
AuthToken in the AuthRes, later AuthReqs that use it as their PI (SubsequentAuthInd), several
captures within the authorised total (the issuer keeps the rest held: ``remaining_hold``), and
SET's AuthCodes for what the terms forbid: above the purchase amount, a stale or another
merchant's token, other terms, instalments exhausted, recurring too soon or expired.  Real keys,
the real Issuer, the merchant's requests built by hand."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from setmail.asn1 import gateway as gw
from setmail.asn1.base import decode
from setmail.asn1.issuer import IssCapReqData
from setmail.crypto.operators import open_Enc, open_EncX
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.asn1.wrapper import decode_wrapper, message_body
from setmail.vectors.build import NOW, PAN, Parties
from tests.gateway_cast import (BANK, GW, Purchase, adjust_code, auth, auth_res, cap_batch,
                                capture, card, deliver, eur, fire, gw_state, instalments,
                                network, recurring, shop2)
from tests.ledger_check import assert_ledger_holds

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def tokens(baggage) -> tuple[bytes | None, bytes | None]:
    """(CapToken, AuthToken) of an AuthResBaggage, as the merchant keeps them."""
    cap, more = baggage["cap_token"], baggage["auth_token"]
    return (None if cap.native is None else cap.untag().dump(),
            None if more.native is None else more.untag().dump())


def authorize(p, net, pur, amount: int, auth_token: bytes | None = None, now=NOW, terms=None):
    """(code, approved amount, CapToken, AuthToken) of a first or subsequent AuthReq."""
    der = pur.auth_req(amount=eur(amount), auth_token=auth_token, now=now, terms=terms)
    code, data, baggage = auth_res(p, auth(net, der, now=now), pur.merchant)
    return (code, data["auth_res_payload"]["auth_header"]["auth_amt"]["amount"].native,
            *tokens(baggage))


def remaining_hold(net) -> int | None:
    """remaining_hold of the last IssCapReq the gateway sent (opened with the issuer's key)."""
    send = net.last_iss_cap
    opened = open_Enc(message_body(decode_wrapper(send.wrapper_der)).dump(), net.p.issuer_kex,
                      "IssCapReqTBE", "IssCapReqData")
    value = decode(IssCapReqData, opened.content)["remaining_hold"].native
    return None if value is None else value["amount"]


def watched(p) -> object:
    net = network(p)
    net.p = p

    def keep(frm, send):
        if send.message_type == "IssCapReq":
            net.last_iss_cap = send
        return send
    net.tamper = keep
    return net


def test_a_split_shipment_authorises_and_captures_in_parts(p):
    net, pur = watched(p), Purchase(p, amount=1234)
    code, amt, cap1, more = authorize(p, net, pur, 500)
    assert (code, amt) == ("approved", 500) and more is not None
    state = gw_state(net, pur)
    assert (state["split"], state["purch_amt"], state["auth_amt"]) == (True, 1234, 500)
    # the AuthToken is the gateway's own: the card sealed to itself, this purchase's counters
    opened = open_EncX(more, p.gateway_kex, "AuthTokenTBE", "AuthTokenTBS", "PANToken",
                       certs=(p.gateway_sig.cert,))
    data = decode(gw.AuthTokenData, opened.content)
    assert (data["recurring_count"].native, data["total_auth_amount"]["amount"].native,
            data["purch_amt"]["amount"].native) == (1, 500, 1234)
    assert cap_batch(p, capture(net, pur.cap_req(cap1, amount=eur(500))))[:2] == ("success", 500)
    assert remaining_hold(net) is None  # nothing of this authorisation is left to hold
    state = gw_state(net, pur)
    assert state["state"] == "CAPTURED" and "secret" not in state and PAN not in json.dumps(state)
    # the rest, with the AuthToken: the card comes from the token
    first_rrpid = pur.auth_rrpid
    code, amt, cap2, more2 = authorize(p, net, pur, 734, auth_token=more)
    assert (code, amt, more2) == ("approved", 734, None)  # the purchase amount is reached
    state = gw_state(net, pur)
    assert (state["state"], state["auth_amt"], state["auths"]) == ("AUTHORIZED", 1234, 2)
    assert state["_auth_rrpids"] == [first_rrpid.hex(), pur.auth_rrpid.hex()]
    assert cap_batch(p, capture(net, pur.cap_req(cap2, amount=eur(734)))) == ("success", 734, 1, 2)
    assert card(net) == {"held": 0, "posted": 1234}
    assert gw_state(net, pur)["state"] == "CAPTURED"
    # the token used once is stale
    assert authorize(p, net, pur, 1, auth_token=more)[0] == "piPreviouslyUsed"
    assert_ledger_holds(net)


def test_several_captures_stay_within_the_authorised_total(p):
    net, pur = watched(p), Purchase(p, amount=1234)
    _, _, cap1, _ = authorize(p, net, pur, 500)
    assert cap_batch(p, capture(net, pur.cap_req(cap1, amount=eur(300))))[:2] == ("success", 300)
    assert remaining_hold(net) == 200 and card(net) == {"held": 200, "posted": 300}
    assert gw_state(net, pur)["state"] == "AUTHORIZED" and gw_state(net, pur)["secret"]
    assert cap_batch(p, capture(net, pur.cap_req(cap1, amount=eur(201))))[0] == "amountTooLarge"
    assert cap_batch(p, capture(net, pur.cap_req(cap1, amount=eur(200))))[:2] == ("success", 200)
    assert card(net) == {"held": 0, "posted": 500}
    assert cap_batch(p, capture(net, pur.cap_req(cap1, amount=eur(1))))[0] == "duplicateRequest"
    assert_ledger_holds(net)


def test_a_split_rest_expires_but_its_captures_stay_refundable(p):
    net, pur = network(p), Purchase(p, amount=1234)
    _, _, cap1, _ = authorize(p, net, pur, 500)
    capture(net, pur.cap_req(cap1, amount=eur(300)))
    fire(net, "auth_expiry")
    state = gw_state(net, pur)
    assert (state["state"], state["auth_amt"], state["cap_amt"]) == ("EXPIRED", 300, 300)
    assert "secret" not in state and state["rev_code"] == "00"
    assert card(net) == {"held": 0, "posted": 300}
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", cap1, amount=300))
    assert adjust_code(p, done, "CredRes")[:2] == ("success", 300)
    assert gw_state(net, pur)["state"] == "EXPIRED"
    assert_ledger_holds(net)


def test_subsequent_authorisations_beyond_the_purchase_or_with_a_foreign_token(p):
    net, pur = network(p), Purchase(p, amount=1234)
    _, _, _, more = authorize(p, net, pur, 500)
    assert authorize(p, net, pur, 735, auth_token=more)[0] == "amountError"
    # shop2's AuthReq with shop's token lands on shop2's own (unknown) purchase
    thief = Purchase(p, xid=pur.xid, merchant=shop2(p))
    der = thief.auth_req(amount=eur(100), auth_token=more)
    code, _, _ = auth_res(p, auth(net, der), shop2(p))
    assert code == "piAuthMismatch" and gw_state(net, thief) is None
    # the same token still works for shop (nothing was spent)
    assert authorize(p, net, pur, 734, auth_token=more)[:2] == ("approved", 734)
    assert_ledger_holds(net)


def test_instalments_are_counted(p):
    terms = instalments(2)
    net, pur = network(p), Purchase(p, amount=1200, terms=terms)
    code, _, cap1, more = authorize(p, net, pur, 400)
    assert code == "approved" and more is not None
    assert gw_state(net, pur)["terms"]["instalments"] == 2
    capture(net, pur.cap_req(cap1, amount=eur(400)))
    # other terms than agreed
    assert authorize(p, net, pur, 400, auth_token=more,
                     terms=instalments(3))[0] == "installRecurMismatch"
    code, _, _, last = authorize(p, net, pur, 400, auth_token=more)
    assert code == "approved" and last is None  # the second of two: no token for a third
    assert gw_state(net, pur)["auths"] == 2
    assert_ledger_holds(net)


def test_the_merchant_must_repeat_the_terms_the_cardholder_signed(p):
    net, pur = network(p), Purchase(p, amount=1200, terms=instalments(2))
    assert authorize(p, net, pur, 400, terms=instalments(5))[0] == "installRecurMismatch"
    assert not net.states  # a decline of the gateway's: nothing spent
    assert_ledger_holds(net)


def test_recurring_payments_keep_their_frequency_and_expiry(p):
    terms = recurring(30, NOW + 90 * DAY)
    net, pur = network(p), Purchase(p, amount=1000, terms=terms)
    code, _, cap1, more = authorize(p, net, pur, 1000)
    assert code == "approved" and more is not None
    capture(net, pur.cap_req(cap1))
    assert "secret" not in gw_state(net, pur)  # between payments the gateway keeps no card
    assert authorize(p, net, pur, 1000, auth_token=more, now=NOW + 10 * DAY)[0] == \
        "recurringTooSoon"
    assert authorize(p, net, pur, 1001, auth_token=more, now=NOW + 30 * DAY)[0] == "amountError"
    code, _, cap2, more = authorize(p, net, pur, 1000, auth_token=more, now=NOW + 30 * DAY)
    assert code == "approved" and more is not None
    assert cap_batch(p, capture(net, pur.cap_req(cap2), now=NOW + 30 * DAY))[:2] == (
        "success", 1000)
    code, _, _, more = authorize(p, net, pur, 1000, auth_token=more, now=NOW + 60 * DAY)
    assert code == "approved" and more is not None  # 60 + 30 = the expiry: one more is allowed
    state = gw_state(net, pur)
    assert (state["auths"], state["auth_amt"], state["cap_amt"]) == (3, 3000, 2000)
    assert authorize(p, net, pur, 1000, auth_token=more, now=NOW + 91 * DAY)[0] == \
        "recurringExpired"
    assert net.shared[BANK][PAN]["posted"] == 2000
    assert_ledger_holds(net)


def test_a_declined_subsequent_authorisation_leaves_the_purchase_as_it_was(p):
    net, pur = network(p), Purchase(p, amount=1234)
    _, _, cap1, more = authorize(p, net, pur, 500)
    first = pur.auth_rrpid
    net.shared[BANK][PAN]["held"] = 499_900  # the card is nearly used up: 51
    code, amt, cap, again = authorize(p, net, pur, 734, auth_token=more)
    assert (code, amt, cap, again) == ("declined", 0, None, None)
    state = gw_state(net, pur)
    assert (state["state"], state["auth_amt"], state["auths"]) == ("AUTHORIZED", 500, 1)
    assert state["secret"]["pan"] == PAN  # the first part may still be captured
    assert any(k[2] == "auth_expiry" for k in net.timers if k[0] == GW)
    assert cap_batch(p, capture(net, pur.cap_req(cap1, amount=eur(500))))[0] == \
        "invalidCapToken"  # the declined AuthReq's RRPID names no authorisation
    done = capture(net, pur.cap_req(cap1, amount=eur(500), auth_rrpid=first))
    assert cap_batch(p, done)[0] == "success"


def test_a_late_approval_of_a_later_authorisation_is_reversed_alone(p):
    """The issuer answers a subsequent IssAuthReq only after the gateway gave up (the merchant
    has its noReply): the late approval is reversed down to what the purchase had."""
    from setmail.roles.base import Inbound
    net, pur = network(p, max_retries=0), Purchase(p, amount=1234)
    _, _, _, more = authorize(p, net, pur, 500)
    asked = []
    net.tamper = lambda frm, send: asked.append(send) or send
    bank = net.roles.pop(BANK)
    net.run(GW, Inbound("AuthReq", pur.auth_req(amount=eur(734), auth_token=more), "x"), NOW)
    done = fire(net, "retry")
    assert auth_res(p, done)[0] == "noReply"
    state = gw_state(net, pur)
    assert (state["state"], state["auth_amt"], state["auths"]) == ("AUTHORIZED", 500, 1)
    net.roles[BANK] = bank
    (late,) = [s for s in asked if s.message_type == "IssAuthReq"]
    net.run(BANK, Inbound("IssAuthReq", late.wrapper_der, GW), NOW)
    assert [t for _, _, t in net.log][-3:] == ["IssAuthRes", "IssRevReq", "IssRevRes"]
    state = gw_state(net, pur)
    assert (state["state"], state["auth_amt"], state["rev_code"], state["late_amt"]) == (
        "AUTHORIZED", 500, "00", 734)
    assert card(net)["held"] == 500 and "_late_reauth" not in state
    assert any(k[2] == "auth_expiry" for k in net.timers if k[0] == GW)
    assert_ledger_holds(net)
