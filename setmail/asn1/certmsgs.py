"""Certificate-management messages (end entity <-> CA, set-protocol.md §6): CardCInit,
Me-AqCInit, RegForm, CertReq/CertRes, CertInqReq/Res, and their data.

The hyphen of "Me-AqCInitReq" cannot be in a Python name: the classes are ``MeAqCInitReq`` etc.;
the message-type name keeps the hyphen (``wrapper.MESSAGE_TYPES``).
"""
from __future__ import annotations

from asn1crypto import cms, core, keys

from .base import (
    BIN, BackKeyData, BrandID, Challenge, Date, DetachedDigest, Language, LocalID, Nonce,
    RRPID, SETString, Thumbprint, Thumbprints, Thumbs,
)
from .certext import BrandCRLIdentifier
from .codes import CertStatusCode, RequestType
from .purchase import PAN, CardExpiry


# --- account information (travels only in an OAEP block) -------------------------------------
class PANData0(core.Sequence):
    """Cardholder's account for registration; CardSecret is its half of PANSecret."""

    _fields = [
        ("pan", PAN),
        ("card_expiry", CardExpiry),
        ("card_secret", Nonce),
        ("ex_nonce", Nonce),
    ]


class AcctData(core.Sequence):
    """Account of a non-card requester (merchant, gateway)."""

    _fields = [
        ("acct_identification", core.VisibleString),
        ("ex_nonce", Nonce),
    ]


class AcctInfo(core.Choice):
    _alternatives = [
        ("pan_data0", PANData0, {"implicit": 0}),
        ("acct_data", AcctData, {"implicit": 1}),
    ]


class MerchantAcquirerID(core.Sequence):
    _fields = [("merchant_bin", BIN), ("merchant_id", SETString)]


class AcquirerID(core.Sequence):
    _fields = [
        ("acquirer_bin", BIN),
        ("acquirer_business_id", SETString, {"implicit": 0, "optional": True}),
    ]


class IDData(core.Choice):
    _alternatives = [
        ("merchant_acquirer_id", MerchantAcquirerID, {"implicit": 0}),
        ("acquirer_id", AcquirerID, {"implicit": 1}),
    ]


# --- registration form ---------------------------------------------------------------------
class RegField(core.Sequence):
    _fields = [
        ("field_id", core.ObjectIdentifier, {"implicit": 0, "optional": True}),
        ("field_name", SETString),
        ("field_desc", SETString, {"implicit": 1, "optional": True}),
        ("field_len", core.Integer),
        ("field_required", core.Boolean, {"implicit": 2, "default": False}),
        ("field_invisible", core.Boolean, {"implicit": 3, "default": False}),
    ]


class RegFieldSeq(core.SequenceOf):
    _child_spec = RegField


class RegTemplate(core.Sequence):
    _fields = [
        ("reg_form_id", core.Integer),
        ("brand_logo_url", core.IA5String, {"implicit": 0, "optional": True}),
        ("card_logo_url", core.IA5String, {"implicit": 1, "optional": True}),
        ("reg_field_seq", RegFieldSeq),
    ]


class RegFormData(core.Sequence):
    _fields = [
        ("reg_template", RegTemplate, {"implicit": 0, "optional": True}),
        ("policy", SETString),  # the policy text the requester accepts
    ]


class URLs(core.SequenceOf):
    _child_spec = core.IA5String


class ReferralData(core.Sequence):
    """The CA does not register this account itself: why, and where to go instead."""

    _fields = [
        ("reason", SETString, {"implicit": 0, "optional": True}),
        ("referral_urls", URLs, {"implicit": 1, "optional": True}),
    ]


class RegFormOrReferral(core.Choice):
    _alternatives = [
        ("reg_form_data", RegFormData, {"implicit": 0}),
        ("referral_data", ReferralData, {"implicit": 1}),
    ]


class RegFormItem(core.Sequence):
    _fields = [("field_name", SETString), ("field_value", SETString)]


class RegFormItems(core.SequenceOf):
    """The filled-in registration form."""

    _child_spec = RegFormItem


# --- CardCInit / Me-AqCInit --------------------------------------------------------------------
class CardCInitReq(core.Sequence):
    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee", Challenge),
        ("brand_id", BrandID),
        ("thumbs", Thumbs, {"implicit": 0, "optional": True}),
    ]


class CardCInitResTBS(core.Sequence):
    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee", Challenge),
        ("lid_ca", LocalID, {"implicit": 0, "optional": True}),
        ("cae_thumb", Thumbprint, {"implicit": 1}),  # CA key-exchange certificate for RegFormReq
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 2, "optional": True}),
        ("thumbs", Thumbs, {"implicit": 3, "optional": True}),
    ]


class CardCInitRes(cms.ContentInfo):
    """S(CCA, CardCInitResTBS), the CA's signature and encryption certificates attached."""


class MeAqCInitReq(core.Sequence):
    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee", Challenge),
        ("request_type", RequestType),
        ("id_data", IDData),
        ("language", Language),
        ("thumbs", Thumbs, {"implicit": 2, "optional": True}),
    ]


