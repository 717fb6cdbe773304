"""What the payment gateway verifies and builds (docs/purchase.md), kept apart from its state
machine (``roles/gateway.py``).

Two kinds of refusal, because they go to different people: input we cannot authenticate as a
merchant's gets a SET Error (a ``SetmailError`` raised here, turned into a signed Error by
``@guarded``, sent only to the directory address of the merchant its signed content names); an
authenticated merchant request whose *payment* is wrong gets a real AuthRes or CapRes with a
refusing code (``Decline``), which the merchant relays to the cardholder.  Opening a request
(``open_request``) is pure and done once per event, so the gateway keys the purchase by the
merchant and XID *as signed*; judging the signer's path (``authenticate``) needs the clock and
happens in the step.  The PI checks run in
the contract's order and the first failure decides the code, so each failing step sits in an
``answer(code)`` block.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.fastder import Raw, encode
from setmail.asn1.strict import decode_native
from setmail.crypto import der, dual
from setmail.crypto.cms import cert_der
from setmail.crypto.operators import DD, Enc, EncB, EncK, open_Enc, open_EncB, open_EX, verify_SO
from setmail.crypto.reader import split_pair
from setmail.errors import DigestMismatch, ProtocolError, SetmailError
from setmail.pki.cardholder import verify_cardholder_id
from setmail.pki.setext import read_merchant_data
from setmail.pki.thumbs import thumbprint
from setmail.pki.validate import validate_path
from setmail.roles.base import Send
from setmail.roles.certs import cert_hex, load_cert_hex, path_check
from setmail.roles.wire import h, Parsed, unh, unwrap, wire, wrap
from setmail.roles.network_msgs import RESPONSE_CODES, once, when


class Decline(Exception):
    """An authenticated request refused with a code in the response (AuthCode or CapCode)."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


@contextmanager
def answer(code: str) -> Iterator[None]:
    """Inside the block, any SetmailError means: answer with ``code``."""
    try:
        yield
    except SetmailError as exc:
        raise Decline(code, str(exc)) from exc


def amount_ok(asked: Mapping, limit: Mapping) -> bool:
    """Same currency and exponent, more than nothing, not more than ``limit``."""
    return ((asked["currency"], asked["amt_exp10"]) == (limit["currency"], limit["amt_exp10"])
            and 0 < asked["amount"] <= limit["amount"])


# --- the merchant's envelope ---------------------------------------------------------------------
@dataclass(frozen=True)
class MerchantRequest:
    """An AuthReq/CapReq opened with our key, its signature verified.  Who signed it is a claim
    until ``authenticate`` has validated the signer's path; ``xid`` and ``rrpid`` are read under
    that signature (the TransIDs' XID, the RRTags' RRPID), never from the clear header."""

    type: str
    data: dict              # the <X>Data as plain values, the ``_REQUESTS`` raw fields as DER
    baggage: bytes
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    mer_id: str
    thumb: bytes            # of the signature certificate (AuthResData.merThumb)
    trans_ids: Any          # DER of the TransIDs (its ``.native`` the values)
    rrpid: bytes
    kex: x509.Certificate | None = None  # the merchant's key-exchange certificate, once authenticated

    @property
    def xid(self) -> bytes:
        return self.trans_ids.native["xid"]


def merchant_facts(signer: x509.Certificate, known: dict) -> tuple[str, bytes]:
    """(merID, thumbprint) of a merchant signature certificate, read once per certificate."""
    der = cert_der(signer)
    facts = known.get(der)
    if facts is None:
        info = read_merchant_data(signer)
        if info is None:
            raise ProtocolError("merchant signature certificate has no merchantData",
                                "invalidCertificate")
        if len(known) >= 1024:
            known.clear()
        facts = known[der] = (info.mer_id, thumbprint(der))
    return facts


def _first_item(data: dict):
    items = data["cap_item_seq"]
    if not items:
        raise ProtocolError("CapReq captures nothing", "messageNotSupported")
    return items[0]


