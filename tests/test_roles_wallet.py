"""The cardholder wallet's purchase against a hand-built merchant (docs/purchase.md), and the
cardholder agent's composite role (registration + wallet) with its wallet files.

The mail attacker (roles/base.py): the wallet takes a PInitRes only from the merchant it buys
from (its merID in the world's directory), then only that certificate; the AcqCardMsg only from
the gateway PInitRes named; an Error ends a request only if that merchant signed it naming our
exact bytes; nothing it receives is ever answered; BCIs of another brand or an older sequence
are refused; a purchase the merchant keeps waiting expires."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from setmail.agent import effects as fx
from setmail.asn1 import purchase as pu
from setmail.asn1.base import TransIDs, decode
from setmail.asn1.wrapper import MESSAGE_TYPES, decode_wrapper, message_body
from setmail.crypto import dual
from setmail.crypto.operators import DD, HMAC, EncK, S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.errors import ProtocolError
from setmail.pki import thumbprint, to_pem
from setmail.pki.setext import MerchantInfo, MerName
from setmail.roles.base import CancelTimer, Command, Inbound, SetTimer, TimerFired
from setmail.roles.ca import CAConfig, CARole
from setmail.roles.cardholder_reg import CardholderRegConfig, CardholderRegistration
from setmail.roles.certs import path_check, private_pem
from setmail.roles.refusal import error_wrapper
from setmail.roles.wire import wrap
from setmail.roles.dispatch import Dispatch, merge_tables
from setmail.roles.purchase_msgs import Order, hod, ratio
from setmail.roles.wallet import Wallet, WalletCard, WalletConfig
from setmail.vectors.build import EXPIRY, NOW as ISSUED, PAN, Parties
from tests.roles_net import Net
from tests.test_roles_merchant import another_gateway, foreign_brand_bci

NOW = ISSUED + dt.timedelta(hours=1)
ALICE, SHOP, CCA = "alice@wallet.example", "shop@merchant.example", "cca@visa.example"
SHOP2 = "shop2@merchant.example"
#: the world's directory as the wallet sees it: merchant address -> merID
DIRECTORY = {SHOP: Parties.MER_ID, SHOP2: "shop-0002"}
XID = bytes(range(1, 21))
ORDER = Order("one blue teapot", 1234, 978)


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


@pytest.fixture(scope="module")
def rogue(p):
    """A second, genuine merchant: valid signatures, wrong party."""
    ms, mk = DEFAULT_SUITE.generate_key(), DEFAULT_SUITE.generate_key()
    info = MerchantInfo("shop-0002", "41111111", (MerName("en", "Other Shop", "Paris", "FR"),), 250)
    sig, _ = p.tree.issue_merchant(ms.public_key(), mk.public_key(), info, ISSUED)
    return dataclasses.replace(p.merchant_sig, key=ms, cert=sig)


def card_of(p):
    return WalletCard(p.cardholder, p.pan_secret)


@pytest.fixture(scope="module")
def gateway2(p):
    return another_gateway(p)


def wallet(p, *, credentials=None, max_retries=2, **kw) -> Wallet:
    found = credentials if credentials is not None else (
        lambda last4, brand: card_of(p) if (last4, brand) == (PAN[-4:], "Visa") else None)
    return Wallet(WalletConfig(ALICE, p.tree.trust_store(), max_retries=max_retries, agent="alice",
                               credentials=found, merchants=DIRECTORY, **kw))


def buy_args(**kw):
    return {"xid": XID.hex(), "merchant": SHOP, "pan": PAN, "expiry": EXPIRY,
            "description": ORDER.description, "amount": ORDER.amount, "currency": ORDER.currency,
            "brand": "Visa", **kw}


def body(send):
    return message_body(decode_wrapper(send.wrapper_der))


def merchant_error(p, code: str, about: bytes, signer=None) -> Inbound:
    """A SET Error naming ``about``, signed by the merchant unless told otherwise."""
    signer = p.merchant_sig if signer is None else signer
    return Inbound("Error", error_wrapper(code, about, now=NOW, signer=signer or None), SHOP)


def unchanged(out, before: dict) -> None:
    """A refused answer: noted (``refused``), never answered, nothing else changed."""
    assert out.sends == () and out.refused and out.timers == ()
    assert {k: v for k, v in out.state.items() if k != "refused"} == \
        {k: v for k, v in before.items() if k != "refused"}


class Shop:
    """The merchant's (and, for AcqCardMsg, the gateway's) side, built as the contract says."""

    def __init__(self, p: Parties, signer=None):
        self.p, self.signer = p, signer or p.merchant_sig
        self.certs = [p.merchant_kex.cert, *p.merchant_sig.chain, p.gateway_kex.cert,
                      *p.gateway_kex.chain]
        self.chall_m = fresh()

    def _send(self, type_name, tbs_type, data, ids, rrpid, signer=None):
        signer = signer or self.signer
        signed = S(signer, tbs_type, data.dump(), certs=[signer.cert, *self.certs])
        return Inbound(type_name, wrap(type_name, MESSAGE_TYPES[type_name].load(signed), now=NOW,
                                       rrpid=rrpid, lid_c=ids["lid_c"], lid_m=ids["lid_m"],
                                       xid=ids["xid"]), SHOP)

    def pinit_res(self, send, *, pe_cert=None, signer=None, **override) -> Inbound:
        req = body(send)
        ids = {"lid_c": req["local_id_c"].native, "lid_m": req["local_id_m"].native,
               "xid": req["local_id_m"].native, "p_req_date": NOW, "language": "en"}
        ids.update(override.pop("ids", {}))
        data = {"trans_ids": ids, "rrpid": req["rrpid"].native, "chall_c": req["chall_c"].native,
                "chall_m": self.chall_m, "brand_crl_identifier": self.p.tree.brand.bci,
                "pe_thumb": thumbprint(pe_cert or self.p.gateway_kex.cert), **override}
        return self._send("PInitRes", "PInitResData", pu.PInitResData(data), ids, data["rrpid"],
                          signer)

    def open_preq(self, send):
        """What merchant and gateway verify of a PReq (dual signature, both halves)."""
        preq = body(send).chosen
        pi, oi = preq["pi_dual_signed"].dump(), preq["oi_dual_signed"].dump()
        mview = dual.merchant_verify(pi, oi, validate=path_check(self.p.tree.trust_store(), NOW, "card"))
        gview = dual.gateway_verify(pi, self.p.gateway_kex, h_oi_data=DD("OIData", mview.oi_data),
                                    validate=path_check(self.p.tree.trust_store(), NOW, "card"))
        return (decode(pu.OIData, mview.oi_data), decode(pu.PIHead, gview.pi_head),
                decode(pu.PANData, gview.pan_data))

    def result(self, send, completion, *, acq_text=None, auth_code=None, auth_amt=0, captured=False,
               inquiry=None, signer=None, acq_key=None, acq_signer=None, **override) -> Inbound:
        """PRes answering PReq ``send`` (or InqRes answering ``inquiry``)."""
        oi, head, _ = self.open_preq(send)
        results = {}
        if acq_text:
            back_key = acq_key or head["acq_back_key_data"]["back_key"].native
            msg = pu.AcqCardCodeMsg({"acq_card_code": "accountInfo",
                                     "acq_card_msg_data": {"acq_card_text": acq_text}})
            results["acq_card_msg"] = pu.AcqCardMsg.load(EncK(
                back_key, acq_signer or self.p.gateway_sig, "AcqCardCodeMsg", msg.dump(),
                "AcqCardCodeMsgTBE"))
        if auth_code:
            results["auth_status"] = {"auth_date": NOW, "auth_code": auth_code,
                                      "auth_ratio": ratio(auth_amt, ORDER.amount)}
        if captured:
            results["cap_status"] = {"cap_date": NOW, "cap_code": "success",
                                     "cap_ratio": ratio(auth_amt, ORDER.amount)}
        payload = {"completion_code": completion, **({"results": results} if results else {})}
        rrpid, chall = oi["rrpid"].native, oi["chall_c"].native
        if inquiry is not None:
            signed = verify_S(body(inquiry).chosen.untag().dump(), "InqReqData",
                              validate=path_check(self.p.tree.trust_store(), NOW, "card"))
            inq = decode(pu.InqReqData, signed.content)
            rrpid, chall = inq["rrpid"].native, inq["chall_c2"].native
        data = {"trans_ids": oi["trans_ids"], "rrpid": rrpid, "chall_c": chall,
                "brand_crl_identifier": self.p.tree.brand.bci, "p_res_payload_seq": [payload],
                **override}
        ids = oi["trans_ids"].native
        return self._send("InqRes" if inquiry is not None else "PRes", "PResData",
                          pu.PResData(data), ids, data["rrpid"], signer)


def start(p, role=None):
    """Buy, answer PInitRes: (wallet, state after PReq, the PReq send, shop)."""
    role, shop = role or wallet(p), Shop(p)
    out = role.step(None, Command("buy", buy_args()), NOW)
    out2 = role.step(out.state, shop.pinit_res(out.sends[0]), NOW)
    assert out2.state["state"] == "PREQ_SENT", out2.state
    assert out2.peer == SHOP and out2.sends[0].to == SHOP
    return role, out2.state, out2.sends[0], shop


# --- the purchase --------------------------------------------------------------------------------
def test_buy_sends_a_clear_pinit_req_naming_the_purchase(p):
    out = wallet(p).step(None, Command("buy", buy_args()), NOW)
    assert out.transaction == XID.hex() and out.state["state"] == "PINIT_SENT"
    (send,) = out.sends
    assert (send.to, send.message_type) == (SHOP, "PInitReq")
    req, header = body(send), decode_wrapper(send.wrapper_der)["message_header"]
    assert req["local_id_m"].native == XID and req["bin"].native == PAN[:6]
    assert req["brand_id"].native == "Visa" and len(req["local_id_c"].native) == 16
    assert header["message_ids"].native == {"lid_c": req["local_id_c"].native, "lid_m": XID, "xid": None}
    assert header["rrpid"].native == req["rrpid"].native
    assert out.state["secret"] == {"pan": PAN, "expiry": EXPIRY}
    assert out.state["mer_id"] == Parties.MER_ID  # from the directory: the only merID it takes
    assert PAN not in json.dumps({k: v for k, v in out.state.items() if k != "secret"})
    assert any(isinstance(t, SetTimer) and t.name == "retry" for t in out.timers)


def test_preq_verifies_for_merchant_and_gateway_and_shows_the_pan_only_to_the_gateway(p):
    role, shop = wallet(p), Shop(p)
    out = role.step(None, Command("buy", buy_args()), NOW)
    pinit_res = shop.pinit_res(out.sends[0])
    out = role.step(out.state, pinit_res, NOW)
    state, (send,) = out.state, out.sends
    assert (send.to, send.message_type, state["state"]) == (SHOP, "PReq", "PREQ_SENT")
    assert PAN.encode() not in send.wrapper_der and ORDER.description.encode() not in send.wrapper_der
    oi, head, pan = shop.open_preq(send)
    header = decode_wrapper(send.wrapper_der)["message_header"]
    signed = decode(pu.PInitResData, verify_S(body(pinit_res).dump(), "PInitResData").content)
    # TransIDs exactly as the merchant signed them, in OIData and PIHead
    assert oi["trans_ids"].dump() == head["trans_ids"].dump() == signed["trans_ids"].dump()
    assert oi["chall_m"].native == shop.chall_m and oi["chall_c"].native == signed["chall_c"].native
    assert oi["rrpid"].native == header["rrpid"].native and oi["bin"].native == PAN[:6]
    assert oi["brand_id"].native == "Visa"
    assert header["message_ids"].native == {"lid_c": bytes.fromhex(state["lid_c"]), "lid_m": XID,
                                            "xid": XID}
    # HOD: the merchant recomputes it from its own order record and the salt
    assert oi["hod"].dump() == hod(ORDER, oi["od_salt"].native) == head["inputs"]["hod"].dump()
    assert head["inputs"]["purch_amt"].native == ORDER.purch_amt
    assert head["merchant_id"].native == Parties.MER_ID
    assert head["pe_thumb"].native == thumbprint(p.gateway_kex.cert)
    assert head["trans_stain"].native == HMAC(p.pan_secret, XID)
    assert len(head["acq_back_key_data"]["back_key"].native) == 32
    assert pan.native["pan"] == PAN and pan.native["card_expiry"] == EXPIRY
    assert pan.native["pan_secret"] == p.pan_secret
    # the wallet keeps only the back key, under secret
    assert state["secret"] == {"back_key": head["acq_back_key_data"]["back_key"].native.hex()}
    assert PAN not in json.dumps(state) and p.pan_secret.hex() not in json.dumps(state)


def test_approval_then_inquiry_reports_the_capture(p):
    role, state, preq, shop = start(p)
    out = role.step(state, shop.result(preq, "authorizationPerformed", acq_text="00 Approved",
                                       auth_code="approved", auth_amt=1234), NOW)
    s = out.state
    assert s["state"] == "APPROVED" and s["completion"] == "authorizationPerformed"
    assert (s["auth_code"], s["auth_amt"], s["iso_code"], s["iso_text"]) == ("approved", 1234, "00",
                                                                             "Approved")
    assert s["acq_card_code"] == "accountInfo" and s["captured"] is False
    assert "secret" not in s and "out" not in s and CancelTimer("retry") in out.timers
    # inquiry: signed InqReq over the same TransIDs, fresh RRPID and Chall-C2
    inq = role.step(s, Command("inquire", {"xid": XID.hex()}), NOW + dt.timedelta(days=1))
    (send,) = inq.sends
    assert send.message_type == "InqReq" and inq.state["inquiry_pending"] is True
    signed = verify_S(body(send).chosen.untag().dump(), "InqReqData")
    assert signed.signer == p.cardholder.cert
    data = decode(pu.InqReqData, signed.content)
    assert data["trans_ids"].dump().hex() == s["_trans_ids"]
    res = role.step(inq.state, shop.result(preq, "capturePerformed", acq_text="00 Approved",
                                           auth_code="approved", auth_amt=1234, captured=True,
                                           inquiry=send), NOW)
    s2 = res.state
    assert s2["state"] == "CAPTURED" and s2["captured"] is True and s2["cap_code"] == "success"
    assert s2["cap_amt"] == 1234 and s2["inquiry_pending"] is False and s2["inquiries"] == 1
    assert s2["iso_code"] == "00"  # a repeated AcqCardMsg is not opened again (key dropped)
    assert CancelTimer("inquiry") in res.timers


@pytest.mark.parametrize("completion, auth_code, text, final, iso", [
    ("authorizationDeclined", "declined", "51 Insufficient funds", "DECLINED", "51"),
    ("authorizationDeclined", "expiredCard", "54 Expired card", "DECLINED", "54"),
    ("orderRejected", None, None, "REJECTED", None),
])
def test_declined_and_rejected(p, completion, auth_code, text, final, iso):
    role, state, preq, shop = start(p)
    out = role.step(state, shop.result(preq, completion, acq_text=text, auth_code=auth_code), NOW)
    assert out.state["state"] == final and out.state.get("iso_code") == iso
    assert out.state.get("auth_amt") == (0 if auth_code else None) and "secret" not in out.state


def test_order_received_stops_re_sending_and_an_inquiry_finishes(p):
    role, state, preq, shop = start(p)
    out = role.step(state, shop.result(preq, "orderReceived"), NOW)
    assert out.state["state"] == "PREQ_SENT" and "out" not in out.state and "secret" in out.state
    assert any(isinstance(t, SetTimer) and t.name == "expire" for t in out.timers)
    inq = role.step(out.state, Command("inquire", {"xid": XID.hex()}), NOW)
    done = role.step(inq.state, shop.result(preq, "authorizationPerformed", acq_text="00 Approved",
                                            auth_code="approved", auth_amt=1234,
                                            inquiry=inq.sends[0]), NOW)
    assert done.state["state"] == "APPROVED" and done.state["iso_text"] == "Approved"


# --- refusals: noted, never answered, nothing changes ----------------------------------------------
def _bad_pinit(p, rogue, shop, send, what):
    other_ids = {"lid_c": b"x" * 16}
    return {
        "chall": lambda: shop.pinit_res(send, chall_c=fresh()),
        "rrpid": lambda: shop.pinit_res(send, rrpid=fresh()),
        "trans_ids": lambda: shop.pinit_res(send, ids=other_ids),
        "not a merchant": lambda: shop.pinit_res(send, signer=p.gateway_sig),
        "gateway not pgwy": lambda: shop.pinit_res(send, pe_cert=p.merchant_kex.cert),
        "unknown gateway": lambda: shop.pinit_res(send, pe_cert=rogue.cert, pe_thumb=fresh()),
        "shop2": lambda: shop.pinit_res(send, signer=rogue),
        "foreign BCI": lambda: shop.pinit_res(send, brand_crl_identifier=foreign_brand_bci(p)),
    }[what]()


@pytest.mark.parametrize("what, code", [
    ("chall", "challengeMismatch"), ("rrpid", "badMessageHeader"), ("trans_ids", "unknownXID"),
    ("not a merchant", "invalidCertificate"), ("gateway not pgwy", "invalidCertificate"),
    ("unknown gateway", "missingCertificate"),
    ("shop2", "invalidCertificate"),  # a genuine merchant, not the one we buy from
    ("foreign BCI", "")])
def test_bad_pinit_res_is_refused_and_changes_nothing(p, rogue, what, code):
    role, shop = wallet(p), Shop(p)
    out = role.step(None, Command("buy", buy_args()), NOW)
    bad = role.step(out.state, _bad_pinit(p, rogue, shop, out.sends[0], what), NOW)
    unchanged(bad, out.state)
    assert bad.state["refused"]["code"].startswith(code) and bad.peer is None
    # the genuine answer still goes through
    assert role.step(bad.state, shop.pinit_res(out.sends[0]), NOW).state["state"] == "PREQ_SENT"


def test_buying_from_an_address_the_directory_does_not_know_fails(p):
    out = wallet(p).step(None, Command("buy", buy_args(merchant="mallory@evil.example")), NOW)
    assert out.state["state"] == "FAILED" and out.sends == ()
    assert "no merchant of this world" in out.state["failure"]


def test_the_wallet_buying_from_shop2_takes_shop2_only(p, rogue):
    role = wallet(p)
    out = role.step(None, Command("buy", buy_args(merchant=SHOP2)), NOW)
    assert out.sends[0].to == SHOP2
    unchanged(role.step(out.state, Shop(p).pinit_res(out.sends[0]), NOW), out.state)
    assert role.step(out.state, Shop(p, rogue).pinit_res(out.sends[0]), NOW).state["state"] == \
        "PREQ_SENT"


def test_revoked_merchant_is_refused(p, rogue):
    crl = p.tree.mca.revoke(rogue.cert, ISSUED)
    role = Wallet(dataclasses.replace(wallet(p).config, crls=(crl,)))
    out = role.step(None, Command("buy", buy_args(merchant=SHOP2)), NOW)
    bad = role.step(out.state, Shop(p, rogue).pinit_res(out.sends[0]), NOW)
    unchanged(bad, out.state)
    assert bad.state["refused"]["code"] == "revokedCertificate"


@pytest.mark.parametrize("what, code", [
    ("chall", "challengeMismatch"), ("rrpid", "badMessageHeader"),
    ("other merchant", "invalidCertificate"), ("trans_ids", "unknownXID"), ("foreign BCI", "")])
def test_bad_pres_is_refused_and_changes_nothing(p, rogue, what, code):
    role, state, preq, shop = start(p)
    oi, _, _ = shop.open_preq(preq)
    other = TransIDs({**oi["trans_ids"].native, "language": "fr"})
    kw = {"chall": {"chall_c": fresh()}, "rrpid": {"rrpid": fresh()},
          "other merchant": {"signer": rogue}, "trans_ids": {"trans_ids": other},
          "foreign BCI": {"brand_crl_identifier": foreign_brand_bci(p)}}[what]
    bad = role.step(state, shop.result(preq, "authorizationPerformed", auth_code="approved",
                                       auth_amt=1234, **kw), NOW)
    unchanged(bad, state)
    assert bad.state["refused"]["code"].startswith(code)


def test_acq_card_msg_under_another_key_or_from_another_gateway_is_refused(p, gateway2):
    role, state, preq, shop = start(p)
    for bad in (dict(acq_key=fresh(32)), dict(acq_signer=gateway2)):
        out = role.step(state, shop.result(preq, "authorizationPerformed", acq_text="00 Approved",
                                           auth_code="approved", **bad), NOW)
        unchanged(out, state)
        assert "secret" in out.state and "iso_code" not in out.state
    assert "another gateway" in out.refused


def test_an_older_bci_is_refused_and_a_newer_one_kept(p):
    role, shop = wallet(p), Shop(p)
    seq = p.tree.brand.bci["tbs"]["sequence_num"].native
    out = role.step(None, Command("buy", buy_args()), NOW)
    res = shop.pinit_res(out.sends[0])
    older = role.step(out.state, res, NOW, {"Visa": seq + 1})
    unchanged(older, out.state)
    assert "older" in older.refused
    taken = role.step(out.state, res, NOW, {"Visa": seq - 1, "JCB": 5})
    assert taken.state["state"] == "PREQ_SENT" and taken.shared == {"Visa": seq, "JCB": 5}
    assert role.step(out.state, res, NOW, {"Visa": seq}).shared is None  # nothing new


def test_a_repeated_response_is_absorbed(p):
    role, state, preq, shop = start(p)
    pres = shop.result(preq, "authorizationPerformed", auth_code="approved", auth_amt=1234)
    done = role.step(state, pres, NOW).state
    for late in (pres, shop.pinit_res(preq_of(role))):
        out = role.step(done, late, NOW)
        assert out.sends == () and out.refused and out.state["state"] == "APPROVED"
    out = role.step(None, pres, NOW)  # for no purchase at all
    assert out.state is None and out.sends == () and out.refused


def preq_of(role):
    """A PInitReq of a fresh purchase (what a replayed PInitRes answers)."""
    return role.step(None, Command("buy", buy_args()), NOW).sends[0]


# --- retries, Errors, expiry, local failures ------------------------------------------------------
def test_retry_resends_the_same_bytes_then_fails(p):
    role = wallet(p, max_retries=2)
    out = role.step(None, Command("buy", buy_args()), NOW)
    state, timer = out.state, TimerFired("retry", {"transaction": XID.hex()})
    for _ in range(2):
        again = role.step(state, timer, NOW)
        assert [s.wrapper_der for s in again.sends] == [out.sends[0].wrapper_der]
        assert again.sends[0].to == SHOP
        state = again.state
    final = role.step(state, timer, NOW)
    assert final.sends == () and final.state["state"] == "FAILED" and "secret" not in final.state
    assert "no answer to PInitReq" in final.state["failure"]
    assert final.state["expired"]["reason"] == final.state["failure"]
    assert role.step(final.state, timer, NOW).state == final.state  # stale timer


@pytest.mark.parametrize("case", ["unsigned", "signed by shop2", "names other bytes"])
def test_an_error_not_from_our_merchant_about_our_exact_preq_only_nudges(p, rogue, case):
    role, state, preq, shop = start(p)
    other = bytearray(preq.wrapper_der)
    other[-40] ^= 1
    signer, about = {"unsigned": (False, preq.wrapper_der),
                     "signed by shop2": (rogue, preq.wrapper_der),
                     "names other bytes": (None, bytes(other))}[case]
    out = role.step(state, merchant_error(p, "challengeMismatch", about, signer), NOW)
    assert out.state["state"] == "PREQ_SENT" and out.sends == () and out.refused
    assert out.timers == (SetTimer("retry", NOW + dt.timedelta(seconds=60),
                                   {"transaction": XID.hex()}),)
    again = role.step(out.state, merchant_error(p, "challengeMismatch", about, signer), NOW)
    assert again.timers == () and again.state["state"] == "PREQ_SENT"  # once per attempt
    resent = role.step(again.state, TimerFired("retry", {"transaction": XID.hex()}), NOW)
    assert [s.wrapper_der for s in resent.sends] == [preq.wrapper_der]


def test_an_error_from_our_merchant_naming_the_preq_fails_the_purchase(p):
    role, state, preq, shop = start(p)
    unrelated = merchant_error(p, "unknownXID", wrap(
        "PInitReq", body(preq_of(role)), now=NOW, rrpid=fresh(), lid_m=XID))
    out = role.step(state, unrelated, NOW)
    assert out.refused and out.state == state
    out = role.step(state, merchant_error(p, "challengeMismatch", preq.wrapper_der), NOW)
    assert out.state["state"] == "FAILED" and out.state["error_code"] == "challengeMismatch"
    assert "PReq refused" in out.state["failure"] and "secret" not in out.state
    assert out.sends == () and out.peer == SHOP  # never an Error to an Error
    # the merchant did take the PReq after all: a late PRes still tells the outcome
    late = role.step(out.state, shop.result(preq, "authorizationPerformed", auth_code="approved",
                                            auth_amt=1234), NOW)
    assert late.state["state"] == "APPROVED" and "failure" not in late.state


def test_an_error_from_the_chosen_merchant_naming_the_pinit_req_fails_the_purchase(p, rogue):
    role = wallet(p)
    out = role.step(None, Command("buy", buy_args()), NOW)
    nudged = role.step(out.state, merchant_error(p, "unknownXID", out.sends[0].wrapper_der,
                                                 rogue), NOW)
    assert nudged.state["state"] == "PINIT_SENT" and nudged.refused
    failed = role.step(out.state, merchant_error(p, "unknownXID", out.sends[0].wrapper_der), NOW)
    assert failed.state["state"] == "FAILED" and "secret" not in failed.state


def test_inquiry_error_and_give_up_leave_the_purchase_alone(p):
    role, state, preq, shop = start(p, wallet(p, max_retries=1))
    approved = role.step(state, shop.result(preq, "authorizationPerformed", auth_code="approved",
                                            auth_amt=1234), NOW).state
    inq = role.step(approved, Command("inquire", {"xid": XID.hex()}), NOW)
    assert inq.state["inq"]["pin"] == {"thumb": state["_merchant_cert"]}
    nudge = role.step(inq.state, merchant_error(p, "unknownXID", inq.sends[0].wrapper_der,
                                                False), NOW)
    assert nudge.state["inquiry_pending"] is True and nudge.timers[0].name == "inquiry"
    err = role.step(inq.state, merchant_error(p, "unknownXID", inq.sends[0].wrapper_der), NOW)
    assert err.state["state"] == "APPROVED" and err.state["inquiry_pending"] is False
    assert "unknownXID" in err.state["inquiry_error"]
    inq2 = role.step(err.state, Command("inquire", {"xid": XID.hex()}), NOW)
    timer = TimerFired("inquiry", {"transaction": XID.hex()})
    again = role.step(inq2.state, timer, NOW)
    assert [s.wrapper_der for s in again.sends] == [inq2.sends[0].wrapper_der]
    gave_up = role.step(again.state, timer, NOW)
    assert gave_up.state["state"] == "APPROVED" and "no answer to InqReq" in gave_up.state["inquiry_error"]


def test_a_purchase_the_merchant_keeps_waiting_expires(p):
    role, state, preq, shop = start(p, wallet(p, expire_after=dt.timedelta(hours=6)))
    received = role.step(state, shop.result(preq, "orderReceived"), NOW)
    due = next(t for t in received.timers if isinstance(t, SetTimer) and t.name == "expire")
    assert due.due == NOW + dt.timedelta(hours=6)
    out = role.step(received.state, TimerFired("expire", {"transaction": XID.hex()}), due.due)
    s = out.state
    assert s["state"] == "FAILED" and "secret" not in s and "within 6 h" in s["failure"]
    assert s["expired"] == {"at": due.due.isoformat(), "reason": s["failure"]}
    late = role.step(s, shop.result(preq, "authorizationPerformed", auth_code="approved",
                                    auth_amt=1234), NOW)
    assert late.state["state"] == "APPROVED" and "expired" not in late.state


@pytest.mark.parametrize("args, terms", [
    ({"instalments": 3}, ("instalments", 3)),
    ({"recurring": {"days": 30, "until": "20301231"}}, ("recurring", 30, "20301231")),
])
def test_instalment_and_recurring_terms_are_hashed_into_hod(p, args, terms):
    role, shop = wallet(p), Shop(p)
    out = role.step(None, Command("buy", buy_args(**args)), NOW)
    assert out.state["terms"] == list(terms)
    out = role.step(out.state, shop.pinit_res(out.sends[0]), NOW)
    oi, head, _ = shop.open_preq(out.sends[0])
    salt = oi["od_salt"].native
    agreed = Order(ORDER.description, ORDER.amount, ORDER.currency, terms=terms)
    assert oi["hod"].dump() == hod(agreed, salt) == head["inputs"]["hod"].dump()
    assert hod(agreed, salt) != hod(ORDER, salt)  # the terms are part of what was agreed
    # and signed for the gateway, which holds the merchant's InstallRecurData to them
    assert head["install_recur_data"].native == {"install_recur_ind": (
        3 if terms[0] == "instalments" else {"recurring_frequency": 30, "recurring_expiry": dt.datetime(
            2030, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)}), "ir_extensions": None}


@pytest.mark.parametrize("args, why", [
    ({"instalments": 1}, "instalments"), ({"recurring": {"days": 30}}, "end date"),
    ({"instalments": 2, "recurring": {"days": 1, "until": "20300101"}}, "not both"),
])
def test_bad_terms_fail_the_buy(p, args, why):
    out = wallet(p).step(None, Command("buy", buy_args(**args)), NOW)
    assert out.state["state"] == "FAILED" and why in out.state["failure"] and out.sends == ()


def test_local_failures_are_clear(p):
    nobody = wallet(p, credentials=lambda last4, brand: None)
    out = nobody.step(None, Command("buy", buy_args()), NOW)
    assert out.state["state"] == "FAILED" and out.sends == ()
    assert out.state["failure"] == ("alice has no certificate for card ending 1111: "
                                    "run `setmail register alice` first")
    _, _, preq, shop = start(p)  # a PRes for a purchase that never started is refused
    late = nobody.step(out.state, shop.result(preq, "authorizationPerformed"), NOW)
    assert late.sends == () and late.refused and late.state["state"] == "FAILED"
    other_card = wallet(p).step(None, Command("buy", buy_args(pan="4111111111111111", expiry="203001")),
                                NOW)
    assert "does not certify" in other_card.state["failure"]
    assert "amount" in wallet(p).step(None, Command("buy", buy_args(amount=0)), NOW).state["failure"]
    with pytest.raises(ProtocolError, match="40 hex"):
        wallet(p).transaction_key(Command("buy", buy_args(xid="abc")))
    role = wallet(p)
    pinit = role.step(None, Command("buy", buy_args()), NOW)
    with pytest.raises(ProtocolError):  # nothing to inquire about before PInitRes
        role.step(pinit.state, Command("inquire", {"xid": XID.hex()}), NOW)


def test_every_listed_transition_has_a_handler():
    for state, events in Wallet.TRANSITIONS.items():
        for event in events:
            assert callable(getattr(Wallet, "on_" + "".join(c if c.isalnum() else "_" for c in event)))


# --- the cardholder agent's composite role --------------------------------------------------------
def cardholder_agent(p, card=None):
    """Registration + wallet in one Dispatch; the wallet finds the card registration certified."""
    net = Net({})

    def credentials(last4, brand):
        certified = [e.data for a, e in net.effects if e.kind == "wallet.certificate"]
        keys = {e.data["key_id"]: e.data["secret"]["private_key_pem"] for a, e in net.effects
                if e.kind == "wallet.key"}
        for c in certified:
            if (c["pan_last4"], c["brand"]) == (last4, brand):
                from cryptography.hazmat.primitives.serialization import load_pem_private_key
                from cryptography import x509
                ident = dataclasses.replace(p.cardholder, key=load_pem_private_key(
                    keys[c["key_id"]].encode(), None), cert=x509.load_pem_x509_certificate(
                    c["certificate_pem"].encode()))
                return WalletCard(ident, bytes.fromhex(c["secret"]["pan_secret"]))
        return None

    trust = p.tree.trust_store()
    registration = CardholderRegistration(CardholderRegConfig(ALICE, trust))
    net.roles[ALICE] = Dispatch([wallet(p, credentials=credentials), registration], name="cardholder")
    from setmail.roles.directory import Directory, Party
    net.roles[CCA] = CARole(CAConfig(p.tree.cca, "cca", CCA, trust, cards={ALICE: {PAN}},
                                     directory=Directory([Party("alice", "cardholder", ALICE)])))
    return net


def test_composite_routes_registration_then_purchase(p):
    net = cardholder_agent(p)
    agent = net.roles[ALICE]
    runs = net.run(ALICE, Command("register", {
        "pan": PAN, "expiry": EXPIRY, "ca": CCA, "brand": "Visa",
        "fields": {"CardholderName": "Alice", "PostalCode": "1"}}), NOW)
    reg = next(s for (a, k), s in net.states.items() if a == ALICE)
    assert reg["state"] == "DONE"
    # the registration's timers were tagged with their role, and route back to it
    timer = next(t for t in runs[0][1].timers if isinstance(t, SetTimer))
    assert timer.payload["role"] == "cardholder-registration"
    assert agent.route(TimerFired("retry", timer.payload)).name == "cardholder-registration"
    # the purchase: buy, PInitRes and PRes go to the wallet, keyed by the XID
    shop = Shop(p)
    out = net.step(ALICE, Command("buy", buy_args()), NOW)
    assert out.transaction == XID.hex() and out.sends[0].message_type == "PInitReq"
    assert dict(out.timers[0].payload) == {"transaction": XID.hex(), "role": "wallet"}
    out = net.step(ALICE, shop.pinit_res(out.sends[0]), NOW)
    preq = out.sends[0]
    oi, head, pan = shop.open_preq(preq)  # signed with the certificate registration obtained
    assert pan.native["pan"] == PAN
    out = net.step(ALICE, shop.result(preq, "authorizationPerformed", auth_code="approved",
                                      auth_amt=1234, acq_text="00 Approved"), NOW)
    assert net.states[(ALICE, XID.hex())]["state"] == "APPROVED"
    assert net.states[(ALICE, reg["lid"])]["state"] == "DONE"


def test_composite_routes_errors_by_header_and_refuses_unknown_events(p):
    agent = Dispatch([wallet(p), CardholderRegistration(CardholderRegConfig(ALICE, p.tree.trust_store()))])
    buy = wallet(p).step(None, Command("buy", buy_args()), NOW).sends[0]
    register = CardholderRegistration(CardholderRegConfig(ALICE, p.tree.trust_store())).step(
        None, Command("register", {"pan": PAN, "expiry": EXPIRY, "ca": CCA, "brand": "Visa"}), NOW)
    for send, role, key in ((buy, "wallet", XID.hex()),
                            (register.sends[0], "cardholder-registration", register.transaction)):
        error = Inbound("Error", error_wrapper("unknownXID", send.wrapper_der, now=NOW), SHOP)
        assert agent.route(error).name == role and agent.transaction_key(error) == key
    assert agent.route(Command("inquire", {})).name == "wallet"
    assert agent.route(Inbound("CertRes", b"", CCA)).name == "cardholder-registration"
    assert agent.route(TimerFired("retry", {})).name == "cardholder-registration"  # untagged
    with pytest.raises(ProtocolError):
        agent.route(Command("capture", {}))
    with pytest.raises(ProtocolError):
        agent.route(Inbound("AuthReq", b"", SHOP))
    with pytest.raises(ValueError):
        Dispatch([wallet(p), wallet(p)])
    # both tables, and their union for docs
    assert set(agent.tables) == {"wallet", "cardholder-registration"}
    assert {"buy", "register"} <= set(agent.TRANSITIONS["START"])
    assert merge_tables([{"A": {"e": "B"}}, {"A": {"e": ("C", "B")}}]) == {"A": {"e": ("B", "C")}}


# --- the cardholder factory: credentials from the wallet files -----------------------------------
def test_wallet_files_find_the_card_registration_wrote(p, tmp_path):
    from setmail.agent.factories.wallet import WalletFiles
    ctx = fx.EffectContext("alice", tmp_path)
    files = WalletFiles(tmp_path)
    assert files(PAN[-4:], "Visa") is None  # nothing registered yet
    fx.HANDLERS["wallet.key"].after_commit(ctx, {"key_id": "k1", "secret": {
        "private_key_pem": private_pem(p.cardholder.key)}})
    assert files(PAN[-4:], "Visa") is None  # key without certificate: registration unfinished
    fx.HANDLERS["wallet.certificate"].after_commit(ctx, {
        "transaction": "t", "key_id": "k1", "brand": "Visa", "pan_last4": PAN[-4:],
        "not_after": "2030-01-01T00:00:00+00:00", "certificate_pem": to_pem(p.cardholder.cert).decode(),
        "chain_pem": [to_pem(c).decode() for c in (*p.cardholder.chain, p.tree.root.certificate)],
        "secret": {"pan_secret": p.pan_secret.hex()}})
    card = files(PAN[-4:], "visa")
    assert card.pan_secret == p.pan_secret and card.identity.cert == p.cardholder.cert
    assert list(card.identity.chain) == list(p.cardholder.chain)  # the root is not sent along
    assert files(PAN[-4:], "Visa") is card  # parsed once per file version
    assert files("9999", "Visa") is None and files(PAN[-4:], "Mastercard") is None
    # and it signs a purchase that both verifiers accept
    role, state, preq, shop = start(p, wallet(p, credentials=files))
    assert shop.open_preq(preq)[2].native["pan_secret"] == p.pan_secret


def test_factory_builds_the_composite(p, tmp_path):
    from setmail.agent.factories.wallet import cardholder
    from setmail.world.config import AgentSpec, World
    (tmp_path / "pki" / "trust").mkdir(parents=True)
    (tmp_path / "pki" / "trust" / "root.cert.pem").write_bytes(to_pem(p.tree.root.certificate))
    spec = AgentSpec("alice", "cardholder", ALICE, options={"retry_after": 60, "max_retries": 5})
    world = World(tmp_path, "w", "rsa2048", "Visa", "localhost", 25, tmp_path / "mail",
                  {"alice": spec}, {})
    role = cardholder(world, spec)
    assert isinstance(role, Dispatch) and [r.name for r in role.roles] == [
        "wallet", "statements", "cardholder-registration"]
    config = role.roles[0].config
    assert (config.retry_after, config.max_retries, config.agent) == (dt.timedelta(minutes=1), 5, "alice")
    out = role.step(None, Command("buy", buy_args()), NOW)
    assert out.state["failure"].startswith("alice has no certificate for card ending 1111")


def test_state_diagrams_in_the_docs_are_drawn_from_the_tables():
    from pathlib import Path
    from setmail.roles.diagram import document
    docs = Path(__file__).resolve().parents[1] / "docs" / "states.md"
    assert docs.read_text() == document(), "regenerate: python -m setmail.roles.diagram > docs/states.md"


# --- cancel (issue 15) ----------------------------------------------------------------------------
def test_the_cardholder_cancels_before_the_preq(p):
    role, shop = wallet(p), Shop(p)
    out = role.step(None, Command("buy", buy_args()), NOW)
    cancelled = role.step(out.state, Command("cancel", {"xid": XID.hex()}), NOW)
    s = cancelled.state
    assert s["state"] == "CANCELLED" and "secret" not in s and s["cancelled"]["by"] == "cardholder"
    assert CancelTimer("retry") in cancelled.timers and cancelled.sends == ()
    late = role.step(s, shop.pinit_res(out.sends[0]), NOW)  # no PReq goes out after a cancel
    assert late.state["state"] == "CANCELLED" and late.sends == ()


def test_the_cardholder_cannot_cancel_a_preq_that_went_out(p):
    role, state, _, _ = start(p)
    with pytest.raises(ProtocolError, match="only the merchant"):
        role.step(state, Command("cancel", {"xid": XID.hex()}), NOW)


def test_a_purchase_without_pinit_res_is_abandoned_after_the_world_expiry(p):
    role = wallet(p, abandon_after=dt.timedelta(minutes=30), max_retries=50)
    out = role.step(None, Command("buy", buy_args()), NOW)
    due = next(t for t in out.timers if isinstance(t, SetTimer) and t.name == "abandon")
    assert due.due == NOW + dt.timedelta(minutes=30)
    gone = role.step(out.state, TimerFired("abandon", {"transaction": XID.hex()}), due.due)
    s = gone.state
    assert s["state"] == "FAILED" and "secret" not in s and s["failure"].startswith("expired")
    assert CancelTimer("retry") in gone.timers
    # once the PInitRes came, the timer is cancelled (and stale if it fires anyway)
    role2, state, _, _ = start(p, wallet(p))
    stale = role2.step(state, TimerFired("abandon", {"transaction": XID.hex()}), NOW)
    assert stale.state == state
