"""Strict decoding straight to plain Python values: the builder behind ``strict.decode_native``.

Why: ``strict.decode`` walks the DER against the compiled declaration (``walk``, ``plan``) and
then hands back a lazy asn1crypto value; every field a role then reads (``["a"]["b"].native``,
``.dump()``) makes asn1crypto parse that level again and build objects for it, 10-15 % of an
agent's CPU.  ``build`` walks the same nodes with the same checks, in the same order, and
returns the values as it goes: what ``cls.load(der).native`` gives (dicts keyed by field name,
absent OPTIONAL fields None, DEFAULT values filled in, lists, a CHOICE as its chosen value, ints,
bytes, str, aware datetimes, names for mapped INTEGER/ENUMERATED/OID/named bit lists), with two
documented exceptions where the DER is what the reader needs:

* an opaque ``cms.ContentInfo`` layer (``walk.Opaque``: SignedData, AuthEnvelopedData...) is its
  DER as ``bytes``, as a universal SEQUENCE (asn1crypto's ``value.untag().dump()``): what the
  crypto operators open; it is never parsed here (D-126).
* a field named in ``raw`` (dotted field names from the root, ``*`` for the elements of a
  SEQUENCE OF, an alternative's name through a CHOICE) is a ``Der``: the field's DER without its
  field tagging (``value.untag().dump()``; equal to ``bytes``), whose ``.native`` is built on
  first use (raw paths inside it apply there).  For values compared byte-wise or passed on as
  received (TransIDs, DetachedDigests, the BrandCRLIdentifier a signature covers).

A value is refused exactly when ``walk`` refuses it: each node's checks are the walker's (the
primitives' ``prim.reader`` runs the walker's check first; raw fields and opaque layers are
checked by the walker's own nodes; types the walker leaves to asn1crypto are judged by it and
their natives read from it).  Nothing returned is shared between calls except immutable values.
"""
from __future__ import annotations

import copy

from asn1crypto import core, parser, x509

from .der import Invalid, tlv_at
from .walk import (Choice, Explicit, Fallback, Node, Opaque, Parsable, Primitive, Sequence,
                   SequenceOf, _header, describe, field_for, in_order, missing,
                   not_default)

_IMMUTABLE = (type(None), bool, int, str, bytes)


class Der(bytes):
    """The DER of a subtree (without field tagging) whose native value is built on first use,
    from the message already checked, without checking it again."""

    def __new__(cls, der: bytes, source: tuple):
        self = super().__new__(cls, der)
        self._source = source
        return self

    @property
    def native(self):
        try:
            return self._native
        except AttributeError:
            node, data, ident, hstart, start, end, raw = self._source
            self._native = _value(node, data, ident, hstart, start, end, raw)
            return self._native


def paths(raw) -> dict | None:
    """The trie of ``raw``'s dotted paths (cached per path tuple): name -> sub-trie; a sub-trie
    holding the key "" is a raw field, and its "" value the trie of raw paths inside it (None)."""
    if not raw:
        return None
    key = tuple(raw)
    trie = _TRIES.get(key)
    if trie is None:
        tree: dict = {}
        for path in key:
            at = tree
            for part in path.split("."):
                at = at.setdefault(part, {})
            at[""] = True
        trie = _compiled(tree)
        if len(_TRIES) >= 256:
            _TRIES.clear()
        _TRIES[key] = trie
    return trie


def _compiled(tree: dict) -> dict | None:
    out = {}
    for name, sub in tree.items():
        if name:
            inner = _compiled(sub)
            out[name] = {"": inner} if "" in sub else inner
    return out or None


_TRIES: dict[tuple, dict] = {}


def build(node: Node, data: bytes, raw: dict | None = None):
    """The native value of ``data``, exactly one value ``node`` (``plan.root``) accepts;
    ``Invalid`` where ``walk.walk`` raises it."""
    ident, start, end = tlv_at(data, 0, len(data))
    if end != len(data):
        raise Invalid(f"{len(data) - end} bytes of trailing data")
    if node.ident is not None and ident != node.ident:
        raise Invalid(f"expected {node.label}, found {describe(ident)}")
    return _value(node, data, ident, 0, start, end, raw)


def _value(node: Node, data: bytes, ident: int, hstart: int, start: int, end: int, raw):
    if raw is not None and "" in raw:
        node.check(data, ident, hstart, start, end)  # the walker's check (and its memo)
        return Der(untagged(node, data, ident, hstart, start, end),
                   (node, data, ident, hstart, start, end, raw[""]))
    read = node.read
    if read is not None:
        return read(data, start, end)
    return _BUILDERS[node.__class__](node, data, ident, hstart, start, end, raw)


def untagged(node: Node, data: bytes, ident: int, hstart: int, start: int, end: int) -> bytes:
    """The TLV at ``hstart`` without its field tagging: EXPLICIT tags stripped, an IMPLICIT tag
    replaced by the type's universal one (a CHOICE or ANY stays as it is)."""
    while isinstance(node, Explicit):
        node, hstart, (ident, start, end) = node.inner, start, _header(data, start, end)
    spec = node.spec
    if not ident & 0xC0 or not isinstance(spec, type) or spec.tag is None or \
            issubclass(spec, (core.Choice, core.Any)):
        return data[hstart:end]
    pos = hstart + 1
    if data[hstart] & 0x1F == 0x1F:
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    return bytes((ident & 0x20 | spec.tag,)) + data[pos:end]