#: message type -> (envelope type, signed type, baggage type, data class, the fields read as
#: DER (``decode_native``'s raw paths: echoed in the answer or compared byte-wise), where its
#: RRTags are, where the TransIDs that name the purchase are)
_REQUESTS = {
    "AuthReq": ("AuthReqTBE", "AuthReqTBS", "PI", gw.AuthReqData,
                ("auth_req_item.auth_tags", "auth_req_item.auth_tags.trans_ids",
                 "auth_req_item.check_digests.h_oi_data", "auth_req_item.check_digests.hod2"),
                lambda data: data["auth_req_item"]["auth_tags"].native["auth_rr_tags"],
                lambda data: data["auth_req_item"]["auth_tags"].native["trans_ids"]),
    "CapReq": ("CapReqTBE", "CapReqTBS", "CapTokenSeq", cap.CapReqData,
               ("cap_rr_tags", "cap_item_seq.*.trans_ids"),
               lambda data: data["cap_rr_tags"].native,
               lambda data: _first_item(data)["trans_ids"]),
}
#: PIHead fields compared byte-wise with the merchant's
_PI_HEAD_RAW = ("trans_ids", "inputs.hod")


def open_request(cfg, event, known: dict) -> MerchantRequest:
    """The AuthReq/CapReq ``event`` opened with our key and its signature verified, once per
    event: pure (no clock, no path validation), so ``Gateway.transaction_key`` can read the
    merchant and the XID from it before any state is read."""
    def compute() -> MerchantRequest:
        tbe, tbs, baggage, cls, raw, rr_tags, trans_ids = _REQUESTS[event.message_type]
        opened = open_EncB(wire(event).body, cfg.key_exchange, tbe, tbs, baggage,
                           suite=cfg.suite)
        signer = opened.signed.signer
        mer_id, thumb = merchant_facts(signer, known)
        data = decode_native(cls, opened.content, raw=raw)
        return MerchantRequest(event.message_type, data, opened.baggage, signer,
                               opened.signed.certificates, mer_id, thumb, trans_ids(data),
                               rr_tags(data)["rrpid"])
    return once(event, "merchant", compute)


def authenticate(cfg, event, now: dt.datetime, known: dict) -> tuple[Parsed, MerchantRequest]:
    """(parsed, request) of an AuthReq/CapReq from an authenticated merchant, once per event:
    framing (``unwrap``), the signer's path ``mer`` (and CRLs), the clear header's RRPID and XID
    equal to the signed ones (a replay with a changed header is refused, never taken for another
    request), and the merchant's own key-exchange certificate among the certificates (for the
    answer).  Any failure is a SetmailError."""
    def compute() -> tuple[Parsed, MerchantRequest]:
        parsed = unwrap(event, now)
        req = open_request(cfg, event, known)
        certs = req.certificates
        path_check(cfg.trust, now, "mer", crls=cfg.crls)(req.signer, certs)
        if parsed.rrpid != req.rrpid:
            raise ProtocolError("MessageHeader RRPID disagrees with the request's RRTags",
                                "badMessageHeader")
        if parsed.message_id("xid") != req.xid:
            raise ProtocolError("MessageHeader XID disagrees with the request's TransIDs",
                                "badMessageHeader")
        for cert in certs:
            if cert == req.signer or cert.subject != req.signer.subject:
                continue
            try:
                validate_path(cert, certs, cfg.trust, now=now, expected_type="mer",
                              key_usage="key_encipherment", crls=cfg.crls)
            except SetmailError:
                continue
            return parsed, replace(req, kex=cert)
        raise ProtocolError("no key-exchange certificate of the signing merchant",
                            "missingCertificate")
    return once(event, "authenticated", compute)


def authenticated(event) -> MerchantRequest | None:
    """The request ``authenticate`` accepted for this event, if it did."""
    found = event.__dict__.get("_once", {}).get("authenticated")
    return None if found is None or isinstance(found, Exception) else found[1]


def claimed(event) -> MerchantRequest | None:
    """The request as opened, if it opened: the merchant it *claims* to come from."""
    found = event.__dict__.get("_once", {}).get("merchant")
    return None if found is None or isinstance(found, Exception) else found


