"""DER of SET plaintexts written straight from Python values, driven by the asn1crypto classes.

Why: ``cls({...}).dump()`` builds an asn1crypto object per node and walks every child again in
``_set_contents``/``_is_mutated``/``dump``; parts already in DER (TransIDs kept in state, the
BrandCRLIdentifier, CapToken, AcqCardMsg, DetachedDigests) get loaded and dumped again: 15-20 %
of the merchant's and the gateway's CPU.  ``encode`` follows the nodes ``plan`` compiled from
the declarations, the ones the decoder walks (fields, alternatives, elements, tagging, DEFAULT
encodings), reads only the primitives' ``_map``/``_size``/codec from the classes, and writes the
bytes asn1crypto writes (tests/test_fastder*.py check it byte for byte), copying embedded DER.

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
primitives ``prim.writer`` does not write) and values of other Python types are built by
asn1crypto for that subtree, so the bytes never differ; a ``Raw`` inside such a subtree is
refused (TypeError).
"""
from __future__ import annotations

from asn1crypto import core

from .plan import CORE, DECLARATIVE, root
from .prim import Unwritten, writer
from .walk import Choice, Explicit, Fallback, Node, Primitive, Sequence, SequenceOf, ident_of

__all__ = ["Raw", "encode"]


class Raw:
    """DER of a value, copied as is (with its tag replaced or wrapped where the field says)."""

    __slots__ = ("der",)

    def __init__(self, der: bytes):
        self.der = bytes(der)

    def __repr__(self) -> str:
        return f"Raw({self.der[:16].hex()}{'…' if len(self.der) > 16 else ''})"


_SHORT = [bytes((n,)) for n in range(128)]
_CLASSES = {"universal": 0, "application": 1, "context": 2, "private": 3}


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


# --- plans: what encoding a node of ``plan`` needs, worked out once per node ----------------------
class _Plan:
    """How to encode one node's type, untagged: ``kind`` "plain" (``ident`` + ``content(value)``),
    "choice" (``content`` gives the alternative's full TLV), "any" (Raw/objects only) or "slow"."""

    __slots__ = ("kind", "ident", "constructed", "content")

    def __init__(self, kind, ident=b"", constructed=0, content=None):
        self.kind, self.ident, self.constructed, self.content = kind, ident, constructed, content


_PLANS: dict[Node, _Plan] = {}
#: what a class may declare and still be built here: ``plan``'s declarative attributes minus the
#: ones whose values asn1crypto chooses at run time (OID-chosen specs, spec callbacks)
_DECLARATIONS = DECLARATIVE - {"_oid_pair", "_oid_specs", "_oid_nums", "_spec_callbacks"}


def _plan(cls) -> _Plan:
    """The plan of a whole value of ``cls`` (its ``plan.root`` node)."""
    return _plan_for(_untagged(root(cls)))


def _plan_for(node: Node) -> _Plan:
    plan = _PLANS.get(node)
    if plan is None:
        spec = node.spec
        try:
            plan = _compile(node, spec)
        except Unwritten:  # the universal tag still lets Raw values be checked
            universal = isinstance(spec, type) and (
                spec.tag is not None and not spec.class_ and spec.method is not None
                and spec.implicit is False and spec.explicit is None)
            plan = _Plan("slow", _ident(0, spec.method, spec.tag) if universal else b"")
        _PLANS[node] = plan
    return plan


def _base(cls):
    """The asn1crypto.core class ``cls`` derives from, if nothing between them adds behaviour
    (stricter than ``plan``'s test: methods that only matter when building are behaviour here)."""
    for klass in getattr(cls, "__mro__", ()):
        if klass in CORE:
            return klass
        if not set(vars(klass)) <= _DECLARATIONS:
            raise Unwritten
    raise Unwritten


def _compile(node: Node, spec) -> _Plan:
    base = _base(spec)
    if base is core.Any:
        return _Plan("any")
    if isinstance(node, Sequence) and base is core.Sequence:
        return _sequence(node, spec)
    if isinstance(node, SequenceOf) and base in (core.SequenceOf, core.SetOf):
        return _sequence_of(node, spec)
    if isinstance(node, Choice) and base is core.Choice:
        return _choice(node, spec)
    if not isinstance(node, (Primitive, Fallback)):
        raise Unwritten
    spec()  # let asn1crypto run its _setup: normalised _map, _reverse_map, _size
    content = writer(spec, base)
    if content is None:
        raise Unwritten
    return _Plan("plain", _ident(0, 0, spec.tag), 0, content)


def _untagged(node: Node) -> Node:
    while isinstance(node, Explicit):
        node = node.inner
    return node


