"""FROZEN copy of setmail/asn1/strict.py at 2d88038, the decoder before the DER walker: the
oracle of tests/test_strict_walk.py.  Do not edit or import outside tests.

Strict decoding of untrusted DER: ``check_der``, ``read_length`` and ``decode`` (D-126).

``decode`` refuses oversize input before parsing, checks the DER of every TLV, parses strictly (no
trailing data), forces the lazy asn1crypto parser through every value outside the crypto layers so
a fault deep inside surfaces here, requires that the input re-encodes identically, and turns every
failure into ``MalformedMessage``.  The crypto layers (``cms.ContentInfo``: SignedData,
AuthEnvelopedData) are opaque here: only their outer shape is checked, ``crypto.reader`` parses
them strictly when a role opens them.  Imports nothing from setmail but ``setmail.errors``.
"""
from __future__ import annotations

from collections import OrderedDict

from typing import TypeVar

from asn1crypto import cms, core, parser

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
    """Walk every TLV in ``data[pos:limit]`` (depth first, no recursion); end of the first one.

    The loop runs once per TLV of every inbound message, so the common case (low tag number,
    short-form length, no INTEGER/BOOLEAN/OID) costs only a few comparisons."""
    stack = []
    first_end = None
    while True:
        while pos < limit:
            if limit - pos < 2:
                raise MalformedMessage(f"{what}: truncated TLV at offset {pos}")
            tag = data[pos]
            pos += 1
            if tag & 0x1F == 0x1F:  # high tag number (Error is [999]): minimal base-128, >= 31
                pos = _high_tag_number(data, pos, limit, what)
            length = data[pos]
            if length < 0x80 and pos + 1 + length <= limit:
                pos += 1
            else:
                length, pos = read_length(data, pos, limit, what)
            end = pos + length
            if first_end is None:
                first_end = end
            if tag & 0x20:
                key = None
                if _DER_MEMO_MIN <= length <= _DER_MEMO_MAX:  # e.g. a certificate seen before
                    key = data[pos:end]
                    if key in _CHECKED:
                        _CHECKED.move_to_end(key)
                        pos = end
                        continue
                stack.append((limit, key))
                limit = end
                continue
            if tag <= 0x06 and tag in _CHECKED_PRIMITIVES:
                _check_primitive(tag, data, pos, end, what)
            pos = end
        if not stack:
            return first_end if first_end is not None else 0
        limit, key = stack.pop()
        if key is not None:  # the whole constructed value checked out: remember its contents
            _CHECKED[key] = None
            if len(_CHECKED) > _DER_MEMO_SIZE:
                _CHECKED.popitem(last=False)


#: contents of constructed values that passed ``check_der`` lately (an LRU): messages repeat the
#: same certificates (merchant, gateway, CA chains) over and over, and DER validity of a value's
#: contents does not depend on where it appears
_CHECKED: OrderedDict[bytes, None] = OrderedDict()
_DER_MEMO_MIN, _DER_MEMO_MAX, _DER_MEMO_SIZE = 512, 65536, 512


def _high_tag_number(data: bytes, pos: int, limit: int, what: str) -> int:
    number, k = 0, 0
    while True:
        if pos >= limit - 1 or k == 3 or (k == 0 and data[pos] == 0x80):
            raise MalformedMessage(f"{what}: bad high tag number at offset {pos}")
        number, k, pos = number << 7 | data[pos] & 0x7F, k + 1, pos + 1
        if not data[pos - 1] & 0x80:
            break
    if number < 31:
        raise MalformedMessage(f"{what}: non-minimal tag number at offset {pos}")
    return pos


_CHECKED_PRIMITIVES = frozenset((0x01, 0x02, 0x06))  # BOOLEAN, INTEGER, OBJECT IDENTIFIER


def _check_primitive(tag: int, data: bytes, pos: int, end: int, what: str) -> None:
    length = end - pos
    if tag == 0x02:
        if length == 0 or (length > 1 and ((data[pos] == 0 and data[pos + 1] < 0x80) or
                                           (data[pos] == 0xFF and data[pos + 1] >= 0x80))):
            raise MalformedMessage(f"{what}: non-minimal INTEGER at offset {pos}")
    elif tag == 0x01:
        if length != 1 or data[pos] not in (0, 0xFF):
            raise MalformedMessage(f"{what}: non-DER BOOLEAN at offset {pos}")
    elif not _minimal_oid(data[pos:end]):
        raise MalformedMessage(f"{what}: non-minimal OBJECT IDENTIFIER at offset {pos}")