# --- one builder per node class -------------------------------------------------------------------
def _sequence(node: Sequence, data, ident, hstart, start, end, raw):
    fields, nodes = node.fields, node.nodes
    absent = node.__dict__.get("absent") or _absent(node)
    count, i, pos, out = len(fields), 0, start, {}
    spans = [None] * count if node.spans else None
    while pos < end:
        tident, s, e = _header(data, pos, end)
        keys = fields[i][4] if i < count else ()
        if keys is not None and tident | 0x20 not in keys:  # absent fields, as the walker's
            found = field_for(node, i, tident)
            for j in range(i, found):
                out[fields[j][0]] = _copy(absent[j])
            i = found
        name, _, fident, _, _, _, default, resolve = fields[i]
        child = nodes[i]
        if resolve is not None:
            child = resolve(data, spans)
            fident = child.ident
        if fident is not None and tident != fident:
            raise Invalid(f"{name}: expected {describe(fident)}, found {describe(tident)}")
        sub = raw.get(name) if raw else None
        read = child.read
        try:
            out[name] = read(data, s, e) if read is not None and sub is None else \
                _value(child, data, tident, pos, s, e, sub)
        except Invalid as exc:
            exc.path.append(name)
            raise
        if spans is not None:
            spans[i] = (s, e)
        if default is not None:
            not_default(data, pos, e, default, name)
        i, pos = i + 1, e
    missing(node, i)
    for j in range(i, count):
        out[fields[j][0]] = _copy(absent[j])
    return out


def _absent(node: Sequence) -> tuple:
    """Per field, its native value when absent: asn1crypto's DEFAULT value, else None."""
    spec, values = node.spec, []
    for _, fspec, params in spec._fields:
        values.append(fspec(**params).native if "default" in params and fspec is not None
                      else None)
    node.absent = tuple(values)
    return node.absent


def _copy(value):
    return value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)


def _sequence_of(node: SequenceOf, data, ident, hstart, start, end, raw):
    child, ordered = node.child, node.ordered
    cident, read, sub = child.ident, child.read, raw.get("*") if raw else None
    pos, previous, index, out = start, None, 0, []
    try:
        while pos < end:
            tident, s, stop = _header(data, pos, end)
            if cident is not None and tident != cident:
                raise Invalid(f"expected {child.label}, found {describe(tident)}")
            out.append(read(data, s, stop) if read is not None and sub is None else
                       _value(child, data, tident, pos, s, stop, sub))
            if ordered:  # (a SET OF: names in certificates and the BrandCRLIdentifier)
                previous = in_order(data, pos, stop, previous)
            pos, index = stop, index + 1
    except Invalid as exc:
        exc.path.append(str(index))
        raise
    return out


def _choice(node: Choice, data, ident, hstart, start, end, raw):
    name, alt = node.alternative(ident)
    try:
        value = _value(alt, data, ident, hstart, start, end, raw.get(name) if raw else None)
    except Invalid as exc:
        exc.path.append(name)
        raise
    if isinstance(node.spec, type) and issubclass(node.spec, x509.Name):
        return _name(value)
    return value


def _name(rdns: list) -> dict:
    """x509.Name's own native: attribute values by type, a list where a type repeats."""
    out: dict = {}
    for rdn in rdns:
        for pair in rdn:
            kind, value = pair["type"], pair["value"]
            if kind in out:
                if not isinstance(out[kind], list):
                    out[kind] = [out[kind]]
                out[kind].append(value)
            else:
                out[kind] = value
    return out


def _explicit(node: Explicit, data, ident, hstart, start, end, raw):
    return _only(node.inner, data, start, end, raw, "more than one value inside an EXPLICIT tag")


def _opaque(node: Opaque, data, ident, hstart, start, end, raw):
    node.check(data, ident, hstart, start, end)
    return untagged(node, data, ident, hstart, start, end)


def _parsable(node: Parsable, data, ident, hstart, start, end, raw):
    if node.bits:
        if start == end or data[start] != 0:
            raise Invalid("BIT STRING of octets with unused bits")
        start += 1
    return _only(node.inner, data, start, end, raw, f"data after the {node.inner.label} inside")


def _only(inner: Node, data, start: int, end: int, raw, extra: str):
    """The value of the one TLV that must fill ``start``..``end`` (as ``walk._child``)."""
    tident, s, stop = _header(data, start, end)
    if inner.ident is not None and tident != inner.ident:
        raise Invalid(f"expected {inner.label}, found {describe(tident)}")
    value = _value(inner, data, tident, start, s, stop, raw)
    if stop != end:
        raise Invalid(f"not canonical DER: {extra}")
    return value


def _fallback(node: Node, data, ident, hstart, start, end, raw):
    """A value asn1crypto judges (``walk.Fallback``) and reads; a Primitive without a reader."""
    node.check(data, ident, hstart, start, end)
    if not isinstance(node, Fallback):
        return node.spec.load(data[hstart:end]).native  # (every modelled primitive has a reader)
    tlv = data[hstart:end]
    if node.null_ok and tlv == b"\x05\x00":
        return None
    if node.root:
        return node.spec.load(tlv, strict=True).native
    return core._build(*parser.parse(tlv, strict=True), spec=node.spec,
                       spec_params=dict(node.params) or None).native


_BUILDERS = {Sequence: _sequence, SequenceOf: _sequence_of, Choice: _choice, Explicit: _explicit,
             Opaque: _opaque, Parsable: _parsable, Fallback: _fallback, Primitive: _fallback}