def _tagging(node: Node) -> tuple[int, bytes, bytes]:
    """(mode 0 none / 1 implicit / 2 explicit, tag octets primitive, tag octets constructed) of
    the field ``node`` was compiled for: its Explicit wrapper, or an identifier other than its
    type's universal one; a Fallback's from its parameters."""
    if isinstance(node, Fallback):
        params = node.params
        if not set(params) <= {"implicit", "explicit", "optional", "default"} or (
                "implicit" in params and "explicit" in params):
            raise Unwritten
        for mode, key in ((1, "implicit"), (2, "explicit")):
            if key in params:
                tag = params[key]
                if tag.__class__ is int:
                    class_, number = 2, tag
                elif tag.__class__ is tuple and len(tag) == 2 and tag[0] in _CLASSES:
                    class_, number = _CLASSES[tag[0]], tag[1]
                else:
                    raise Unwritten
                return mode, _ident(class_, 0, number), _ident(class_, 1, number)
        return 0, b"", b""
    mode, ident = 0, None
    if isinstance(node, Explicit):
        if isinstance(node.inner, Explicit):
            raise Unwritten  # two EXPLICIT tags: class-level tagging
        mode, ident = 2, node.ident
    else:
        spec = node.spec
        if node.ident is not None and isinstance(spec, type) and spec.tag is not None and \
                node.ident != ident_of(0, spec.method, spec.tag):
            mode, ident = 1, node.ident
    if ident is None:
        return 0, b"", b""
    class_ = ident >> 6 & 3
    number = ident >> 8 if ident & 0x1F == 0x1F else ident & 0x1F
    return mode, _ident(class_, 0, number), _ident(class_, 1, number)


class _Field:
    """A SEQUENCE field, CHOICE alternative or SEQUENCE OF element (its ``plan`` node, None where
    the node is chosen at run time): its tagging, its DEFAULT's encoding, and
    ``fallback(value)``: what asn1crypto itself makes of the value there."""

    __slots__ = ("name", "spec", "node", "mode", "prim", "cons", "optional", "default",
                 "fallback", "plan")

    def __init__(self, name, node, fallback, optional=False, default=None, spec=None):
        self.name, self.node, self.fallback, self.plan = name, node, fallback, None
        self.optional, self.default = optional, default
        if node is None:  # asn1crypto builds every value here
            self.spec, self.mode, self.prim, self.cons = spec, 0, b"", b""
            self.plan = _Plan("slow")
        else:
            self.spec = _untagged(node).spec
            self.mode, self.prim, self.cons = _tagging(node)


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
    except Unwritten:
        pass
    return f.fallback(value)


def _plan_of(f: _Field) -> _Plan:
    f.plan = _plan_for(_untagged(f.node))
    return f.plan


def _retag(f: _Field, der: bytes, end: int, start: int) -> bytes:
    """An untagged TLV under the field's tag: IMPLICIT replaces the identifier octets, EXPLICIT
    wraps the TLV, whose header asn1crypto re-emits (minimal length), as done here."""
    if f.mode == 1:
        return _tlv(f.cons if der[0] & 0x20 else f.prim, der[start:])
    return _tlv(f.cons, _tlv(der[:end], der[start:]))


# --- constructed types: their fields are the plan's nodes ----------------------------------------
def _sequence(node: Sequence, cls) -> _Plan:
    if not cls._fields or None in node.nodes:  # (a field whose spec an OID chooses)
        raise Unwritten

    def fallback_for(index):
        def fallback(value) -> bytes:
            obj = cls()
            obj[index] = value
            return obj.children[index].dump()
        return fallback
    fields = [_Field(field[0], child, fallback_for(i), optional=not field[5], default=field[6])
              for i, (field, child) in enumerate(zip(node.fields, node.nodes))]
    names = frozenset(f.name for f in fields)
    missing = object()

    def content(value) -> bytes:
        if not isinstance(value, dict):
            raise Unwritten
        out, used = [], 0
        for f in fields:
            v = value.get(f.name, missing)
            if v is missing or v is None:
                used += v is None
                if f.optional:
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


def _sequence_of(node: SequenceOf, cls) -> _Plan:
    child = _Field("element", node.child, lambda v: cls([v]).contents)
    ordered = node.ordered

    def content(value) -> bytes:
        if value.__class__ is not list and value.__class__ is not tuple:
            raise Unwritten
        parts = [_field(child, v) for v in value]
        if ordered:
            parts.sort()
        return b"".join(parts)
    return _Plan("plain", _ident(0, 1, cls.tag), 1, content)


def _choice(node: Choice, cls) -> _Plan:
    def fallback_for(name):
        return lambda value: cls(name=name, value=value).dump()
    compiled = dict(node.alternatives.values())  # name -> node (untagged CHOICEs/ANYs left out)
    alternatives = {name: _Field(name, compiled.get(name), fallback_for(name), spec=spec)
                    for name, spec, _ in cls._alternatives}

    def content(value) -> bytes:
        if value.__class__ is tuple and len(value) == 2:
            name, chosen = value
        elif isinstance(value, dict) and len(value) == 1:
            (name, chosen), = value.items()
        else:
            raise Unwritten
        f = alternatives.get(name)
        if f is None:
            raise ValueError(f'"{name}" is not an alternative of {cls.__name__}')
        return _field(f, chosen)
    return _Plan("choice", content=content)


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
        f = _TOP[cls] = _Field(cls.__name__, root(cls), _whole(cls))
    return _field(f, value)
