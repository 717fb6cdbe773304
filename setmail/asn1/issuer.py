"""The gateway <-> issuer leg: setmail's own message pairs, modelled on ISO 8583 (D-130).

SET stops at the payment gateway: how the acquirer asks the card's issuer is the card network's
business.  setmail needs that leg to be mail like every other, so it defines three request/response
pairs carrying the ISO 8583 data elements an authorisation and its completion need, each signed by
the sender and enveloped for the receiver (``Enc``), under content types on setmail's own arc:

    IssAuthReq = Enc(P, I, IssAuthReqData)    MTI 0100  authorisation request
    IssAuthRes = Enc(I, P, IssAuthResData)    MTI 0110  authorisation response (DE 39 code)
    IssCapReq  = Enc(P, I, IssCapReqData)     MTI 0220  completion advice: post against the hold
    IssCapRes  = Enc(I, P, IssCapResData)     MTI 0230  completion response
    IssRevReq  = Enc(P, I, IssRevReqData)     MTI 0400  reversal: give back an approval's hold
    IssRevRes  = Enc(I, P, IssRevResData)     MTI 0410  reversal response

Field comments name the ISO 8583 data element (DE) each field stands for.  Response codes
(DE 39) are two digits: 00 approved, 05 do not honor, 12 invalid transaction, 13 invalid amount,
14 invalid card number, 21 no action taken, 25 unable to locate record, 51 insufficient funds,
54 expired card, 68 response received too late, 94 duplicate transmission, 96 system malfunction
(``RESPONSE_CODES``).  The reversal exists because mail is slow: the gateway that gave up waiting
for a 0110 answers the merchant noReply, and an approval arriving after that must not leave a hold
nobody will capture (D-133); it also gives back the hold of an authorisation that expired
uncaptured (reason 21, D-142).  Every response echoes DE 42, the merchant the request named, so an
answer binds to the one purchase it decides (two merchants may use the same XID, D-141); the field
is optional in the syntax (a 0110 without it still parses) and required by the gateway.
"""
from __future__ import annotations

from asn1crypto import cms, core

from .base import CurrencyAmount, Date, SETString, XID

#: ISO 8583 DE 39 codes setmail uses, with their standard meaning
RESPONSE_CODES = {
    "00": "approved",
    "05": "do not honor",
    "12": "invalid transaction",
    "13": "invalid amount",
    "14": "invalid card number",
    "21": "no action taken",
    "25": "unable to locate record",
    "51": "insufficient funds",
    "54": "expired card",
    "68": "response received too late",
    "94": "duplicate transmission",
    "96": "system malfunction",
}


class ResponseCode(core.PrintableString):
    """DE 39: two digits (``RESPONSE_CODES``)."""


class IssAuthReqData(core.Sequence):
    """MTI 0100: the gateway asks the issuer to approve and hold an amount on a card."""

    _fields = [
        ("mti", core.PrintableString),                # "0100"
        ("stan", core.Integer),                       # DE 11 system trace audit number
        ("rrn", core.PrintableString),                # DE 37 retrieval reference number
        ("processing_code", core.PrintableString),    # DE 3, "000000" = purchase
        ("pan", core.NumericString),                  # DE 2
        ("card_expiry", core.NumericString),          # DE 14 (YYYYMM here)
        ("amount", CurrencyAmount),                   # DE 4 + DE 49
        ("transmitted", Date),                        # DE 7
        ("acquirer_id", core.NumericString),          # DE 32 acquiring institution (BIN)
        ("merchant_id", SETString),                   # DE 42 card acceptor id
        ("xid", XID),                                 # the SET transaction (for the trace)
    ]


