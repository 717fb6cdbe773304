"""The gateway <-> issuer messages (D-130) as the two roles build and open them.

Every one is ``Enc(sender sig, receiver kex, <X>Data, <X>TBE)`` and carries only the sender's
signature certificate: the receiver trusts a signer solely because its certificate is one it
pinned (``pki.pinned.pinned_check``), never because of a chain.  The wrapper header carries a fresh
RRPID on requests, echoed by the response, the XID and, as LID-M, the merchant's tag
(``merchant_tag``): a purchase is one merchant's XID, and two merchants may pick the same XID
(D-141), so the gateway routes an answer (or an Error) by both.  The header is clear and proves
nothing: each side keys and checks by the signed payload (XID and DE 42, which every response
echoes).  STAN and RRN are derived from the XID (docs/purchase.md) so a re-sent request and its
answer can be matched without extra state; each request of one purchase gets its own STAN (its
kind, and ``seq``, the how-many-th request of that kind it is: a second authorisation, capture or
credit).  A clearing request (0500) is about a batch, not a purchase: it names the batch by a
derived XID (``batch_xid``), so the header, the keys and the answer checks work as for the rest.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from cryptography import x509

from setmail.asn1 import issuer as iss
from setmail.asn1.codec.fastder import encode
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.cms import Identity, Signed
from setmail.crypto.operators import Enc, open_Enc
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.pinned import pinned_check
from setmail.roles.base import Inbound
from setmail.roles.wire import Parsed, wire, wrap

#: message type -> (ISO 8583 MTI, class of its signed content)
KINDS: dict[str, tuple[str, type]] = {
    "IssAuthReq": ("0100", iss.IssAuthReqData), "IssAuthRes": ("0110", iss.IssAuthResData),
    "IssCapReq": ("0220", iss.IssCapReqData), "IssCapRes": ("0230", iss.IssCapResData),
    "IssRevReq": ("0400", iss.IssRevReqData), "IssRevRes": ("0410", iss.IssRevResData),
    "IssCredReq": ("0220", iss.IssCredReqData), "IssCredRes": ("0230", iss.IssCredResData),
    "IssCredRevReq": ("0420", iss.IssCredRevReqData),
    "IssCredRevRes": ("0430", iss.IssCredRevResData),
    "IssCapRevReq": ("0420", iss.IssCapRevReqData), "IssCapRevRes": ("0430", iss.IssCapRevResData),
    "IssClearReq": ("0500", iss.IssClearReqData), "IssClearRes": ("0510", iss.IssClearResData),
}
#: request type -> what its DE 11 adds to the authorisation's STAN (a new number per request);
#: the ``seq``-th request of one kind adds ``STAN_STRIDE * seq`` more
STAN_STEP = {"IssAuthReq": 0, "IssCapReq": 1, "IssRevReq": 2, "IssCredReq": 3,
             "IssCredRevReq": 4, "IssCapRevReq": 5, "IssClearReq": 6}
STAN_STRIDE = 8
#: DE 3 of a credit (refund) request
CREDIT_PROCESSING_CODE = "200000"
#: DE 39 a reversal request carries as its reason: the approval came after the gateway gave up
REVERSAL_REASON = "68"
#: ... or the authorisation expired uncaptured ("no action taken": the merchant never completed)
EXPIRY_REASON = "21"
#: ... or the merchant cancelled it (void, AuthRevReq), or undid a capture or a credit (0420)
CANCEL_REASON = "17"
#: octets of SHA-256(merID) in a merchant's tag
TAG_SIZE = 8
#: issuer response code (DE 39) -> SET AuthCode in AuthRes; anything else is systemError
AUTH_CODES = {"00": "approved", "05": "declined", "51": "declined", "14": "invalidTransaction",
              "54": "expiredCard"}
#: issuer response code -> SET CapCode in CapRes; anything else is unspecifiedFailure
CAP_CODES = {"00": "success", "13": "amountTooLarge", "12": "invalidAuthData",
             "94": "duplicateRequest"}
#: issuer response code of a 0410 -> SET AuthRevCode; anything else is declined
AUTH_REV_CODES = {"00": "approved", "13": "amountError", "12": "alreadyCaptured",
                  "25": "unknownXID"}
#: issuer response code of a credit (0230) -> SET CapRevOrCredCode; else unspecifiedFailure
CRED_CODES = {"00": "success", "12": "originalNotFound", "13": "amountTooLarge",
              "94": "duplicateRequest"}
#: ... of a credit or capture reversal (0430): 12 = settled (or credited, or reversed already)
REV_ADVICE_CODES = {"00": "success", "25": "originalNotFound", "12": "originalProcessed"}
RESPONSE_CODES = iss.RESPONSE_CODES


def auth_code(response_code: str) -> str:
    return AUTH_CODES.get(response_code, "systemError")


def cap_code(response_code: str) -> str:
    return CAP_CODES.get(response_code, "unspecifiedFailure")


def auth_rev_code(response_code: str) -> str:
    return AUTH_REV_CODES.get(response_code, "declined")


def cred_code(response_code: str) -> str:
    return CRED_CODES.get(response_code, "unspecifiedFailure")


def rev_advice_code(response_code: str) -> str:
    """CapRevOrCredCode for the answer to an IssCredRevReq or IssCapRevReq."""
    return REV_ADVICE_CODES.get(response_code, "unspecifiedFailure")


def stan(xid: bytes, kind: str = "IssAuthReq", seq: int = 0) -> int:
    """DE 11: from the XID's first three octets; each kind of request uses the next numbers
    (``STAN_STEP``), and its ``seq``-th repetition on the same purchase (a second authorisation,
    capture, credit; 0 = the first) ``STAN_STRIDE * seq`` further on, so every request of one
    purchase has its own STAN, and a re-sent one the same."""
    if seq < 0:
        raise ValueError("seq counts from 0")
    return (int.from_bytes(xid[:3], "big") + STAN_STEP[kind] + STAN_STRIDE * seq) % 1_000_000


def batch_xid(mer_id: str, batch_id: int) -> bytes:
    """The XID a clearing request (0500) and its answer carry for one merchant's batch: 32 octets
    from SHA-256, so it names the batch in headers, keys and answer checks like a purchase's."""
    return hashlib.sha256(b"setmail batch\x00" + mer_id.encode() + b"\x00"
                          + str(batch_id).encode()).digest()


