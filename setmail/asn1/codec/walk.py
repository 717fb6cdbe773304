"""Validate DER against an asn1crypto class declaration without building asn1crypto objects (D-126).

``walk(node, data)`` reads every TLV once and checks it against what a class declares: field
tags in order (optional and DEFAULT fields by their tag, CHOICE alternatives by theirs, IMPLICIT
and EXPLICIT tagging, class and method), each primitive's contents (``prim``), nothing after the
last declared field, no DEFAULT value encoded, SET OF elements in DER order, and specs chosen at
run time by an OID (``_oid_pair``/``_oid_specs``) or by the two asn1crypto callbacks setmail meets
(AlgorithmIdentifier parameters, DigestedData content).  Why: building, forcing and re-encoding
asn1crypto objects cost 0.4-1.2 ms per message; the walker reads the same bytes several times
faster, accepting only what asn1crypto read and re-encoded identically.

Declarations are compiled once per (class, field parameters) into nodes (``plan``).  A type the
walker does not model (parsing methods of its own, other callbacks, SET with fields, ANY other
than NULL...) becomes a ``Fallback``: asn1crypto itself judges that subtree (``reparse``), nothing
is skipped.  A ``cms.ContentInfo`` reached through SEQUENCE, SEQUENCE OF and CHOICE is
``Opaque``: ``SEQUENCE { OID, [0] EXPLICIT one value }`` with every TLV inside DER-checked;
``crypto.reader`` parses it when a role opens it.  Values of 256 B - 16 KiB outside the opaque
context found valid are remembered (the brand's BrandCRLIdentifier rides in every response).
"""
from __future__ import annotations

from asn1crypto import core

from .der import Invalid, Memo, check_tlvs, tlv_at
from .prim import nothing, oid_check
from .reparse import reference_check

#: values found valid lately, per node: 256 B - 16 KiB, 256 entries (<= 4 MiB)
MEMO = Memo(256, 16384, 256)


def walk(node: "Node", data: bytes) -> None:
    """Raise ``Invalid`` unless ``data`` is exactly one value ``node`` accepts (``plan.root``)."""
    ident, start, end = tlv_at(data, 0, len(data))
    if end != len(data):
        raise Invalid(f"{len(data) - end} bytes of trailing data")
    if node.ident is not None and ident != node.ident:
        raise Invalid(f"expected {node.label}, found {describe(ident)}")
    if node.prim is not None:
        node.prim(data, start, end)
    else:
        node.check(data, ident, 0, start, end)


def describe(ident: int) -> str:
    """"[CONTEXT 0]"-style name of an identifier as ``tlv_at`` returns it."""
    number = ident >> 8 if ident & 0x1F == 0x1F else ident & 0x1F
    return f"[{('UNIVERSAL', 'APPLICATION', 'CONTEXT', 'PRIVATE')[ident >> 6 & 3]} {number}]"


def ident_of(class_: int, method: int, tag: int) -> int:
    """The identifier ``tlv_at`` returns for this class, method and tag number."""
    head = class_ << 6 | method << 5
    return head | tag if tag < 31 else head | 0x1F | tag << 8


class Node:
    """Checks one TLV whose identifier the caller has matched against ``ident`` (None: the node
    looks at the identifier itself): ``check(data, ident, header start, start, end)``."""

    ident: int | None = None
    prim = None  # a primitive's contents check(data, start, end), called directly by parents
    read = None  # a primitive's check and native value (``native``): read(data, start, end)
    spec = None  # the asn1crypto class the node was compiled from (``plan``), for ``native``

    def __init__(self, label: str, ident: int | None = None):
        self.label, self.ident = label, ident
        self.check = self.contents

    def remembered(self) -> Node:
        """Remember subtrees found valid (for nodes whose values repeat across messages)."""
        self.check = self._memo_check
        return self

    def _memo_check(self, data: bytes, ident: int, hstart: int, start: int, end: int) -> None:
        if not MEMO.low <= end - hstart <= MEMO.high:
            self.contents(data, ident, hstart, start, end)
        elif not MEMO.seen(self, data, hstart, end):
            self.contents(data, ident, hstart, start, end)
            MEMO.add(self, data, hstart, end)

    def contents(self, data: bytes, ident: int, hstart: int, start: int, end: int) -> None:
        raise NotImplementedError