def reply_to(event, to: str, req: MerchantRequest, **fields) -> dict:
    """What answering a merchant request later needs, as JSON-able state: the directory
    address ``to``, the RRPID and the purchase's ids as the merchant signed them."""
    ids = {k: v for k, v in req.trans_ids.native.items() if k in ("lid_c", "lid_m", "xid") and v}
    return {"to": to, "mail": event.mail_id or None, "rrpid": h(req.rrpid),
            "ids": {k: h(v) for k, v in ids.items()}, "mer_kex": cert_hex(req.kex), **fields}


# --- AuthReq: the payment instruction ------------------------------------------------------------
@dataclass(frozen=True)
class Payment:
    """What a PI that passed every check lets the gateway ask the issuer for."""

    pan: str
    expiry: str
    amount: dict
    back_key: bytes | None


def check_payment(cfg, req: MerchantRequest, now: dt.datetime) -> Payment:
    """The contract's PI checks, in order; ``Decline`` with the AuthCode of the first failure.

    ``dual.gateway_verify``'s steps, split where the contract splits its answers: whatever fails
    while opening the PI's envelope (or reading the peThumb inside) is wrongGateway, the dual
    signature and everything after it piAuthMismatch; one RSA decryption either way."""
    item = req.data["auth_req_item"]
    tags, digests = item["auth_tags"].native, item["check_digests"]
    with answer("wrongGateway"):
        if req.baggage[:1] != b"\xa1":
            raise ProtocolError("PI is not pi_dual_signed")
        signature, ex_pi_data = dual.split_pi_dual_signed(b"\x30" + req.baggage[1:])
        link = open_EX(ex_pi_data, cfg.key_exchange, "PIDualSignedTBE", "PANData", suite=cfg.suite)
        head_der, h_oi = split_pair(link.content, "PI-OILink")
        head = decode_native(pu.PIHead, head_der, raw=_PI_HEAD_RAW)
        if head["pe_thumb"] != cfg.kex_thumb:
            raise ProtocolError("the PI names another gateway (PIHead.peThumb)")
    with answer("piAuthMismatch"):
        if digests is None or h_oi != digests["h_oi_data"]:
            raise DigestMismatch("merchant's DD(OIData) differs from the cardholder's")
        h_pi = DD("PIData", der.seq(head_der, link.extra), cfg.suite)
        signed = verify_SO(signature, "PI-TBS", dual.pi_tbs(h_pi, h_oi),
                           validate=path_check(cfg.trust, now, "card", crls=cfg.crls),
                           suite=cfg.suite)
        pan_data = decode_native(pu.PANData, link.extra)
        pan, expiry = pan_data["pan"], pan_data["card_expiry"]
        verify_cardholder_id(signed.signer, pan_data["pan_secret"], pan, expiry, cfg.suite)
        if head["inputs"]["hod"] != digests["hod2"]:
            raise DigestMismatch("merchant's HOD differs from the cardholder's")
        if head["trans_ids"] != tags["trans_ids"]:
            raise ProtocolError("PIHead.TransIDs differ from the AuthReq's")
        if head["merchant_id"] != req.mer_id:
            raise ProtocolError("the PI names another merchant")
    amount = item["auth_req_payload"]["auth_req_amt"]
    if not amount_ok(amount, head["inputs"]["purch_amt"]):
        raise Decline("amountError", "AuthReqAmt is not the purchase amount or less")
    if tags["trans_ids"].native["p_req_date"] < now - cfg.max_pi_age:
        raise Decline("invalidTransaction", "the purchase request is too old")
    back = head["acq_back_key_data"]
    back_key = back["back_key"] if back is not None else None
    return Payment(pan, expiry, amount, back_key if back_key and len(back_key) == 32 else None)


