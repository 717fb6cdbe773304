"""The payment gateway against docs/purchase.md: every row of the AuthReq check table provokes
exactly its answer; the approval and capture paths produce what merchant and cardholder open;
capture refusals, retries and give-ups.  Real crypto on the vectors' cast, the real issuer role
behind the gateway (tests/roles_net.py), the merchant's messages built by hand (gateway_cast).
The defences against the mail attacker: tests/test_roles_gateway_attacker.py; expiry:
tests/test_roles_expiry.py."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from setmail.asn1 import gateway as gw, purchase as pu
from setmail.asn1.base import decode
from setmail.asn1.issuer import IssAuthReqData
from setmail.asn1.wrapper import decode_wrapper, message_body
from setmail.crypto import dual
from setmail.crypto.operators import DD, Enc, open_Enc, open_EncK, open_EncX
from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.errors import DecryptionFailed
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import Inbound
from setmail.roles.certs import path_check
from setmail.roles.refusal import error_wrapper
from setmail.store import Store
from setmail.vectors.build import EXPIRY, NOW, PAN, Parties
from setmail.roles.gateway import key_octets, purchase_key
from setmail.roles.network_msgs import merchant_tag
from tests.gateway_cast import (BANK, GW, OD, SHOP, Purchase, approved, auth, auth_res, cap_code,
                                capture, card, error_of, eur, fire_retry, gateway, gw_state,
                                issuer, keyed, kept, network, open_auth_res, open_cap_res,
                                to_shop)


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def open_acq(p, baggage, back_key) -> str:
    """The AcqCardMsg text, opened as the wallet does (its back key, signer path pgwy)."""
    opened = open_EncK(baggage["acq_card_msg"].untag().dump(), back_key, "AcqCardCodeMsgTBE",
                       "AcqCardCodeMsg", validate=path_check(p.tree.trust_store(), NOW, "pgwy"))
    return decode(pu.AcqCardCodeMsg, opened.content)["acq_card_msg_data"]["acq_card_text"].native


# --- approval -----------------------------------------------------------------------------------
def test_approval_reaches_the_merchant_with_token_and_cardholder_message(p):
    net = network(p)
    pur = Purchase(p)
    pur_der = pur.auth_req()
    done = auth(net, pur_der)
    assert [t for _, _, t in net.log] == ["IssAuthReq", "IssAuthRes", "AuthRes"]
    send = to_shop(done, "AuthRes")
    assert send.in_reply_to == "<authreq@shop>"
    assert send.answers == Inbound("AuthReq", pur_der, SHOP).digest.hex()  # dedupe: repeats
    header = decode_wrapper(send.wrapper_der)["message_header"]
    assert header["rrpid"].native == pur.auth_rrpid
    assert header["message_ids"].native == {"lid_c": pur.lid_c, "lid_m": pur.xid, "xid": pur.xid}
    data, baggage = open_auth_res(p, send.wrapper_der)
    head = data["auth_res_payload"]["auth_header"]
    assert head["auth_code"].native == "approved" and head["auth_amt"].native == eur(1234)
    response = head["response_data"]
    assert response["log_ref_id"].native == b"00" and response["resp_reason"].native == "issuer"
    bank = keyed(net, BANK, pur)
    assert response["auth_val_codes"]["approval_code"].native == bank["approval_code"]
    assert data["auth_tags"]["auth_rr_tags"]["rrpid"].native == pur.auth_rrpid
    assert data["auth_tags"]["trans_ids"].dump() == pur.trans_ids
    assert data["mer_thumb"].native == thumbprint(p.merchant_sig.cert)
    assert data["brand_crl_identifier"].untag().dump() == p.tree.brand.bci.dump()
    # the CapToken is the gateway's own memory (and the card, sealed to itself): the merchant
    # cannot open it, the gateway can
    token = baggage["cap_token"].untag().dump()
    with pytest.raises(DecryptionFailed):
        open_EncX(token, p.merchant_kex, "CapTokenTBEX", "CapTokenTBS", "PANToken")
    opened = open_EncX(token, p.gateway_kex, "CapTokenTBEX", "CapTokenTBS", "PANToken",
                       certs=(p.gateway_sig.cert,))
    inner = decode(gw.CapTokenData, opened.content)
    assert decode(pu.PANToken, opened.extra)["pan"].native == PAN
    key = purchase_key(pur.xid, Parties.MER_ID)
    assert inner["token_opaque"].native == key_octets(key) == pur.xid + merchant_tag(Parties.MER_ID)
    assert inner["auth_rrpid"].native == pur.auth_rrpid
    assert inner["auth_amt"].native == eur(1234)
    assert open_acq(p, baggage, pur.back_key) == "00 approved"
    state = gw_state(net, pur)
    assert (state["state"], state["auth_code"]) == ("AUTHORIZED", "approved")
    assert state["iso_code"] == "00"
    assert (state["mer_id"], state["amount"], state["auth_amt"]) == (Parties.MER_ID, 1234, 1234)
    assert state["approval_code"] == bank["approval_code"]
    assert state["secret"] == {"pan": PAN, "expiry": EXPIRY}  # for the capture, nowhere else
    assert PAN not in json.dumps({k: v for k, v in state.items() if k != "secret"})
    assert state["merchant"] == SHOP and state["expires_at"] == "2026-12-04T12:00:00+00:00"
    (timer,) = [t for k, t in net.timers.items() if k[0] == GW]  # only the expiry waits
    assert (timer.name, timer.due, timer.payload) == ("auth_expiry", NOW + dt.timedelta(days=7),
                                                      {"transaction": key})
    assert net.states[(GW, key)] == state and key == f"{pur.xid.hex()}.{merchant_tag('shop-0001').hex()}"


def test_issuer_request_carries_the_payment_and_stan_rrn_from_the_xid(p):
    net = network(p, with_issuer=False)
    pur = Purchase(p)
    out = net.step(GW, Inbound("AuthReq", pur.auth_req(), SHOP), NOW)
    (send,) = out.sends
    assert (send.to, send.message_type, out.state["state"]) == (BANK, "IssAuthReq", "ISSUER_AUTH")
    opened = open_Enc(message_body(decode_wrapper(send.wrapper_der)).dump(), p.issuer_kex,
                      "IssAuthReqTBE", "IssAuthReqData")
    assert opened.signed.signer == p.gateway_sig.cert
    data = decode(IssAuthReqData, opened.content).native
    assert (data["mti"], data["pan"], data["card_expiry"]) == ("0100", PAN, EXPIRY)
    assert data["stan"] == int.from_bytes(pur.xid[:3], "big") % 1_000_000
    assert (data["rrn"], data["xid"]) == (pur.xid.hex()[:12], pur.xid)
    assert (data["amount"], data["merchant_id"]) == (eur(1234), Parties.MER_ID)
    assert (data["acquirer_id"], data["processing_code"]) == ("41111111", "000000")
    ids = decode_wrapper(send.wrapper_der)["message_header"]["message_ids"].native
    assert ids == {"lid_c": None, "lid_m": merchant_tag(Parties.MER_ID), "xid": pur.xid}


def test_a_smaller_authorisation_than_the_purchase_is_allowed(p):
    pur = Purchase(p)
    code, data, _ = auth_res(p, auth(network(p), pur.auth_req(amount=eur(1000))))
    assert code == "approved"
    assert data["auth_res_payload"]["auth_header"]["auth_amt"]["amount"].native == 1000


def test_issuer_decline_is_relayed_with_its_iso_code(p):
    net = network(p)
    pur = Purchase(p, amount=600000)  # over alice's limit
    code, data, baggage = auth_res(p, auth(net, pur.auth_req()))
    head = data["auth_res_payload"]["auth_header"]
    assert code == "declined" and head["response_data"]["log_ref_id"].native == b"51"
    assert head["auth_amt"]["amount"].native == 0 and baggage["cap_token"].native is None
    assert open_acq(p, baggage, pur.back_key) == "51 insufficient funds"
    state = gw_state(net, pur)
    assert (state["state"], state["iso_code"]) == ("DECLINED", "51") and "secret" not in state


# --- the AuthReq check table, row by row ---------------------------------------------------------
def refused(p, der, **kw):
    """What the gateway answers ``der`` with when it cannot take it: (Error code, refusedHash)
    of the signed Error it sent to shop's directory address, or None when it sent nothing (the
    request names no merchant it can read); no transaction is created either way."""
    net = network(p, **kw)
    out = net.step(GW, Inbound("AuthReq", der, "attacker@evil.example"), NOW)
    assert out.state is None and not net.states and out.refused
    if not out.sends:
        return None
    (send,) = out.sends
    assert send.to == SHOP  # the directory's address of the merchant it claims, never From
    code, refused_hash = error_of(p, send)
    assert refused_hash == Inbound("AuthReq", der, SHOP).digest
    return code


def test_nothing_sent_when_the_envelope_is_for_another_key(p):
    assert refused(p, Purchase(p).auth_req(recipient=p.merchant_kex.cert)) is None


def test_nothing_sent_when_the_signer_is_no_merchant(p):
    der = Purchase(p).auth_req(signer=p.gateway_sig,
                               certs=[p.gateway_sig.cert, *p.gateway_sig.chain])
    assert refused(p, der) is None


def test_nothing_sent_when_the_merchant_signature_does_not_cover_the_pi(p):
    der = bytearray(Purchase(p).auth_req())
    der[len(der) - 400] ^= 0x01  # inside the PI baggage, which the signature binds by DD
    assert refused(p, bytes(der)) is None


def test_error_missing_certificate_without_the_merchant_kex_cert(p):
    der = Purchase(p).auth_req(certs=[p.merchant_sig.cert, *p.merchant_sig.chain])
    assert refused(p, der) == "missingCertificate"


def test_error_when_the_header_names_another_request(p):
    assert refused(p, Purchase(p).auth_req(header_rrpid=fresh())) == "badMessageHeader"
    assert refused(p, Purchase(p).auth_req(header_xid=fresh(20))) == "badMessageHeader"


def test_error_when_the_request_is_dated_outside_the_window(p):
    der = Purchase(p).auth_req(now=NOW - dt.timedelta(days=31))
    assert refused(p, der) == "messageTooOld"


def declined(p, net, pur, der, expected, genuine=True):
    """The AuthRes code for ``der``: nothing authorised, the issuer never asked, and the XID not
    spent (no state: only an AuthReq that passes every check spends it)."""
    code, data, baggage = auth_res(p, auth(net, der))
    assert code == expected
    assert data["auth_res_payload"]["auth_header"]["auth_amt"]["amount"].native == 0
    assert baggage["cap_token"].native is None and baggage["acq_card_msg"].native is None
    assert not [t for _, to, t in net.log if to == BANK]
    assert gw_state(net, pur) is None and not net.states
    if genuine:  # the genuine AuthReq still can spend it
        assert auth_res(p, auth(net, pur.auth_req()))[0] == "approved"


def wrong_pi(p, pur, change) -> bytes:
    if change == "not dual signed":
        token = pu.PANToken({"pan": PAN, "card_expiry": EXPIRY, "ex_nonce": fresh()}).dump()
        unsigned = dual.unsigned_purchase(p.gateway_kex.cert, pur.head, pur.oi, token)
        return b"\xa0" + unsigned.pi_dual_signed[1:]  # PI [0] pi_unsigned
    pi = bytearray(pur.pi)
    pi[-20] ^= 0x01  # in the GCM tag of exPIData
    return bytes(pi)


@pytest.mark.parametrize("change", ["other gateway's key", "pe_thumb", "not dual signed",
                                    "tampered envelope"])
def test_wrong_gateway(p, change):
    net = network(p)
    pur = Purchase(p, pi_for=p.merchant_kex.cert if change == "other gateway's key" else None,
                   pe_thumb=bytes(32) if change == "pe_thumb" else None)
    pi = wrong_pi(p, pur, change) if change in ("not dual signed", "tampered envelope") else None
    declined(p, net, pur, pur.auth_req(pi=pi), "wrongGateway", genuine=pi is not None)


def tampered_signature(pur) -> bytes:
    pi = bytearray(pur.pi)
    at = pi.find(b"\x04\x82\x01\x00") + 4  # the cardholder's 256-octet signature value
    pi[at + 10] ^= 0x01
    return bytes(pi)


@pytest.mark.parametrize("change", ["h_oi_data", "cardholder signature", "card not the cert's",
                                    "hod2", "trans_ids", "merchant_id"])
def test_pi_auth_mismatch(p, change):
    net = network(p)
    pur = Purchase(p, pan="4012888888881881" if change == "card not the cert's" else PAN,
                   merchant_id="other-shop" if change == "merchant_id" else Parties.MER_ID)
    kw = {"h_oi_data": {"h_oi": DD("OIData", pur.oi + b"\x00")},
          "hod2": {"hod2": DD("HODInput", b"\x30\x00")},
          "trans_ids": {"trans_ids": Purchase(p, xid=pur.xid).trans_ids},  # another LID-C
          "cardholder signature": {"pi": tampered_signature(pur)}}.get(change, {})
    if change in ("card not the cert's", "merchant_id"):
        code, _, _ = auth_res(p, auth(net, pur.auth_req(**kw)))
        assert code == "piAuthMismatch" and not net.states  # a PI that can never pass
        return
    declined(p, net, pur, pur.auth_req(**kw), "piAuthMismatch")


@pytest.mark.parametrize("amount", [eur(1235), eur(0), eur(1234, currency=840)],
                         ids=["more", "nothing", "other currency"])
def test_amount_error(p, amount):
    net = network(p)
    pur = Purchase(p)
    declined(p, net, pur, pur.auth_req(amount=amount), "amountError")


def test_invalid_transaction_when_the_purchase_request_is_old(p):
    net = network(p)
    pur = Purchase(p, p_req_date=NOW - dt.timedelta(days=31))
    code, _, _ = auth_res(p, auth(net, pur.auth_req()))
    assert code == "invalidTransaction" and not net.states
    recent = Purchase(p, p_req_date=NOW - dt.timedelta(days=29))
    assert auth_res(p, auth(net, recent.auth_req()))[0] == "approved"


def test_reused_xid_is_pi_previously_used_and_changes_nothing(p):
    net, pur, _ = approved(p)
    before, log = dict(gw_state(net, pur)), len(net.log)
    done = net.run(GW, Inbound("AuthReq", pur.auth_req(), "forged@evil.example"), NOW)
    assert auth_res(p, done)[0] == "piPreviouslyUsed"  # a new RRPID, to the directory address
    assert kept(gw_state(net, pur)) == kept(before)
    assert [t for _, _, t in net.log[log:]] == ["AuthRes"]
    assert done[0][1].peer == SHOP
    net = network(p)
    over = Purchase(p, amount=600000)
    assert auth_res(p, auth(net, over.auth_req()))[0] == "declined"
    assert auth_res(p, auth(net, over.auth_req()))[0] == "piPreviouslyUsed"


def test_the_first_failing_row_decides(p):
    """A wrong peThumb (row 4) and more than the cardholder signed (row 9): wrongGateway."""
    net = network(p)
    pur = Purchase(p, pe_thumb=bytes(32))
    code, _, _ = auth_res(p, auth(net, pur.auth_req(amount=eur(9999))))
    assert code == "wrongGateway" and not net.states


# --- capture ------------------------------------------------------------------------------------
def test_capture_posts_and_forgets_the_card(p):
    net, pur, token = approved(p)
    done = capture(net, pur.cap_req(token, amount=eur(1000)))
    assert [t for _, _, t in net.log][-3:] == ["IssCapReq", "IssCapRes", "CapRes"]
    send = to_shop(done, "CapRes")
    assert send.in_reply_to == "<capreq@shop>"
    (item,) = open_cap_res(p, send)["cap_res_item_seq"]
    assert item["cap_res_payload"]["cap_code"].native == "success"
    assert item["cap_res_payload"]["cap_amt"].native == eur(1000)
    assert item["trans_ids"].dump() == pur.trans_ids and item["auth_rrpid"].native == pur.auth_rrpid
    state = gw_state(net, pur)
    assert (state["state"], state["cap_code"], state["cap_amt"]) == ("CAPTURED", "success", 1000)
    assert "secret" not in state and PAN not in json.dumps(state)
    assert keyed(net, BANK, pur)["state"] == "POSTED"
    assert send.answers == Inbound("CapReq", net.delivered["CapReq"], SHOP).digest.hex()
    assert not [k for k in net.timers if k[0] == GW]  # captured: no expiry either
    log = len(net.log)  # a second capture: duplicateRequest, the issuer is not asked
    assert cap_code(p, capture(net, pur.cap_req(token))) == ("duplicateRequest", 0)
    assert [t for _, _, t in net.log[log:]] == ["CapRes"]


def test_capture_above_the_authorisation_is_amount_too_large(p):
    net, pur, token = approved(p)
    assert cap_code(p, capture(net, pur.cap_req(token, amount=eur(1235)))) == ("amountTooLarge", 0)
    assert gw_state(net, pur)["state"] == "AUTHORIZED"
    assert cap_code(p, capture(net, pur.cap_req(token))) == ("success", 1234)


def test_invalid_cap_tokens(p):
    net, pur, token = approved(p)
    _, other, other_token = approved(p, net)
    forged = Enc(p.merchant_sig, p.gateway_kex.cert, "CapTokenData", gw.CapTokenData({
        "auth_rrpid": pur.auth_rrpid, "auth_amt": eur(99999), "token_opaque": pur.xid}).dump(),
        "CapTokenTBE")
    for der in (pur.cap_req(other_token),              # another authorisation's token
                pur.cap_req(forged),                   # made by the merchant, not by us
                pur.cap_req(token, tokens=[token, token]),
                pur.cap_req(token, auth_rrpid=fresh())):
        assert cap_code(p, capture(net, der)) == ("invalidCapToken", 0)
    assert gw_state(net, pur)["state"] == gw_state(net, other)["state"] == "AUTHORIZED"


def test_capture_of_an_unknown_xid(p):
    net, pur, token = approved(p)
    stranger = Purchase(p)
    stranger.auth_rrpid = pur.auth_rrpid
    assert cap_code(p, capture(net, stranger.cap_req(token))) == ("unknownXID", 0)
    assert gw_state(net, stranger) is None


# --- retries, give-ups and the issuer's Errors --------------------------------------------------
def test_silent_issuer_gets_the_same_bytes_then_no_reply(p):
    net = network(p, with_issuer=False, max_retries=2)
    pur = Purchase(p)
    first = net.step(GW, Inbound("AuthReq", pur.auth_req(), SHOP), NOW).sends[0]
    for _ in range(2):
        (again,) = [s for _, out in fire_retry(net) for s in out.sends]
        assert (again.to, again.wrapper_der) == (BANK, first.wrapper_der)
    code, _, baggage = auth_res(p, fire_retry(net))
    assert code == "noReply" and baggage["cap_token"].native is None
    state = gw_state(net, pur)
    assert state["state"] == "DECLINED" and "secret" not in state and "_issuer" not in state
    assert state["reason"] == "no answer to IssAuthReq after 2 re-sends"
    assert not [k for k in net.timers if k[0] == GW]


def test_only_the_issuers_signed_error_naming_our_bytes_ends_the_request(p):
    net = network(p, with_issuer=False)
    pur = Purchase(p)
    request = net.step(GW, Inbound("AuthReq", pur.auth_req(), SHOP), NOW).sends[0]
    waiting = dict(gw_state(net, pur))
    retry = net.timers[(GW, purchase_key(pur.xid, Parties.MER_ID), "retry")].due
    other = error_wrapper("signatureFailure", pur.auth_req(), now=NOW)  # names another message
    tampered = bytearray(request.wrapper_der)
    tampered[-50] ^= 1  # the same header, other bytes
    forgeries = [error_wrapper("signatureFailure", request.wrapper_der, now=NOW),  # unsigned
                 error_wrapper("signatureFailure", request.wrapper_der, now=NOW,   # not the issuer
                               signer=p.merchant_sig),
                 error_wrapper("signatureFailure", bytes(tampered), now=NOW,       # other bytes
                               signer=p.issuer_sig)]
    for der in (other, *forgeries):
        out = net.step(GW, Inbound("Error", der, BANK), NOW)
        assert out.sends == () and out.refused
        state = gw_state(net, pur)
        assert state["state"] == "ISSUER_AUTH" and state["secret"] == waiting["secret"]
    # a forgery naming our request brings the re-send forward, once per attempt
    assert net.timers[(GW, purchase_key(pur.xid, Parties.MER_ID), "retry")].due == \
        NOW + dt.timedelta(seconds=60) < retry
    assert "names other bytes" in gw_state(net, pur)["issuer_error"]
    err = error_wrapper("signatureFailure", request.wrapper_der, now=NOW, signer=p.issuer_sig)
    done = net.run(GW, Inbound("Error", err, "forged@evil.example"), NOW)
    assert auth_res(p, done)[0] == "systemError"
    state = gw_state(net, pur)
    assert (state["state"], state["auth_code"]) == ("DECLINED", "systemError")
    assert "secret" not in state and "signatureFailure" in state["reason"]


def test_capture_give_up_returns_to_authorized(p):
    net, pur, token = approved(p)
    del net.roles[BANK]
    net.roles[GW] = gateway(p, max_retries=1)
    capture(net, pur.cap_req(token))
    assert gw_state(net, pur)["state"] == "ISSUER_CAP"
    fire_retry(net)
    assert cap_code(p, fire_retry(net)) == ("unspecifiedFailure", 0)
    state = gw_state(net, pur)
    assert state["state"] == "AUTHORIZED" and state["secret"]["pan"] == PAN
    (timer,) = [t for k, t in net.timers.items() if k[0] == GW]  # the expiry, set again
    assert timer.name == "auth_expiry" and timer.due == NOW + dt.timedelta(days=7)


def test_late_issuer_decline_changes_nothing(p):
    """(A late approval is reversed: tests/test_roles_reversal.py.)"""
    net = network(p, with_issuer=False, max_retries=0)
    pur = Purchase(p, amount=600000)  # over alice's limit: 51
    request = net.step(GW, Inbound("AuthReq", pur.auth_req(), SHOP), NOW).sends[0]
    fire_retry(net)  # gives up: noReply
    before = dict(gw_state(net, pur))
    answer = issuer(p).step(None, Inbound("IssAuthReq", request.wrapper_der, GW), NOW, {})
    out = net.step(GW, Inbound("IssAuthRes", answer.sends[0].wrapper_der, BANK), NOW)
    assert out.sends == () and out.state == before and before["state"] == "DECLINED"


def test_answer_signed_by_an_unpinned_key_is_refused(p):
    net = network(p, with_issuer=False)
    pur = Purchase(p)
    request = net.step(GW, Inbound("AuthReq", pur.auth_req(), SHOP), NOW).sends[0]
    impostor = issuer(p)
    impostor.config = type(impostor.config)(BANK, p.merchant_sig, p.issuer_kex,
                                            impostor.config.gateways, impostor.config.accounts)
    forged = impostor.step(None, Inbound("IssAuthReq", request.wrapper_der, GW), NOW, {})
    out = net.step(GW, Inbound("IssAuthRes", forged.sends[0].wrapper_der, BANK), NOW)
    assert out.sends == () and "pinned" in out.refused  # a response is never answered
    assert out.state["state"] == "ISSUER_AUTH" and gw_state(net, pur)["state"] == "ISSUER_AUTH"


# --- confidentiality ----------------------------------------------------------------------------
def test_gateway_files_never_hold_the_order_and_drop_the_card(p, tmp_path):
    net, sent = network(p), []
    net.tamper = lambda frm, send: sent.append((frm, send)) or send
    net, pur, token = approved(p, net)
    capture(net, pur.cap_req(token))
    store = Store(tmp_path / "gateway.db")
    with store.transaction(now=0) as tx:
        for (address, key), state in net.states.items():
            if address == GW:
                tx.put_state("tx/" + key, state)
    store.close()
    files = b"".join(f.read_bytes() for f in tmp_path.iterdir())
    mails = b"".join(s.wrapper_der for frm, s in sent if frm == GW)
    assert b"SECRET-ORDER-TEXT" not in files + mails and OD.encode() not in files
    assert PAN.encode() not in files + mails  # captured: forgotten; in mail: always enveloped


# --- with the real wallet and merchant roles ------------------------------------------------------
def test_real_wallet_and_merchant_complete_a_purchase_through_gateway_and_issuer(p):
    from setmail.roles.base import Command
    from setmail.roles.merchant import Merchant, MerchantConfig
    from setmail.roles.wallet import Wallet, WalletCard, WalletConfig
    alice, now, xid = "alice@wallet.example", NOW + dt.timedelta(hours=1), fresh(20).hex()
    net = network(p)
    net.roles[SHOP] = Merchant(MerchantConfig(
        SHOP, p.merchant_sig, p.merchant_kex, Parties.MER_ID, GW, p.gateway_kex.cert,
        p.tree.trust_store(), gateway_chain=p.gateway_kex.chain, bci=p.tree.brand.bci,
        auto_capture=True))
    net.roles[alice] = Wallet(WalletConfig(alice, p.tree.trust_store(), agent="alice",
                                           credentials=lambda *_: WalletCard(p.cardholder,
                                                                             p.pan_secret),
                                           merchants={SHOP: Parties.MER_ID}))
    order = {"xid": xid, "description": OD, "amount": 1234, "currency": 978,
             "cardholder": alice}
    net.run(SHOP, Command("order", order), now)
    net.run(alice, Command("buy", {**order, "merchant": SHOP, "pan": PAN, "expiry": EXPIRY,
                                   "brand": "Visa"}), now)
    assert [t for _, _, t in net.log] == [
        "PInitReq", "PInitRes", "PReq", "AuthReq", "IssAuthReq", "IssAuthRes", "AuthRes", "PRes",
        "CapReq", "IssCapReq", "IssCapRes", "CapRes"]
    states = {a: s for (a, k), s in net.states.items() if k.split(".")[0] == xid}
    assert {a: s["state"] for a, s in states.items()} == {
        alice: "APPROVED", SHOP: "CAPTURED", GW: "CAPTURED", BANK: "POSTED"}
    assert states[alice]["iso_code"] == "00" and states[SHOP]["cap_code"] == "success"
    assert OD not in json.dumps(states[GW]) and card(net) == {"held": 0, "posted": 1234}
