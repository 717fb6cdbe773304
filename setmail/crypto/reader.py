"""A strict DER reader for the fixed CMS shapes the operators accept.

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

    def _take(self, tag: int) -> tuple[int, int]:
        """(content start, content end) of the TLV at ``pos``, which must have ``tag``; checks the
        DER length rules and moves ``pos`` past it.

        The usual headers (the expected low tag, short form or one or two length octets, minimal,
        inside the bounds) are read inline; anything else takes ``_slow_take``, which names the
        fault."""
        data, pos, end = self.data, self.pos, self.end
        if end - pos >= 2 and data[pos] == tag and tag & 0x1F != 0x1F:
            n = data[pos + 1]
            if n < 0x80:
                if pos + 2 + n <= end:
                    self.pos = pos + 2 + n
                    return pos + 2, pos + 2 + n
            elif n == 0x81:
                if pos + 3 <= end and data[pos + 2] >= 0x80 and pos + 3 + data[pos + 2] <= end:
                    self.pos = pos + 3 + data[pos + 2]
                    return pos + 3, self.pos
            elif n == 0x82 and pos + 4 <= end and data[pos + 2]:
                stop = pos + 4 + (data[pos + 2] << 8 | data[pos + 3])
                if stop <= end:
                    self.pos = stop
                    return pos + 4, stop
        return self._slow_take(tag)

    def _slow_take(self, tag: int) -> tuple[int, int]:
        if self.end - self.pos < 2:
            self._fail("truncated")
        found = self.data[self.pos]
        if found & 0x1F == 0x1F:
            self._fail("high tag number where none is expected")
        length, start = read_length(self.data, self.pos + 1, self.end, self.what)
        if found != tag:
            self._fail(f"expected tag {tag:#04x}, found {found:#04x}")
        self.pos = start + length
        return start, self.pos

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < self.end else None

    def raw(self, tag: int) -> bytes:
        """The whole TLV (header included) of the next value, which must have ``tag``."""
        pos = self.pos
        self._take(tag)
        return self.data[pos:self.pos]

    def any(self) -> bytes:
        """The whole TLV of the next value, whatever its tag."""
        return self.raw(self.data[self.pos] if self.pos < self.end else -1)

    def value(self, tag: int) -> bytes:
        """The content octets of the next value, which must have ``tag``."""
        start, stop = self._take(tag)
        return self.data[start:stop]

    def enter(self, tag: int) -> "Reader":
        """A reader over the content of the next (constructed) value."""
        start, stop = self._take(tag)
        return Reader(self.data, self.what, start, stop)

    def only(self, tag: int) -> "Reader":
        """``enter`` the next value, which must be the last one here (then ``done``), by moving this
        reader inside it: the nesting of one-child SEQUENCEs without a reader per level."""
        start, stop = self._take(tag)
        if stop != self.end:
            self._fail(f"{self.end - stop} unexpected trailing bytes")
        self.pos = start
        return self

    def integer(self) -> int:
        pos = self.pos
        if pos + 3 <= self.end and self.data[pos] == 0x02 and self.data[pos + 1] == 0x01:
            self.pos = pos + 3  # one content octet: always minimal (versions, small counts)
            value = self.data[pos + 2]
            return value - 0x100 if value >= 0x80 else value
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
    pair = Reader(data, what).only(0x30)
    first, second = pair.any(), pair.any()
    pair.done()
    return first, second
