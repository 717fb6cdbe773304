"""Contents checks of DER primitives for the strict decoder's walker (``walk``, D-126).

Each check accepts exactly the contents that asn1crypto reads (``.native``) *and* re-encodes to
the same bytes (``dump(force=True)``): what the earlier parse-and-re-encode decoder accepted in its
canonical mode, minus the forms its lazy parse let through elsewhere.  Rules come from
asn1crypto 1.5's classes: INTEGER/ENUMERATED minimal, ENUMERATED in its map, BOOLEAN 00/FF, NULL
empty, OBJECT IDENTIFIER minimal, BIT STRING with zero unused bits (a named bit list also without
trailing zero bits or unnamed bits), strings decodable in asn1crypto's codec (ASCII for IA5String,
UTF-8 for UTF8String; the others are latin-1 in asn1crypto, so any octet), GeneralizedTime as
``YYYYMMDDHHMMSS[.fff]Z`` naming a real instant.  ``checker`` returns None for a type it does not
know; the walker then lets asn1crypto itself judge that value (``strict.reference_check``).
``reader`` adds the conversion to the value asn1crypto's ``.native`` gives, for ``native``'s
decode that builds plain Python values during the walk instead of asn1crypto objects after it;
``writer`` the other way, the contents asn1crypto writes for a Python value (``fastder``).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from asn1crypto import core

from .der import Invalid, check_primitive, minimal_oid

Check = Callable[[bytes, int, int], None]
Read = Callable[[bytes, int, int], Any]


def nothing(data: bytes, start: int, end: int) -> None:
    """OCTET STRING and latin-1 strings: every octet string is valid and re-encodes as is."""


def _integer(data: bytes, start: int, end: int) -> None:
    if end == start:
        raise Invalid("empty INTEGER")
    if end - start > 1:
        b0, b1 = data[start], data[start + 1]
        if (b0 == 0 and b1 < 0x80) or (b0 == 0xFF and b1 >= 0x80):
            raise Invalid("non-minimal INTEGER")


def _boolean(data: bytes, start: int, end: int) -> None:
    if end - start != 1 or data[start] not in (0, 0xFF):
        raise Invalid("BOOLEAN other than 00 or FF")


def _null(data: bytes, start: int, end: int) -> None:
    if end != start:
        raise Invalid("NULL with contents")


def oid_check(data: bytes, start: int, end: int) -> None:
    if end == start or data[end - 1] & 0x80 or (
            data.find(b"\x80", start, end) >= 0 and not minimal_oid(data[start:end])):
        raise Invalid("non-minimal OBJECT IDENTIFIER")


def _ascii(data: bytes, start: int, end: int) -> None:
    if not data[start:end].isascii():
        raise Invalid("IA5String with a non-ASCII octet")


def _utf8(data: bytes, start: int, end: int) -> None:
    try:
        data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("UTF8String that is not UTF-8") from None


def _bit_octets(data: bytes, start: int, end: int) -> None:
    """OctetBitString and an unparsed (Parsable)OctetBitString: whole octets only."""
    if end == start or data[start] != 0:
        raise Invalid("BIT STRING of octets with unused bits")


_TIME = re.compile(rb"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})"
                   rb"(?:\.([0-9]{0,5}[1-9]))?Z")


def _generalized_time(data: bytes, start: int, end: int) -> None:
    """Only the form asn1crypto writes: seconds present, UTC "Z", a fraction without trailing
    zeros; year 1000..9999 (asn1crypto re-encodes earlier years with fewer digits)."""
    text = data[start:end]
    if len(text) == 15 and text[14] == 0x5A and text[:14].isdigit():  # the usual form, fast
        fields = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
    else:
        found = _TIME.fullmatch(text)
        if found is None:
            raise Invalid("GeneralizedTime not in DER form YYYYMMDDHHMMSS[.f]Z")
        fields = found.groups()[:6]
    year, month, day, hour, minute, second = map(int, fields)
    if year < 1000:
        raise Invalid("GeneralizedTime before year 1000")
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise Invalid(f"GeneralizedTime {exc}") from None


def oid_dotted(body: bytes) -> str:
    """Dotted form of minimal OBJECT IDENTIFIER contents (as asn1crypto's ``dotted``)."""
    parts, part = [], 0
    for byte in body:
        part = part << 7 | byte & 0x7F
        if not byte & 0x80:
            if not parts:
                first = 2 if part >= 80 else part // 40
                parts += [first, part - 40 * first]
            else:
                parts.append(part)
            part = 0
    return ".".join(map(str, parts))


class _Ambiguous:
    """Keys of a class's ``_map`` whose name maps back to another key: asn1crypto reads them and
    then writes the other one, so they never re-encode identically.  Recomputed when the map
    grows (setmail and asn1crypto modules extend maps when imported)."""

    def __init__(self, cls):
        self.cls, self.size, self.keys = cls, -1, frozenset()

    def __call__(self) -> frozenset:
        mapping = self.cls._map
        if len(mapping) != self.size:
            reverse = {name: key for key, name in mapping.items()}  # last wins, as ValueMap._setup
            self.keys = frozenset(k for k, name in mapping.items() if reverse[name] != k)
            self.size = len(mapping)
        return self.keys


def _mapped_oid(cls) -> Check:
    ambiguous = _Ambiguous(cls)

    def check(data: bytes, start: int, end: int) -> None:
        oid_check(data, start, end)
        if ambiguous() and oid_dotted(data[start:end]) in ambiguous():
            raise Invalid("OBJECT IDENTIFIER that re-encodes as another with the same name")
    return check


def _mapped_integer(cls, enumerated: bool) -> Check:
    ambiguous = _Ambiguous(cls)

    def check(data: bytes, start: int, end: int) -> None:
        _integer(data, start, end)
        value = int.from_bytes(data[start:end], "big", signed=True)
        if enumerated and value not in cls._map:
            raise Invalid(f"ENUMERATED value {value} not defined for {cls.__name__}")
        if value in ambiguous():
            raise Invalid(f"{cls.__name__} value {value} re-encodes as another")
    return check


def _named_bits(cls) -> Check:
    """A named bit list (BitString with ``_map``): asn1crypto reads the names and writes only
    the named bits up to the last one set."""
    def check(data: bytes, start: int, end: int) -> None:
        _bit_string(data, start, end)
        unused = data[start]
        nbits = (end - start - 1) * 8 - unused
        if not nbits:
            return
        value = int.from_bytes(data[start + 1:end], "big") >> unused
        named = cls._map
        if not value & 1:
            raise Invalid("named bit list with trailing zero bits")
        if any(value >> (nbits - 1 - i) & 1 and i not in named for i in range(nbits)):
            raise Invalid("named bit list with a bit that has no name")
    return check


def _bit_string(data: bytes, start: int, end: int) -> None:
    if end == start:
        raise Invalid("empty BIT STRING")
    unused = data[start]
    if unused and (end - start == 1 or unused > 7 or data[end - 1] & ((1 << unused) - 1)):
        raise Invalid("BIT STRING with bad unused bits")


_BY_BASE = {
    core.OctetString: nothing, core.ParsableOctetString: nothing,
    core.OctetBitString: _bit_octets, core.ParsableOctetBitString: _bit_octets,
    core.Boolean: _boolean, core.Null: _null, core.GeneralizedTime: _generalized_time,
    core.UTF8String: _utf8, core.IA5String: _ascii,
}
for _latin1 in (core.NumericString, core.PrintableString, core.VisibleString, core.GraphicString,
                core.GeneralString, core.CharacterString):
    _BY_BASE[_latin1] = nothing
_TAG_OF = {core.Boolean: 0x01, core.Integer: 0x02, core.ObjectIdentifier: 0x06}


def checker(spec: type, base: type, ident: int) -> Check | None:
    """The contents check for a primitive of class ``spec`` (its asn1crypto base ``base``)
    tagged ``ident``, or None if this module does not know the type."""
    if base in (core.Integer, core.Enumerated):
        check = _mapped_integer(spec, base is core.Enumerated) if spec._map is not None \
            else None if base is core.Enumerated else _integer
    elif base is core.ObjectIdentifier:
        check = oid_check if spec._map is None else _mapped_oid(spec)
    elif base is core.BitString:  # (two bits of one name: asn1crypto's own judgement)
        check = _bit_string if spec._map is None else _named_bits(spec) \
            if len(set(spec._map.values())) == len(spec._map) else None
    else:
        check = _BY_BASE.get(base)
    if check is not None and ident in _TAG_OF.values() and _TAG_OF.get(base) != ident:
        inner = check  # a universal BOOLEAN/INTEGER/OID tag on another type: check_der's rules too

        def check(data: bytes, start: int, end: int) -> None:
            inner(data, start, end)
            check_primitive(ident, data, start, end)
    return check


# --- natives ---------------------------------------------------------------------------------------
def _octets(data: bytes, start: int, end: int) -> bytes:
    return data[start:end]


def _bit_octets_native(data: bytes, start: int, end: int) -> bytes:
    return data[start + 1:end]


def _boolean_native(data: bytes, start: int, end: int) -> bool:
    return data[start] != 0


def _null_native(data: bytes, start: int, end: int) -> None:
    return None


def _time_native(data: bytes, start: int, end: int) -> datetime:
    """asn1crypto's GeneralizedTime.native of a value ``_generalized_time`` accepted."""
    text = data[start:end]
    value = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]),
                     int(text[10:12]), int(text[12:14]), tzinfo=timezone.utc)
    if len(text) > 15:  # ".f{1,6}Z": whole microseconds
        fraction = text[15:-1]
        value += timedelta(microseconds=int(fraction) * 10 ** (6 - len(fraction)))
    return value


