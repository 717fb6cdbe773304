"""Common SET ASN.1 types (SetMessage module and shared components) and the strict decoder.

Types are asn1crypto classes named as in the SET 1.0 ASN.1 (``Chall-C`` becomes ``Challenge``,
hyphens become nothing or underscores in field names).  Field names are the spec's, in
snake_case: ``lid-C`` -> ``lid_c``, ``xID`` -> ``xid``.

``decode`` is the one entry point for untrusted bytes: it refuses oversize input before parsing,
parses strictly (no trailing data), forces the lazy asn1crypto parser through the whole tree so a
fault deep inside surfaces here, and turns every failure into ``MalformedMessage``.
"""
from __future__ import annotations

from typing import TypeVar

from asn1crypto import algos, cms, core

from setmail.asn1 import pkcs7plus as _pkcs7plus  # noqa: F401  registers SET's algorithm OIDs (D-11)
from setmail.errors import MalformedMessage, MessageTooLarge

#: default limit for any single SET message or structure read from outside (1 MiB)
MAX_MESSAGE_SIZE = 1 << 20

T = TypeVar("T", bound=core.Asn1Value)


def check_der(data: bytes, what: str = "value") -> None:
    """Refuse BER that asn1crypto tolerates but DER forbids.

    Why: SET signs and digests DER, and a parser that accepts two encodings of one value lets a
    flipped length bit (long-form length, empty INTEGER) pass unnoticed.  Walks every TLV: one
    top-level value, definite minimal lengths, low tag numbers only, non-empty minimal INTEGERs,
    BOOLEAN 00/FF.  Primitive contents (OCTET STRINGs holding DER) are not descended into.
    """
    end = _check_tlv(data, 0, len(data), what)
    if end != len(data):
        raise MalformedMessage(f"{what}: {len(data) - end} bytes of trailing data")


def read_length(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """(length, offset after the length octets) of the DER length at ``pos``.

    Definite form only, minimal (short form below 0x80, no leading zero octet), and the value must
    end by ``limit``: the rules every DER reader in setmail shares.
    """
    if pos >= limit:
        raise MalformedMessage(f"{what}: truncated TLV at offset {pos}")
    n = data[pos]
    pos += 1
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > limit:
            raise MalformedMessage(f"{what}: bad length encoding at offset {pos - 1}")
        length = int.from_bytes(data[pos:pos + k], "big")
        if length < 0x80 or data[pos] == 0:
            raise MalformedMessage(f"{what}: non-minimal length at offset {pos - 1}")
        pos += k
    else:
        length = n
    if pos + length > limit:
        raise MalformedMessage(f"{what}: length runs past the end at offset {pos}")
    return length, pos


def _check_tlv(data: bytes, pos: int, limit: int, what: str) -> int:
    stack = [(pos, limit)]
    first_end = None
    while stack:
        pos, limit = stack.pop()
        while pos < limit:
            if limit - pos < 2:
                raise MalformedMessage(f"{what}: truncated TLV at offset {pos}")
            tag = data[pos]
            pos += 1
            if tag & 0x1F == 0x1F:  # high tag number (Error is [999]): minimal base-128, >= 31
                number, k = 0, 0
                while True:
                    if pos >= limit - 1 or k == 3 or (k == 0 and data[pos] == 0x80):
                        raise MalformedMessage(f"{what}: bad high tag number at offset {pos}")
                    number, k, pos = number << 7 | data[pos] & 0x7F, k + 1, pos + 1
                    if not data[pos - 1] & 0x80:
                        break
                if number < 31:
                    raise MalformedMessage(f"{what}: non-minimal tag number at offset {pos}")
            length, pos = read_length(data, pos, limit, what)
            end = pos + length
            if tag == 0x02 and (length == 0 or (length > 1 and (
                    (data[pos] == 0 and data[pos + 1] < 0x80) or (data[pos] == 0xFF and data[pos + 1] >= 0x80)))):
                raise MalformedMessage(f"{what}: non-minimal INTEGER at offset {pos}")
            if tag == 0x01 and (length != 1 or data[pos] not in (0, 0xFF)):
                raise MalformedMessage(f"{what}: non-DER BOOLEAN at offset {pos}")
            if tag == 0x06 and not _minimal_oid(data[pos:end]):
                raise MalformedMessage(f"{what}: non-minimal OBJECT IDENTIFIER at offset {pos}")
            if tag & 0x20:
                stack.append((end, limit))
                limit = end
                if first_end is None:
                    first_end = end
                continue
            if first_end is None:
                first_end = end
            pos = end
    return first_end if first_end is not None else 0


def _minimal_oid(body: bytes) -> bool:
    """Every subidentifier base-128 without a leading 0x80 octet, the last one complete."""
    return bool(body) and body[-1] < 0x80 and all(
        b != 0x80 for i, b in enumerate(body) if i == 0 or body[i - 1] < 0x80)


def decode(cls: type[T], data: bytes, *, max_size: int = MAX_MESSAGE_SIZE,
           what: str | None = None, canonical: bool = True) -> T:
    """Parse ``data`` as ``cls``; any failure is a MalformedMessage naming ``what``.

    ``canonical``: also require that re-encoding gives back ``data`` exactly — asn1crypto silently
    accepts (and drops) elements beyond a SEQUENCE's declared fields and non-minimal forms that
    ``check_der`` does not look for (D-126)."""
    name = what or cls.__name__
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"{name}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise MessageTooLarge(f"{name}: {len(data)} bytes exceeds the limit of {max_size}")
    check_der(bytes(data), name)
    try:
        value = cls.load(bytes(data), strict=True)
        value.native  # force the lazy parser through every nested value
    except MalformedMessage:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError, OverflowError...
        raise MalformedMessage(f"{name}: not valid DER ({exc.__class__.__name__}: {exc})") from exc
    if canonical and _reencode(value) != bytes(data):
        raise MalformedMessage(f"{name}: not canonical DER (undeclared trailing fields, an encoded "
                               "DEFAULT value or another non-DER form)")
    return value


def _reencode(value: core.Asn1Value) -> bytes | None:
    try:
        return value.dump(force=True)  # in place: on a mismatch the value is discarded anyway
    except Exception:  # an accepted value asn1crypto cannot re-encode is not canonical either
        return None


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
