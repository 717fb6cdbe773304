"""Compile asn1crypto class declarations into nodes, once, for every direction (D-126): ``walk``
checks DER against them, ``native`` builds Python values from them, ``fastder`` writes DER with
them (each node knows its ``spec``; the encoder adds a writer per node on first use).

Read from the declarations exactly what asn1crypto's generic parser reads: ``_fields`` with their
parameters, the ``_field_ids`` and ``_id_map`` asn1crypto itself computes (its rule for absent
optional fields), ``_child_spec``, ``_oid_pair``/``_oid_specs``, tagging from an instance built
with the field parameters (as asn1crypto builds children), DEFAULT encodings from
``spec(**params).dump()`` (as its encoder compares them).  A class is modelled only if it declares
and does nothing else (``_plain``): any parsing method, class-level tagging or unknown spec
callback of its own makes its values a ``Fallback`` judged by asn1crypto.  Compiled once per
(class, parameters, opaque context) under a lock; nodes are published only when complete.
"""
from __future__ import annotations

import threading

from asn1crypto import algos, cms, core, x509

from . import prim
from .reparse import may_hold_opaque
from .walk import (Choice, Explicit, Fallback, Node, Opaque, Parsable, Primitive, Sequence,
                   SequenceOf, dispatch, ident_of)

CORE = frozenset(v for v in vars(core).values()
                  if isinstance(v, type) and issubclass(v, core.Asn1Value))
#: class attributes that only declare what asn1crypto parses generically
#: (and the tables asn1crypto's _setup derives from them and stores on the class)
DECLARATIVE = frozenset((
    "_fields", "_alternatives", "_child_spec", "_map", "_oid_pair", "_oid_specs", "_spec_callbacks",
    "_field_map", "_field_ids", "_precomputed_specs", "_oid_nums", "_id_map", "_name_map",
    "_reverse_map", "_size", "__module__", "__doc__", "__qualname__", "__annotations__",
    "__dict__", "__weakref__", "__firstlineno__", "__static_attributes__"))
#: methods and properties of asn1crypto classes that neither parse nor encode: building
#: (__setitem__, build), comparing and hashing, properties read after decoding
_HARMLESS = frozenset((
    "__eq__", "__ne__", "__hash__", "hashable", "__setitem__", "build", "_null_algos",
    "_parameters_spec", "_encap_content_info_spec", "signature_algo", "hash_algo",
    "encryption_block_size", "encryption_cipher", "encryption_iv", "encryption_mode", "kdf",
    "kdf_hmac", "kdf_iterations", "kdf_salt", "key_length", "human_friendly", "_human_friendly",
    "_recursive_humanize", "sha1", "sha256", "_sha1", "_sha256", "key_size", "url", "_url",
    "preferred_order", "preferred_ordinal", "_get_types", "_get_values", "prepped_value",
    "_prepped", "_ldap_string_prep", "_key_sizes", "register"))
_TAGGING = ("class_", "tag", "method", "explicit", "implicit", "_bad_tag")
#: the spec callbacks modelled here: AlgorithmIdentifier parameters, DigestedData content
_NULL_PARAMS = algos._ForceNullParameters._parameters_spec
_DIGESTED_CONTENT = cms.DigestedData._encap_content_info_spec
_PARSABLE = (core.ParsableOctetString, core.ParsableOctetBitString)

_LOCK = threading.RLock()
_NODES: dict[tuple, Node] = {}  # (spec, parameters, outer) -> complete node
_ROOTS: dict[type, Node] = {}


class Unsupported(Exception):
    """A declaration the walker does not model; its values go to ``reparse``."""


def root(cls: type) -> Node:
    """The node checking a whole value of ``cls`` (``decode``'s class)."""
    node = _ROOTS.get(cls)
    if node is None:
        with _LOCK:
            outer = _is_info(cls) or may_hold_opaque(cls)
            node = node_for(cls, {}, outer)
            if isinstance(node, Fallback):  # judged as the former decoder did: cls.load
                node = Fallback(cls, {}, outer, root=True)
            _ROOTS[cls] = node
    return node


def node_for(spec, params: dict, outer: bool) -> Node:
    """The node checking ``spec`` under field ``params``; ``outer``: ContentInfo layers are
    opaque here (reached from the root through SEQUENCE, SEQUENCE OF and CHOICE only).  Any
    fault while compiling makes the whole value a Fallback: no half-built node is ever used."""
    key = (spec, repr(sorted(params.items())), outer)
    node = _NODES.get(key)
    if node is None:
        with _LOCK:
            pending: dict = {}
            try:
                node = _lookup(spec, params, outer, pending)
            except (Unsupported, ValueError, TypeError, KeyError, AttributeError):
                node = Fallback(spec, params, outer)
                pending = {key: node}
            _NODES.update(pending)
    return node