def _signed(data: bytes, start: int, end: int) -> int:
    return int.from_bytes(data[start:end], "big", signed=True)


_DOTTED: dict[bytes, str] = {}


def _dotted(data: bytes, start: int, end: int) -> str:
    body = data[start:end]
    dotted = _DOTTED.get(body)
    if dotted is None:
        if len(_DOTTED) >= 4096:
            _DOTTED.clear()
        dotted = _DOTTED[body] = oid_dotted(body)
    return dotted


def _converter(spec: type, base: type) -> Read | None:
    """The conversion of valid contents to asn1crypto's native value of ``spec``."""
    if base in (core.OctetString, core.ParsableOctetString):
        return _octets
    if base in (core.OctetBitString, core.ParsableOctetBitString):
        return _bit_octets_native
    if base in (core.Integer, core.Enumerated, core.ObjectIdentifier):
        plain = _dotted if base is core.ObjectIdentifier else _signed
        if spec._map is None:
            return plain

        def mapped(data: bytes, start: int, end: int):  # the map as it is now (maps grow)
            value = plain(data, start, end)
            return spec._map.get(value, value)
        return mapped
    if base is core.BitString:
        return _bits(spec)
    if base is core.Boolean:
        return _boolean_native
    if base is core.Null:
        return _null_native
    if base is core.GeneralizedTime:
        return _time_native
    encoding = getattr(spec, "_encoding", None)
    if encoding is not None:
        return lambda data, start, end: data[start:end].decode(encoding)
    return None


