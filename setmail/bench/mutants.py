"""Structure-aware mutants of genuine SET mail, for ``scripts/fuzz`` and the role-level property
test (tests/test_fuzz_roles.py).

Why structure-aware: random bytes die at the first length check, so they test one line of the
decoder.  Here the MessageWrapper's DER is walked as a tree — down into every constructed value
and into every OCTET STRING that itself holds DER, i.e. through each CMS layer the signed
messages nest (ContentInfo, SignedData, its eContent, the certificates) — and one node is hurt,
with every enclosing length fixed up so the damage reaches the layer it was made in.  Around the
DER, the mail itself is hurt: its body, base64, headers and content type.

Every mutant is ``(kind, bytes)``: ``der_mutants`` give a new wrapper DER, ``mail_mutants`` a
whole raw mail.  Deterministic for a given ``random.Random``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from setmail.asn1.codec.der import Invalid, tlv_at
from setmail.crypto.der import length as _length

#: walk no deeper / no further than this (certificates hold hundreds of nodes)
MAX_NODES, MAX_DEPTH = 4000, 40
OVERSIZE = (1 << 20) + 4096


@dataclass(frozen=True)
class Node:
    """One TLV: ``start`` (its identifier), ``lpos`` (its length octets), ``cstart``/``end``
    (its contents); ``parents`` the enclosing nodes' (start, lpos, cstart, end), outermost
    first; ``layer`` how many OCTET STRINGs holding DER were entered to reach it."""

    start: int
    lpos: int
    cstart: int
    end: int
    parents: tuple
    layer: int


def _lpos(der: bytes, start: int) -> int:
    pos = start + 1
    if der[start] & 0x1F == 0x1F:
        while der[pos] & 0x80:
            pos += 1
        pos += 1
    return pos


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]] | None:
    """(start, contents start, end) of each TLV filling ``der[start:end]`` exactly, else None."""
    out, pos = [], start
    try:
        while pos < end:
            _, cstart, cend = tlv_at(der, pos, end)
            out.append((pos, cstart, cend))
            pos = cend
    except (Invalid, IndexError):
        return None
    return out


def nodes(der: bytes) -> list[Node]:
    """Every TLV of ``der`` (depth first), into constructed values and DER-holding OCTET
    STRINGs (the CMS layers)."""
    top = _children(der, 0, len(der))
    if not top:
        return []
    out: list[Node] = []
    stack = [(s, c, e, (), 0) for s, c, e in reversed(top)]
    while stack and len(out) < MAX_NODES:
        start, cstart, end, parents, layer = stack.pop()
        node = Node(start, _lpos(der, start), cstart, end, parents, layer)
        out.append(node)
        ident = der[start]
        inner = None
        if len(parents) < MAX_DEPTH and cstart < end:
            if ident & 0x20:
                inner = _children(der, cstart, end)
            elif ident == 0x04 and der[cstart] in (0x30, 0x31, 0xA0, 0x06):
                inner = _children(der, cstart, end)
                layer += inner is not None
        if inner:
            mine = (*parents, (start, node.lpos, cstart, end))
            stack.extend((s, c, e, mine, layer) for s, c, e in reversed(inner))
    return out


def splice(der: bytes, node: Node, start: int, end: int, new: bytes) -> bytes:
    """``der`` with ``der[start:end]`` (inside ``node`` or the node itself) replaced by ``new``
    and the length of every node enclosing it fixed."""
    for pstart, lpos, cstart, pend in reversed(node.parents):
        content = der[cstart:start] + new + der[end:pend]
        new = der[pstart:lpos] + _length(len(content)) + content
        start, end = pstart, pend
    return der[:start] + new + der[end:]


def _nested(depth: int, inner: bytes) -> bytes:
    out = inner
    for _ in range(depth):
        out = b"\x30" + _length(len(out)) + out
    return out


def der_mutant(der: bytes, rng: random.Random, tree: list[Node] | None = None) -> tuple[str, bytes]:
    """One mutant of a wrapper DER: (kind, new DER)."""
    tree = tree if tree is not None else nodes(der)
    if not tree:
        return "flip", _flip(der, rng.randrange(len(der)), rng)
    node = rng.choice(tree)
    kind = rng.choice(("flip", "flip", "flip", "truncate", "cut_inside", "blow_length",
                       "indefinite", "nest", "trailing", "retag", "zero", "random_content",
                       "duplicate", "drop"))
    size = node.end - node.cstart
    if kind == "flip":
        return kind, _flip(der, rng.randrange(node.start, node.end), rng)
    if kind == "truncate":      # the whole wrapper cut off inside this node
        return kind, der[:rng.randrange(node.start, node.end)]
    if kind == "cut_inside":    # this node's contents shortened, every outer length fixed
        keep = rng.randrange(size) if size else 0
        return kind, splice(der, node, node.cstart + keep, node.end, b"")
    if kind == "blow_length":   # a length far past the end, or longer than its form allows
        blown = rng.choice((b"\x84\xff\xff\xff\xff", b"\x88" + rng.randbytes(8), b"\x89" * 9,
                            _length(size + rng.randint(1, 64)), b"\x81\x05"))
        return kind, der[:node.lpos] + blown + der[node.cstart:]
    if kind == "indefinite":    # BER's indefinite length, not DER
        return kind, splice(der, node, node.start, node.end, der[node.start:node.lpos] + b"\x80"
                            + der[node.cstart:node.end] + b"\0\0")
    if kind == "nest":
        return kind, splice(der, node, node.start, node.end,
                            _nested(rng.choice((40, 200, 1000, 5000)), der[node.start:node.end]))
    if kind == "trailing":      # data after this node, inside its parent (or after the wrapper)
        junk = rng.randbytes(rng.randint(1, 40))
        return kind, splice(der, node, node.end, node.end, junk)
    if kind == "retag":
        new = rng.choice((0x02, 0x04, 0x05, 0x06, 0x13, 0x17, 0x30, 0x31, 0xA0, 0xA1, 0x80,
                          0x1F, rng.randrange(256)))
        return kind, der[:node.start] + bytes([new]) + der[node.start + 1:]
    if kind == "zero":
        return kind, der[:node.cstart] + bytes(size) + der[node.end:]
    if kind == "random_content":
        return kind, der[:node.cstart] + rng.randbytes(size) + der[node.end:]
    if kind == "duplicate":
        return kind, splice(der, node, node.start, node.end, der[node.start:node.end] * 2)
    return kind, splice(der, node, node.start, node.end, b"")  # drop


def _flip(der: bytes, at: int, rng: random.Random) -> bytes:
    out = bytearray(der)
    out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


# --- whole mails ---------------------------------------------------------------------------------
def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _join(head: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _set_header(head: list[bytes], name: bytes, value: bytes) -> list[bytes]:
    lower = name.lower() + b":"
    kept = [h for h in head if not h.lower().startswith(lower)]
    return kept + [name + b": " + value]


def with_der(raw: bytes, der: bytes) -> bytes:
    """The genuine mail ``raw`` (headers kept) carrying ``der`` instead."""
    import base64
    head, _ = _split(raw)
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return _join(head, b64)


def mail_mutant(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutant of a whole genuine mail: (kind, raw mail)."""
    head, body = _split(raw)
    kind = rng.choice(("random_body", "wrong_type", "wrong_type", "bad_base64", "bad_base64",
                       "header_injection", "header_injection", "non_set", "non_set",
                       "oversize", "empty", "type_header"))
    if kind == "random_body":
        return kind, with_der(raw, rng.randbytes(rng.choice((1, 16, 300, 5000, 60000))))
    if kind == "wrong_type":
        ctype = rng.choice((b"application/set-registration", b"application/set-payment",
                            b"text/plain", b"application/octet-stream",
                            b"multipart/mixed; boundary=x", b"application/set-payment; x=\"",
                            b"APPLICATION/SET-PAYMENT"))
        return kind, _join(_set_header(head, b"Content-Type", ctype), body)
    if kind == "type_header":   # the clear X-SET-Message-Type lies (never trusted)
        name = rng.choice((b"PReq", b"AuthRes", b"Error", b"CertReq", b"Nonsense", b"", b"\xff"))
        return kind, _join(_set_header(head, b"X-SET-Message-Type", name), body)
    if kind == "bad_base64":
        lines = body.split(b"\r\n")
        i = rng.randrange(max(1, len(lines)))
        how = rng.randrange(5)
        if how == 0:
            lines[i] = lines[i][:-1] if lines[i] else b"="
        elif how == 1:
            lines[i] = lines[i] + b"*!\xff"
        elif how == 2:
            lines.insert(i, b"===")
        elif how == 3:
            lines = [b"".join(lines)]      # one overlong line
        else:
            lines = [ln.replace(b"A", b"-") for ln in lines]
        return kind, _join(head, b"\r\n".join(lines))
    if kind == "header_injection":
        name, value = rng.choice((
            (b"X-SET-Message-Type", b"PReq\r\nBcc: victim@example.com"),
            (b"Subject", b"SET PReq x\r\nContent-Type: text/plain"),
            (b"From", b"a@b.example, c@d.example"),
            (b"From", b"\"x\r\n\" <a@b.example>"),
            (b"Content-Transfer-Encoding", b"quoted-printable"),
            (b"Content-Transfer-Encoding", b"8bit"),
            (b"MIME-Version", b"2.0"),
            (b"Message-ID", b"<" + b"x" * 5000 + b">"),
            (b"Subject", b"=?utf-8?b?" + b"QUFB" * 3000 + b"?="),
            (b"References", b" ".join([b"<r@x>"] * 2000)),
            (b"Content-Type", b"application/set-payment\r\nContent-Type: text/plain")))
        return kind, _join(_set_header(head, name, value), body)
    if kind == "non_set":
        text = rng.choice((b"Hello,\r\n\r\nthis is not SET.\r\n", b"",
                           b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"))
        ctype = rng.choice((b"text/plain", b"multipart/mixed; boundary=x", b"text/html"))
        kept = [h for h in head if not h.lower().startswith((b"content-", b"x-set-"))]
        return kind, _join(kept + [b"Content-Type: " + ctype], text)
    if kind == "oversize":
        return kind, with_der(raw, rng.randbytes(OVERSIZE))
    return kind, _join(head, b"")   # empty
