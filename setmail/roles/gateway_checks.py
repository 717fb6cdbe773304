"""What the payment gateway verifies before it asks the issuer (docs/purchase.md,
docs/lifecycle.md), kept apart from its state machine (``roles/gateway.py``): the payment
instruction of an AuthReq, and the CapToken every later request of a purchase carries.

Two kinds of refusal, because they go to different people: input we cannot authenticate as a
merchant's gets a SET Error (a ``SetmailError`` raised while opening it, ``gateway_requests``,
turned into a signed Error by ``@guarded``, sent only to the directory address of the merchant
its signed content names); an authenticated merchant request whose *payment* is wrong gets a real
answer with a refusing code (``Decline``: AuthRes, CapRes, AuthRevRes, CredRes ...), which the
merchant relays to the cardholder.  The PI checks run in the contract's order and the first
failure decides the code, so each failing step sits in an ``answer(code)`` block.

The CapToken is the gateway's EncX(P, P, CapTokenData, PANToken) (SET's CapTokenTBEX form): only
the gateway opens it, and it carries the card in the OAEP block, so the gateway need not keep the
PAN once a purchase can no longer be captured without the token (after a capture reversal, the
token the CapRevReq carries gives it back, D-162).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from setmail.asn1 import gateway as gw, purchase as pu
from setmail.asn1.codec.fastder import encode
from setmail.asn1.codec.strict import decode_native
from setmail.crypto import der, dual
from setmail.crypto.operators import DD, EncX, open_EX, open_EncX, verify_SO
from setmail.crypto.reader import split_pair
from setmail.crypto.suite import fresh
from setmail.errors import DigestMismatch, ProtocolError, SetmailError
from setmail.pki.cardholder import verify_cardholder_id
from setmail.roles.certs import path_check
from setmail.roles.network_msgs import when
from setmail.roles.wire import unh
# the pieces other modules and tests import from here
from setmail.roles.gateway_answers import (acq_card_code_msg, acq_card_msg, auth_res,  # noqa: F401
                                           auth_res_baggage, auth_res_data, cap_res,
                                           cap_res_data)
from setmail.roles.gateway_requests import (MerchantRequest, authenticate,  # noqa: F401
                                            authenticated, claimed, merchant_facts, open_request,
                                            reply_to)

#: PIHead fields compared byte-wise with the merchant's
_PI_HEAD_RAW = ("trans_ids", "inputs.hod", "install_recur_data")
#: states of a purchase whose authorisation was approved at some point (a CapToken exists)
APPROVED_ONCE = frozenset({"AUTHORIZED", "CAPTURED", "EXPIRED", "VOIDED", "ISSUER_CAP",
                           "ISSUER_REV", "ISSUER_REAUTH", "ISSUER_CRED", "ISSUER_CREDREV",
                           "ISSUER_CAPREV"})
#: states with an issuer request outstanding for a purchase already approved
BUSY = frozenset({"ISSUER_CAP", "ISSUER_REV", "ISSUER_REAUTH", "ISSUER_CRED", "ISSUER_CREDREV",
                  "ISSUER_CAPREV"})


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


# --- AuthReq: the payment instruction ------------------------------------------------------------
@dataclass(frozen=True)
class Payment:
    """What a PI that passed every check lets the gateway ask the issuer for."""

    pan: str
    expiry: str
    amount: dict
    back_key: bytes | None
    purch_amt: dict
    #: the InstallRecurData both the cardholder (PIHead) and the merchant signed, as DER
    terms: bytes | None = None


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
    amount, terms = item["auth_req_payload"]["auth_req_amt"], head["install_recur_data"]
    if item["auth_req_payload"]["install_recur_data"] != terms:
        raise Decline("installRecurMismatch", "the merchant's InstallRecurData is not the one "
                      "the cardholder signed")
    if not amount_ok(amount, head["inputs"]["purch_amt"]):
        raise Decline("amountError", "AuthReqAmt is not the purchase amount or less")
    if tags["trans_ids"].native["p_req_date"] < now - cfg.max_pi_age:
        raise Decline("invalidTransaction", "the purchase request is too old")
    back = head["acq_back_key_data"]
    back_key = back["back_key"] if back is not None else None
    return Payment(pan, expiry, amount, back_key if back_key and len(back_key) == 32 else None,
                   head["inputs"]["purch_amt"], terms)


# --- the CapToken ------------------------------------------------------------------------------
def pan_token(pan: str, expiry: str) -> bytes:
    """PANToken {pan, cardExpiry, exNonce}: the card as a token seals it (a fresh nonce each
    time, so two tokens of one card share no ciphertext pattern)."""
    return encode(pu.PANToken, {"pan": pan, "card_expiry": expiry, "ex_nonce": fresh()})


def cap_token(cfg, *, auth_rrpid: bytes, amount: Mapping, opaque: bytes, pan: str,
              expiry: str) -> bytes:
    """EncX(P, P, CapTokenData, PANToken): only we can open it; it carries no certificate (we
    know ours).  ``opaque``: the purchase's key as octets (XID and merchant tag), so a token
    names the one merchant's purchase it was issued for."""
    return EncX(cfg.signature, cfg.key_exchange.cert, "CapTokenTBS",
                cap_token_data(auth_rrpid=auth_rrpid, amount=amount, opaque=opaque),
                "PANToken", pan_token(pan, expiry), "CapTokenTBEX", certs=(), suite=cfg.suite)


