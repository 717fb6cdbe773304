"""The message builders switched to fastder give the bytes their former asn1crypto construction
gave (kept here, ``old_*``, as the reference), for every shape they can produce, and build no
asn1crypto object on the way (the BrandCRLIdentifier the gateway is configured with aside)."""
from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import cms, core

from setmail.asn1 import capture as cap, gateway as gw, issuer as iss, purchase as pu
from setmail.asn1.base import DetachedDigest, RRTags, TransIDs
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.roles import gateway_checks as gc, merchant_msgs as mm, network_msgs as nm
from setmail.roles import purchase_msgs as pm
from tests.asn1_samples import bci, dd, enveloped, rr_tags, trans_ids
from tests.test_fastder import no_asn1crypto_objects

NOW = dt.datetime(2026, 11, 27, 9, 5, 7, 123456, tzinfo=dt.timezone.utc)
IDS = TransIDs(trans_ids()).dump()
DD_OI, DD_HOD = DetachedDigest(dd("OIData")).dump(), DetachedDigest(dd("HODInput")).dump()
BCI = bci()
TOKEN = enveloped("CapTokenTBE", gw.CapToken).dump()
ACQ = enveloped("AcqCardCodeMsgTBE", pu.AcqCardMsg).dump()
ORDER = pm.Order("1 teapot", 1234, 978, -2)


def merchant_state(name: str, **more) -> dict:
    state = {"state": name, "trans_ids": IDS.hex(), "currency": 978, "amount": 1234,
             "amt_exp10": -2, "auth_rrpid": "aa" * 32,
             "pinit_req": {"rrpid": "bb" * 32, "chall_c": "cc" * 32}}
    if name in ("AUTHORIZED", "CAPTURED", "DECLINED"):
        state.update(auth_code="approved" if name != "DECLINED" else "declined",
                     auth_date=NOW.replace(microsecond=0).isoformat(), auth_amt=1200)
    if name == "CAPTURED":
        state.update(cap_date=NOW.replace(microsecond=0).isoformat(), cap_code="success",
                     cap_amt=1000)
    return {**state, **more}


# --- the former constructions ----------------------------------------------------------------------
def old_bci(bci_der):
    return {} if bci_der is None else {"brand_crl_identifier": BrandCRLIdentifier.load(bci_der)}


def old_pinit_res_data(state, *, chall_m, pe_thumb, bci_der):
    pinit = state["pinit_req"]
    return pu.PInitResData({
        "trans_ids": TransIDs.load(mm.unh(state["trans_ids"])), "rrpid": mm.unh(pinit["rrpid"]),
        "chall_c": mm.unh(pinit["chall_c"]), "chall_m": chall_m, "pe_thumb": pe_thumb,
        **old_bci(bci_der)}).dump()


def old_auth_req_data(state, *, rrpid, mer_id, now, h_oi_data, hod2):
    return gw.AuthReqData({"auth_req_item": {
        "auth_tags": {"auth_rr_tags": mm.rr_tags(rrpid, mer_id, now),
                      "trans_ids": TransIDs.load(mm.unh(state["trans_ids"]))},
        "check_digests": {"h_oi_data": pu.DetachedDigest.load(h_oi_data),
                          "hod2": pu.DetachedDigest.load(hod2)},
        "auth_req_payload": {"subsequent_auth_ind": False, "auth_req_amt": mm.amount(state),
                             "request_card_type_ind": False,
                             "merch_data": gw.MerchData.load(b"\x30\x00")}}}).dump()


def old_cap_req_data(state, *, rrpid, mer_id, now, minor):
    return cap.CapReqData({
        "cap_rr_tags": mm.rr_tags(rrpid, mer_id, now),
        "cap_item_seq": [{"trans_ids": TransIDs.load(mm.unh(state["trans_ids"])),
                          "auth_rrpid": mm.unh(state["auth_rrpid"]),
                          "cap_payload": {"cap_date": mm.utc(now),
                                          "cap_req_amt": mm.amount(state, minor)}}]}).dump()


