"""DER at the TLV level: headers, lengths and the whole-input ``check_der`` walk (D-126).

The rules every DER reader in setmail shares: definite minimal lengths of at most four octets,
high tag numbers in minimal base-128 (and only for numbers >= 31), non-empty minimal INTEGERs,
BOOLEAN 00/FF, minimal OBJECT IDENTIFIERs.  ``strict.decode``'s walker reads headers with
``tlv_at``; ``check_der`` walks every TLV of a value whose type is not known (the opaque CMS layers,
OAEP blocks, the crypto reader's input).  Faults are raised as ``Invalid`` (cheap, no name) and
turned into ``MalformedMessage`` with the caller's name at the API edge.
"""
from __future__ import annotations

import re
from collections import OrderedDict

from setmail.errors import MalformedMessage


class Invalid(ValueError):
    """A DER or type fault found while walking; ``path`` names where, innermost last."""

    def __init__(self, message: str):
        super().__init__(message)
        self.path: list[str] = []

    def __str__(self) -> str:
        where = ".".join(reversed(self.path))
        return f"{where}: {self.args[0]}" if where else self.args[0]


def check_der(data: bytes, what: str = "value") -> None:
    """Refuse BER that asn1crypto tolerates but DER forbids.

    Why: SET signs and digests DER, and a parser that accepts two encodings of one value lets a
    flipped length bit (long-form length, empty INTEGER) pass unnoticed.  Walks every TLV: one
    top-level value, definite minimal lengths, low tag numbers only, non-empty minimal INTEGERs,
    BOOLEAN 00/FF.  Primitive contents (OCTET STRINGs holding DER) are not descended into.
    """
    try:
        end = check_tlvs(data, 0, len(data))
    except Invalid as exc:
        raise MalformedMessage(f"{what}: {exc}") from None
    if end != len(data):
        raise MalformedMessage(f"{what}: {len(data) - end} bytes of trailing data")