def cap_token_data(*, auth_rrpid: bytes, amount: Mapping, opaque: bytes) -> bytes:
    """What the CapToken remembers: the authorisation's RRPID and amount, the purchase's key."""
    return encode(gw.CapTokenData, {"auth_rrpid": auth_rrpid, "auth_amt": dict(amount),
                                    "token_opaque": opaque})


@dataclass(frozen=True)
class Token:
    """A CapToken we issued, opened: its CapTokenData and the card it seals."""

    data: dict
    pan: str
    expiry: str
    der: bytes = b""  # the token as the merchant sent it (kept to re-open: the card stays sealed)


class MissingToken(ProtocolError):
    """The request carries no CapToken at all (capTokenMissing / missingCapToken)."""


def open_cap_token(cfg, baggage: bytes | None) -> Token:
    """The one CapToken of a CapTokenSeq baggage, opened and signed by us; MissingToken when the
    sequence is empty, another SetmailError when it is not one token of ours."""
    tokens = decode_native(gw.CapTokenSeq, baggage or b"")  # each the CapToken's DER (opaque)
    if not tokens:
        raise MissingToken("the request carries no CapToken")
    if len(tokens) != 1:
        raise ProtocolError("the request must carry exactly one CapToken")
    return open_token_der(cfg, tokens[0])


def open_token_der(cfg, token: bytes) -> Token:
    """A CapToken's DER opened: EncX with our key, signed by our signature certificate."""
    opened = open_EncX(token, cfg.key_exchange, "CapTokenTBEX", "CapTokenTBS", "PANToken",
                       certs=(cfg.signature.cert,), suite=cfg.suite)
    if opened.signed.signer != cfg.signature.cert:
        raise ProtocolError("CapToken is not signed by this gateway")
    card = decode_native(pu.PANToken, opened.extra)
    return Token(decode_native(gw.CapTokenData, opened.content), card["pan"],
                 card["card_expiry"], bytes(token))


def token_names(state: Mapping, token: Token, opaque: bytes, auth_rrpid: bytes) -> bool:
    """Does ``token`` name this purchase (its key) and one of its authorisations, and does the
    request's AuthRRPID name that same authorisation?"""
    return (token.data["token_opaque"] == opaque and auth_rrpid == token.data["auth_rrpid"]
            and token.data["auth_rrpid"].hex() in state.get("_auth_rrpids", ()))


def remaining(state: Mapping) -> int:
    """What is authorised and not captured (minor units)."""
    return state.get("auth_amt", 0) - state.get("cap_amt", 0)


def check_capture(cfg, state: Mapping, req: MerchantRequest, opaque: bytes,
                  now: dt.datetime) -> tuple[dict, Token]:
    """The contract's CapReq checks, in order; returns (amount to capture, the token) or raises
    ``Decline`` with the CapCode of the first failure.  ``opaque``: this purchase's key as
    octets, which the token must name (another merchant's token names another key)."""
    item = req.data["cap_item_seq"][0]
    try:
        token = open_cap_token(cfg, req.baggage)
    except MissingToken as exc:
        raise Decline("capTokenMissing", str(exc)) from exc
    except SetmailError as exc:
        raise Decline("invalidCapToken", str(exc)) from exc
    if state["state"] not in APPROVED_ONCE:
        raise Decline("unknownXID", "no authorisation for this XID from this merchant")
    if not token_names(state, token, opaque, item["auth_rrpid"]):
        raise Decline("invalidCapToken", "CapToken or AuthRRPID is not this purchase's "
                      "authorisation")
    if item["trans_ids"] != unh(state["_trans_ids"]):
        raise Decline("unknownXID", "TransIDs are not this XID's")
    if req.mer_id != state["mer_id"]:
        raise Decline("invalidCapToken", "another merchant than the one authorised")
    if state["state"] == "EXPIRED" or (
            state["state"] == "AUTHORIZED" and when(now) >= state["expires_at"]):
        raise Decline("authExpired", "the authorisation expired uncaptured")
    if state["state"] == "VOIDED":
        raise Decline("invalidAuthData", "the authorisation was reversed (voided)")
    if state["state"] != "AUTHORIZED":
        raise Decline("duplicateRequest", "this authorisation is captured or being captured")
    asked, money = item["cap_payload"]["cap_req_amt"], _money(state)
    if not amount_ok(asked, {**money, "amount": remaining(state)}):
        raise Decline("amountTooLarge", "CapReqAmt exceeds what is authorised and not captured")
    return asked, token


def _money(state: Mapping) -> dict:
    return {k: state[k] for k in ("currency", "amount", "amt_exp10")}
