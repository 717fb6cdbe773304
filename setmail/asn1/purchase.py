"""Purchase messages (cardholder <-> merchant): PInit, PReq/PRes, InqReq/InqRes and the
dual-signature structures (set-protocol.md §3.3-3.4, §5.1-5.3).

Crypto-produced layers are typed ``cms.ContentInfo`` and never decoded here (the crypto layer
opens them and decodes the plaintext with the class in ``wrapper.PLAINTEXT_TYPES``).  Field
order of the dual-signature structures is fixed: the crypto layer digests their DER.
"""
from __future__ import annotations

from asn1crypto import cms, core

from .base import (
    BIN, BackKeyData, BrandID, Challenge, CurrencyAmount, Date,
    DetachedDigest, LocalID, Language, MsgExtensions, Nonce, ObjectIdentifiers, Ratio, RRPID,
    SETString, SWIdent, Thumbprint, Thumbs, TransIDs,
)
from .certext import BrandCRLIdentifier
from .codes import AcqCardCode, AuthCode, CapCode, CapRevOrCredCode, CompletionCode


# --- account data ------------------------------------------------------------------------------
class PAN(core.NumericString):
    """Primary account number, 12..19 digits; only ever inside an OAEP block or a gateway token."""


class CardExpiry(core.NumericString):
    """"YYYYMM"."""


class PANData(core.Sequence):
    """What the gateway needs to authorise and to check the cardholder certificate (PANSecret)."""

    _fields = [
        ("pan", PAN),
        ("card_expiry", CardExpiry),
        ("pan_secret", Nonce),
        ("ex_nonce", Nonce),
    ]


class PANToken(core.Sequence):
    """PANData without PANSecret: what may be passed on (unsigned PI, tokens, EncBX to M)."""

    _fields = [
        ("pan", PAN),
        ("card_expiry", CardExpiry),
        ("ex_nonce", Nonce),
    ]


class PANOnly(core.Sequence):
    """The PAN alone, for routing a cardholder registration (RegFormReq)."""

    _fields = [
        ("pan", PAN),
        ("ex_nonce", Nonce),
    ]


# --- order and payment instruction ---------------------------------------------------------
class Recurring(core.Sequence):
    _fields = [
        ("recurring_frequency", core.Integer),  # days between payments
        ("recurring_expiry", Date),
    ]


class InstallRecurInd(core.Choice):
    _alternatives = [
        ("install_total_trans", core.Integer, {"implicit": 0}),
        ("recurring", Recurring, {"implicit": 1}),
    ]