def _lookup(spec, params: dict, outer: bool, pending: dict) -> Node:
    key = (spec, repr(sorted(params.items())), outer)
    node = _NODES.get(key) or pending.get(key)
    if node is None:
        node = _compile(spec, params, outer, key, pending)
    return node


def _is_info(spec) -> bool:
    return isinstance(spec, type) and issubclass(spec, cms.ContentInfo)


def _compile(spec, params: dict, outer: bool, key: tuple, pending: dict) -> Node:
    try:
        if _is_info(spec):  # opaque where the reference kept it so, else parsed whole by it
            if not outer:
                raise Unsupported(spec.__name__)
            base = core.Sequence
        else:
            base = _plain(spec)
            if base is None or (base is spec and not issubclass(base, core.Primitive)):
                raise Unsupported(getattr(spec, "__name__", repr(spec)))
        instance = spec(**params)  # asn1crypto's own tagging (and its one-time _setup)
        _check_modelled(spec, base)
        inner = _shell(spec, base, instance, outer)
    except (Unsupported, ValueError, TypeError):
        node = pending[key] = Fallback(spec, params, outer)
        return node
    node = inner
    inner.spec = spec  # for ``native``: field specs, DEFAULT values, universal tag, Name
    for class_, tag in instance.explicit or ():  # innermost first
        node = Explicit(ident_of(class_, 1, tag), node)
    pending[key] = node
    _fill(inner, spec, outer, pending)
    return node


def _check_modelled(spec, base) -> None:
    """Raise Unsupported for declarations the nodes cannot express (checked before any node of
    ``spec`` exists, so a recursive type never sees a half-built one)."""
    if base is core.Sequence and not _is_info(spec):
        for index, (name, fspec, _) in enumerate(spec._fields):
            callback = (spec._spec_callbacks or {}).get(name)
            if callback is not None or (spec._oid_nums is not None and
                                        spec._oid_nums[1] == index):
                _source(spec, index, callback)
            elif not isinstance(fspec, type):
                raise Unsupported(spec.__name__)
    elif base in (core.SequenceOf, core.SetOf) and spec._child_spec is None:
        raise Unsupported(spec.__name__)
    elif base is core.Choice and not spec._alternatives:
        raise Unsupported(spec.__name__)


def _shell(spec, base, instance, outer: bool) -> Node:
    """The node for ``spec``'s own TLV, children not yet compiled (recursive types).  Values
    outside the opaque context (BrandCRLIdentifier, names, algorithm identifiers) repeat across
    messages and are remembered; those above opaque layers are unique to their message."""
    ident = ident_of(instance.class_, instance.method, instance.tag) \
        if instance.tag is not None else None
    if _is_info(spec) and outer:
        return Opaque(spec.__name__, ident)
    if base is core.Choice:
        return Choice(spec.__name__)
    if base is core.Sequence:
        node = Sequence(spec.__name__, ident)
    elif base in (core.SequenceOf, core.SetOf):
        node = SequenceOf(spec.__name__, ident)
        node.ordered = base is core.SetOf
    else:
        check = prim.checker(spec, base, ident) if issubclass(base, core.Primitive) else None
        if check is None:
            raise Unsupported(spec.__name__)
        return Primitive(spec.__name__, ident, check, prim.reader(spec, base, check))
    return node if outer else node.remembered()


def _fill(node: Node, spec, outer: bool, pending: dict) -> None:
    if isinstance(node, Sequence):
        fields = [_field(spec, i, outer, pending) for i in range(len(spec._fields))]
        node.fields, node.nodes = tuple(f[0] for f in fields), tuple(f[1] for f in fields)
        node.spans = any(f[1] == 3 for f in node.fields)
    elif isinstance(node, SequenceOf):
        child = spec._child_spec
        if child is None:
            raise Unsupported(spec.__name__)
        node.child = _lookup(child, {}, outer and not node.ordered and _opaque_ok(child), pending)
    elif isinstance(node, Choice):
        node.alternatives = {}
        for id_, index in spec._id_map.items():
            name, alt, alt_params = spec._alternatives[index]
            if None not in id_:
                node.alternatives[ident_of(id_[0], 1, id_[1])] = (
                    name, _lookup(alt, alt_params, outer and _opaque_ok(alt), pending))


def _opaque_ok(spec) -> bool:
    """Whether the reference decoder kept looking for opaque layers below a ``spec`` value."""
    return _is_info(spec) or may_hold_opaque(spec)


