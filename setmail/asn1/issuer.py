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
    IssCredReq = Enc(P, I, IssCredReqData)    MTI 0220  credit (refund) advice, DE 3 "200000"
    IssCredRes = Enc(I, P, IssCredResData)    MTI 0230  credit response
    IssCredRevReq = Enc(P, I, IssCredRevReqData)  MTI 0420  reversal advice of one credit
    IssCredRevRes = Enc(I, P, IssCredRevResData)  MTI 0430
    IssCapRevReq  = Enc(P, I, IssCapRevReqData)   MTI 0420  reversal advice of one completion
    IssCapRevRes  = Enc(I, P, IssCapRevResData)   MTI 0430
    IssClearReq   = Enc(P, I, IssClearReqData)    MTI 0500  clearing of one merchant's batch
    IssClearRes   = Enc(I, P, IssClearResData)    MTI 0510  reconciliation answer

The lifecycle pairs (issue 13, D-170) each carry their own STAN (DE 11, D-172); a reversal advice
names the STAN of the completion or credit it undoes as DE 90 original data.  A clearing request
names its batch by ``batch_id`` and, for the header and the keys every issuer-leg message shares,
by a derived XID (``roles.network_msgs.batch_xid``: SHA-256 of the merchant and the batch id,
D-171).

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
    "95": "reconcile error",
    "96": "system malfunction",
}