def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """``tlv_at`` with the common case (low tag number, short length) inline."""
    if pos + 1 < end:
        ident, n = data[pos], data[pos + 1]
        if n < 0x80 and ident & 0x1F != 0x1F and pos + 2 + n <= end:
            return ident, pos + 2, pos + 2 + n
    return tlv_at(data, pos, end)


def _child(node: Node, data: bytes, pos: int, end: int) -> int:
    """Check the TLV at ``pos`` as ``node``; its end."""
    ident, start, stop = _header(data, pos, end)
    if node.ident is not None and ident != node.ident:
        raise Invalid(f"expected {node.label}, found {describe(ident)}")
    node.check(data, ident, pos, start, stop)
    return stop


def dispatch(node: Node) -> tuple:
    """(kind, expected identifier, callable) by which a parent checks ``node``: kind 0 needs no
    contents check (OCTET STRING, latin-1 strings), 1 calls a primitive's check(data, start,
    end), 2 the node's check(data, ident, header start, start, end)."""
    if node.prim is nothing:
        return 0, node.ident, None
    if node.prim is not None:
        return 1, node.ident, node.prim
    return 2, node.ident, node.check


class Primitive(Node):
    def __init__(self, label: str, ident: int, check, read=None):
        super().__init__(label, ident)
        self.prim, self.read = check, read

    def contents(self, data, ident, hstart, start, end):
        self.prim(data, start, end)


class Sequence(Node):
    """``fields``: per declared field (name, kind, ident, check, keys, required, default,
    resolve), kind/ident/check as ``dispatch`` gives them; ``keys``: the identifiers
    (constructed form) that say an optional/DEFAULT field is present, None for a required field
    or an optional ANY (which takes whatever comes); ``resolve(data, spans)`` gives the node of a
    field whose spec an earlier field chooses (kind 3)."""

    fields: tuple = ()
    nodes: tuple = ()  # each field's node (None where ``resolve`` chooses it), for ``native``
    spans = False  # whether some field's spec depends on an earlier field

    def contents(self, data, ident, hstart, start, end):
        fields, i, pos = self.fields, 0, start
        count = len(fields)
        spans = [None] * count if self.spans else None
        while pos < end:
            if pos + 1 < end and data[pos + 1] < 0x80 and data[pos] & 0x1F != 0x1F \
                    and pos + 2 + data[pos + 1] <= end:
                tident, s, e = data[pos], pos + 2, pos + 2 + data[pos + 1]
            else:
                tident, s, e = tlv_at(data, pos, end)
            keys = fields[i][4] if i < count else ()
            if keys is not None and tident | 0x20 not in keys:
                i = field_for(self, i, tident)
            name, kind, fident, check, _, _, default, resolve = fields[i]
            if kind == 3:
                kind, fident, check = dispatch(resolve(data, spans))
            if fident is not None and tident != fident:
                raise Invalid(f"{name}: expected {describe(fident)}, found {describe(tident)}")
            if kind:
                try:
                    if kind == 1:
                        check(data, s, e)
                    else:
                        check(data, tident, pos, s, e)
                except Invalid as exc:
                    exc.path.append(name)
                    raise
            if default is not None:
                not_default(data, pos, e, default, name)
            if spans is not None:
                spans[i] = (s, e)
            i += 1
            pos = e
        missing(self, i)


def field_for(node: Sequence, i: int, tident: int) -> int:
    """Index of the field, from ``i`` on, that an element with identifier ``tident`` is: the
    fields skipped are absent (asn1crypto's rule: an optional/DEFAULT field is absent if its tag,
    or its CHOICE alternatives' tags, differ; no backtracking)."""
    fields = node.fields
    while i < len(fields):
        keys = fields[i][4]
        if keys is None or tident | 0x20 in keys:
            return i
        i += 1
    raise Invalid(f"not canonical DER: an element after the last field of {node.label}")


def not_default(data: bytes, start: int, end: int, default: bytes, name: str) -> None:
    """Refuse a field encoded with its DEFAULT value (DER omits it)."""
    if data[start:end] == default:
        raise Invalid(f"not canonical DER: DEFAULT value of {name} encoded")


def missing(node: Sequence, i: int) -> None:
    """Refuse a SEQUENCE that ended before a required field (fields from ``i`` on are absent)."""
    for field in node.fields[i:]:
        if field[5]:
            raise Invalid(f"{node.label}: field {field[0]} is missing")


