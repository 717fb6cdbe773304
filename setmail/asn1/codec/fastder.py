"""DER of SET plaintexts written straight from Python values, driven by the asn1crypto classes.

Why: ``cls({...}).dump()`` builds an asn1crypto object per node and walks every child again in
``_set_contents``/``_is_mutated``/``dump``; parts already in DER (TransIDs kept in state, the
BrandCRLIdentifier, CapToken, AcqCardMsg, DetachedDigests) get loaded and dumped again: 15-20 %
of the merchant's and the gateway's CPU.  ``encode`` reads the same declarations (``_fields``,
``_alternatives``, ``_child_spec``, ``_map``, tagging, DEFAULTs) and writes the bytes asn1crypto
writes (tests/test_fastder*.py check it byte for byte), copying embedded DER.

Values are what asn1crypto takes: dict (SEQUENCE), list/tuple (SEQUENCE OF; SET OF sorted by
encoding), int, str (mapped names too), bytes, bool, aware datetime, None (an absent OPTIONAL or
DEFAULT field); a CHOICE is ``(name, value)`` or ``{name: value}``, as in asn1crypto.  Besides:
``Raw(der)``, a value already encoded (its own untagged TLV; the field's IMPLICIT or EXPLICIT tag is
applied to it), and an asn1crypto value object, taken as its ``dump()``.  Fields equal to their
DEFAULT are left out, as asn1crypto does.  Accepted beyond asn1crypto: ``{}`` for a SEQUENCE whose
fields are all optional (asn1crypto calls it "not set") and ``(name, value)`` CHOICE elements of a
SEQUENCE OF.

What is not modelled here (``_oid_pair``/``_spec_callbacks`` as in ContentInfo and
AlgorithmIdentifier, class-level tagging, classes with methods of their own such as x509.Name,
types missing from ``_PRIMITIVES``) and values of other Python types are built by asn1crypto for
that subtree, so the bytes never differ; a ``Raw`` inside such a subtree is refused (TypeError).
"""
from __future__ import annotations

import datetime as dt

from asn1crypto import core

__all__ = ["Raw", "encode"]


class Raw:
    """DER of a value, copied as is (with its tag replaced or wrapped where the field says)."""

    __slots__ = ("der",)

    def __init__(self, der: bytes):
        self.der = bytes(der)

    def __repr__(self) -> str:
        return f"Raw({self.der[:16].hex()}{'…' if len(self.der) > 16 else ''})"


class _Slow(Exception):
    """A value or spec this module leaves to asn1crypto."""


_SHORT = [bytes((n,)) for n in range(128)]
_CLASSES = {"universal": 0, "application": 1, "context": 2, "private": 3}
_UTC = dt.timezone.utc


def _tlv(ident: bytes, content: bytes) -> bytes:
    n = len(content)
    if n < 128:
        return ident + _SHORT[n] + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return ident + bytes((0x80 | len(size),)) + size + content


def _ident(class_: int, constructed: int, number: int) -> bytes:
    first = class_ << 6 | constructed << 5
    if number < 31:
        return bytes((first | number,))
    tail: list[int] = []
    while number:
        tail.insert(0, number & 0x7F | (0x80 if tail else 0))
        number >>= 7
    return bytes((first | 31, *tail))


def _split(der: bytes) -> tuple[int, int]:
    """(identifier length, content offset) of one complete definite-length TLV, else ValueError."""
    i = 1
    if der[:1] and der[0] & 0x1F == 0x1F:
        while i < len(der) and der[i] & 0x80:
            i += 1
        i += 1
    if i >= len(der) or der[i] == 0x80:
        raise ValueError("Raw: truncated DER or indefinite length")
    count = der[i] & 0x7F if der[i] & 0x80 else 0
    start = i + 1 + count
    length = int.from_bytes(der[i + 1:start], "big") if count else der[i]
    if start + length != len(der):
        raise ValueError("Raw: length does not match the bytes given")
    return i, start


def _int(value: int) -> bytes:
    """Two's complement, minimal length (the sign bit fits)."""
    return value.to_bytes(((value if value >= 0 else ~value).bit_length() + 8) // 8, "big",
                          signed=True)