def _minimal_oid(body: bytes) -> bool:
    """Every subidentifier base-128 without a leading 0x80 octet, the last one complete."""
    return bool(body) and body[-1] < 0x80 and (b"\x80" not in body or all(
        b != 0x80 for i, b in enumerate(body) if i == 0 or body[i - 1] < 0x80))


def decode(cls: type[T], data: bytes, *, max_size: int = MAX_MESSAGE_SIZE,
           what: str | None = None, canonical: bool = True) -> T:
    """Parse ``data`` as ``cls``; any failure is a MalformedMessage naming ``what``.

    Every value outside the crypto layers is parsed; a ``cms.ContentInfo`` (SignedData,
    AuthEnvelopedData ...) is only checked to be ``SEQUENCE { OID, [0] EXPLICIT ANY }`` and stays
    opaque: ``crypto.reader`` parses it strictly when a role opens it (D-126).  ``canonical``: also
    require that re-encoding the parsed values (opaque layers as received) gives back ``data``
    exactly — asn1crypto silently accepts (and drops) elements beyond a SEQUENCE's declared fields,
    encoded DEFAULT values and non-minimal forms that ``check_der`` does not look for.
    ``canonical=False`` is for content a signature or an authenticated envelope already vouches
    for, byte for byte (digests are taken over the bytes received, never over a re-encoding): every
    value is still parsed, strictly, but not re-encoded, which costs several times the parse."""
    name = what or cls.__name__
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"{name}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise MessageTooLarge(f"{name}: {len(data)} bytes exceeds the limit of {max_size}")
    data = bytes(data)
    check_der(data, name)
    try:
        value = cls.load(data, strict=True)
        encoded = _reencode(value, name) if canonical else _force(value, name)
    except MalformedMessage:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError, OverflowError...
        raise MalformedMessage(f"{name}: not valid DER ({exc.__class__.__name__}: {exc})") from exc
    if canonical and encoded != data:
        raise MalformedMessage(f"{name}: not canonical DER (undeclared trailing fields, an encoded "
                               "DEFAULT value or another non-DER form)")
    return value


def _force(value: core.Asn1Value, name: str) -> None:
    """Parse every value of the tree (what ``canonical=False`` does instead of re-encoding):
    each field is built and each primitive read, so a fault anywhere surfaces now, as
    MalformedMessage; ContentInfo layers stay opaque as in ``_reencode``."""
    if isinstance(value, cms.ContentInfo):
        _opaque_content_info(value.contents, name)
        return
    key, known = _seen(value, canonical=False)
    if known:
        return
    if isinstance(value, core.Choice):
        _force(value.chosen, name)
    elif isinstance(value, (core.Sequence, core.SequenceOf, core.Set, core.SetOf)):
        for index in range(len(value)):
            _force(value[index], name)
    elif not isinstance(value, core.Void):
        value.native  # noqa: B018  (parses the contents)
    _remember(key, None, parsed_only=True)


def _reencode(value: core.Asn1Value, name: str) -> bytes:
    """DER of ``value`` re-encoded from its parsed fields, opaque ContentInfo layers as received.

    Parsing is what re-encoding forces: asn1crypto's ``dump(force=True)`` parses and re-encodes a
    whole subtree, so it is used for every subtree that cannot hold a ContentInfo; only the few
    SEQUENCE/CHOICE levels above an opaque layer are encoded here, exactly as asn1crypto would.
    """
    if isinstance(value, cms.ContentInfo):
        return _tagged(value, _opaque_content_info(value.contents, name))
    key, known = _seen(value, canonical=True)
    if known:
        return key[1]
    if not _may_hold_opaque(type(value)):
        return _remember(key, value.dump(force=True))
    if isinstance(value, core.Choice):
        return _explicit(value, _reencode(value.chosen, name))
    if isinstance(value, core.SequenceOf):
        return _tagged(value, b"".join(_reencode(child, name) for child in value))
    parts = []  # a Sequence: declared fields only, DEFAULT values omitted (Sequence._set_contents)
    for index, (_, spec, params) in enumerate(value._fields):
        encoded = _reencode(value[index], name)
        if "default" not in params or encoded != spec(**params).dump():
            parts.append(encoded)
    return _remember(key, _tagged(value, b"".join(parts)))


#: (type, encoding) of subtrees already parsed as that type -> True if also found canonical; most
#: recent last (an LRU).  Messages repeat large parts verbatim (the brand's BrandCRLIdentifier
#: rides in every response); the same bytes as the same type need no second parse.
_SEEN: OrderedDict[tuple[type, bytes], bool] = OrderedDict()
_MEMO_MIN, _MEMO_MAX, _MEMO_SIZE = 256, 16384, 256  # bytes, bytes, entries (<= 4 MiB)


