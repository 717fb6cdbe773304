"""Strict decoding of untrusted DER: ``check_der``, ``read_length`` and ``decode`` (D-126).

``decode`` refuses oversize input before reading it, then walks the DER once against the class's
asn1crypto declaration (``walk``, compiled by ``plan``) without building asn1crypto objects: every
TLV's header by DER rules, every field's tag, every primitive's contents, nothing undeclared,
nothing non-canonical (an encoded DEFAULT, SET OF out of order, a non-DER time...).  Only then is
the value loaded, lazily (``cls.load``: roles read the fields they need).  What the walker accepts
is what the earlier decoder (asn1crypto parse, force every value, re-encode and compare)
accepted; types it does not model are judged that way (``reparse``).  The crypto layers
(``cms.ContentInfo``: SignedData, AuthEnvelopedData) are opaque here: their shape and the DER of
every TLV inside are checked, ``crypto.reader`` parses them strictly when a role opens them.
Every failure is ``MalformedMessage`` (``MessageTooLarge`` for size).  ``decode_native`` makes
the same walk build plain Python values instead (``native``), for roles that read many fields.
"""
from __future__ import annotations

from typing import TypeVar

from asn1crypto import core

from setmail.errors import MalformedMessage, MessageTooLarge

from .der import Invalid, check_der, read_length
from .native import build, paths
from .plan import root
from .walk import walk

__all__ = ["MAX_MESSAGE_SIZE", "check_der", "decode", "decode_native", "read_length"]

#: default limit for any single SET message or structure read from outside (1 MiB)
MAX_MESSAGE_SIZE = 1 << 20

T = TypeVar("T", bound=core.Asn1Value)


def decode_native(cls: type, data: bytes, *, raw=(), max_size: int = MAX_MESSAGE_SIZE,
                  what: str | None = None):
    """``decode``'s checks and refusals, returning plain Python values built during the walk
    instead of a lazy asn1crypto value (``native``): ``cls.load(data).native``, except that opaque
    ContentInfo layers, and the fields ``raw`` names (dotted paths), are their DER."""
    name = what or cls.__name__
    data, trie = _bounded(data, name, max_size), paths(raw)
    try:
        return build(root(cls), data, trie)
    except Invalid as exc:
        raise MalformedMessage(f"{name}: {exc}") from None
    except MalformedMessage:
        raise
    except Exception as exc:  # asn1crypto (types it judges) raises ValueError, TypeError...
        raise MalformedMessage(f"{name}: not valid DER ({exc.__class__.__name__}: {exc})") from exc


def _bounded(data, name: str, max_size: int) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"{name}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise MessageTooLarge(f"{name}: {len(data)} bytes exceeds the limit of {max_size}")
    return bytes(data)


def decode(cls: type[T], data: bytes, *, max_size: int = MAX_MESSAGE_SIZE,
           what: str | None = None, canonical: bool = True) -> T:
    """Parse ``data`` as ``cls``; any failure is a MalformedMessage naming ``what``.

    Every value outside the crypto layers is checked; a ``cms.ContentInfo`` (SignedData,
    AuthEnvelopedData ...) is only checked to be ``SEQUENCE { OID, [0] EXPLICIT ANY }`` of valid
    DER and stays opaque: ``crypto.reader`` parses it strictly when a role opens it (D-126).  The
    value must be canonical DER: asn1crypto silently accepts (and drops) elements beyond a
    SEQUENCE's declared fields, encoded DEFAULT values and non-minimal forms.  ``canonical`` is
    kept for callers: it once chose between re-encoding and only parsing, which cost several
    times the parse; the walker checks canonical form at no extra cost, so both modes do."""
    name = what or cls.__name__
    data = _bounded(data, name, max_size)
    try:
        walk(root(cls), data)
        return cls.load(data, strict=True)
    except Invalid as exc:
        raise MalformedMessage(f"{name}: {exc}") from None
    except MalformedMessage:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError, OverflowError...
        raise MalformedMessage(f"{name}: not valid DER ({exc.__class__.__name__}: {exc})") from exc