def _field(spec, index: int, outer: bool, pending: dict) -> tuple:
    """Field ``index`` as ``walk.Sequence.fields`` holds it, and its node (None if an earlier
    field chooses its spec)."""
    name, fspec, fparams = spec._fields[index]
    node = resolve = None
    callback = (spec._spec_callbacks or {}).get(name)
    if callback is not None or (spec._oid_nums is not None and spec._oid_nums[1] == index):
        resolve = _resolver(spec, index, callback, outer)
    else:
        node = _lookup(fspec, fparams, outer and _opaque_ok(fspec), pending)
    required = "optional" not in fparams and "default" not in fparams
    default = fspec(**fparams).dump() if "default" in fparams and fspec is not None else None
    keys = None
    if not required and fspec is not core.Any:  # asn1crypto: an optional ANY takes anything
        keys = set()
        if spec._field_ids[index] != (None, None):
            keys.add(ident_of(spec._field_ids[index][0], 1, spec._field_ids[index][1]))
        if isinstance(fspec, type) and issubclass(fspec, core.Choice) and "explicit" not in fparams:
            fspec()  # its _id_map: asn1crypto tries the CHOICE's alternatives too
            keys.update(ident_of(c, 1, t) for c, t in fspec._id_map if c is not None)
        keys = frozenset(keys)
    kind, ident, check = (3, None, None) if resolve is not None else dispatch(node)
    return (name, kind, ident, check, keys, required, default, resolve), node


def _source(spec, index: int, callback) -> int:
    """Index of the earlier field that chooses field ``index``'s spec; Unsupported unless the
    choice is one modelled here and the field is ANY, absent (None) or a parsable string."""
    _, fspec, _ = spec._fields[index]
    if not (fspec is None or issubclass(fspec, core.Any) or _plain(fspec) in _PARSABLE) or \
            (fspec is None and callback is not _DIGESTED_CONTENT):
        raise Unsupported(spec.__name__)
    if callback is _DIGESTED_CONTENT:
        source = spec._field_map["version"]
    elif callback is _NULL_PARAMS:
        source = spec._field_map["algorithm"]
    elif callback is None and spec._oid_specs is not None:
        source = spec._oid_nums[0]
    else:
        raise Unsupported(spec.__name__)
    if source >= index:
        raise Unsupported(spec.__name__)
    return source


def _resolver(spec, index: int, callback, outer: bool):
    """``resolve(data, spans)``: the node for field ``index`` given the earlier fields, as
    asn1crypto's ``_determine_spec`` chooses it (an OID's spec, NULL parameters, a CMS version)."""
    _, fspec, fparams = spec._fields[index]
    source = _source(spec, index, callback)
    source_cls, cache = spec._fields[source][1], {}

    def chosen(data: bytes, span) -> type | None:
        """The spec asn1crypto would choose, from the earlier field's native value."""
        if span is None:  # an absent OID: None, not in any _oid_specs
            return None
        body = data[span[0]:span[1]]
        if callback is _DIGESTED_CONTENT:
            version = int.from_bytes(body, "big", signed=True)
            native = (source_cls._map or {}).get(version, version)
            return cms.EncapsulatedContentInfo if native != "v1" else cms.ContentInfo
        dotted = prim.oid_dotted(body)
        native = (source_cls._map or {}).get(dotted, dotted)
        if callback is _NULL_PARAMS:
            if spec._oid_pair == ("algorithm", "parameters") and native in spec._oid_specs:
                return spec._oid_specs[native]
            return core.Null if dotted in spec._null_algos else None
        return spec._oid_specs.get(native)

    def resolve(data: bytes, spans: list) -> Node:
        value_spec = chosen(data, spans[source])
        node = cache.get(value_spec)
        if node is None:
            node = cache[value_spec] = _resolved(fspec, value_spec, fparams, outer)
        return node
    return resolve


def _resolved(fspec, value_spec, fparams: dict, outer: bool) -> Node:
    if value_spec is None:
        return node_for(fspec, fparams, outer and _opaque_ok(fspec))
    if fspec is None or issubclass(fspec, core.Any):
        return node_for(value_spec, fparams, outer and _opaque_ok(value_spec))
    instance = fspec(**fparams)  # an OCTET/BIT STRING that holds the chosen value
    node = Parsable(f"{fspec.__name__} of {value_spec.__name__}",
                    ident_of(instance.class_, 0, instance.tag),
                    node_for(value_spec, {}, False), _plain(fspec) is core.ParsableOctetBitString)
    for class_, tag in instance.explicit or ():
        node = Explicit(ident_of(class_, 1, tag), node)
    return node


def _plain(spec) -> type | None:
    """asn1crypto base class of ``spec`` if ``spec`` only declares (no parsing methods of its
    own, no class-level tagging, no spec callback but the two modelled), else None."""
    if not isinstance(spec, type) or not issubclass(spec, core.Asn1Value):
        return None
    base = next(b for b in spec.__mro__ if b in CORE)
    for k in spec.__mro__:
        if k is base:
            break
        extra = set(vars(k)) - DECLARATIVE - _HARMLESS
        if k is x509.Name:  # its native/__len__ only regroup what the generic parse returns
            extra -= {"native", "__len__"}
        if extra:
            return None
    if any(getattr(spec, a) != getattr(base, a) for a in _TAGGING):
        return None
    if any(fn not in (_NULL_PARAMS, _DIGESTED_CONTENT)
           for fn in (getattr(spec, "_spec_callbacks", None) or {}).values()):
        return None
    return base