def _bits(spec: type) -> Read:
    """A tuple of 0/1 per bit, or for a named bit list the set of the names of the bits set."""
    def read(data: bytes, start: int, end: int):
        unused = data[start]
        nbits = (end - start - 1) * 8 - unused
        value = int.from_bytes(data[start + 1:end], "big") >> unused
        bits = tuple(value >> (nbits - 1 - i) & 1 for i in range(nbits))
        if not spec._map:
            return bits
        return {spec._map.get(i, i) for i, bit in enumerate(bits) if bit}
    return read


def reader(spec: type, base: type, check: Check) -> Read | None:
    """``check`` then the contents as asn1crypto's ``.native`` gives them (None: unknown)."""
    convert = _converter(spec, base)
    if convert is None or check is nothing:
        return convert

    def read(data: bytes, start: int, end: int):
        check(data, start, end)
        return convert(data, start, end)
    return read


# --- writers (``fastder``) ---------------------------------------------------------------------
class Unwritten(Exception):
    """A value (or type) the writers leave to asn1crypto: ``fastder`` has it build that part."""


def writer(spec: type, base: type) -> Callable[[Any], bytes] | None:
    """``content(value)``: the contents octets asn1crypto writes for ``value`` as a ``spec`` (its
    asn1crypto base ``base``), raising Unwritten for values asn1crypto should judge; None for a
    type not written here."""
    make = _WRITERS.get(base)
    return None if make is None else make(spec)