def _seen(value: core.Asn1Value, *, canonical: bool) -> tuple[tuple[type, bytes], bool]:
    """(memo key, whether ``value`` was already parsed — and found canonical, if asked — as its
    type).  The key is the type with the bytes as received (``dump()`` re-encodes nothing until
    forced); the same bytes as another type prove nothing."""
    key = (type(value), value.dump())
    known = key in _SEEN and (_SEEN[key] or not canonical) \
        if _MEMO_MIN <= len(key[1]) <= _MEMO_MAX else False
    if known:
        _SEEN.move_to_end(key)
    return key, known


def _remember(key: tuple[type, bytes], encoded: bytes | None, *, parsed_only: bool = False
              ) -> bytes | None:
    if _MEMO_MIN <= len(key[1]) <= _MEMO_MAX and (parsed_only or encoded == key[1]):
        _SEEN[key] = _SEEN.get(key, False) or not parsed_only
        _SEEN.move_to_end(key)
        if len(_SEEN) > _MEMO_SIZE:
            _SEEN.popitem(last=False)
    return encoded


def _tagged(value: core.Asn1Value, contents: bytes) -> bytes:
    """``contents`` under ``value``'s own (possibly IMPLICIT) tag and its EXPLICIT tags."""
    return _explicit(value, parser.emit(value.class_, value.method, value.tag, contents))


def _explicit(value: core.Asn1Value, encoded: bytes) -> bytes:
    """``encoded`` inside ``value``'s EXPLICIT tags, innermost first (as Asn1Value.dump)."""
    for class_, tag in value.explicit or ():
        encoded = parser.emit(class_, 1, tag, encoded)
    return encoded


def _opaque_content_info(body: bytes, name: str) -> bytes:
    """``body`` if it is ``contentType OBJECT IDENTIFIER, content [0] EXPLICIT ANY``: one OID, one
    [0] holding exactly one value.  check_der has already walked every TLV inside."""
    limit = len(body)
    if not body or body[0] != 0x06:
        raise MalformedMessage(f"{name}: ContentInfo without a contentType OBJECT IDENTIFIER")
    length, pos = read_length(body, 1, limit, name)
    pos += length
    if pos >= limit or body[pos] != 0xA0:
        raise MalformedMessage(f"{name}: ContentInfo without [0] EXPLICIT content")
    length, pos = read_length(body, pos + 1, limit, name)
    if pos + length != limit:
        raise MalformedMessage(f"{name}: data after the content of a ContentInfo")
    if pos == limit or _skip_header(body, pos, limit, name) != limit:
        raise MalformedMessage(f"{name}: ContentInfo content is not exactly one value")
    return body


def _skip_header(data: bytes, pos: int, limit: int, what: str) -> int:
    """End of the TLV at ``pos`` (read from its header only; check_der has vetted the rest)."""
    pos += 1
    if data[pos - 1] & 0x1F == 0x1F:
        while pos < limit and data[pos] & 0x80:
            pos += 1
        pos += 1
    length, pos = read_length(data, pos, limit, what)
    return pos + length


_HOLDS_OPAQUE: dict[type, bool] = {}


def _may_hold_opaque(spec) -> bool:
    """Whether a value of ``spec`` may contain a ContentInfo (decided once per class).

    Only SEQUENCE, SEQUENCE OF and CHOICE are looked into; anything else (SET, SET OF, ANY, a spec
    chosen at run time) counts as opaque-free, which is never unsafe: that subtree is parsed and
    re-encoded whole, as before D-126's opaque layers."""
    known = _HOLDS_OPAQUE.get(spec)
    if known is not None:
        return known
    if not isinstance(spec, type):
        return False
    _HOLDS_OPAQUE[spec] = False  # while deciding (recursive types)
    if issubclass(spec, cms.ContentInfo):
        result = True
    elif issubclass(spec, core.Choice):
        result = any(_may_hold_opaque(alt[1]) for alt in spec._alternatives)
    elif issubclass(spec, core.SequenceOf) and not issubclass(spec, core.SetOf):
        result = _may_hold_opaque(spec._child_spec)
    elif issubclass(spec, core.Sequence) and not issubclass(spec, core.Set):
        result = any(_may_hold_opaque(s) for s in [f[1] for f in spec._fields or ()]
                     + list((spec._oid_specs or {}).values()))
    else:
        result = False
    _HOLDS_OPAQUE[spec] = result
    return result