# --- plans: what encoding a class needs, worked out once per class ------------------------------
class _Plan:
    """How to encode one class: ``kind`` "plain" (``ident`` + ``content(value)``), "choice"
    (``content`` gives the alternative's full TLV), "any" (Raw/objects only) or "slow"."""

    __slots__ = ("kind", "ident", "constructed", "content")

    def __init__(self, kind, ident=b"", constructed=0, content=None):
        self.kind, self.ident, self.constructed, self.content = kind, ident, constructed, content


_PLANS: dict[type, _Plan] = {}
#: __dict__ entries a subclass may have and still be encoded here (asn1crypto's _setup adds some)
_DECLARATIONS = frozenset({
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__annotations__",
    "__firstlineno__", "__static_attributes__", "_fields", "_child_spec", "_alternatives", "_map",
    "_reverse_map", "_field_map", "_field_ids", "_precomputed_specs", "_id_map", "_name_map",
    "_size"})


def _plan(cls) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        try:
            plan = _compile(cls)
        except _Slow:  # the universal tag still lets Raw values be checked
            universal = (cls.tag is not None and not cls.class_ and cls.method is not None
                         and cls.implicit is False and cls.explicit is None)
            plan = _Plan("slow", _ident(0, cls.method, cls.tag) if universal else b"")
        _PLANS[cls] = plan
    return plan


def _base(cls):
    """The asn1crypto.core class ``cls`` derives from, if nothing between them adds behaviour."""
    for klass in cls.__mro__:
        if klass.__module__ == "asn1crypto.core":
            return klass
        if not set(vars(klass)) <= _DECLARATIONS:
            raise _Slow
    raise _Slow


def _compile(cls) -> _Plan:
    base = _base(cls)
    if base is core.Any:
        return _Plan("any")
    make = _BUILDERS.get(base)
    if make is None:
        raise _Slow
    cls()  # let asn1crypto run its _setup: normalised _fields/_alternatives, _reverse_map, _size
    return make(cls)


def _tagging(params: dict) -> tuple[int, bytes, bytes]:
    """(mode 0 none / 1 implicit / 2 explicit, tag octets primitive, tag octets constructed)."""
    if not set(params) <= {"implicit", "explicit", "optional", "default"} or (
            "implicit" in params and "explicit" in params):
        raise _Slow
    for mode, key in ((1, "implicit"), (2, "explicit")):
        if key in params:
            tag = params[key]
            if tag.__class__ is int:
                class_, number = 2, tag
            elif tag.__class__ is tuple and len(tag) == 2 and tag[0] in _CLASSES:
                class_, number = _CLASSES[tag[0]], tag[1]
            else:
                raise _Slow
            return mode, _ident(class_, 0, number), _ident(class_, 1, number)
    return 0, b"", b""


class _Field:
    """A SEQUENCE field, CHOICE alternative or SEQUENCE OF element: its tagging, its DEFAULT's
    encoding, and ``fallback(value)``: what asn1crypto itself makes of the value there."""

    __slots__ = ("name", "spec", "mode", "prim", "cons", "optional", "default", "fallback", "plan")

    def __init__(self, name, spec, params, fallback):
        self.name, self.spec, self.fallback, self.plan = name, spec, fallback, None
        self.mode, self.prim, self.cons = _tagging(params)
        self.optional = "optional" in params
        self.default = None
        if "default" in params:
            try:
                self.default = spec(**params).dump()
            except (ValueError, TypeError) as exc:
                raise _Slow from exc