def clear_totals(items: Iterable[Mapping[str, Any]]) -> list[dict]:
    """ClearTotals of clearing ``items`` ({xid, kind, stan, amount: CurrencyAmount}): per
    currency (in order of first appearance), the count and sum of captures and of credits.  The
    gateway sends these; the issuer computes its own from the items it matched and compares."""
    totals: dict[tuple[int, int], dict] = {}
    for item in items:
        amount = item["amount"]
        total = totals.setdefault((amount["currency"], amount["amt_exp10"]), {
            "currency": amount["currency"], "amt_exp10": amount["amt_exp10"],
            "capture_count": 0, "capture_amount": 0, "credit_count": 0, "credit_amount": 0})
        total[item["kind"] + "_count"] += 1
        total[item["kind"] + "_amount"] += amount["amount"]
    return list(totals.values())


def rrn(xid: bytes) -> str:
    """DE 37: the XID's first twelve hex digits."""
    return xid.hex()[:12]


def merchant_tag(mer_id: str) -> bytes:
    """The first 8 octets of SHA-256(merID): names a merchant in transaction keys and in the
    issuer leg's header (LID-M), where a merID of any length and alphabet would not fit."""
    return hashlib.sha256(mer_id.encode()).digest()[:TAG_SIZE]


def purchase_key(xid: bytes, mer_id: str) -> str:
    """``<XID hex>.<merchant tag hex>``: one merchant's purchase (``setmail tx show <xid>`` finds
    it by the prefix)."""
    return f"{xid.hex()}.{merchant_tag(mer_id).hex()}"


def key_octets(key: str) -> bytes:
    """The key as octets (XID, then tag): what a CapToken names (``token_opaque``)."""
    return bytes.fromhex(key.replace(".", ""))


def leg_ids(xid: bytes, mer_id: str) -> dict[str, bytes]:
    """The header ids of an issuer-leg request: the XID and the merchant's tag as LID-M."""
    return {"lid_m": merchant_tag(mer_id), "xid": xid}


T = TypeVar("T")


def once(event: Inbound, slot: str, compute: Callable[[], T]) -> T:
    """``compute()`` for this event, computed at most once (``transaction_key`` and the step both
    need the opened message; opening costs an RSA decryption).  Kept in the event as
    ``roles.wire.wire`` keeps the split wrapper; a SetmailError is kept and raised again."""
    cache = event.__dict__.setdefault("_once", {})
    if slot not in cache:
        try:
            cache[slot] = compute()
        except SetmailError as exc:
            cache[slot] = exc
    found = cache[slot]
    if isinstance(found, SetmailError):
        raise found
    return found