#: DE 39-style reason codes a reversal request (0400/0420) carries
REASON_CODES = {
    "17": "customer cancellation",
    "21": "no action taken",
    "68": "response received too late",
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
        # how much of the hold stays held after this posting (several shipments of one purchase);
        # absent: release the rest, the single-shipment case
        ("remaining_hold", CurrencyAmount, {"implicit": 0, "optional": True}),
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
    """MTI 0400: reverse an approved authorisation the gateway no longer wants, in whole or,
    with ``replacement_amount`` (DE 95: what stays authorised), in part.

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
                                                      # 21 expired uncaptured, 17 cancelled)
        ("original_mti", core.PrintableString),       # DE 90 original data: "0100"
        ("original_stan", core.Integer),              # DE 90 original data: its DE 11
        ("transmitted", Date),                        # DE 7
        ("merchant_id", SETString),                   # DE 42
        ("xid", XID),
        ("replacement_amount", CurrencyAmount, {"implicit": 0, "optional": True}),  # DE 95
    ]


class IssRevResData(core.Sequence):
    """MTI 0410: released (00) or refused (25 no approved authorisation, 12 already captured or
    not this gateway's, 13 not the approved amount)."""

    _fields = list(_MOVED_ANSWER)


class IssCredReqData(core.Sequence):
    """MTI 0220, processing code "200000" (refund): credit ``amount`` back to the card of a
    captured purchase.  No PAN: the issuer finds the purchase by (signing gateway, DE 42, XID) and
    checks RRN and approval code."""

    _fields = [
        ("mti", core.PrintableString),                # "0220"
        ("stan", core.Integer),                       # DE 11 (new, this credit's)
        ("rrn", core.PrintableString),                # DE 37 of the authorisation
        ("processing_code", core.PrintableString),    # DE 3, "200000" = refund
        ("amount", CurrencyAmount),                   # DE 4: amount to credit
        ("approval_code", core.PrintableString),      # DE 38 of the authorisation
        ("transmitted", Date),                        # DE 7
        ("merchant_id", SETString),                   # DE 42
        ("xid", XID),
    ]


class IssCredResData(core.Sequence):
    """MTI 0230: credited (00) or refused (12 nothing captured, 13 above captured - credited,
    94 another credit under this STAN)."""

    _fields = list(_MOVED_ANSWER)


#: fields of a reversal advice (0420) naming the completion or credit it undoes
_REVERSAL_ADVICE = [
    ("mti", core.PrintableString),                    # "0420"
    ("stan", core.Integer),                           # DE 11 (new)
    ("rrn", core.PrintableString),                    # DE 37 of the authorisation
    ("amount", CurrencyAmount),                       # DE 4: the original's amount (all of it)
    ("approval_code", core.PrintableString),          # DE 38 of the authorisation
    ("reason_code", ResponseCode),                    # why (17 customer cancellation)
    ("original_mti", core.PrintableString),           # DE 90 original data: "0220"
    ("original_stan", core.Integer),                  # DE 90 original data: the original's DE 11
    ("transmitted", Date),                            # DE 7
    ("merchant_id", SETString),                       # DE 42
    ("xid", XID),
]


class IssCredRevReqData(core.Sequence):
    """MTI 0420: undo the credit whose STAN is ``original_stan`` (not yet settled)."""

    _fields = list(_REVERSAL_ADVICE)


class IssCredRevResData(core.Sequence):
    """MTI 0430: reversed (00; amount = the credit undone) or refused (25 no such credit,
    12 settled or already reversed)."""

    _fields = list(_MOVED_ANSWER)


class IssCapRevReqData(core.Sequence):
    """MTI 0420: undo the completion whose STAN is ``original_stan`` (not yet settled): the
    posting goes and the hold it released is held again."""

    _fields = list(_REVERSAL_ADVICE)


class IssCapRevResData(core.Sequence):
    """MTI 0430: reversed (00; amount = the posting undone) or refused (25 no such completion,
    12 settled, credited or already reversed)."""

    _fields = list(_MOVED_ANSWER)


class ClearItemKind(core.Enumerated):
    _map = {0: "capture", 1: "credit"}


class ClearItem(core.Sequence):
    """One posting or credit of the batch: the purchase, the request that made it, its amount."""

    _fields = [
        ("xid", XID),
        ("kind", ClearItemKind),
        ("stan", core.Integer),                       # DE 11 of the 0220 (completion or credit)
        ("amount", CurrencyAmount),
    ]


class ClearItems(core.SequenceOf):
    _child_spec = ClearItem


class ClearTotal(core.Sequence):
    """The batch's totals in one currency: counts and sums of its captures and credits."""

    _fields = [
        ("currency", core.Integer),
        ("amt_exp10", core.Integer),
        ("capture_count", core.Integer),
        ("capture_amount", core.Integer),
        ("credit_count", core.Integer),
        ("credit_amount", core.Integer),
    ]


class ClearTotals(core.SequenceOf):
    _child_spec = ClearTotal


class IssClearReqData(core.Sequence):
    """MTI 0500: settle one merchant's closed batch — every item and the gateway's totals."""

    _fields = [
        ("mti", core.PrintableString),                # "0500"
        ("stan", core.Integer),                       # DE 11
        ("rrn", core.PrintableString),                # DE 37 (of the batch XID)
        ("batch_id", core.Integer),                   # the gateway's batch number of the merchant
        ("items", ClearItems),
        ("totals", ClearTotals),                      # DE 74..DE 89 in spirit: counts and sums
        ("transmitted", Date),                        # DE 7
        ("merchant_id", SETString),                   # DE 42
        ("xid", XID),                                 # the batch's derived XID
    ]


class IssClearResData(core.Sequence):
    """MTI 0510: settled (00) or not (95 reconcile error: nothing moved); ``totals`` are the
    issuer's own, computed from the items it could match."""

    _fields = [
        ("mti", core.PrintableString),                # "0510"
        ("stan", core.Integer),                       # DE 11, echoed
        ("rrn", core.PrintableString),                # DE 37, echoed
        ("response_code", ResponseCode),              # DE 39
        ("batch_id", core.Integer),                   # echoed
        ("totals", ClearTotals),                      # the issuer's
        ("transmitted", Date),                        # DE 7
        ("xid", XID),
        ("merchant_id", SETString, {"implicit": 0, "optional": True}),  # DE 42, echoed
    ]


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


class IssCredReq(cms.ContentInfo):
    """Enc(P, I, IssCredReqData) under content type IssCredReqTBE."""


class IssCredRes(cms.ContentInfo):
    """Enc(I, P, IssCredResData) under content type IssCredResTBE."""


class IssCredRevReq(cms.ContentInfo):
    """Enc(P, I, IssCredRevReqData) under content type IssCredRevReqTBE."""


class IssCredRevRes(cms.ContentInfo):
    """Enc(I, P, IssCredRevResData) under content type IssCredRevResTBE."""


class IssCapRevReq(cms.ContentInfo):
    """Enc(P, I, IssCapRevReqData) under content type IssCapRevReqTBE."""


class IssCapRevRes(cms.ContentInfo):
    """Enc(I, P, IssCapRevResData) under content type IssCapRevResTBE."""


class IssClearReq(cms.ContentInfo):
    """Enc(P, I, IssClearReqData) under content type IssClearReqTBE."""


class IssClearRes(cms.ContentInfo):
    """Enc(I, P, IssClearResData) under content type IssClearResTBE."""