def _field(f: _Field, value) -> bytes:
    """The complete encoding of ``value`` in field ``f`` (its tag applied)."""
    plan = f.plan or _plan_of(f)
    if value.__class__ is Raw:
        der = value.der
        end, start = _split(der)
        if plan.ident and der[:end] != plan.ident:
            raise ValueError(f"Raw for {f.spec.__name__} has tag {der[:end].hex()}, "
                             f"not {plan.ident.hex()}")
        return der if f.mode == 0 else _retag(f, der, end, start)
    if isinstance(value, core.Asn1Value):
        if (f.mode == 0 or not isinstance(value, (core.Choice, core.Any))) and isinstance(
                value, f.spec) and value.implicit is False and value.explicit is None:
            der = value.dump()
            return der if f.mode == 0 else _retag(f, der, *_split(der))
        return f.fallback(value)
    try:
        if plan.kind == "plain":
            content = plan.content(value)
            if f.mode == 0:
                return _tlv(plan.ident, content)
            if f.mode == 1:
                return _tlv(f.cons if plan.constructed else f.prim, content)
            return _tlv(f.cons, _tlv(plan.ident, content))
        if plan.kind == "choice" and f.mode != 1:
            inner = plan.content(value)
            return inner if f.mode == 0 else _tlv(f.cons, inner)
    except _Slow:
        pass
    return f.fallback(value)


def _plan_of(f: _Field) -> _Plan:
    f.plan = _plan(f.spec)
    return f.plan


def _retag(f: _Field, der: bytes, end: int, start: int) -> bytes:
    """An untagged TLV under the field's tag: IMPLICIT replaces the identifier octets, EXPLICIT
    wraps the TLV, whose header asn1crypto re-emits (minimal length), as done here."""
    if f.mode == 1:
        return _tlv(f.cons if der[0] & 0x20 else f.prim, der[start:])
    return _tlv(f.cons, _tlv(der[:end], der[start:]))


# --- constructed types -------------------------------------------------------------------------
def _sequence(cls) -> _Plan:
    if not cls._fields:
        raise _Slow

    def fallback_for(index):
        def fallback(value) -> bytes:
            obj = cls()
            obj[index] = value
            return obj.children[index].dump()
        return fallback
    fields = [_Field(name, spec, params, fallback_for(i))
              for i, (name, spec, params) in enumerate(cls._fields)]
    names = frozenset(f.name for f in fields)
    missing = object()

    def content(value) -> bytes:
        if not isinstance(value, dict):
            raise _Slow
        out, used = [], 0
        for f in fields:
            v = value.get(f.name, missing)
            if v is missing or v is None:
                used += v is None
                if f.optional or f.default is not None:
                    continue
                if v is missing:
                    raise ValueError(f'Field "{f.name}" is missing from {cls.__name__}')
            else:
                used += 1
            der = _field(f, v)
            if der != f.default:
                out.append(der)
        if used != len(value):
            raise ValueError(f"unknown fields for {cls.__name__}: {sorted(set(value) - names)}")
        return b"".join(out)
    return _Plan("plain", _ident(0, 1, cls.tag), 1, content)


def _sequence_of(cls) -> _Plan:
    if cls._child_spec is None:
        raise _Slow
    child = _Field("element", cls._child_spec, {}, lambda v: cls([v]).contents)
    ordered = issubclass(cls, core.SetOf)

    def content(value) -> bytes:
        if value.__class__ is not list and value.__class__ is not tuple:
            raise _Slow
        parts = [_field(child, v) for v in value]
        if ordered:
            parts.sort()
        return b"".join(parts)
    return _Plan("plain", _ident(0, 1, cls.tag), 1, content)


def _choice(cls) -> _Plan:
    def fallback_for(name):
        return lambda value: cls(name=name, value=value).dump()
    alternatives = {name: _Field(name, spec, params, fallback_for(name))
                    for name, spec, params in cls._alternatives}

    def content(value) -> bytes:
        if value.__class__ is tuple and len(value) == 2:
            name, chosen = value
        elif isinstance(value, dict) and len(value) == 1:
            (name, chosen), = value.items()
        else:
            raise _Slow
        f = alternatives.get(name)
        if f is None:
            raise ValueError(f'"{name}" is not an alternative of {cls.__name__}')
        return _field(f, chosen)
    return _Plan("choice", content=content)


# --- primitives -------------------------------------------------------------------------------
def _primitive(content):
    def make(cls) -> _Plan:
        return _Plan("plain", _ident(0, 0, cls.tag), 0, content(cls))
    return make


