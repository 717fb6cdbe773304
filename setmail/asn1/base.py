"""Common SET ASN.1 types (SetMessage module and shared components) and the strict decoder.

Types are asn1crypto classes named as in the SET 1.0 ASN.1 (``Chall-C`` becomes ``Challenge``,
hyphens become nothing or underscores in field names).  Field names are the spec's, in
snake_case: ``lid-C`` -> ``lid_c``, ``xID`` -> ``xid``.

``decode`` (defined in ``strict``, re-exported here) is the one entry point for untrusted bytes.
"""
from __future__ import annotations

from asn1crypto import algos, cms, core

from setmail.asn1 import pkcs7plus as _pkcs7plus  # noqa: F401  registers SET's algorithm OIDs (D-11)
from setmail.asn1.codec.strict import MAX_MESSAGE_SIZE, check_der, decode, read_length  # noqa: F401


def encode(value: core.Asn1Value) -> bytes:
    """DER of ``value``; re-encodes everything (canonical) if it was built or changed here."""
    return value.dump()


# --- primitive SET types ---------------------------------------------------------------------
class SETString(core.UTF8String):
    """SET 1.0's SETString; we use UTF8String (deviation D-3)."""


class Date(core.GeneralizedTime):
    """SET Date: GeneralizedTime, always UTC ("Z")."""


class RRPID(core.OctetString):
    """Request/response pair id: fresh random octets for every request (32 here, 20 in SET 1.0)."""


class XID(core.OctetString):
    """Transaction id assigned by the merchant in PInitRes (32 random octets here)."""


class LocalID(core.OctetString):
    """LID-C / LID-M / LID-EE / LID-CA: a party's own label, 1..20 octets."""


class Challenge(core.OctetString):
    """Chall-C, Chall-M, Chall-EE, Chall-CA: freshness nonce (32 octets here)."""


class Nonce(core.OctetString):
    """EXNonce, ErrorNonce, ODSalt, CardSecret, PANSecret, NonceCCA: 32 octets."""


class Language(core.VisibleString):
    """RFC 1766 language tag, e.g. "en-GB"."""


class BrandID(SETString):
    """``brand[:product]``, e.g. "Visa:Gold"."""


class BIN(core.NumericString):
    """Bank identification number: 8 digits (ISO/IEC 7812-1:2017; 6 in SET 1.0)."""


class PaySysID(core.OctetString):
    pass


class SWIdent(core.VisibleString):
    """Identifies the sending software, e.g. "setmail/0.1"."""


class Thumbprint(core.OctetString):
    """SHA-256 of a DER certificate, CRL or BrandCRLIdentifier (SHA-1 in SET 1.0)."""


class Thumbprints(core.SequenceOf):
    _child_spec = Thumbprint


class Thumbs(core.Sequence):
    """What the sender already holds, so the peer may omit it (set-protocol.md §2.5)."""

    _fields = [
        ("digest_algorithm", algos.DigestAlgorithm),
        ("cert_thumbs", Thumbprints, {"implicit": 0, "optional": True}),
        ("crl_thumbs", Thumbprints, {"implicit": 1, "optional": True}),
        ("brl_thumbs", Thumbprints, {"implicit": 2, "optional": True}),
    ]


class DetachedDigest(cms.DigestedData):
    """DD{t}: a PKCS#7/CMS DigestedData whose encapContentInfo names t's setct OID, no content."""


class CurrencyAmount(core.Sequence):
    """ISO 4217 numeric currency, amount in minor units, and the power of ten (e.g. -2)."""

    _fields = [
        ("currency", core.Integer),
        ("amount", core.Integer),
        ("amt_exp10", core.Integer),
    ]


class MsgExtension(core.Sequence):
    """Extension: OID, criticality, DER value (X.509 Extension shape)."""

    _fields = [
        ("ext_id", core.ObjectIdentifier),
        ("critical", core.Boolean, {"default": False}),
        ("ext_value", core.OctetString),
    ]


class MsgExtensions(core.SequenceOf):
    _child_spec = MsgExtension


# --- identifiers ----------------------------------------------------------------------------
class TransIDs(core.Sequence):
    """Transaction identifiers copied into every purchase message (set-protocol.md §4.2)."""

    _fields = [
        ("lid_c", LocalID),
        ("lid_m", LocalID, {"implicit": 0, "optional": True}),
        ("xid", XID),
        ("p_req_date", Date),
        ("pay_sys_id", PaySysID, {"implicit": 1, "optional": True}),
        ("language", Language),
    ]


class MerTermIDs(core.Sequence):
    _fields = [
        ("merchant_id", SETString),
        ("terminal_id", core.VisibleString, {"implicit": 0, "optional": True}),
        ("agent_num", core.Integer, {"implicit": 1, "optional": True}),
        ("chain_num", core.Integer, {"implicit": 2, "optional": True}),
        ("store_num", core.Integer, {"implicit": 3, "optional": True}),
    ]


class RRTags(core.Sequence):
    """Merchant <-> gateway request tags: { RRPID, MerTermIDs, Date }."""

    _fields = [
        ("rrpid", RRPID),
        ("mer_term_ids", MerTermIDs),
        ("date", Date),
    ]


class MessageIDs(core.Sequence):
    _fields = [
        ("lid_c", LocalID, {"implicit": 0, "optional": True}),
        ("lid_m", LocalID, {"implicit": 1, "optional": True}),
        ("xid", XID, {"implicit": 2, "optional": True}),
    ]


class MessageHeader(core.Sequence):
    """Clear header of every MessageWrapper; cross-checked against the protected payload."""

    _fields = [
        ("version", core.Integer),  # setVer1(1)
        ("revision", core.Integer, {"default": 0}),
        ("date", Date),
        ("message_ids", MessageIDs, {"implicit": 0, "optional": True}),
        ("rrpid", RRPID, {"implicit": 1, "optional": True}),
        ("sw_ident", SWIdent),
    ]


# --- shared components added for the message catalogue (D-100 ff.) -------------------------------
class BackKeyData(core.Sequence):
    """A symmetric key a party hands to a peer so the peer can answer it encrypted (EncK):
    AcqBackKeyData in PIHead (AcqCardMsg), CABackKeyData in CertReq (cardholder CertRes)."""

    _fields = [
        ("back_alg_id", algos.EncryptionAlgorithm),
        ("back_key", core.OctetString),
    ]


class Ratio(core.Sequence):
    """An exact ratio (AuthRatio, CapRatio, CurrConvRate): numerator / denominator (D-104)."""

    _fields = [
        ("numerator", core.Integer),
        ("denominator", core.Integer),
    ]


class BrandAndBIN(core.Sequence):
    _fields = [
        ("brand_id", BrandID),
        ("bin", BIN, {"implicit": 0, "optional": True}),
    ]


class BrandAndBINSeq(core.SequenceOf):
    _child_spec = BrandAndBIN


class ObjectIdentifiers(core.SequenceOf):
    _child_spec = core.ObjectIdentifier
