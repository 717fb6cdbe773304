"""MessageWrapper, the Message CHOICE and the registries that name every message and plaintext.

``MESSAGE_TYPES`` (message-type name -> class) fixes the order of the Message CHOICE: context tags
[0], [1], ... in that order, Error on [999], all EXPLICIT because several alternatives are
themselves CHOICEs (D-100).  ``PLAINTEXT_TYPES`` tells the crypto layer and the message viewer which
class decodes the content carried under each SET content type (D-107).
"""
from __future__ import annotations

import re
from datetime import timezone

from asn1crypto import cms, core, parser

from . import capture as cap
from . import certmsgs as cm
from . import gateway as gw
from . import issuer as iss
from . import purchase as pu
from . import statement as st
from .base import MAX_MESSAGE_SIZE, MessageHeader, MsgExtensions, decode
from .error import Error, ErrorTBS

#: message-type name -> class, in Message CHOICE order
MESSAGE_TYPES: dict[str, type] = {
    "PInitReq": pu.PInitReq, "PInitRes": pu.PInitRes, "PReq": pu.PReq, "PRes": pu.PRes,
    "InqReq": pu.InqReq, "InqRes": pu.InqRes, "AuthReq": gw.AuthReq, "AuthRes": gw.AuthRes,
    "AuthRevReq": gw.AuthRevReq, "AuthRevRes": gw.AuthRevRes, "CapReq": cap.CapReq,
    "CapRes": cap.CapRes, "CapRevReq": cap.CapRevReq, "CapRevRes": cap.CapRevRes,
    "CredReq": cap.CredReq, "CredRes": cap.CredRes, "CredRevReq": cap.CredRevReq,
    "CredRevRes": cap.CredRevRes, "PCertReq": cap.PCertReq, "PCertRes": cap.PCertRes,
    "BatchAdminReq": cap.BatchAdminReq, "BatchAdminRes": cap.BatchAdminRes,
    "CardCInitReq": cm.CardCInitReq, "CardCInitRes": cm.CardCInitRes,
    "Me-AqCInitReq": cm.MeAqCInitReq, "Me-AqCInitRes": cm.MeAqCInitRes,
    "RegFormReq": cm.RegFormReq, "RegFormRes": cm.RegFormRes, "CertReq": cm.CertReq,
    "CertRes": cm.CertRes, "CertInqReq": cm.CertInqReq, "CertInqRes": cm.CertInqRes,
    "Error": Error,
    # setmail's gateway <-> issuer leg (D-130), outside SET's numbering
    "IssAuthReq": iss.IssAuthReq, "IssAuthRes": iss.IssAuthRes, "IssCapReq": iss.IssCapReq,
    "IssCapRes": iss.IssCapRes, "IssRevReq": iss.IssRevReq, "IssRevRes": iss.IssRevRes,
    # ... its lifecycle pairs (issue 13) and the issuer's statement to a cardholder
    "IssCredReq": iss.IssCredReq, "IssCredRes": iss.IssCredRes,
    "IssCredRevReq": iss.IssCredRevReq, "IssCredRevRes": iss.IssCredRevRes,
    "IssCapRevReq": iss.IssCapRevReq, "IssCapRevRes": iss.IssCapRevRes,
    "IssClearReq": iss.IssClearReq, "IssClearRes": iss.IssClearRes,
    "Statement": st.Statement,
}

ERROR_TAG = 999
#: Message CHOICE tags of types SET does not define: a private range far from SET's [0]..[31]
NETWORK_TAGS = {"IssAuthReq": 900, "IssAuthRes": 901, "IssCapReq": 902, "IssCapRes": 903,
                "IssRevReq": 904, "IssRevRes": 905, "IssCredReq": 906, "IssCredRes": 907,
                "IssCredRevReq": 908, "IssCredRevRes": 909, "IssCapRevReq": 910,
                "IssCapRevRes": 911, "IssClearReq": 912, "IssClearRes": 913, "Statement": 914}

MIME_PAYMENT = "application/set-payment"
MIME_REGISTRATION = "application/set-registration"
#: IANA types for the out-of-band SET Initiation (RFC 3538 text format), never a MessageWrapper:
#: PInitReq/CardCInitReq/Me-AqCInitReq travel under the two types above (D-101).
MIME_PAYMENT_INITIATION = "application/set-payment-initiation"
MIME_REGISTRATION_INITIATION = "application/set-registration-initiation"

_REGISTRATION = {"CardCInitReq", "CardCInitRes", "Me-AqCInitReq", "Me-AqCInitRes", "RegFormReq",
                 "RegFormRes", "CertReq", "CertRes", "CertInqReq", "CertInqRes"}
#: message-type name -> MIME content type of the body part carrying its MessageWrapper
MIME_TYPES: dict[str, str] = {
    n: MIME_REGISTRATION if n in _REGISTRATION else MIME_PAYMENT for n in MESSAGE_TYPES}


