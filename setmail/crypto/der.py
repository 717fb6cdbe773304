"""A minimal DER *encoder* for the hot paths of the SET operators.

Why not asn1crypto for building: constructing nested asn1crypto values from dicts costs more than
the RSA signature itself (crypto-notes.md: ~850 sign+envelope/s vs ~3,650 for the RSA alone).
The operators build a handful of fixed CMS shapes, so they concatenate TLVs directly; everything
built here is parsed back by asn1crypto in the tests (and by ``openssl asn1parse``/``cms``), which
is what keeps this honest.  Decoding is ``crypto.reader``'s (strict, one expected tag at a time).

Every operator calls these hundreds of times per purchase, so the common sizes (short form, one
or two length octets) are written without any helper call.
"""
from __future__ import annotations

from functools import lru_cache


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def header(tag: int, n: int) -> bytes:
    """Identifier and length octets of a TLV with ``n`` content octets."""
    if n < 0x80:
        return bytes((tag, n))
    if n < 0x100:
        return bytes((tag, 0x81, n))
    if n < 0x10000:
        return bytes((tag, 0x82, n >> 8, n & 0xFF))
    return bytes((tag,)) + length(n)


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    if n < 0x100:
        return bytes((tag, 0x81, n)) + content
    return header(tag, n) + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    """DER SET OF: elements sorted by their encodings (X.690 11.6)."""
    return tlv(0x31, b"".join(sorted(parts)))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def _integer(value: int) -> bytes:
    if value == 0:
        return b"\x02\x01\x00"
    size = (value.bit_length() + 8) // 8 if value > 0 else ((~value).bit_length() + 8) // 8
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


_SMALL_INTEGERS = {v: _integer(v) for v in range(-128, 128)}


def integer(value: int) -> bytes:
    small = _SMALL_INTEGERS.get(value)
    return small if small is not None else _integer(value)


def explicit(number: int, content: bytes) -> bytes:
    """[number] EXPLICIT (constructed context tag around a complete TLV)."""
    return tlv(0xA0 | number, content)


def implicit_constructed(number: int, content: bytes) -> bytes:
    """[number] IMPLICIT on a constructed type: the content of the original TLV, new tag."""
    return tlv(0xA0 | number, content)


def implicit_primitive(number: int, content: bytes) -> bytes:
    return tlv(0x80 | number, content)


@lru_cache(maxsize=512)
def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def header_len(der: bytes) -> int:
    """Size of the tag+length header of the TLV that starts ``der``."""
    first = der[1]
    return 2 if first < 0x80 else 2 + (first & 0x7F)


def content_of(der: bytes) -> bytes:
    """The content octets of a single TLV (used to re-tag a constructed value IMPLICITly)."""
    return der[header_len(der):]