def read_length(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """(length, offset after the length octets) of the DER length at ``pos``.

    Definite form only, minimal (short form below 0x80, no leading zero octet), and the value must
    end by ``limit``: the rules every DER reader in setmail shares.
    """
    try:
        return length_at(data, pos, limit)
    except Invalid as exc:
        raise MalformedMessage(f"{what}: {exc}") from None


def length_at(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """``read_length`` raising ``Invalid``."""
    if pos >= limit:
        raise Invalid(f"truncated TLV at offset {pos}")
    n = data[pos]
    pos += 1
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > limit:
            raise Invalid(f"bad length encoding at offset {pos - 1}")
        length = int.from_bytes(data[pos:pos + k], "big")
        if length < 0x80 or data[pos] == 0:
            raise Invalid(f"non-minimal length at offset {pos - 1}")
        pos += k
    else:
        length = n
    if pos + length > limit:
        raise Invalid(f"length runs past the end at offset {pos}")
    return length, pos


def tlv_at(data: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    """(identifier, contents start, contents end) of the TLV at ``pos``, which must end by
    ``limit``.  The identifier is the first octet, with the tag number shifted in above it when
    that octet says "high tag number": one int names class, method and number.  Lengths below
    64 KiB are read inline (``length_at`` raises the faults)."""
    if limit - pos < 2:
        raise Invalid(f"truncated TLV at offset {pos}")
    ident = data[pos]
    pos += 1
    if ident & 0x1F == 0x1F:
        number, pos = high_tag_at(data, pos, limit)
        ident |= number << 8
    n = data[pos]
    if n < 0x80:
        if pos + 1 + n <= limit:
            return ident, pos + 1, pos + 1 + n
    elif n == 0x81:
        if pos + 2 < limit and data[pos + 1] >= 0x80 and pos + 2 + data[pos + 1] <= limit:
            return ident, pos + 2, pos + 2 + data[pos + 1]
    elif n == 0x82 and pos + 3 < limit and data[pos + 1]:
        length = data[pos + 1] << 8 | data[pos + 2]
        if pos + 3 + length <= limit:
            return ident, pos + 3, pos + 3 + length
    length, pos = length_at(data, pos, limit)
    return ident, pos, pos + length


def high_tag_at(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """(tag number, offset after it) of a high tag number: minimal base-128, >= 31, at most three
    octets (Error is [999]), and a length octet must follow."""
    number, k = 0, 0
    while True:
        if pos >= limit - 1 or k == 3 or (k == 0 and data[pos] == 0x80):
            raise Invalid(f"bad high tag number at offset {pos}")
        number, k, pos = number << 7 | data[pos] & 0x7F, k + 1, pos + 1
        if not data[pos - 1] & 0x80:
            break
    if number < 31:
        raise Invalid(f"non-minimal tag number at offset {pos}")
    return number, pos


def check_tlvs(data: bytes, pos: int, limit: int) -> int:
    """Walk every TLV in ``data[pos:limit]`` (depth first, no recursion); end of the first one
    (``pos`` if there is none).

    The loop runs once per TLV of every opaque layer, so the common case (low tag number,
    short-form length, no INTEGER/BOOLEAN/OID) costs only a few comparisons."""
    stack = []
    memo = CHECKED
    low, high = memo.low, memo.high
    first_end = -1
    while True:
        while pos < limit:
            if limit - pos < 2:
                raise Invalid(f"truncated TLV at offset {pos}")
            tag = data[pos]
            if tag & 0x1F == 0x1F:  # high tag number (Error is [999]): minimal base-128, >= 31
                pos = high_tag_at(data, pos + 1, limit)[1]
            else:
                pos += 1
            length = data[pos]
            if length < 0x80 and pos + 1 + length <= limit:
                pos += 1
            elif length == 0x81 and pos + 2 < limit and data[pos + 1] >= 0x80 and \
                    pos + 2 + data[pos + 1] <= limit:
                length, pos = data[pos + 1], pos + 2
            elif length == 0x82 and pos + 3 < limit and data[pos + 1] and \
                    pos + 3 + (data[pos + 1] << 8 | data[pos + 2]) <= limit:
                length, pos = data[pos + 1] << 8 | data[pos + 2], pos + 3
            else:
                length, pos = length_at(data, pos, limit)
            end = pos + length
            if first_end < 0:
                first_end = end
            if tag & 0x20:
                if low <= length <= high:
                    if memo.seen(None, data, pos, end):  # e.g. a certificate
                        pos = end
                        continue
                    stack.append((limit, pos))
                else:
                    stack.append((limit, -1))
                limit = end
            elif tag == 0x06:  # fast path: no 0x80 octet at all, the last one complete
                if not length or data[end - 1] & 0x80 or \
                        (data.find(b"\x80", pos, end) >= 0 and not minimal_oid(data[pos:end])):
                    raise Invalid(f"non-minimal OBJECT IDENTIFIER at offset {pos}")
                pos = end
            else:
                if tag <= 0x02 and tag:  # BOOLEAN, INTEGER
                    check_primitive(tag, data, pos, end)
                pos = end
        if not stack:
            return first_end if first_end >= 0 else pos
        end = limit
        limit, start = stack.pop()
        if start >= 0:  # the whole constructed value checked out: remember its contents
            memo.add(None, data, start, end)


class Memo:
    """An LRU of values found valid, looked up in place.

    Why: messages repeat the same large values (certificate chains, the brand's
    BrandCRLIdentifier) and their validity does not depend on where they appear; but slicing
    and hashing a few KiB at every level of every message would cost more than it saves.  The
    key is (kind, length, last 16 octets); a hit is confirmed by comparing the stored value with
    the data in place (``startswith``), so a lookup costs the same for any size and a collision
    only costs a miss."""

    def __init__(self, low: int, high: int, size: int):
        self.low, self.high, self.size = low, high, size
        self.entries: OrderedDict[tuple, bytes] = OrderedDict()

    def seen(self, kind, data: bytes, start: int, end: int) -> bool:
        key = (kind, end - start, data[end - 16:end])
        stored = self.entries.get(key)
        if stored is None or not data.startswith(stored, start):
            return False
        try:
            self.entries.move_to_end(key)
        except KeyError:  # another thread evicted it meanwhile
            pass
        return True

    def add(self, kind, data: bytes, start: int, end: int) -> None:
        key = (kind, end - start, data[end - 16:end])
        self.entries[key] = data[start:end]
        try:
            self.entries.move_to_end(key)
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        except KeyError:
            pass

    def clear(self) -> None:
        self.entries.clear()


#: contents of constructed values that passed ``check_der`` lately (certificates above all)
CHECKED = Memo(512, 65536, 512)


def check_primitive(tag: int, data: bytes, pos: int, end: int) -> None:
    """DER contents rules of a universal BOOLEAN, INTEGER or OBJECT IDENTIFIER."""
    length = end - pos
    if tag == 0x02:
        if length == 0 or (length > 1 and ((data[pos] == 0 and data[pos + 1] < 0x80) or
                                           (data[pos] == 0xFF and data[pos + 1] >= 0x80))):
            raise Invalid(f"non-minimal INTEGER at offset {pos}")
    elif tag == 0x01:
        if length != 1 or data[pos] not in (0, 0xFF):
            raise Invalid(f"non-DER BOOLEAN at offset {pos}")
    elif not minimal_oid(data[pos:end]):
        raise Invalid(f"non-minimal OBJECT IDENTIFIER at offset {pos}")


def minimal_oid(body: bytes) -> bool:
    """Every subidentifier base-128 without a leading 0x80 octet, the last one complete."""
    return bool(body) and body[-1] < 0x80 and _PADDED_SUBIDENTIFIER.search(body) is None


#: a 0x80 octet that starts a subidentifier (first, or after a subidentifier's last octet)
_PADDED_SUBIDENTIFIER = re.compile(rb"(?:^|[\x00-\x7f])\x80")
