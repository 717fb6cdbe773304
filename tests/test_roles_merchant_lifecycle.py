"""The merchant after the authorisation (docs/lifecycle.md), with real crypto: void (full and
partial), several captures, refunds and their reversal, capture reversal, split shipment with the
AuthToken, instalment terms in HOD, sale; the gateway's answers built by hand with the operators
the contract names, its refusals (SET's codes) recorded where the merchant shows them, and the
mail attacker's rules (only our gateway's answers to the outstanding request count, repeats are
absorbed).  Batches: tests/test_roles_merchant_batch.py."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.base import decode
from setmail.asn1.codec.fastder import encode
from setmail.crypto import der
from setmail.crypto.operators import Enc, EncB, open_Enc, open_EncB
from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.errors import ProtocolError
from setmail.roles.base import CancelTimer, Command, SetTimer
from setmail.roles.certs import path_check
from setmail.roles.purchase_msgs import Order, hod_input
from setmail.roles.refusal import error_wrapper
from setmail.roles.wire import unh, wrap
from setmail.vectors.build import Parties
from tests.test_roles_merchant import (GATEWAY, ORDER, T, Purchase, another_gateway, authorised,
                                       body_of, header_ids, merchant_of)

EUR_LIKE = 840


@pytest.fixture(scope="module")
def parties():
    return Parties(DEFAULT_SUITE)


@pytest.fixture(scope="module")
def gateway2(parties):
    return another_gateway(parties)


def usd(minor: int) -> dict:
    return {"currency": EUR_LIKE, "amount": minor, "amt_exp10": -2}


# --- the gateway, by hand -------------------------------------------------------------------------
@dataclass
class Opened:
    data: dict          # the request's plaintext, decode_native'd
    baggage: bytes | None
    rrpid: bytes
    signer: object


_REQUESTS = {
    "AuthReq": ("AuthReqTBE", "AuthReqTBS", "PI", gw.AuthReqData),
    "CapReq": ("CapReqTBE", "CapReqTBS", "CapTokenSeq", cap.CapReqData),
    "AuthRevReq": ("AuthRevReqTBE", "AuthRevReqTBS", "AuthRevReqBaggage", gw.AuthRevReqData),
    "CredReq": ("CredReqTBE", "CredReqTBS", "CapTokenSeq", cap.CredReqData),
    "CredRevReq": ("CredRevReqTBE", "CredRevReqTBS", "CapTokenSeq", cap.CredRevReqData),
    "CapRevReq": ("CapRevReqTBE", "CapRevReqTBS", "CapTokenSeq", cap.CapRevReqData),
    "BatchAdminReq": ("BatchAdminReqTBE", "BatchAdminReqData", None, cap.BatchAdminReqData),
}


def opened(p: Parties, send) -> Opened:
    """A merchant request as the gateway opens it (our key; a merchant signature, path mer)."""
    from setmail.asn1.codec.strict import decode_native
    assert send.to == GATEWAY, send.to
    tbe, tbs, bag, cls = _REQUESTS[send.message_type]
    check = path_check(p.tree.trust_store(), T, "mer")
    body = body_of(send).dump()
    env = (open_EncB(body, p.gateway_kex, tbe, tbs, bag, validate=check) if bag else
           open_Enc(body, p.gateway_kex, tbe, tbs, validate=check))
    from setmail.asn1.wrapper import decode_wrapper
    rrpid = decode_wrapper(send.wrapper_der)["message_header"]["rrpid"].native
    return Opened(decode_native(cls, env.content), env.baggage, rrpid, env.signed.signer)


def cap_token(p: Parties, xid: bytes, auth_rrpid: bytes, minor: int) -> bytes:
    data = gw.CapTokenData({"auth_rrpid": auth_rrpid, "auth_amt": usd(minor),
                            "token_opaque": xid}).dump()
    return Enc(p.gateway_sig, p.gateway_kex.cert, "CapTokenData", data, "CapTokenTBE")


def auth_token(p: Parties, xid: bytes) -> bytes:
    """An AuthToken as only the gateway reads it (its content does not matter to the merchant)."""
    return Enc(p.gateway_sig, p.gateway_kex.cert, "CapTokenData", gw.CapTokenData({
        "auth_rrpid": fresh(), "auth_amt": usd(1), "token_opaque": b"auth" + xid}).dump(),
        "AuthTokenTBE")


def auth_res(buy: Purchase, send, *, code="approved", amount=None, token=True,
             with_auth_token=False, sale=None, signer=None):
    """An AuthRes for the AuthReq ``send`` (first or later), with the tokens asked for."""
    p, req = buy.p, opened(buy.p, send)
    tags = req.data["auth_req_item"]["auth_tags"]
    asked = req.data["auth_req_item"]["auth_req_payload"]["auth_req_amt"]["amount"]
    held = (asked if amount is None else amount) if code == "approved" else 0
    payload = {"auth_header": {"auth_amt": usd(held), "auth_code": code, "response_data": {
        "resp_reason": "issuer", "log_ref_id": b"00" if code == "approved" else b"05",
        **({"auth_val_codes": {"approval_code": "A1B2C3"}} if code == "approved" else {})}}}
    if sale is not None:
        payload["cap_res_payload"] = sale
    from setmail.pki import thumbprint
    data = gw.AuthResData({"auth_tags": {"auth_rr_tags": tags["auth_rr_tags"],
                                         "trans_ids": pu.TransIDs.load(unh(buy.state["trans_ids"]))},
                           "brand_crl_identifier": p.tree.brand.bci, "auth_res_payload": payload,
                           "mer_thumb": thumbprint(p.merchant_sig.cert)})
    baggage = {}
    if code == "approved" and token:
        baggage["cap_token"] = gw.CapToken.load(cap_token(p, buy.xid, req.rrpid, held))
    if with_auth_token:
        baggage["auth_token"] = gw.AuthToken.load(auth_token(p, buy.xid))
    signer = signer or p.gateway_sig
    body = EncB(signer, p.merchant_kex.cert, "AuthResTBS", data.dump(), "AuthResBaggage",
                encode(gw.AuthResBaggage, baggage), "AuthResTBE",
                certs=(signer.cert, *signer.chain))
    return wrap("AuthRes", body, now=T, rrpid=req.rrpid, **buy.ids()), baggage


def cap_res(buy: Purchase, send, *, code="success", amount=None, batch=(1, None)):
    req = opened(buy.p, send)
    item = req.data["cap_item_seq"][0]
    asked = item["cap_payload"]["cap_req_amt"]["amount"]
    payload = {"cap_code": code, "cap_amt": usd(asked if amount is None else amount)}
    if code == "success" and batch is not None:
        payload.update(batch_id=batch[0], batch_sequence_num=batch[1] or fresh(2)[0] + 1)
    data = cap.CapResData({"cap_rr_tags": req.data["cap_rr_tags"], "cap_res_item_seq": [{
        "trans_ids": pu.TransIDs.load(unh(buy.state["trans_ids"])),
        "auth_rrpid": item["auth_rrpid"], "cap_res_payload": payload}]})
    body = Enc(buy.p.gateway_sig, buy.p.merchant_kex.cert, "CapResData", data.dump(), "CapResTBE")
    return wrap("CapRes", body, now=T, rrpid=req.rrpid, **buy.ids())


_RES = {"CredReq": ("CredRes", cap.CredResData, "CredResData", "CredResTBE"),
        "CredRevReq": ("CredRevRes", cap.CredRevResData, "CredRevResData", "CredRevResTBE"),
        "CapRevReq": ("CapRevRes", cap.CapRevResData, "CapRevResData", "CapRevResTBE")}


def cro_res(buy: Purchase, send, *, code="success", amount=None, batch=(1, 7), signer=None,
            rrpid=None):
    """CapRevRes/CredRes/CredRevRes for ``send``: one item for its one item."""
    req = opened(buy.p, send)
    item = req.data["cap_rev_or_cred_req_item_seq"][0]
    asked = item["cap_rev_or_cred_req_amt"]["amount"]
    payload = {"cap_rev_or_cred_code": code,
               "cap_rev_or_cred_act_amt": usd(asked if amount is None else amount)}
    if code == "success" and batch is not None:
        payload.update(batch_id=batch[0], batch_sequence_num=batch[1])
    type_name, cls, tbs, tbe = _RES[send.message_type]
    tags = dict(req.data["cap_rev_or_cred_rr_tags"])
    if rrpid is not None:
        tags["rrpid"] = rrpid
    data = cls({"cap_rev_or_cred_rr_tags": tags, "brand_crl_identifier": buy.p.tree.brand.bci,
                "cap_rev_or_cred_res_item_seq": [{
                    "trans_ids": pu.TransIDs.load(unh(buy.state["trans_ids"])),
                    "auth_rrpid": item["auth_rrpid"], "cap_rev_or_cred_res_payload": payload}]})
    body = Enc(signer or buy.p.gateway_sig, buy.p.merchant_kex.cert, tbs, data.dump(), tbe)
    return type_name, wrap(type_name, body, now=T, rrpid=req.rrpid, **buy.ids())


def auth_rev_res(buy: Purchase, send, *, code="approved", new=None, cap_token_new=None):
    """AuthRevRes: Enc form ([0]) without tokens, EncB form ([1]) with a new CapToken."""
    req = opened(buy.p, send)
    new = req.data["auth_new_amt"]["amount"] if new is None else new
    data = gw.AuthRevResData({"auth_rev_tags": {
        "auth_rev_rr_tags": req.data["auth_rev_tags"]["auth_rev_rr_tags"],
        "trans_ids": pu.TransIDs.load(unh(buy.state["trans_ids"]))},
        "brand_crl_identifier": buy.p.tree.brand.bci, "auth_rev_code": code,
        "auth_new_amt": usd(new)}).dump()
    p = buy.p
    if cap_token_new is None:
        enc = Enc(p.gateway_sig, p.merchant_kex.cert, "AuthRevResData", data, "AuthRevResTBE")
        body = der.implicit_constructed(0, der.content_of(enc))
    else:
        baggage = gw.AuthRevResBaggage({"cap_token_new": gw.CapToken.load(cap_token_new)}).dump()
        encb = EncB(p.gateway_sig, p.merchant_kex.cert, "AuthRevResTBS", data,
                    "AuthRevResBaggage", baggage, "AuthRevResTBEB")
        body = der.implicit_constructed(1, der.content_of(encb))
    return wrap("AuthRevRes", body, now=T, rrpid=req.rrpid, **buy.ids())


def command(buy: Purchase, name: str, **args):
    return buy.step(Command(name, {"xid": buy.key, **args}))


def captured(p, merchant=None, *, minor=None, batch=(1, 1)):
    """A purchase authorised and captured (``minor``: that much of it)."""
    buy, _, _ = authorised(p, merchant)
    cap_req = command(buy, "capture", **({"amount": minor} if minor else {})).sends[0]
    buy.deliver("CapRes", cap_res(buy, cap_req, batch=batch), sender=GATEWAY)
    return buy


def completion(buy: Purchase) -> tuple[str, dict]:
    out, _, _ = buy.inquire()
    (payload,) = buy.status(out.sends[0], "InqRes")["p_res_payload_seq"]
    return payload["completion_code"].native, payload["results"].native


# --- void -----------------------------------------------------------------------------------------
def test_a_full_void_names_the_authorisation_and_ends_voided(parties):
    buy, auth_out, baggage = authorised(parties)
    auth_req = buy.sent[1]
    out = command(buy, "void")
    (send,) = out.sends
    assert send.message_type == "AuthRevReq" and buy.state["state"] == "AUTHREV_SENT"
    assert header_ids(send) == buy.ids() and buy.state["base"] == "AUTHORIZED"
    req = opened(parties, send)
    assert req.signer == parties.merchant_sig.cert
    # the authorisation as asked and as answered, byte for byte
    assert req.data["auth_req_data"] == opened(parties, auth_req).data
    header = req.data["auth_res_payload"]["auth_header"]
    assert (header["auth_code"], header["auth_amt"]) == ("approved", usd(ORDER.amount))
    assert gw.AuthResPayload(req.data["auth_res_payload"]).dump() == unh(
        buy.state["auth_res_payload"])
    assert req.data["auth_new_amt"] == usd(0)
    assert req.data["auth_rev_tags"]["auth_rev_rr_tags"]["rrpid"] == req.rrpid
    bag = decode(gw.AuthRevReqBaggage, req.baggage)
    assert bag["cap_token"].untag().dump() == decode(gw.AuthResBaggage, baggage)[
        "cap_token"].untag().dump()
    out = buy.deliver("AuthRevRes", auth_rev_res(buy, send), sender=GATEWAY)
    s = buy.state
    assert s["state"] == "VOIDED" and s["auth_amt"] == 0 and "cap_token" not in s
    assert s["result"]["request"] == "AuthRevReq" and s["result"]["code"] == "approved"
    assert CancelTimer("expire") in out.timers and out.peer == GATEWAY and out.sends == ()
    assert completion(buy)[0] == "orderRejected"
    with pytest.raises(ProtocolError):
        command(buy, "capture")


def test_a_partial_void_keeps_the_rest_authorised_with_the_new_cap_token(parties):
    buy, _, _ = authorised(parties)
    send = command(buy, "void", amount=1000).sends[0]
    assert opened(parties, send).data["auth_new_amt"] == usd(1000)
    new_token = cap_token(parties, buy.xid, unh(buy.state["auth_rrpid"]), 1000)
    buy.deliver("AuthRevRes", auth_rev_res(buy, send, cap_token_new=new_token), sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["auth_amt"]) == ("AUTHORIZED", 1000) and s["cap_token"] == \
        new_token.hex()
    cap_req = command(buy, "capture").sends[0]  # the default: what is still authorised
    req = opened(parties, cap_req)
    assert req.data["cap_item_seq"][0]["cap_payload"]["cap_req_amt"] == usd(1000)
    assert decode(gw.CapTokenSeq, req.baggage)[0].dump() == new_token


@pytest.mark.parametrize("code, state, advice", [
    ("amountError", "AUTHORIZED", None), ("noReply", "AUTHORIZED", None),
    ("authExpired", "EXPIRED", None), ("alreadyCaptured", "AUTHORIZED", "refund"),
])
def test_a_refused_void_says_why_and_where_it_leaves_the_purchase(parties, code, state, advice):
    buy, _, _ = authorised(parties)
    send = command(buy, "void", amount=100).sends[0]
    buy.deliver("AuthRevRes", auth_rev_res(buy, send, code=code, new=ORDER.amount),
                sender=GATEWAY)
    s = buy.state
    assert s["state"] == state and s["result"]["code"] == code
    assert (advice in s.get("advice", "")) if advice else "advice" not in s
    if state == "AUTHORIZED":
        assert s["refusals"][-1]["code"] == code and s["auth_amt"] == ORDER.amount


def test_void_after_capture_goes_to_the_gateway_and_tells_to_refund(parties):
    buy = captured(parties)
    send = command(buy, "void").sends[0]
    assert buy.state["state"] == "AUTHREV_SENT" and buy.state["base"] == "CAPTURED"
    buy.deliver("AuthRevRes", auth_rev_res(buy, send, code="alreadyCaptured", new=ORDER.amount),
                sender=GATEWAY)
    assert buy.state["state"] == "CAPTURED" and "refund" in buy.state["advice"]
    with pytest.raises(ProtocolError):
        command(buy, "void", amount=-1)


# --- several captures -----------------------------------------------------------------------------
def test_several_captures_within_the_authorised_total(parties):
    buy, _, _ = authorised(parties)
    first = command(buy, "capture", amount=500).sends[0]
    buy.deliver("CapRes", cap_res(buy, first, batch=(1, 1)), sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["captured"], s["cap_amt"]) == ("CAPTURED", 500, 500)
    assert s["captures"][0]["batch_id"] == 1 and s["captures"][0]["seq"] == 1
    second = command(buy, "capture").sends[0]  # the rest, by default
    assert opened(parties, second).data["cap_item_seq"][0]["cap_payload"]["cap_req_amt"] == \
        usd(ORDER.amount - 500)
    assert buy.state["state"] == "CAP_SENT" and buy.state["base"] == "CAPTURED"
    assert completion(buy)[0] == "capturePerformed"  # while the second is in flight
    buy.deliver("CapRes", cap_res(buy, second, batch=(1, 2)), sender=GATEWAY)
    assert buy.state["captured"] == ORDER.amount and len(buy.state["captures"]) == 2
    code, results = completion(buy)
    assert code == "capturePerformed" and results["cap_status"]["cap_ratio"] == {
        "numerator": ORDER.amount, "denominator": ORDER.amount}
    out = command(buy, "capture")
    assert out.refused and "everything authorised" in out.refused and out.sends == ()
    # asked anyway, the gateway decides: amountTooLarge leaves it CAPTURED, noted
    third = command(buy, "capture", amount=1).sends[0]
    buy.deliver("CapRes", cap_res(buy, third, code="amountTooLarge", amount=0), sender=GATEWAY)
    s = buy.state
    assert s["state"] == "CAPTURED" and s["captured"] == ORDER.amount
    assert s["refusals"][-1]["code"] == "amountTooLarge" and s["result"]["code"] == \
        "amountTooLarge"
    items = buy.shared["batches"]["1"]["items"]
    assert items == [[1, "capture", buy.key, 500], [2, "capture", buy.key, ORDER.amount - 500]]


# --- refunds --------------------------------------------------------------------------------------
def test_refunds_up_to_the_captured_amount(parties):
    buy = captured(parties, batch=(1, 1))
    send = command(buy, "refund", amount=200).sends[0]
    assert buy.state["state"] == "CRED_SENT"
    req = opened(parties, send)
    (item,) = req.data["cap_rev_or_cred_req_item_seq"]
    assert item["auth_rrpid"].hex() == buy.state["auth_rrpid"]
    assert item["cap_payload"]["cap_req_amt"] == usd(ORDER.amount)
    assert item["cap_payload"]["cap_date"] == T and item["cap_rev_or_cred_req_amt"] == usd(200)
    assert [t.dump().hex() for t in decode(gw.CapTokenSeq, req.baggage)] == [buy.state["cap_token"]]
    buy.deliver(*cro_res(buy, send, batch=(1, 2)), sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["credited"], s["completion"]) == ("PARTLY_REFUNDED", 200,
                                                            "creditPerformed")
    code, results = completion(buy)
    assert code == "creditPerformed" and results["cred_status_seq"] == [
        {"credit_date": T, "credit_code": "success",
         "credit_ratio": {"numerator": 200, "denominator": ORDER.amount}}]
    send = command(buy, "refund").sends[0]  # what is still refundable, by default
    assert opened(parties, send).data["cap_rev_or_cred_req_item_seq"][0][
        "cap_rev_or_cred_req_amt"] == usd(ORDER.amount - 200)
    buy.deliver(*cro_res(buy, send, batch=(1, 3)), sender=GATEWAY)
    assert buy.state["state"] == "REFUNDED" and buy.state["credited"] == ORDER.amount
    out = command(buy, "refund")
    assert out.refused and "nothing is left" in out.refused
    # a second full refund, asked anyway: the gateway's code, nothing credited twice
    send = command(buy, "refund", amount=ORDER.amount).sends[0]
    buy.deliver(*cro_res(buy, send, code="amountTooLarge", amount=0), sender=GATEWAY)
    s = buy.state
    assert s["state"] == "REFUNDED" and s["credited"] == ORDER.amount
    assert s["result"]["code"] == "amountTooLarge" and s["refusals"][-1]["message"] == "CredRes"
    assert [i[1:] for i in buy.shared["batches"]["1"]["items"]] == [
        ["capture", buy.key, ORDER.amount], ["credit", buy.key, 200],
        ["credit", buy.key, ORDER.amount - 200]]


def test_refund_reversal_takes_the_latest_credit_back(parties):
    buy = captured(parties, batch=(1, 1))
    for n, minor in ((2, 300), (3, 400)):
        buy.deliver(*cro_res(buy, command(buy, "refund", amount=minor).sends[0],
                             batch=(1, n)), sender=GATEWAY)
    send = command(buy, "refund_reverse").sends[0]
    assert send.message_type == "CredRevReq" and buy.state["state"] == "CREDREV_SENT"
    item = opened(parties, send).data["cap_rev_or_cred_req_item_seq"][0]
    assert item["cap_rev_or_cred_req_amt"] == usd(400)
    buy.deliver(*cro_res(buy, send, batch=(1, 3)), sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["credited"]) == ("PARTLY_REFUNDED", 300)
    assert s["credits"][1]["reversed"] and not s["credits"][0].get("reversed")
    assert [i[0] for i in buy.shared["batches"]["1"]["items"]] == [1, 2]
    send = command(buy, "refund_reverse").sends[0]
    buy.deliver(*cro_res(buy, send, code="originalProcessed", amount=0), sender=GATEWAY)
    assert buy.state["state"] == "PARTLY_REFUNDED" and "no longer" in buy.state["advice"]
    send = command(buy, "refund_reverse").sends[0]
    buy.deliver(*cro_res(buy, send, batch=(1, 2)), sender=GATEWAY)
    assert (buy.state["state"], buy.state["credited"]) == ("CAPTURED", 0)
    assert "advice" not in buy.state
    with pytest.raises(ProtocolError):  # no credit left: not even in the table
        command(buy, "refund_reverse")


# --- capture reversal -----------------------------------------------------------------------------
def test_capture_reversal_returns_to_authorized_and_a_settled_one_sends_to_refund(parties):
    buy = captured(parties, batch=(1, 1))
    send = command(buy, "capture_reverse").sends[0]
    assert send.message_type == "CapRevReq" and buy.state["state"] == "CAPREV_SENT"
    item = opened(parties, send).data["cap_rev_or_cred_req_item_seq"][0]
    assert item["cap_payload"] == {"cap_date": T, "cap_req_amt": usd(ORDER.amount),
                                   "auth_req_item": None, "auth_res_payload": None,
                                   "sale_detail": None, "c_pay_extensions": None}
    assert item["cap_rev_or_cred_req_amt"] == usd(ORDER.amount)
    out = buy.deliver(*cro_res(buy, send, batch=(1, 1)), sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["captured"]) == ("AUTHORIZED", 0) and s["captures"][0]["reversed"]
    assert any(isinstance(t, SetTimer) and t.name == "expire" for t in out.timers)
    assert buy.shared["batches"]["1"]["items"] == [] and completion(buy)[0] == \
        "authorizationPerformed"
    again = command(buy, "capture").sends[0]  # the CapToken stays valid
    buy.deliver("CapRes", cap_res(buy, again, batch=(2, 1)), sender=GATEWAY)
    send = command(buy, "capture_reverse").sends[0]
    buy.deliver(*cro_res(buy, send, code="originalProcessed", amount=0), sender=GATEWAY)
    s = buy.state
    assert s["state"] == "CAPTURED" and "refund" in s["advice"]
    assert s["result"] == {"request": "CapRevReq", "rrpid": s["result"]["rrpid"],
                           "code": "originalProcessed", "amount": 0, "at": T.isoformat()}


def test_capture_reversal_is_not_offered_once_credited(parties):
    buy = captured(parties)
    buy.deliver(*cro_res(buy, command(buy, "refund", amount=100).sends[0]), sender=GATEWAY)
    with pytest.raises(ProtocolError):
        command(buy, "capture_reverse")


# --- split shipment, instalments, sale ------------------------------------------------------------
def test_split_shipment_authorises_the_rest_with_the_auth_token(parties):
    buy = Purchase(parties, merchant_of(parties))
    buy.order(ship_now=500)
    buy.pinit_req()
    auth_req = buy.preq().sends[0]
    assert opened(parties, auth_req).data["auth_req_item"]["auth_req_payload"][
        "auth_req_amt"] == usd(500)
    der_, baggage = auth_res(buy, auth_req, with_auth_token=True)
    buy.deliver("AuthRes", der_, sender=GATEWAY)
    token = baggage["auth_token"].dump()
    assert buy.state["auth_token"] == token.hex() and buy.state["auth_amt"] == 500
    first = command(buy, "capture").sends[0]
    buy.deliver("CapRes", cap_res(buy, first, batch=(1, 1)), sender=GATEWAY)
    send = command(buy, "authorize").sends[0]  # the rest of the order, by default
    assert send.message_type == "AuthReq" and buy.state["state"] == "REAUTH_SENT"
    req = opened(parties, send)
    item = req.data["auth_req_item"]
    assert item["check_digests"] is None and item["auth_req_payload"]["subsequent_auth_ind"]
    assert item["auth_req_payload"]["auth_req_amt"] == usd(ORDER.amount - 500)
    pi = decode(pu.PI, req.baggage)
    assert pi.name == "auth_token" and pi.chosen.untag().dump() == token
    assert completion(buy)[0] == "capturePerformed"
    der_, baggage = auth_res(buy, send)  # no AuthToken: nothing more may be authorised
    buy.deliver("AuthRes", der_, sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["auth_amt"], s["auth_rrpid"]) == ("CAPTURED", ORDER.amount,
                                                            req.rrpid.hex())
    assert "auth_token" not in s and s["cap_token"] == baggage["cap_token"].dump().hex()
    assert len(buy.sent) and [x.message_type for x in buy.sent].count("PRes") == 1
    rest = command(buy, "capture").sends[0]
    req = opened(parties, rest)
    assert req.data["cap_item_seq"][0]["auth_rrpid"] == unh(s["auth_rrpid"])
    assert req.data["cap_item_seq"][0]["cap_payload"]["cap_req_amt"] == usd(ORDER.amount - 500)
    buy.deliver("CapRes", cap_res(buy, rest, batch=(1, 2)), sender=GATEWAY)
    assert buy.state["captured"] == ORDER.amount
    out = command(buy, "authorize", amount=1)
    assert out.refused and "no AuthToken" in out.refused


def test_a_refused_later_authorisation_keeps_the_purchase_and_its_token(parties):
    buy = Purchase(parties, merchant_of(parties))
    buy.order(ship_now=500)
    buy.pinit_req()
    der_, baggage = auth_res(buy, buy.preq().sends[0], with_auth_token=True)
    buy.deliver("AuthRes", der_, sender=GATEWAY)
    send = command(buy, "authorize", amount=5000).sends[0]
    buy.deliver("AuthRes", auth_res(buy, send, code="amountError")[0], sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["auth_amt"]) == ("AUTHORIZED", 500) and s["auth_token"]
    assert s["result"]["code"] == "amountError" and s["refusals"][-1]["code"] == "amountError"


def test_instalment_terms_are_in_the_hod_and_the_auth_req(parties):
    terms = ("instalments", 3)
    buy = Purchase(parties, merchant_of(parties))
    buy.order(instalments=3)
    buy.pinit_req()
    out = buy.preq()  # a wallet that hashed no terms: not what the merchant sold
    assert out.sends[0].message_type == "Error" and buy.state["state"] == "PINIT_SENT"
    auth_req = buy.preq(order=Order(ORDER.description, ORDER.amount, ORDER.currency,
                                    terms=terms)).sends[0]
    payload = opened(parties, auth_req).data["auth_req_item"]["auth_req_payload"]
    assert payload["install_recur_data"]["install_recur_ind"] == 3
    assert payload["auth_req_amt"] == usd(ORDER.amount // 3)  # the first of three parts
    der_, _ = auth_res(buy, auth_req, with_auth_token=True)
    buy.deliver("AuthRes", der_, sender=GATEWAY)
    amounts = []
    for _ in range(2):
        send = command(buy, "authorize").sends[0]
        amounts.append(opened(parties, send).data["auth_req_item"]["auth_req_payload"][
            "auth_req_amt"]["amount"])
        buy.deliver("AuthRes", auth_res(buy, send, with_auth_token=True)[0], sender=GATEWAY)
    assert amounts == [ORDER.amount // 3, ORDER.amount - 2 * (ORDER.amount // 3)]
    assert buy.state["auth_amt"] == ORDER.amount and buy.state["auth_count"] == 3
    assert decode(pu.HODInput, hod_input(Order("x", 1, terms=terms), bytes(32)))[
        "install_recur_data"]["install_recur_ind"].native == 3


def test_recurring_terms_and_bad_terms(parties):
    buy = Purchase(parties, merchant_of(parties))
    buy.order(recurring={"days": 30, "until": "20301231"})
    assert buy.state["terms"] == ["recurring", 30, "20301231"]
    buy.pinit_req()
    terms = ("recurring", 30, "20301231")
    auth_req = buy.preq(order=Order(ORDER.description, ORDER.amount, ORDER.currency,
                                    terms=terms)).sends[0]
    payload = opened(parties, auth_req).data["auth_req_item"]["auth_req_payload"]
    assert payload["auth_req_amt"] == usd(ORDER.amount)  # each payment's
    assert payload["install_recur_data"]["install_recur_ind"] == {
        "recurring_frequency": 30,
        "recurring_expiry": dt.datetime(2030, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)}
    der_, _ = auth_res(buy, auth_req, with_auth_token=True)
    buy.deliver("AuthRes", der_, sender=GATEWAY)
    send = command(buy, "authorize").sends[0]
    buy.deliver("AuthRes", auth_res(buy, send, code="recurringTooSoon")[0], sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["auth_amt"], s["result"]["code"]) == (
        "AUTHORIZED", ORDER.amount, "recurringTooSoon") and s["auth_token"]
    x = Purchase(parties, merchant_of(parties))
    for bad in ({"instalments": 1}, {"recurring": {"days": 0, "until": "20301231"}},
                {"recurring": {"days": 30, "until": "2030-12-31"}},
                {"instalments": 2, "recurring": {"days": 1, "until": "20301231"}},
                {"ship_now": ORDER.amount + 1}):
        with pytest.raises(ProtocolError):
            x.order(**bad)


def test_a_sale_is_captured_by_its_auth_res(parties):
    buy = Purchase(parties, merchant_of(parties, sale=True))
    auth_req = buy.to_authorisation().sends[0]
    data = opened(parties, auth_req).data
    assert data["capture_now"] is True and data["sale_detail"]["merchant_order_num"] == \
        buy.key[:32]
    sale = {"cap_code": "success", "cap_amt": usd(ORDER.amount), "batch_id": 4,
            "batch_sequence_num": 9}
    out = buy.deliver("AuthRes", auth_res(buy, auth_req, sale=sale)[0], sender=GATEWAY)
    s = buy.state
    assert (s["state"], s["captured"], s["cap_code"]) == ("CAPTURED", ORDER.amount, "success")
    assert s["captures"] == [{"rrpid": s["auth_rrpid"], "amount": ORDER.amount,
                              "date": T.isoformat(), "batch_id": 4, "seq": 9}]
    (pres,) = out.sends
    assert buy.status(pres)["p_res_payload_seq"][0]["completion_code"].native == \
        "capturePerformed"
    assert buy.shared["batches"]["4"]["items"] == [[9, "capture", buy.key, ORDER.amount]]
    failed = Purchase(parties, merchant_of(parties, sale=True))
    auth_req = failed.to_authorisation().sends[0]
    sale = {"cap_code": "unspecifiedFailure", "cap_amt": usd(0)}
    failed.deliver("AuthRes", auth_res(failed, auth_req, sale=sale)[0], sender=GATEWAY)
    assert failed.state["state"] == "AUTHORIZED" and failed.state["cap_code"] == \
        "unspecifiedFailure"


# --- the mail attacker ----------------------------------------------------------------------------
def test_answers_from_another_gateway_or_naming_another_request_change_nothing(parties,
                                                                              gateway2):
    buy = captured(parties)
    send = command(buy, "refund", amount=100).sends[0]
    before = dict(buy.state)
    for kw in ({"signer": gateway2}, {"rrpid": fresh()}):
        out = buy.deliver(*cro_res(buy, send, **kw), sender=GATEWAY)
        assert out.refused and out.sends == () and buy.state["out"] == before["out"]
        assert buy.state["state"] == "CRED_SENT"
    type_name, der_ = cro_res(buy, send)
    buy.deliver(type_name, der_, sender=GATEWAY)
    assert buy.state["credited"] == 100
    settled = dict(buy.state)
    out = buy.deliver(type_name, der_, sender=GATEWAY)  # a repeat is absorbed
    assert out.refused and "outstanding" in out.refused and buy.state == settled
    # a CapRevRes for a CredReq is no answer either
    send = command(buy, "refund", amount=100).sends[0]
    _, der_ = cro_res(buy, send)
    out = buy.deliver("CapRevRes", der_, sender=GATEWAY)
    assert out.refused and buy.state["state"] == "CRED_SENT"


def test_only_our_gateways_error_naming_the_exact_request_ends_it(parties, gateway2):
    buy = captured(parties)
    send = command(buy, "refund", amount=100).sends[0]
    forged = error_wrapper("unknownXID", send.wrapper_der, now=T, signer=gateway2)
    out = buy.deliver("Error", forged)
    assert out.refused and buy.state["state"] == "CRED_SENT" and out.timers
    genuine = error_wrapper("unknownXID", send.wrapper_der, now=T, signer=parties.gateway_sig)
    out = buy.deliver("Error", genuine)
    s = buy.state
    assert s["state"] == "CAPTURED" and s["result"]["code"] == "unknownXID" and "out" not in s


def test_no_answer_returns_an_adjustment_to_where_it_started(parties):
    buy = captured(parties, merchant_of(parties, max_retries=1))
    send = command(buy, "refund", amount=100).sends[0]
    (again,) = buy.timer("retry").sends
    assert again.wrapper_der == send.wrapper_der
    buy.timer("retry")
    s = buy.state
    assert s["state"] == "CAPTURED" and s["result"]["code"] == "noReply"
    assert s["refusals"][-1]["message"] == "CredReq" and "adjust_amt" not in s
    late = cro_res(buy, send)  # the gateway's answer after we gave up: absorbed, not booked
    out = buy.deliver(*late, sender=GATEWAY)
    assert out.refused and buy.state == s