# --- CapReq: the capture token ------------------------------------------------------------------
def cap_token(cfg, *, auth_rrpid: bytes, amount: Mapping, opaque: bytes) -> bytes:
    """Enc(P, P, CapTokenData): only we can open it; it carries no certificate (we know ours).
    ``opaque``: the purchase's key as octets (XID and merchant tag), so a token names the one
    merchant's purchase it was issued for."""
    return Enc(cfg.signature, cfg.key_exchange.cert, "CapTokenData",
               cap_token_data(auth_rrpid=auth_rrpid, amount=amount, opaque=opaque), "CapTokenTBE",
               certs=(), suite=cfg.suite)


def cap_token_data(*, auth_rrpid: bytes, amount: Mapping, opaque: bytes) -> bytes:
    """What the CapToken remembers: the authorisation's RRPID and amount, the purchase's key."""
    return encode(gw.CapTokenData, {"auth_rrpid": auth_rrpid, "auth_amt": dict(amount),
                                    "token_opaque": opaque})


def check_capture(cfg, state: Mapping, req: MerchantRequest, opaque: bytes,
                  now: dt.datetime) -> dict:
    """The contract's CapReq checks, in order; returns the amount to capture or raises
    ``Decline`` with the CapCode of the first failure.  ``opaque``: this purchase's key as
    octets, which the token must name (another merchant's token names another key)."""
    item = req.data["cap_item_seq"][0]
    with answer("invalidCapToken"):
        tokens = decode_native(gw.CapTokenSeq, req.baggage)  # each the CapToken's DER (opaque)
        if len(tokens) != 1:
            raise ProtocolError("CapReq must carry exactly one CapToken")
        opened = open_Enc(tokens[0], cfg.key_exchange, "CapTokenTBE", "CapTokenData",
                          certs=(cfg.signature.cert,), suite=cfg.suite)
        if opened.signed.signer != cfg.signature.cert:
            raise ProtocolError("CapToken is not signed by this gateway")
        token = decode_native(gw.CapTokenData, opened.content)
    if state["state"] not in ("AUTHORIZED", "ISSUER_CAP", "CAPTURED", "EXPIRED"):
        raise Decline("unknownXID", "no authorisation for this XID from this merchant")
    auth_rrpid = unh(state["_reply"]["rrpid"])
    if (token["token_opaque"] != opaque
            or token["auth_rrpid"] != auth_rrpid or item["auth_rrpid"] != auth_rrpid):
        raise Decline("invalidCapToken", "CapToken or AuthRRPID is not this purchase's "
                      "authorisation")
    if item["trans_ids"] != unh(state["_trans_ids"]):
        raise Decline("unknownXID", "TransIDs are not this XID's")
    if req.mer_id != state["mer_id"]:
        raise Decline("invalidCapToken", "another merchant than the one authorised")
    if state["state"] == "EXPIRED" or (
            state["state"] == "AUTHORIZED" and when(now) >= state["expires_at"]):
        raise Decline("authExpired", "the authorisation expired uncaptured")
    if state["state"] != "AUTHORIZED":
        raise Decline("duplicateRequest", "this authorisation is captured or being captured")
    asked, authorised = item["cap_payload"]["cap_req_amt"], token["auth_amt"]
    if not amount_ok(asked, authorised):
        raise Decline("amountTooLarge", "CapReqAmt exceeds the authorised amount")
    return asked


# --- answers to the merchant (and, through it, the cardholder) -----------------------------------
def acq_card_msg(cfg, back_key: bytes, iso: str) -> bytes:
    """EncK(back key, P, AcqCardCodeMsg): the issuer's verdict for the cardholder's eyes only."""
    return EncK(back_key, cfg.signature, "AcqCardCodeMsg", acq_card_code_msg(iso),
                "AcqCardCodeMsgTBE", suite=cfg.suite)


def acq_card_code_msg(iso: str) -> bytes:
    """AcqCardCodeMsg: "<ISO code> <meaning>" as accountInfo text (the wallet reads it back)."""
    return encode(pu.AcqCardCodeMsg, {"acq_card_code": "accountInfo", "acq_card_msg_data": {
        "acq_card_text": f"{iso} {RESPONSE_CODES.get(iso, 'unknown response')}"}})