class MeAqCInitResTBS(core.Sequence):
    """Carries the registration form directly: merchants and gateways skip RegFormReq/Res."""

    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee", Challenge),
        ("lid_ca", LocalID, {"implicit": 2, "optional": True}),
        ("chall_ca", Challenge),
        ("request_type", RequestType),
        ("reg_form_or_referral", RegFormOrReferral),
        ("cae_thumb", Thumbprint, {"implicit": 3}),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 4, "optional": True}),
        ("thumbs", Thumbs, {"implicit": 5, "optional": True}),
    ]


class MeAqCInitRes(cms.ContentInfo):
    """S(CA, MeAqCInitResTBS)."""


# --- RegForm -----------------------------------------------------------------------------------
class RegFormReqData(core.Sequence):
    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee2", Challenge),
        ("request_type", RequestType),
        ("language", Language),
        ("thumbs", Thumbs, {"implicit": 0, "optional": True}),
    ]


class RegFormReqTBE(core.Sequence):
    """L(RegFormReqData, PANOnly): the symmetric plaintext of the EXH envelope."""

    _fields = [("reg_form_req_data", RegFormReqData), ("h_pan_only", DetachedDigest)]


class RegFormReq(cms.ContentInfo):
    """EXH(CCA, RegFormReqData, PANOnly): the PAN only in the OAEP block, to route to the issuer."""


class RegFormResTBS(core.Sequence):
    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee2", Challenge),
        ("lid_ca", LocalID, {"implicit": 2, "optional": True}),
        ("chall_ca", Challenge),
        ("request_type", RequestType),
        ("reg_form_or_referral", RegFormOrReferral),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 3, "optional": True}),
        ("thumbs", Thumbs, {"implicit": 4, "optional": True}),
    ]


class RegFormRes(cms.ContentInfo):
    """S(CCA, RegFormResTBS)."""


# --- CertReq / CertRes -------------------------------------------------------------------------
class PublicKeySorE(core.Sequence):
    """The new public key(s): signature, key exchange, or both ("Both" request types)."""

    _fields = [
        ("public_key_s", keys.PublicKeyInfo, {"implicit": 0, "optional": True}),
        ("public_key_e", keys.PublicKeyInfo, {"implicit": 1, "optional": True}),
    ]


class CertReqData(core.Sequence):
    """Signed with the new private key (proof of possession)."""

    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee3", Challenge),
        ("lid_ca", LocalID, {"implicit": 0, "optional": True}),
        ("chall_ca", Challenge, {"implicit": 1, "optional": True}),
        ("request_type", RequestType),
        ("request_date", Date),
        ("id_data", IDData, {"explicit": 2, "optional": True}),
        ("reg_form_id", core.Integer, {"implicit": 3, "optional": True}),
        ("reg_form", RegFormItems, {"implicit": 4, "optional": True}),
        ("ca_back_key_data", BackKeyData, {"implicit": 5, "optional": True}),
        ("public_key_sor_e", PublicKeySorE),
        ("ee_thumb", Thumbprint, {"implicit": 6, "optional": True}),  # certificate being renewed
        ("thumbs", Thumbs, {"implicit": 7, "optional": True}),
    ]


class CertReqTBS(core.Sequence):
    """L(CertReqData, AcctInfo): signed content of the EncX form (AcctInfo in the OAEP block)."""

    _fields = [("cert_req_data", CertReqData), ("h_acct_info", DetachedDigest)]


class CertReq(cms.ContentInfo):
    """EncX(EE, CA, CertReqData, AcctInfo) (cardholder) or Enc(EE, CA, CertReqData)."""


class CertStatus(core.Sequence):
    _fields = [
        ("cert_status_code", CertStatusCode),
        ("nonce_cca", Nonce, {"implicit": 0, "optional": True}),  # other half of PANSecret
        ("ee_message", SETString, {"implicit": 1, "optional": True}),
        ("cae_thumb", Thumbprint, {"implicit": 2, "optional": True}),
    ]


class CertResData(core.Sequence):
    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee3", Challenge),
        ("lid_ca", LocalID, {"implicit": 0, "optional": True}),
        ("cert_status", CertStatus),
        ("cert_thumbs", Thumbprints, {"implicit": 1, "optional": True}),
        ("brand_crl_identifier", BrandCRLIdentifier, {"implicit": 2, "optional": True}),
        ("thumbs", Thumbs, {"implicit": 3, "optional": True}),
    ]


class CertRes(cms.ContentInfo):
    """EncK(CABackKey, CA, CertResData) for cardholders, S(CA, CertResData) otherwise."""


class CertInqReqTBS(core.Sequence):
    _fields = [
        ("rrpid", RRPID),
        ("lid_ee", LocalID),
        ("chall_ee3", Challenge),
        ("lid_ca", LocalID, {"implicit": 0, "optional": True}),
    ]


class CertInqReq(cms.ContentInfo):
    """S(EE, CertInqReqTBS): poll a pended certificate request."""


class CertInqRes(cms.ContentInfo):
    """Same form as CertRes."""