def _int(value: int) -> bytes:
    """Two's complement, minimal length (the sign bit fits)."""
    return value.to_bytes(((value if value >= 0 else ~value).bit_length() + 8) // 8, "big",
                          signed=True)


def _write_integer(cls):
    """INTEGER and ENUMERATED: an int (an ENUMERATED's must be in its _map) or a mapped name."""
    names = cls._reverse_map or {}
    known = cls._map if issubclass(cls, core.Enumerated) else None
    if known is None and issubclass(cls, core.Enumerated):
        raise Unwritten

    def content(value) -> bytes:
        if value.__class__ is int and (known is None or value in known):
            return _int(value)
        if value.__class__ is str and value in names:
            return _int(names[value])
        raise Unwritten
    return content


def _write_oid(cls):
    """Identifiers (OIDs): few distinct values, so asn1crypto's own contents are remembered."""
    seen: dict = {}

    def content(value) -> bytes:
        if value.__class__ is not str:
            raise Unwritten
        got = seen.get(value)
        if got is None:
            got = cls(value).contents
            if len(seen) < 4096:
                seen[value] = got
        return got
    return content


def _write_exactly(kind: type, convert):
    """content() for values of exactly type ``kind``; anything else is asn1crypto's to judge."""
    def content(value) -> bytes:
        if value.__class__ is not kind:
            raise Unwritten
        return convert(value)
    return content


def _write_bits(cls):
    """Named bits (a set of names) lose trailing zeros, as DER wants; tuples of 0/1 are kept."""
    size = cls._size

    def content(value) -> bytes:
        if value.__class__ is set and cls._map is not None:
            bits = [1 if cls._map.get(i) in value else 0 for i in range(size)]
        elif value.__class__ is tuple and all(b.__class__ is int and b in (0, 1) for b in value):
            bits = list(value)
        else:
            raise Unwritten
        if cls._map is not None:
            if len(bits) > size:
                raise Unwritten
            while bits and not bits[-1]:
                bits.pop()
        unused = -len(bits) % 8
        number = int("".join(map(str, bits + [0] * unused)) or "0", 2)
        return bytes((unused,)) + number.to_bytes((len(bits) + unused) // 8, "big")
    return content


def _write_time(fmt: str, generalized: bool):
    def make(cls):
        def content(value) -> bytes:
            if value.__class__ is str:
                return value.encode("latin1")
            if value.__class__ is not datetime or value.tzinfo is None:
                raise Unwritten
            when = value.astimezone(timezone.utc)
            if not generalized and not 1950 <= when.year <= 2049:
                raise Unwritten
            fraction = (f".{when.microsecond:06d}".rstrip("0") if generalized and when.microsecond
                        else "")
            return (when.strftime(fmt) + fraction + "Z").encode("latin1")
        return content
    return make


_WRITERS = {
    core.Integer: _write_integer, core.Enumerated: _write_integer,
    core.ObjectIdentifier: _write_oid,
    core.Boolean: lambda cls: _write_exactly(bool, lambda v: b"\xff" if v else b"\x00"),
    core.Null: lambda cls: lambda value: b"",
    core.OctetString: lambda cls: _write_exactly(bytes, bytes),
    core.BitString: _write_bits, core.GeneralizedTime: _write_time("%Y%m%d%H%M%S", True),
    core.UTCTime: _write_time("%y%m%d%H%M%S", False),
    **{s: lambda cls: _write_exactly(str, lambda v, e=cls._encoding: v.encode(e))
       for s in (core.UTF8String, core.VisibleString, core.NumericString, core.PrintableString,
                 core.IA5String)},
}
