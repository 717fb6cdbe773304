"""FROZEN copy of setmail/crypto/reader.py at 6a2db0d, before the CMS fast paths: the oracle of
tests/test_crypto_identity.py (same bytes out, same verdicts).  Do not edit or import outside tests.

A strict DER reader for the fixed CMS shapes the operators accept.

Why: the receiving side of every operator runs on each mail, and asn1crypto's general lazy parser
(plus a separate strict-DER walk) cost more than the RSA decryption it surrounds.  The operators
accept exactly one profile (D-1, D-14), so a reader that expects each tag in turn is both faster
and stricter: any other tag, a non-minimal length or INTEGER, or a byte left over is
``MalformedMessage`` at the offset where it happens.
"""
from __future__ import annotations

from setmail.asn1.base import check_der, read_length
from setmail.errors import MalformedMessage


class Reader:
    """Reads consecutive TLVs from ``data[pos:end]``."""

    __slots__ = ("data", "pos", "end", "what")

    def __init__(self, data: bytes, what: str, pos: int = 0, end: int | None = None):
        self.data, self.pos, self.what = data, pos, what
        self.end = len(data) if end is None else end

    def _fail(self, why: str):
        raise MalformedMessage(f"{self.what}: {why} at offset {self.pos}")

    def _header(self) -> tuple[int, int, int]:
        """(tag, content start, content end) of the TLV at ``pos``; checks DER length rules."""
        if self.end - self.pos < 2:
            self._fail("truncated")
        tag = self.data[self.pos]
        if tag & 0x1F == 0x1F:
            self._fail("high tag number where none is expected")
        length, start = read_length(self.data, self.pos + 1, self.end, self.what)
        return tag, start, start + length

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < self.end else None

    def raw(self, tag: int) -> bytes:
        """The whole TLV (header included) of the next value, which must have ``tag``."""
        t, start, stop = self._header()
        if t != tag:
            self._fail(f"expected tag {tag:#04x}, found {t:#04x}")
        whole = self.data[self.pos:stop]
        self.pos = stop
        return whole

    def any(self) -> bytes:
        """The whole TLV of the next value, whatever its tag."""
        return self.raw(self.data[self.pos] if self.pos < self.end else -1)

    def value(self, tag: int) -> bytes:
        """The content octets of the next value, which must have ``tag``."""
        t, start, stop = self._header()
        if t != tag:
            self._fail(f"expected tag {tag:#04x}, found {t:#04x}")
        self.pos = stop
        return self.data[start:stop]

    def enter(self, tag: int) -> "Reader":
        """A reader over the content of the next (constructed) value."""
        t, start, stop = self._header()
        if t != tag:
            self._fail(f"expected tag {tag:#04x}, found {t:#04x}")
        self.pos = stop
        return Reader(self.data, self.what, start, stop)

    def integer(self) -> int:
        body = self.value(0x02)
        if not body or (len(body) > 1 and ((body[0] == 0 and body[1] < 0x80) or
                                           (body[0] == 0xFF and body[1] >= 0x80))):
            self._fail("non-minimal INTEGER")
        return int.from_bytes(body, "big", signed=True)

    def expect(self, expected: bytes) -> None:
        """The next whole TLV must be exactly ``expected`` (fixed algorithm identifiers, OIDs)."""
        if self.data[self.pos:self.pos + len(expected)] != expected:
            self._fail("unexpected value")
        self.pos += len(expected)
        if self.pos > self.end:
            self._fail("value runs past the end")

    def done(self) -> None:
        if self.pos != self.end:
            self._fail(f"{self.end - self.pos} unexpected trailing bytes")


def split_pair(data: bytes, what: str) -> tuple[bytes, bytes]:
    """The two elements (whole TLVs) of a DER SEQUENCE of exactly two values.

    Every two-part shape of the operators is one: L(t1,t2) = {t1, DD(t2)}, EncB's {envelope,
    baggage}, PIDualSigned, OIDualSigned.  The whole value is checked as DER first (D-14).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    check_der(data, what)
    top = Reader(data, what)
    pair = top.enter(0x30)
    top.done()
    first, second = pair.any(), pair.any()
    pair.done()
    return first, second