def _alt_name(type_name: str) -> str:
    """CHOICE alternative name: the type name in snake_case (Me-AqCInitReq -> me_aq_c_init_req)."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z][a-z]*|[a-z]+", type_name)
    return "_".join(w.lower() for w in words)


_ALT_TO_TYPE = {_alt_name(n): n for n in MESSAGE_TYPES}
_TYPE_TO_ALT = {n: a for a, n in _ALT_TO_TYPE.items()}


class Message(core.Choice):
    """One alternative per message type; alternative names are ``alt_name(type name)``."""

    _alternatives = [
        (_alt_name(n), cls, {"explicit": ERROR_TAG if n == "Error" else NETWORK_TAGS.get(n, i)})
        for i, (n, cls) in enumerate(MESSAGE_TYPES.items())
    ]


class MessageWrapper(core.Sequence):
    _fields = [
        ("message_header", MessageHeader),
        ("message", Message, {"explicit": 0}),
        ("mw_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


def message_alternative(type_name: str) -> str:
    """Name of the Message CHOICE alternative for a message-type name (KeyError if unknown)."""
    return _TYPE_TO_ALT[type_name]


def message_type(wrapper: MessageWrapper) -> str:
    """The message-type name (a MESSAGE_TYPES key) of the message inside ``wrapper``."""
    return _ALT_TO_TYPE[wrapper["message"].name]


def message_body(wrapper: MessageWrapper):
    """The message inside ``wrapper`` as an instance of its MESSAGE_TYPES class, without the
    CHOICE's explicit tag (so its ``dump()`` is the message's own DER)."""
    return wrapper["message"].chosen.untag()


def make_wrapper(header, type_name: str, message, mw_extensions=None) -> MessageWrapper:
    """A MessageWrapper around ``message`` (an instance of MESSAGE_TYPES[type_name])."""
    value = {"message_header": header,
             "message": Message(name=message_alternative(type_name), value=message)}
    if mw_extensions is not None:
        value["mw_extensions"] = mw_extensions
    return MessageWrapper(value)


_MESSAGE_TAGS = {n: params["explicit"] for n, (_, _, params) in zip(MESSAGE_TYPES, Message._alternatives)}
#: Message CHOICE tag number -> message-type name (reading a wrapper's type from its bytes)
TYPE_BY_TAG = {tag: name for name, tag in _MESSAGE_TAGS.items()}


def header_der(*, date, sw_ident: str, lid_c: bytes | None = None, lid_m: bytes | None = None,
               xid: bytes | None = None, rrpid: bytes | None = None) -> bytes:
    """DER of a SET 1.0 MessageHeader (version 1, revision 0 omitted as DEFAULT) written directly:
    the same bytes as ``MessageHeader({...}).dump()`` (tested), for the header every outgoing
    message needs.  ``date`` is an aware datetime without microseconds."""
    def tlv(tag: int, contents: bytes) -> bytes:
        return parser.emit(tag >> 6, (tag >> 5) & 1, tag & 0x1F, contents)
    when = date.astimezone(timezone.utc)
    if when.microsecond:
        raise ValueError("MessageHeader dates carry whole seconds")
    parts = [b"\x02\x01\x01", tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())]
    ids = b"".join(tlv(tag, value) for tag, value in ((0x80, lid_c), (0x81, lid_m), (0x82, xid))
                   if value is not None)
    if ids:
        parts.append(tlv(0xA0, ids))
    if rrpid is not None:
        parts.append(tlv(0x81, rrpid))
    parts.append(tlv(0x1A, sw_ident.encode("ascii")))
    return tlv(0x30, b"".join(parts))


def wrapper_der(header: MessageHeader | bytes, type_name: str, message_der: bytes,
                mw_extensions_der: bytes = b"") -> bytes:
    """DER of a MessageWrapper from parts already encoded: the same bytes as
    ``make_wrapper(...).dump()``, without asn1crypto loading and re-serialising a message that is
    often 10 KB of certificates and envelopes.  ``mw_extensions_der``: the [1] IMPLICIT field as
    encoded (or empty)."""
    inner = parser.emit(2, 1, _MESSAGE_TAGS[type_name], bytes(message_der))  # the CHOICE's [n]
    head = header if isinstance(header, bytes) else header.dump()
    body = head + parser.emit(2, 1, 0, inner) + mw_extensions_der             # message [0]
    return parser.emit(0, 1, 16, body)


def decode_wrapper(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> MessageWrapper:
    """Strictly parse untrusted bytes; MessageTooLarge/MalformedMessage on any fault."""
    return decode(MessageWrapper, data, max_size=max_size, what="MessageWrapper")


#: SET content-type name -> class of the structure carried under it.  ``…TBE``/``…TBEX`` of the
#: signed envelopes (Enc, EncK, EncX, EncB, EncBX) carry the SignedData itself (cms.ContentInfo);
#: those of EX/EXH carry an L(t, p) structure.
PLAINTEXT_TYPES: dict[str, type] = {
    # purchase
    "PANData": pu.PANData, "PANToken": pu.PANToken, "PANOnly": pu.PANOnly, "OIData": pu.OIData,
    "PI": pu.PI, "PIData": pu.PIData, "PIDataUnsigned": pu.PIDataUnsigned,
    "HODInput": pu.HODInput, "PInitResData": pu.PInitResData, "PI-TBS": pu.PI_TBS,
    "PResData": pu.PResData, "InqReqData": pu.InqReqData, "AcqCardCodeMsg": pu.AcqCardCodeMsg,
    "PIDualSignedTBE": pu.PIDualSignedTBE, "PIUnsignedTBE": pu.PIUnsignedTBE,
    # authorisation and tokens
    "AuthReqTBS": gw.AuthReqTBS, "AuthResTBS": gw.AuthResTBS, "AuthResTBSX": gw.AuthResTBSX,
    "AuthResBaggage": gw.AuthResBaggage, "AuthTokenTBS": gw.AuthTokenTBS,
    "CapTokenData": gw.CapTokenData, "CapTokenTBS": gw.CapTokenTBS,
    "CapTokenSeq": gw.CapTokenSeq, "AuthRevReqTBS": gw.AuthRevReqTBS,
    "AuthRevReqBaggage": gw.AuthRevReqBaggage, "AuthRevResData": gw.AuthRevResData,
    "AuthRevResTBS": gw.AuthRevResTBS, "AuthRevResBaggage": gw.AuthRevResBaggage,
    # clearing
    "CapReqTBS": cap.CapReqTBS, "CapReqTBSX": cap.CapReqTBSX, "CapResData": cap.CapResData,
    "CapRevReqTBS": cap.CapRevReqTBS, "CapRevReqTBSX": cap.CapRevReqTBSX,
    "CapRevResData": cap.CapRevResData, "CredReqTBS": cap.CredReqTBS,
    "CredReqTBSX": cap.CredReqTBSX, "CredResData": cap.CredResData,
    "CredRevReqTBS": cap.CredRevReqTBS, "CredRevReqTBSX": cap.CredRevReqTBSX,
    "CredRevResData": cap.CredRevResData, "PCertReqData": cap.PCertReqData,
    "PCertResTBS": cap.PCertResTBS, "BatchAdminReqData": cap.BatchAdminReqData,
    "BatchAdminResData": cap.BatchAdminResData,
    # certificate management
    "CardCInitResTBS": cm.CardCInitResTBS, "MeAqCInitResTBS": cm.MeAqCInitResTBS,
    "RegFormReqTBE": cm.RegFormReqTBE, "RegFormResTBS": cm.RegFormResTBS,
    "CertReqData": cm.CertReqData, "CertReqTBS": cm.CertReqTBS, "CertResData": cm.CertResData,
    "CertInqReqTBS": cm.CertInqReqTBS,
    "ErrorTBS": ErrorTBS,
    # gateway <-> issuer (D-130)
    "IssAuthReqData": iss.IssAuthReqData, "IssAuthResData": iss.IssAuthResData,
    "IssCapReqData": iss.IssCapReqData, "IssCapResData": iss.IssCapResData,
    "IssRevReqData": iss.IssRevReqData, "IssRevResData": iss.IssRevResData,
    "IssCredReqData": iss.IssCredReqData, "IssCredResData": iss.IssCredResData,
    "IssCredRevReqData": iss.IssCredRevReqData, "IssCredRevResData": iss.IssCredRevResData,
    "IssCapRevReqData": iss.IssCapRevReqData, "IssCapRevResData": iss.IssCapRevResData,
    "IssClearReqData": iss.IssClearReqData, "IssClearResData": iss.IssClearResData,
    "StatementData": st.StatementData,
}
PLAINTEXT_TYPES.update({n: cms.ContentInfo for n in (
    "AuthReqTBE", "AuthResTBE", "AuthResTBEX", "AuthTokenTBE", "CapTokenTBE", "CapTokenTBEX",
    "AcqCardCodeMsgTBE", "AuthRevReqTBE", "AuthRevResTBE", "AuthRevResTBEB", "CapReqTBE",
    "CapReqTBEX", "CapResTBE", "CapRevReqTBE", "CapRevReqTBEX", "CapRevResTBE", "CredReqTBE",
    "CredReqTBEX", "CredResTBE", "CredRevReqTBE", "CredRevReqTBEX", "CredRevResTBE",
    "BatchAdminReqTBE", "BatchAdminResTBE", "CertReqTBE", "CertReqTBEX", "CertResTBE",
    "IssAuthReqTBE", "IssAuthResTBE", "IssCapReqTBE", "IssCapResTBE", "IssRevReqTBE",
    "IssRevResTBE", "IssCredReqTBE", "IssCredResTBE", "IssCredRevReqTBE", "IssCredRevResTBE",
    "IssCapRevReqTBE", "IssCapRevResTBE", "IssClearReqTBE", "IssClearResTBE")})