def zero(amount: Mapping[str, Any]) -> dict:
    """The same currency and exponent, nothing in it (declines carry amount 0)."""
    return {"currency": amount["currency"], "amount": 0, "amt_exp10": amount["amt_exp10"]}


def when(moment: dt.datetime) -> str:
    """A date as both roles record it in state: UTC, second precision, ISO 8601."""
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


def message_ids(parsed: Parsed) -> dict[str, bytes]:
    """lid_c, lid_m, xid of a received header (those present), to echo in the answer."""
    ids = parsed.header["message_ids"] or {}
    return {k: v for k, v in ids.items() if v is not None}


def payload(kind: str, fields: Mapping[str, Any]) -> bytes:
    """DER of an Iss* message's signed content: its MTI and ``fields``."""
    mti, cls = KINDS[kind]
    return encode(cls, {"mti": mti, **fields})


def seal(kind: str, fields: Mapping[str, Any], signer: Identity, recipient: x509.Certificate, *,
         now: dt.datetime, rrpid: bytes, ids: Mapping[str, bytes],
         suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """The wrapper DER of an Iss* message: ``fields`` (without ``mti``) signed and enveloped."""
    body = Enc(signer, recipient, kind + "Data", payload(kind, fields), kind + "TBE",
               certs=(signer.cert,), suite=suite)
    return wrap(kind, body, now=now, rrpid=rrpid, **ids)


def open_sealed(kind: str, body: bytes, recipient: Identity,
                suite: CryptoSuite = DEFAULT_SUITE) -> tuple[Any, Signed]:
    """Decrypt an Iss* message of type ``kind`` and verify its signature, *without* judging the
    signer (the caller pins it: ``pinned_check``), and check its MTI.  Pure: no clock, so a
    transaction key may be read from it.  The data comes as plain values (``decode_native``)."""
    mti, cls = KINDS[kind]
    opened = open_Enc(body, recipient, kind + "TBE", kind + "Data", suite=suite)
    data = decode_native(cls, opened.content)
    if data["mti"] != mti:
        raise ProtocolError(f"{kind} carries MTI {data['mti']}, not {mti}", "messageNotSupported")
    return data, opened.signed


def opened(event: Inbound, recipient: Identity, suite: CryptoSuite = DEFAULT_SUITE):
    """``open_sealed`` of an inbound Iss* message, once per event."""
    return once(event, "network", lambda: open_sealed(event.message_type, wire(event).body,
                                                      recipient, suite))


def check_signed(parsed: Parsed, data, signed: Signed, pinned: Iterable[x509.Certificate | bytes],
                 now: dt.datetime) -> None:
    """The signer is a pinned certificate, valid now, and the clear header names the payload's
    XID."""
    pinned_check(pinned, now)(signed.signer, signed.certificates)
    if parsed.message_id("xid") != data["xid"]:
        raise ProtocolError("MessageHeader XID disagrees with the payload", "badMessageHeader")


def open_network(parsed: Parsed, recipient: Identity, pinned: Iterable[x509.Certificate | bytes],
                 now: dt.datetime, suite: CryptoSuite = DEFAULT_SUITE) -> tuple[Any, Signed]:
    """Open an Iss* message addressed to ``recipient``: signer pinned, right MTI, header XID =
    payload XID.  Any failure is a SetmailError."""
    data, signed = open_sealed(parsed.type, parsed.body, recipient, suite)
    check_signed(parsed, data, signed, pinned, now)
    return data, signed


def check_answer(data, *, xid: bytes, mer_id: str, request: str, seq: int = 0,
                 batch_id: int | None = None) -> None:
    """An issuer response must answer our ``request`` (its type; ``seq``: the how-many-th of its
    kind, as given to ``stan``) for this purchase: STAN, RRN, XID and DE 42 (the merchant)
    echoed; a clearing answer also its ``batch_id`` (``xid`` = ``batch_xid``).  The RRPID and the
    signer are the exchange's business (``roles.exchange.Exchange.accept``)."""
    if (data["stan"] != stan(xid, request, seq) or data["rrn"] != rrn(xid)
            or data["xid"] != xid):
        raise ProtocolError("STAN/RRN/XID do not match our request", "unknownXID")
    if data.get("merchant_id") != mer_id:
        raise ProtocolError("the answer names another merchant's purchase (DE 42)", "unknownXID")
    if batch_id is not None and data.get("batch_id") != batch_id:
        raise ProtocolError("the clearing answer names another batch", "unknownXID")