def old_p_res_data(state, *, rrpid, chall_c, bci_der):
    results: dict = {}
    if state.get("acq_card_msg"):
        results["acq_card_msg"] = pu.AcqCardMsg.load(mm.unh(state["acq_card_msg"]))
    if state.get("auth_code"):
        results["auth_status"] = {"auth_date": dt.datetime.fromisoformat(state["auth_date"]),
                                  "auth_code": state["auth_code"],
                                  "auth_ratio": pm.ratio(state["auth_amt"], state["amount"])}
    if state["state"] == "CAPTURED":
        results["cap_status"] = {"cap_date": dt.datetime.fromisoformat(state["cap_date"]),
                                 "cap_code": state["cap_code"],
                                 "cap_ratio": pm.ratio(state["cap_amt"], state["amount"])}
    payload: dict = {"completion_code": mm.COMPLETION[state["state"]]}
    if results:
        payload["results"] = results
    return pu.PResData({"trans_ids": TransIDs.load(mm.unh(state["trans_ids"])), "rrpid": rrpid,
                        "chall_c": chall_c, "p_res_payload_seq": [payload],
                        **old_bci(bci_der)}).dump()


def old_auth_res_data(bci_, reply, *, code, amount, iso=None, approval=None):
    response: dict = {}
    if approval:
        response["auth_val_codes"] = {"approval_code": approval}
    if iso:
        response.update(resp_reason="issuer", log_ref_id=iso.encode())
    data = gw.AuthResData({
        "auth_tags": gw.AuthTags.load(mm.unh(reply["auth_tags"])),
        "auth_res_payload": {"auth_header": {
            "auth_amt": dict(amount), "auth_code": code, "response_data": gw.ResponseData(
                response) if response else gw.ResponseData.load(b"\x30\x00")}},
        "mer_thumb": mm.unh(reply["mer_thumb"])})
    if bci_ is not None:
        data["brand_crl_identifier"] = bci_
    return data.dump()


def old_auth_res_baggage(token=None, acq=None):
    baggage = {}
    if token is not None:
        baggage["cap_token"] = gw.CapToken.load(token)
    if acq is not None:
        baggage["acq_card_msg"] = pu.AcqCardMsg.load(acq)
    return gw.AuthResBaggage(baggage).dump() if baggage else b"\x30\x00"


def old_cap_res_data(bci_, reply, *, code, amount):
    data = cap.CapResData({
        "cap_rr_tags": RRTags.load(mm.unh(reply["cap_rr_tags"])),
        "cap_res_item_seq": [{"trans_ids": TransIDs.load(mm.unh(reply["trans_ids"])),
                              "auth_rrpid": mm.unh(reply["auth_rrpid"]),
                              "cap_res_payload": {"cap_code": code, "cap_amt": dict(amount)}}]})
    if bci_ is not None:
        data["brand_crl_identifier"] = bci_
    return data.dump()


def old_payload(kind, fields):
    mti, cls = nm.KINDS[kind]
    return cls({"mti": mti, **fields}).dump()


AMOUNT = {"currency": 978, "amount": 1200, "amt_exp10": -2}
REPLY = {"auth_tags": gw.AuthTags({"auth_rr_tags": rr_tags(), "trans_ids": trans_ids(),
                                   "auth_ret_num": 2}).dump().hex(),
         "mer_thumb": "7e" * 32, "cap_rr_tags": RRTags(rr_tags()).dump().hex(),
         "trans_ids": IDS.hex(), "auth_rrpid": "52" * 32}
ISS_FIELDS = {
    "IssAuthReq": {"stan": 123456, "rrn": "58aa12345678", "processing_code": "000000",
                   "pan": "4111111111111111", "card_expiry": "202912", "amount": AMOUNT,
                   "acquirer_id": "41111111", "merchant_id": "MER-0001",
                   "transmitted": NOW.replace(microsecond=0), "xid": b"x" * 20},
    "IssAuthRes": {"stan": 123456, "rrn": "58aa12345678", "response_code": "00",
                   "amount": AMOUNT, "transmitted": NOW.replace(microsecond=0),
                   "xid": b"x" * 20, "approval_code": "A1B2C3"},
    "IssCapReq": {"stan": 123457, "rrn": "58aa12345678", "pan": "4111111111111111",
                  "amount": AMOUNT, "approval_code": "A1B2C3", "merchant_id": "MER-0001",
                  "transmitted": NOW.replace(microsecond=0), "xid": b"x" * 20},
    "IssCapRes": {"stan": 123457, "rrn": "58aa12345678", "response_code": "13",
                  "amount": {**AMOUNT, "amount": 0}, "transmitted": NOW, "xid": b"x" * 20},
}

