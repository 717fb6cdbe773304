"""The gateway <-> issuer messages (D-130) as the two roles build and open them.

Every one is ``Enc(sender sig, receiver kex, <X>Data, <X>TBE)`` and carries only the sender's
signature certificate: the receiver trusts a signer solely because its certificate is one it
pinned (``pki.pinned.pinned_check``), never because of a chain.  The wrapper header carries a fresh
RRPID on requests, echoed by the response, and the purchase's ids (lid_c, lid_m, xid), so the
agents' dedupe answers a re-sent request with the stored response and both sides key the exchange
by XID.  STAN and RRN are derived from the XID (docs/purchase.md) so a re-sent request and its
answer can be matched without extra state.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509

from setmail.asn1 import issuer as iss
from setmail.asn1.fastder import encode
from setmail.asn1.strict import decode_native
from setmail.crypto.cms import Identity, Signed
from setmail.crypto.operators import Enc, open_Enc
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import ProtocolError
from setmail.pki.pinned import pinned_check
from setmail.roles.wire import Parsed, wrap

#: message type -> (ISO 8583 MTI, class of its signed content)
KINDS: dict[str, tuple[str, type]] = {
    "IssAuthReq": ("0100", iss.IssAuthReqData), "IssAuthRes": ("0110", iss.IssAuthResData),
    "IssCapReq": ("0220", iss.IssCapReqData), "IssCapRes": ("0230", iss.IssCapResData),
    "IssRevReq": ("0400", iss.IssRevReqData), "IssRevRes": ("0410", iss.IssRevResData),
}
#: request type -> what its DE 11 adds to the authorisation's STAN (a new number per request)
STAN_STEP = {"IssAuthReq": 0, "IssCapReq": 1, "IssRevReq": 2}
#: DE 39 a reversal request carries as its reason: the approval came after the gateway gave up
REVERSAL_REASON = "68"
#: issuer response code (DE 39) -> SET AuthCode in AuthRes; anything else is systemError
AUTH_CODES = {"00": "approved", "05": "declined", "51": "declined", "14": "invalidTransaction",
              "54": "expiredCard"}
#: issuer response code -> SET CapCode in CapRes; anything else is unspecifiedFailure
CAP_CODES = {"00": "success", "13": "amountTooLarge", "12": "invalidAuthData",
             "94": "duplicateRequest"}
RESPONSE_CODES = iss.RESPONSE_CODES


def auth_code(response_code: str) -> str:
    return AUTH_CODES.get(response_code, "systemError")


def cap_code(response_code: str) -> str:
    return CAP_CODES.get(response_code, "unspecifiedFailure")


def stan(xid: bytes, kind: str = "IssAuthReq") -> int:
    """DE 11: from the XID's first three octets; the completion advice and the reversal use the
    next numbers (``STAN_STEP``)."""
    return (int.from_bytes(xid[:3], "big") + STAN_STEP[kind]) % 1_000_000


def rrn(xid: bytes) -> str:
    """DE 37: the XID's first twelve hex digits."""
    return xid.hex()[:12]


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


def open_network(parsed: Parsed, recipient: Identity, pinned: Iterable[x509.Certificate | bytes],
                 now: dt.datetime, suite: CryptoSuite = DEFAULT_SUITE) -> tuple[Any, Signed]:
    """Open an Iss* message addressed to ``recipient``: signer pinned, right MTI, header XID =
    payload XID.  Any failure is a SetmailError (answered with an Error).  The data comes as
    plain values (``decode_native``: a dict of the <X>Data fields)."""
    mti, cls = KINDS[parsed.type]
    opened = open_Enc(parsed.body, recipient, parsed.type + "TBE", parsed.type + "Data",
                      validate=pinned_check(pinned, now), suite=suite)
    data = decode_native(cls, opened.content)
    if data["mti"] != mti:
        raise ProtocolError(f"{parsed.type} carries MTI {data['mti']}, not {mti}",
                            "messageNotSupported")
    if parsed.message_id("xid") != data["xid"]:
        raise ProtocolError("MessageHeader XID disagrees with the payload", "badMessageHeader")
    return data, opened.signed


def check_answer(data, *, rrpid: bytes, parsed: Parsed, xid: bytes, request: str) -> None:
    """An issuer response must answer our ``request`` (its type): header RRPID, STAN, RRN and XID
    echoed."""
    if parsed.rrpid != rrpid:
        raise ProtocolError("response RRPID does not name our request", "badMessageHeader")
    if (data["stan"] != stan(xid, request) or data["rrn"] != rrn(xid)
            or data["xid"] != xid):
        raise ProtocolError("STAN/RRN/XID do not match our request", "unknownXID")