class InstallRecurData(core.Sequence):
    """Instalment or recurring-payment terms agreed with the merchant (D-105)."""

    _fields = [
        ("install_recur_ind", InstallRecurInd),
        ("ir_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class HODInput(core.Sequence):
    """Hashed to HOD; ODSalt stops the gateway, which sees HOD, from guessing OD."""

    _fields = [
        ("od", core.OctetString),
        ("purch_amt", CurrencyAmount),
        ("od_salt", Nonce),
        ("install_recur_data", InstallRecurData, {"implicit": 0, "optional": True}),
        ("od_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class OIData(core.Sequence):
    """Order information: readable by the merchant, only its digest reaches the gateway."""

    _fields = [
        ("trans_ids", TransIDs),
        ("rrpid", RRPID),
        ("chall_c", Challenge),
        ("hod", DetachedDigest),
        ("od_salt", Nonce),
        ("chall_m", Challenge, {"implicit": 0, "optional": True}),
        ("brand_id", BrandID),
        ("bin", BIN),
        ("od_ext_oids", ObjectIdentifiers, {"implicit": 1, "optional": True}),
        ("oi_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class Inputs(core.Sequence):
    _fields = [
        ("hod", DetachedDigest),
        ("purch_amt", CurrencyAmount),
    ]


class PIHead(core.Sequence):
    """Payment-instruction header.  ``pe_thumb`` (hardening, D-102) names the gateway the
    cardholder chose, so the dual signature covers the intended recipient of the PAN."""

    _fields = [
        ("trans_ids", TransIDs),
        ("inputs", Inputs),
        ("merchant_id", SETString),
        ("install_recur_data", InstallRecurData, {"implicit": 0, "optional": True}),
        ("trans_stain", core.OctetString),
        ("sw_ident", SWIdent),
        ("acq_back_key_data", BackKeyData, {"implicit": 1, "optional": True}),
        ("pi_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
        ("pe_thumb", Thumbprint, {"implicit": 3}),
    ]


# --- dual signature (exact shapes; crypto builds them from DER) ------------------------------
class PIData(core.Sequence):
    _fields = [("pi_head", PIHead), ("pan_data", PANData)]


class PIDataUnsigned(core.Sequence):
    _fields = [("pi_head", PIHead), ("pan_token", PANToken)]


class PI_TBS(core.Sequence):
    """What the cardholder's dual signature signs: { DD(PIData), DD(OIData) }."""

    _fields = [("h_pi_data", DetachedDigest), ("h_oi_data", DetachedDigest)]


class PI_OILink(core.Sequence):
    """L(PIHead, OIData)."""

    _fields = [("pi_head", PIHead), ("h_oi_data", DetachedDigest)]


class PIDualSignedTBE(core.Sequence):
    """L(PI-OILink, PANData): the symmetric plaintext of exPIData (EX)."""

    _fields = [("pi_oi_link", PI_OILink), ("h_pan_data", DetachedDigest)]


class PIUnsignedTBE(core.Sequence):
    """L(PI-OILink, PANToken): the symmetric plaintext of PIUnsigned (EXH)."""

    _fields = [("pi_oi_link", PI_OILink), ("h_pan_token", DetachedDigest)]


class PIDualSigned(core.Sequence):
    _fields = [
        ("pi_signature", cms.ContentInfo),  # SO(C, PI-TBS)
        ("ex_pi_data", cms.ContentInfo),  # EX(P, PI-OILink, PANData)
    ]


class OIDualSigned(core.Sequence):
    """L(OIData, PIData)."""

    _fields = [("oi_data", OIData), ("h_pi_data", DetachedDigest)]


class PReqDualSigned(core.Sequence):
    _fields = [("pi_dual_signed", PIDualSigned), ("oi_dual_signed", OIDualSigned)]


class OIUnsigned(core.Sequence):
    """L(OIData, PIDataUnsigned)."""

    _fields = [("oi_data", OIData), ("h_pi_data_unsigned", DetachedDigest)]


class PReqUnsigned(core.Sequence):
    _fields = [
        ("pi_unsigned", cms.ContentInfo),  # EXH(P, PI-OILink, PANToken)
        ("oi_unsigned", OIUnsigned),
    ]


class PReq(core.Choice):
    _alternatives = [
        ("p_req_dual_signed", PReqDualSigned, {"implicit": 0}),
        ("p_req_unsigned", PReqUnsigned, {"implicit": 1}),
    ]


class PI(core.Choice):
    """The payment instruction the merchant forwards byte-for-byte as AuthReq baggage."""

    _alternatives = [
        ("pi_unsigned", cms.ContentInfo, {"implicit": 0}),
        ("pi_dual_signed", PIDualSigned, {"implicit": 1}),
        ("auth_token", cms.ContentInfo, {"implicit": 2}),
    ]


# --- PInit -------------------------------------------------------------------------------------
class PInitReq(core.Sequence):
    """Clear and unsigned: nothing confidential may go in, extensions included."""

    _fields = [
        ("rrpid", RRPID),
        ("language", Language),
        ("local_id_c", LocalID),
        ("local_id_m", LocalID, {"implicit": 0, "optional": True}),
        ("chall_c", Challenge),
        ("brand_id", BrandID),
        ("bin", BIN),
        ("thumbs", Thumbs, {"implicit": 1, "optional": True}),
        ("pi_rq_extensions", MsgExtensions, {"implicit": 2, "optional": True}),
    ]


class PInitResData(core.Sequence):
    _fields = [
        ("trans_ids", TransIDs),
        ("rrpid", RRPID),
        ("chall_c", Challenge),
        ("chall_m", Challenge),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 0, "optional": True}),
        ("pe_thumb", Thumbprint, {"implicit": 1}),
        ("thumbs", Thumbs, {"implicit": 2, "optional": True}),
        ("pi_rs_extensions", MsgExtensions, {"implicit": 3, "optional": True}),
    ]


class PInitRes(cms.ContentInfo):
    """S(M, PInitResData), with the merchant's and the gateway's certificates in the SignedData."""


# --- PRes / InqRes -----------------------------------------------------------------------------
class AcqCardMsgData(core.Sequence):
    _fields = [
        ("acq_card_text", SETString, {"implicit": 0, "optional": True}),
        ("acq_card_url", core.VisibleString, {"implicit": 1, "optional": True}),
        ("acq_card_phone", core.VisibleString, {"implicit": 2, "optional": True}),
    ]


class AcqCardCodeMsg(core.Sequence):
    """Plaintext of AcqCardMsg: acquirer to cardholder, unreadable by the merchant who relays it."""

    _fields = [
        ("acq_card_code", AcqCardCode),
        ("acq_card_msg_data", AcqCardMsgData),
    ]


class AcqCardMsg(cms.ContentInfo):
    """EncK(AcqBackKeyData, P, AcqCardCodeMsg)."""


class CurrConv(core.Sequence):
    _fields = [
        ("curr_conv_rate", Ratio),
        ("card_curr", core.Integer),  # ISO 4217 numeric
    ]


class AuthStatus(core.Sequence):
    _fields = [
        ("auth_date", Date),
        ("auth_code", AuthCode),
        ("auth_ratio", Ratio),  # AuthReqAmt / PurchAmt
        ("curr_conv", CurrConv, {"implicit": 0, "optional": True}),
    ]


class CapStatus(core.Sequence):
    _fields = [
        ("cap_date", Date),
        ("cap_code", CapCode),
        ("cap_ratio", Ratio),
    ]


class CredStatus(core.Sequence):
    _fields = [
        ("credit_date", Date),
        ("credit_code", CapRevOrCredCode),
        ("credit_ratio", Ratio),
    ]


class CredStatusSeq(core.SequenceOf):
    _child_spec = CredStatus


class Results(core.Sequence):
    _fields = [
        ("acq_card_msg", AcqCardMsg, {"implicit": 0, "optional": True}),
        ("auth_status", AuthStatus, {"implicit": 1, "optional": True}),
        ("cap_status", CapStatus, {"implicit": 2, "optional": True}),
        ("cred_status_seq", CredStatusSeq, {"implicit": 3, "optional": True}),
    ]


class PResPayload(core.Sequence):
    _fields = [
        ("completion_code", CompletionCode),
        ("results", Results, {"implicit": 0, "optional": True}),
        ("p_rs_extensions", MsgExtensions, {"implicit": 1, "optional": True}),
    ]


class PResPayloadSeq(core.SequenceOf):
    _child_spec = PResPayload


class PResData(core.Sequence):
    """Signed by the merchant for PRes and InqRes alike."""

    _fields = [
        ("trans_ids", TransIDs),
        ("rrpid", RRPID),
        ("chall_c", Challenge),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 0, "optional": True}),
        ("p_res_payload_seq", PResPayloadSeq),
    ]


class PRes(cms.ContentInfo):
    """S(M, PResData)."""


class InqRes(cms.ContentInfo):
    """S(M, PResData): same form as PRes."""


# --- InqReq ------------------------------------------------------------------------------------
class InqReqData(core.Sequence):
    _fields = [
        ("trans_ids", TransIDs),
        ("rrpid", RRPID),
        ("chall_c2", Challenge),
        ("inq_rq_extensions", MsgExtensions, {"implicit": 0, "optional": True}),
    ]


class InqReq(core.Choice):
    """Signed by a cardholder with a certificate, clear otherwise (D-106)."""

    _alternatives = [
        ("inq_req_signed", cms.ContentInfo, {"implicit": 0}),  # S(C, InqReqData)
        ("inq_req_unsigned", InqReqData, {"implicit": 1}),
    ]