# (label, new builder, old construction, kwargs): every shape the builders produce
STATES = ["PINIT_SENT", "AUTH_SENT", "AUTHORIZED", "CAPTURED", "DECLINED", "REJECTED"]
CASES = [
    *[(f"pinit_res_data/{b is not None}", mm.pinit_res_data, old_pinit_res_data,
       dict(state=merchant_state("PINIT_SENT"), chall_m=b"m" * 32, pe_thumb=b"p" * 32, bci_der=b))
      for b in (None, BCI.dump())],
    ("auth_req_data", mm.auth_req_data, old_auth_req_data,
     dict(state=merchant_state("PINIT_SENT"), rrpid=b"r" * 32, mer_id="MER-0001", now=NOW,
          h_oi_data=DD_OI, hod2=DD_HOD)),
    ("cap_req_data", mm.cap_req_data, old_cap_req_data,
     dict(state=merchant_state("AUTHORIZED"), rrpid=b"r" * 32, mer_id="MER-0001", now=NOW,
          minor=1000)),
    *[(f"p_res_data/{s}/{acq}/{b is not None}", mm.p_res_data, old_p_res_data,
       dict(state=merchant_state(s, **({"acq_card_msg": ACQ.hex()} if acq else {})),
            rrpid=b"r" * 32, chall_c=b"c" * 32, bci_der=b))
      for s in STATES for acq in (False, True) for b in (None, BCI.dump())],
    *[(f"auth_res_data/{iso}/{appr}/{b is not None}", gc.auth_res_data, old_auth_res_data,
       dict(bci_=b, reply=REPLY, code=code, amount=AMOUNT, iso=iso, approval=appr))
      for code, iso, appr in (("approved", "00", "A1B2C3"), ("declined", "51", None),
                              ("noReply", None, None), ("systemError", None, "X"))
      for b in (None, BCI)],
    *[(f"auth_res_baggage/{t is not None}/{a is not None}", gc.auth_res_baggage,
       old_auth_res_baggage, dict(token=t, acq=a)) for t in (None, TOKEN) for a in (None, ACQ)],
    *[(f"cap_res_data/{code}/{b is not None}", gc.cap_res_data, old_cap_res_data,
       dict(bci_=b, reply=REPLY, code=code, amount=AMOUNT))
      for code in ("success", "amountTooLarge") for b in (None, BCI)],
    *[(f"payload/{kind}", nm.payload, old_payload, dict(kind=kind, fields=fields))
      for kind, fields in ISS_FIELDS.items()],
    ("payload/IssAuthRes-declined", nm.payload, old_payload,
     dict(kind="IssAuthRes", fields={k: v for k, v in ISS_FIELDS["IssAuthRes"].items()
                                     if k != "approval_code"})),
]


def _call(function, kwargs):
    if function in (gc.auth_res_data, gc.cap_res_data) or function in (
            old_auth_res_data, old_cap_res_data):
        kwargs = dict(kwargs)
        return function(kwargs.pop("bci_"), kwargs.pop("reply"), **kwargs)
    if function in (nm.payload, old_payload):
        return function(kwargs["kind"], kwargs["fields"])
    if function in (gc.auth_res_baggage, old_auth_res_baggage):
        return function(kwargs["token"], kwargs["acq"])
    return function(**kwargs)


@pytest.mark.parametrize("label,new,old,kwargs", CASES, ids=[c[0] for c in CASES])
def test_builder_is_the_former_construction(label, new, old, kwargs):
    expected = _call(old, kwargs)
    assert _call(new, kwargs) == expected
    with no_asn1crypto_objects():
        assert _call(new, kwargs) == expected