def _integer(cls):
    """INTEGER and ENUMERATED: an int (an ENUMERATED's must be in its _map) or a mapped name."""
    names = cls._reverse_map or {}
    known = cls._map if issubclass(cls, core.Enumerated) else None
    if known is None and issubclass(cls, core.Enumerated):
        raise _Slow

    def content(value) -> bytes:
        if value.__class__ is int and (known is None or value in known):
            return _int(value)
        if value.__class__ is str and value in names:
            return _int(names[value])
        raise _Slow
    return content


def _cached(cls):
    """Identifiers (OIDs): few distinct values, so asn1crypto's own contents are remembered."""
    seen: dict = {}

    def content(value) -> bytes:
        if value.__class__ is not str:
            raise _Slow
        got = seen.get(value)
        if got is None:
            got = cls(value).contents
            if len(seen) < 4096:
                seen[value] = got
        return got
    return content


def _exactly(kind: type, convert):
    """content() for values of exactly type ``kind``; anything else is asn1crypto's to judge."""
    def content(value) -> bytes:
        if value.__class__ is not kind:
            raise _Slow
        return convert(value)
    return content


def _bits(cls):
    """Named bits (a set of names) lose trailing zeros, as DER wants; tuples of 0/1 are kept."""
    size = cls._size

    def content(value) -> bytes:
        if value.__class__ is set and cls._map is not None:
            bits = [1 if cls._map.get(i) in value else 0 for i in range(size)]
        elif value.__class__ is tuple and all(b.__class__ is int and b in (0, 1) for b in value):
            bits = list(value)
        else:
            raise _Slow
        if cls._map is not None:
            if len(bits) > size:
                raise _Slow
            while bits and not bits[-1]:
                bits.pop()
        unused = -len(bits) % 8
        number = int("".join(map(str, bits + [0] * unused)) or "0", 2)
        return bytes((unused,)) + number.to_bytes((len(bits) + unused) // 8, "big")
    return content


def _time(fmt: str, generalized: bool):
    def make(cls):
        def content(value) -> bytes:
            if value.__class__ is str:
                return value.encode("latin1")
            if value.__class__ is not dt.datetime or value.tzinfo is None:
                raise _Slow
            when = value.astimezone(_UTC)
            if not generalized and not 1950 <= when.year <= 2049:
                raise _Slow
            fraction = (f".{when.microsecond:06d}".rstrip("0") if generalized and when.microsecond
                        else "")
            return (when.strftime(fmt) + fraction + "Z").encode("latin1")
        return content
    return make


_PRIMITIVES = {
    core.Integer: _integer, core.Enumerated: _integer, core.ObjectIdentifier: _cached,
    core.Boolean: lambda cls: _exactly(bool, lambda v: b"\xff" if v else b"\x00"),
    core.Null: lambda cls: lambda value: b"", core.OctetString: lambda cls: _exactly(bytes, bytes),
    core.BitString: _bits, core.GeneralizedTime: _time("%Y%m%d%H%M%S", True),
    core.UTCTime: _time("%y%m%d%H%M%S", False),
    **{s: lambda cls: _exactly(str, lambda v, e=cls._encoding: v.encode(e))
       for s in (core.UTF8String, core.VisibleString, core.NumericString, core.PrintableString,
                 core.IA5String)},
}
_BUILDERS = {core.Sequence: _sequence, core.SequenceOf: _sequence_of, core.SetOf: _sequence_of,
             core.Choice: _choice, **{k: _primitive(v) for k, v in _PRIMITIVES.items()}}
_TOP: dict[type, _Field] = {}


def _whole(cls):
    if issubclass(cls, core.Choice):
        return lambda value: cls(name=value).dump()
    return lambda value: cls(value).dump()


def encode(cls: type, value) -> bytes:
    """DER of ``value`` as an instance of the asn1crypto class ``cls`` (see the module docstring):
    the bytes ``cls(value).dump()`` gives.  ValueError/TypeError for values asn1crypto refuses."""
    f = _TOP.get(cls)
    if f is None:
        f = _TOP[cls] = _Field(cls.__name__, cls, {}, _whole(cls))
    return _field(f, value)
