"""asn1crypto's own judgement of a value: the strict decoder's fallback for types its walker does
not model (D-126).

This is the decoder setmail had before the walker, applied to one subtree: parse the TLV with
asn1crypto as its parent would, force every value (``force``: each field built, each primitive
read, ContentInfo layers checked for shape only), and require that re-encoding gives back the
bytes received (``reencode``: asn1crypto's ``dump(force=True)``, with ContentInfo layers kept as
received wherever the walker would keep them opaque).  Both at once, so a value passes only if
both of that decoder's modes accepted it.  Slow (tens of microseconds to milliseconds), but only
reached by rare types: keys.PublicKeyInfo, SET/SET OF with fields, x509 strings with their own
rules, ANY other than NULL, a parsed-but-unknown CMS layer inside a digest.
"""
from __future__ import annotations

from asn1crypto import cms, core, parser

from .der import Invalid, check_tlvs, length_at

# asn1crypto raises these (and more: KeyError, OverflowError...) for values it cannot read
_ANY_FAULT = Exception


def reference_check(spec: type, params: dict, tlv: bytes, *, outer: bool, root: bool = False
                    ) -> None:
    """Raise ``Invalid`` unless asn1crypto reads ``tlv`` as ``spec`` under ``params`` (as a
    Sequence field, Choice alternative or SEQUENCE OF element; as ``spec.load`` if ``root``),
    every value parses, and it re-encodes to ``tlv`` exactly.  ``outer``: ContentInfo layers
    reached through SEQUENCE, SEQUENCE OF and CHOICE stay opaque (as the walker's)."""
    if check_tlvs(tlv, 0, len(tlv)) != len(tlv):
        raise Invalid("trailing data")
    try:
        if root:
            value = spec.load(tlv, strict=True)
        else:
            value = core._build(*parser.parse(tlv, strict=True), spec=spec,
                                spec_params=dict(params) or None)
        force(value)
        encoded = reencode(value) if outer else value.dump(force=True)
    except Invalid:
        raise
    except _ANY_FAULT as exc:
        raise Invalid(f"not valid DER for {spec.__name__} ({exc.__class__.__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if encoded != tlv:
        raise Invalid(f"not canonical DER for {spec.__name__} (undeclared trailing fields, an "
                      "encoded DEFAULT value or another non-DER form)")


def force(value: core.Asn1Value) -> None:
    """Parse every value of the tree: each field is built and each primitive read, so a fault
    anywhere surfaces now; ContentInfo layers are checked for shape only."""
    if isinstance(value, cms.ContentInfo):
        opaque_content_info(value.contents)
    elif isinstance(value, core.Choice):
        force(value.chosen)
    elif isinstance(value, (core.Sequence, core.SequenceOf, core.Set, core.SetOf)):
        for index in range(len(value)):
            force(value[index])
    elif not isinstance(value, core.Void):
        value.native  # noqa: B018  (parses the contents)


def reencode(value: core.Asn1Value) -> bytes:
    """DER of ``value`` re-encoded from its parsed fields, opaque ContentInfo layers as received.

    asn1crypto's ``dump(force=True)`` parses and re-encodes a whole subtree, so it is used for
    every subtree that cannot hold a ContentInfo; only the few SEQUENCE/CHOICE levels above an
    opaque layer are encoded here, exactly as asn1crypto would."""
    if isinstance(value, cms.ContentInfo):
        return _tagged(value, opaque_content_info(value.contents))
    if not may_hold_opaque(type(value)):
        return value.dump(force=True)
    if isinstance(value, core.Choice):
        return _explicit(value, reencode(value.chosen))
    if isinstance(value, core.SequenceOf):
        return _tagged(value, b"".join(reencode(child) for child in value))
    parts = []  # a Sequence: declared fields only, DEFAULT values omitted (Sequence._set_contents)
    for index, (_, spec, params) in enumerate(value._fields):
        encoded = reencode(value[index])
        if "default" not in params or encoded != spec(**params).dump():
            parts.append(encoded)
    return _tagged(value, b"".join(parts))


def _tagged(value: core.Asn1Value, contents: bytes) -> bytes:
    """``contents`` under ``value``'s own (possibly IMPLICIT) tag and its EXPLICIT tags."""
    return _explicit(value, parser.emit(value.class_, value.method, value.tag, contents))


def _explicit(value: core.Asn1Value, encoded: bytes) -> bytes:
    """``encoded`` inside ``value``'s EXPLICIT tags, innermost first (as Asn1Value.dump)."""
    for class_, tag in value.explicit or ():
        encoded = parser.emit(class_, 1, tag, encoded)
    return encoded


def opaque_content_info(body: bytes) -> bytes:
    """``body`` if it is ``contentType OBJECT IDENTIFIER, content [0] EXPLICIT ANY``: one OID, one
    [0] holding exactly one value (the DER inside is checked by the caller)."""
    limit = len(body)
    if not body or body[0] != 0x06:
        raise Invalid("ContentInfo without a contentType OBJECT IDENTIFIER")
    length, pos = length_at(body, 1, limit)
    pos += length
    if pos >= limit or body[pos] != 0xA0:
        raise Invalid("ContentInfo without [0] EXPLICIT content")
    length, pos = length_at(body, pos + 1, limit)
    if pos + length != limit:
        raise Invalid("data after the content of a ContentInfo")
    if pos == limit or check_tlvs(body, pos, limit) != limit:
        raise Invalid("ContentInfo content is not exactly one value")
    return body


_HOLDS_OPAQUE: dict[type, bool] = {}


def may_hold_opaque(spec) -> bool:
    """Whether a value of ``spec`` may contain a ContentInfo (decided once per class).

    Only SEQUENCE, SEQUENCE OF and CHOICE are looked into; anything else (SET, SET OF, ANY, a spec
    chosen at run time) counts as opaque-free, which is never unsafe: that subtree is parsed and
    re-encoded whole."""
    known = _HOLDS_OPAQUE.get(spec)
    if known is not None:
        return known
    if not isinstance(spec, type):
        return False
    _HOLDS_OPAQUE[spec] = False  # while deciding (recursive types)
    if issubclass(spec, cms.ContentInfo):
        result = True
    elif issubclass(spec, core.Choice):
        result = any(may_hold_opaque(alt[1]) for alt in spec._alternatives)
    elif issubclass(spec, core.SequenceOf) and not issubclass(spec, core.SetOf):
        result = may_hold_opaque(spec._child_spec)
    elif issubclass(spec, core.Sequence) and not issubclass(spec, core.Set):
        result = any(may_hold_opaque(s) for s in [f[1] for f in spec._fields or ()]
                     + list((spec._oid_specs or {}).values()))
    else:
        result = False
    _HOLDS_OPAQUE[spec] = result
    return result