def test_purchase_builders_are_the_former_constructions():
    when = NOW.replace(microsecond=0)
    for lid_m in (None, b"m" * 20):
        value = {"lid_c": b"c" * 16, "xid": b"x" * 20, "p_req_date": when, "language": "en"}
        if lid_m is not None:
            value["lid_m"] = lid_m
        assert pm.trans_ids(lid_c=b"c" * 16, xid=b"x" * 20, p_req_date=NOW, lid_m=lid_m) == \
            TransIDs(value).dump()
    assert pm.hod_input(ORDER, b"s" * 32) == pu.HODInput(
        {"od": b"1 teapot", "purch_amt": ORDER.purch_amt, "od_salt": b"s" * 32}).dump()
    for chall_m in (None, b"m" * 32):
        old = {"trans_ids": TransIDs.load(IDS), "rrpid": b"r", "chall_c": b"c",
               "hod": pu.DetachedDigest.load(DD_HOD), "od_salt": b"s", "brand_id": "Visa",
               "bin": "41111111", **({} if chall_m is None else {"chall_m": chall_m})}
        assert pm.oi_data(trans_ids_der=IDS, rrpid=b"r", chall_c=b"c", hod_dd=DD_HOD,
                          od_salt=b"s", brand_id="Visa", bin_="41111111",
                          chall_m=chall_m) == pu.OIData(old).dump()
    for back in (None, b"k" * 32):
        old = {"trans_ids": TransIDs.load(IDS),
               "inputs": {"hod": pu.DetachedDigest.load(DD_HOD), "purch_amt": ORDER.purch_amt},
               "merchant_id": "MER-0001", "trans_stain": b"t", "sw_ident": "setmail/0.1",
               "pe_thumb": b"p" * 32}
        if back is not None:
            old["acq_back_key_data"] = {"back_alg_id": {"algorithm": "aes256_wrap"},
                                        "back_key": back}
        assert pm.pi_head(trans_ids_der=IDS, hod_dd=DD_HOD, order=ORDER, merchant_id="MER-0001",
                          trans_stain_=b"t", sw_ident="setmail/0.1", pe_thumb=b"p" * 32,
                          acq_back_key=back) == pu.PIHead(old).dump()
    assert pm.pan_data(pan="4111111111111111", expiry="202912", pan_secret=b"s", ex_nonce=b"n") \
        == pu.PANData({"pan": "4111111111111111", "card_expiry": "202912", "pan_secret": b"s",
                       "ex_nonce": b"n"}).dump()


def test_wallet_and_gateway_pieces_are_the_former_constructions():
    assert pm.pinit_req(rrpid=b"r", language="en", lid_c=b"c", xid=b"x", chall_c=b"h",
                        brand_id="Visa", bin_="411111") == pu.PInitReq(
        {"rrpid": b"r", "language": "en", "local_id_c": b"c", "local_id_m": b"x",
         "chall_c": b"h", "brand_id": "Visa", "bin": "411111"}).dump()
    dual = pu.PReqDualSigned({"pi_dual_signed": {"pi_signature": enveloped("PI-TBS"),
                                                 "ex_pi_data": enveloped("PIDualSignedTBE")},
                              "oi_dual_signed": {"oi_data": {
                                  "trans_ids": TransIDs.load(IDS), "rrpid": b"r", "chall_c": b"c",
                                  "hod": dd("HODInput"), "od_salt": b"s", "brand_id": "Visa",
                                  "bin": "41111111"}, "h_pi_data": dd("PIData")}}).dump()
    assert pm.p_req(dual) == pu.PReq(name="p_req_dual_signed",
                                     value=pu.PReqDualSigned.load(dual)).dump()
    assert pm.inq_req_data(trans_ids_der=IDS, rrpid=b"r", chall_c2=b"c") == pu.InqReqData(
        {"trans_ids": TransIDs.load(IDS), "rrpid": b"r", "chall_c2": b"c"}).dump()
    signed = enveloped("InqReqData").dump()
    assert pm.inq_req(signed) == pu.InqReq(name="inq_req_signed",
                                           value=cms.ContentInfo.load(signed)).dump()
    assert gc.cap_token_data(auth_rrpid=b"r" * 32, amount=AMOUNT, opaque=b"x" * 20) == \
        gw.CapTokenData({"auth_rrpid": b"r" * 32, "auth_amt": AMOUNT,
                         "token_opaque": b"x" * 20}).dump()
    for iso in ("00", "51", "zz"):
        assert gc.acq_card_code_msg(iso) == pu.AcqCardCodeMsg({
            "acq_card_code": "accountInfo", "acq_card_msg_data": {
                "acq_card_text": f"{iso} {iss.RESPONSE_CODES.get(iso, 'unknown response')}"}}).dump()
    assert mm.cap_token_seq(TOKEN) == gw.CapTokenSeq([gw.CapToken.load(TOKEN)]).dump()
    assert isinstance(gw.AuthResData.load(gc.auth_res_data(None, REPLY, code="approved",
                                                           amount=AMOUNT)), core.Sequence)