class IssAuthResData(core.Sequence):
    """MTI 0110: the issuer's decision; ``approval_code`` (DE 38) only when approved."""

    _fields = [
        ("mti", core.PrintableString),                # "0110"
        ("stan", core.Integer),                       # DE 11, echoed
        ("rrn", core.PrintableString),                # DE 37, echoed
        ("response_code", ResponseCode),              # DE 39
        ("amount", CurrencyAmount),                   # DE 4: the amount held (0 if declined)
        ("transmitted", Date),                        # DE 7
        ("xid", XID),
        ("approval_code", core.PrintableString, {"implicit": 0, "optional": True}),  # DE 38
        ("merchant_id", SETString, {"implicit": 1, "optional": True}),  # DE 42, echoed
    ]


class IssCapReqData(core.Sequence):
    """MTI 0220: post ``amount`` against the hold of an approved authorisation."""

    _fields = [
        ("mti", core.PrintableString),                # "0220"
        ("stan", core.Integer),                       # DE 11 (new)
        ("rrn", core.PrintableString),                # DE 37 of the authorisation
        ("pan", core.NumericString),                  # DE 2
        ("amount", CurrencyAmount),                   # DE 4: amount to post
        ("approval_code", core.PrintableString),      # DE 38 of the authorisation
        ("transmitted", Date),                        # DE 7
        ("merchant_id", SETString),                   # DE 42
        ("xid", XID),
    ]


#: fields of the answer to a completion or a reversal (0230, 0410): the same shape
_MOVED_ANSWER = [
    ("mti", core.PrintableString),                    # "0230" / "0410"
    ("stan", core.Integer),                           # DE 11, echoed
    ("rrn", core.PrintableString),                    # DE 37, echoed
    ("response_code", ResponseCode),                  # DE 39
    ("amount", CurrencyAmount),                       # DE 4: posted / released (0 if refused)
    ("transmitted", Date),                            # DE 7
    ("xid", XID),
    ("merchant_id", SETString, {"implicit": 0, "optional": True}),  # DE 42, echoed
]


class IssCapResData(core.Sequence):
    """MTI 0230: posted (00) or refused (12 no hold, 13 above the hold, 94 already posted)."""

    _fields = list(_MOVED_ANSWER)


class IssRevReqData(core.Sequence):
    """MTI 0400: reverse a whole approved authorisation the gateway no longer wants.

    No PAN: the issuer finds the hold by its purchase (the signing gateway, DE 42 and the XID)
    and checks RRN, approval code and amount, so the gateway need not keep the card number after
    it declined or the authorisation expired."""

    _fields = [
        ("mti", core.PrintableString),                # "0400"
        ("stan", core.Integer),                       # DE 11 (new)
        ("rrn", core.PrintableString),                # DE 37 of the authorisation
        ("amount", CurrencyAmount),                   # DE 4: the amount approved (all of it)
        ("approval_code", core.PrintableString),      # DE 38 of the authorisation
        ("reason_code", ResponseCode),                # DE 39 in a 0400: why (68 too late,
                                                      # 21 expired uncaptured)
        ("original_mti", core.PrintableString),       # DE 90 original data: "0100"
        ("original_stan", core.Integer),              # DE 90 original data: its DE 11
        ("transmitted", Date),                        # DE 7
        ("merchant_id", SETString),                   # DE 42
        ("xid", XID),
    ]


class IssRevResData(core.Sequence):
    """MTI 0410: released (00) or refused (25 no approved authorisation, 12 already captured or
    not this gateway's, 13 not the approved amount)."""

    _fields = list(_MOVED_ANSWER)


class IssAuthReq(cms.ContentInfo):
    """Enc(P, I, IssAuthReqData) under content type IssAuthReqTBE."""


class IssAuthRes(cms.ContentInfo):
    """Enc(I, P, IssAuthResData) under content type IssAuthResTBE."""


class IssCapReq(cms.ContentInfo):
    """Enc(P, I, IssCapReqData) under content type IssCapReqTBE."""


class IssCapRes(cms.ContentInfo):
    """Enc(I, P, IssCapResData) under content type IssCapResTBE."""


class IssRevReq(cms.ContentInfo):
    """Enc(P, I, IssRevReqData) under content type IssRevReqTBE."""


class IssRevRes(cms.ContentInfo):
    """Enc(I, P, IssRevResData) under content type IssRevResTBE."""