class SequenceOf(Node):
    child: Node
    ordered = False  # SET OF: DER order, as asn1crypto re-sorts

    def contents(self, data, ident, hstart, start, end):
        pos, previous, index, ordered = start, None, 0, self.ordered
        kind, cident, check = dispatch(self.child)
        try:
            while pos < end:
                cstart, (tident, s, stop) = pos, _header(data, pos, end)
                if cident is not None and tident != cident:
                    raise Invalid(f"expected {self.child.label}, found {describe(tident)}")
                if kind == 1:
                    check(data, s, stop)
                elif kind:
                    check(data, tident, pos, s, stop)
                if ordered:
                    previous = in_order(data, cstart, stop, previous)
                pos, index = stop, index + 1
        except Invalid as exc:
            exc.path.append(str(index))
            raise


def in_order(data: bytes, start: int, end: int, previous: bytes | None) -> bytes:
    """The SET OF element at ``start``..``end``, refused if it sorts before ``previous``."""
    current = data[start:end]
    if previous is not None and current < previous:
        raise Invalid("not canonical DER: SET OF elements not in DER order")
    return current


class Choice(Node):
    alternatives: dict  # key (constructed identifier) -> (name, node)

    def alternative(self, ident: int) -> tuple[str, Node]:
        """(name, node) of the alternative a value with identifier ``ident`` is."""
        found = self.alternatives.get(ident | 0x20)
        if found is None:
            raise Invalid(f"no alternative of {self.label} has tag {describe(ident)}")
        name, node = found
        if node.ident is not None and ident != node.ident:
            exc = Invalid(f"expected {node.label}, found {describe(ident)}")
            exc.path.append(name)
            raise exc
        return found

    def contents(self, data, ident, hstart, start, end):
        name, node = self.alternative(ident)
        try:
            node.check(data, ident, hstart, start, end)
        except Invalid as exc:
            exc.path.append(name)
            raise


class Explicit(Node):
    """One EXPLICIT tag around exactly one value (asn1crypto reads the first and drops the rest
    when re-encoding)."""

    def __init__(self, ident: int, inner: Node):
        super().__init__(f"{describe(ident)} EXPLICIT {inner.label}", ident)
        self.inner = inner

    def contents(self, data, ident, hstart, start, end):
        if _child(self.inner, data, start, end) != end:
            raise Invalid("not canonical DER: more than one value inside an EXPLICIT tag")


class Opaque(Node):
    """A ContentInfo kept as received: ``contentType OID, [0] EXPLICIT`` one value, all DER."""

    def contents(self, data, ident, hstart, start, end):
        if start == end or data[start] != 0x06:
            raise Invalid("ContentInfo without a contentType OBJECT IDENTIFIER")
        _, oid, pos = tlv_at(data, start, end)
        oid_check(data, oid, pos)
        if pos == end or data[pos] != 0xA0:
            raise Invalid("ContentInfo without [0] EXPLICIT content")
        _, inner, stop = tlv_at(data, pos, end)
        if stop != end:
            raise Invalid("data after the content of a ContentInfo")
        if inner == end or check_tlvs(data, inner, end) != end:  # every TLV inside, DER rules
            raise Invalid("ContentInfo content is not exactly one value")


class Parsable(Node):
    """An OCTET STRING (BIT STRING) holding exactly one DER value of a spec the OID chose."""

    def __init__(self, label: str, ident: int, inner: Node, bits: bool):
        super().__init__(label, ident)
        self.inner, self.bits = inner, bits

    def contents(self, data, ident, hstart, start, end):
        if self.bits:
            if start == end or data[start] != 0:
                raise Invalid("BIT STRING of octets with unused bits")
            start += 1
        if _child(self.inner, data, start, end) != end:
            raise Invalid(f"not canonical DER: data after the {self.inner.label} inside")


class Fallback(Node):
    """A value asn1crypto itself judges (``reparse.reference_check``); remembered when valid."""

    def __init__(self, spec: type, params: dict, outer: bool, root: bool = False):
        super().__init__(spec.__name__)
        self.spec, self.params, self.outer, self.root = spec, params, outer, root
        self.null_ok = spec is core.Any and not {"explicit", "implicit"} & params.keys()
        self.remembered()

    def contents(self, data, ident, hstart, start, end):
        if self.null_ok and data[hstart:end] == b"\x05\x00":
            return  # ANY holding NULL (AlgorithmIdentifier parameters): asn1crypto's Null
        reference_check(self.spec, self.params, data[hstart:end], outer=self.outer,
                        root=self.root)