def _send(reply: Mapping, type_name: str, body: bytes, now: dt.datetime,
          answers: str | None) -> Send:
    ids = {k: unh(v) for k, v in reply["ids"].items()}
    der_ = wrap(type_name, body, now=now, rrpid=unh(reply["rrpid"]), **ids)
    return Send(reply["to"], type_name, der_, reply["mail"], answers=answers)


_BCI_DER: dict[int, tuple[Any, bytes]] = {}


def _bci(bci) -> dict:
    """The BrandCRLIdentifier field of an answer: the configured one (an asn1crypto value), if
    any, dumped once: a value whose fields were read re-checks them all at every dump()."""
    if bci is None:
        return {}
    held = _BCI_DER.get(id(bci))
    if held is None or held[0] is not bci:
        if len(_BCI_DER) >= 8:
            _BCI_DER.clear()
        held = _BCI_DER[id(bci)] = (bci, bci.dump())
    return {"brand_crl_identifier": Raw(held[1])}


def auth_res_data(bci, reply: Mapping, *, code: str, amount: Mapping, iso: str | None = None,
                  approval: str | None = None) -> bytes:
    """AuthResData echoing the AuthReq's AuthTags (as received) and naming the merchant's
    certificate; ``iso``/``approval``: the issuer's response code and approval code."""
    response: dict[str, Any] = {}
    if approval:
        response["auth_val_codes"] = {"approval_code": approval}
    if iso:
        response.update(resp_reason="issuer", log_ref_id=iso.encode())
    return encode(gw.AuthResData, {
        "auth_tags": Raw(unh(reply["auth_tags"])), **_bci(bci),
        "auth_res_payload": {"auth_header": {"auth_amt": dict(amount), "auth_code": code,
                                             "response_data": response}},
        "mer_thumb": unh(reply["mer_thumb"])})


def auth_res_baggage(token: bytes | None = None, acq: bytes | None = None) -> bytes:
    """AuthResBaggage: the CapToken and the AcqCardMsg, as the gateway sealed them."""
    baggage = {name: Raw(der) for name, der in (("cap_token", token), ("acq_card_msg", acq))
               if der is not None}
    return encode(gw.AuthResBaggage, baggage)


def auth_res(cfg, reply: Mapping, now: dt.datetime, *, code: str, amount: Mapping,
             iso: str | None = None, approval: str | None = None, token: bytes | None = None,
             acq: bytes | None = None, answers: str | None = None) -> Send:
    """EncB(P, M, AuthResData, AuthResBaggage) echoing the AuthReq's AuthTags; ``answers``: the
    AuthReq's digest when answered in a later step (``Send.answers``)."""
    data = auth_res_data(cfg.bci, reply, code=code, amount=amount, iso=iso, approval=approval)
    body = EncB(cfg.signature, load_cert_hex(reply["mer_kex"]), "AuthResTBS", data,
                "AuthResBaggage", auth_res_baggage(token, acq), "AuthResTBE", suite=cfg.suite)
    return _send(reply, "AuthRes", body, now, answers)


def cap_res_data(bci, reply: Mapping, *, code: str, amount: Mapping) -> bytes:
    """CapResData with one item for the CapReq's one item (its RRTags and TransIDs as received)."""
    return encode(cap.CapResData, {
        "cap_rr_tags": Raw(unh(reply["cap_rr_tags"])), **_bci(bci),
        "cap_res_item_seq": [{"trans_ids": Raw(unh(reply["trans_ids"])),
                              "auth_rrpid": unh(reply["auth_rrpid"]),
                              "cap_res_payload": {"cap_code": code, "cap_amt": dict(amount)}}]})


def cap_res(cfg, reply: Mapping, now: dt.datetime, *, code: str, amount: Mapping,
            answers: str | None = None) -> Send:
    """Enc(P, M, CapResData) with one item for the CapReq's one item."""
    body = Enc(cfg.signature, load_cert_hex(reply["mer_kex"]), "CapResData",
               cap_res_data(cfg.bci, reply, code=code, amount=amount), "CapResTBE",
               suite=cfg.suite)
    return _send(reply, "CapRes", body, now, answers)
