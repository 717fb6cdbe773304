"""What the attacker does to a MessageWrapper on the wire: read its clear parts, put the same
body under another clear header (no signature covers the MessageHeader), flip bits, take a PReq
apart, copy the CapToken out of an AuthRes's clear baggage."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from setmail.asn1 import gateway as gw
from setmail.asn1 import purchase as pu
from setmail.asn1.codec.der import tlv_at
from setmail.asn1.codec.strict import decode_native
from setmail.asn1.wrapper import header_der, wrapper_der
from setmail.crypto import der as cder
from setmail.roles.base import Inbound
from setmail.roles.wire import Parsed, wire


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# --- wrapper surgery ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Parts(Parsed):
    """``roles.wire.Parsed`` (type, body, clear header as plain values, the DER) plus the
    mwExtensions DER a re-wrap keeps, and the header's ids."""

    extensions: bytes = b""

    @property
    def ids(self) -> dict:
        return dict(self.header["message_ids"] or {})

    @property
    def xid(self) -> bytes | None:
        return self.ids.get("xid") or self.ids.get("lid_m")


def split(der: bytes) -> Parts:
    """The parts the roles read (``roles.wire.wire``); MalformedMessage if ``der`` does not
    decode strictly."""
    parts = wire(Inbound("?", bytes(der), ""))
    return Parts(parts.type, parts.body, parts.header, bytes(der), parts.extensions)


def rewrap(der: bytes, *, type_name: str | None = None, body: bytes | None = None,
           **header) -> bytes:
    """The same SET body (or ``body``) under a new clear header: ``header`` overrides date,
    rrpid, lid_c, lid_m, xid, sw_ident (None removes an id).  No signature covers the header."""
    p = split(der)
    ids = p.ids
    fields = {"date": p.header["date"], "rrpid": p.rrpid, "sw_ident": p.header["sw_ident"],
              "lid_c": ids.get("lid_c"), "lid_m": ids.get("lid_m"), "xid": ids.get("xid")}
    fields.update(header)
    date = fields.pop("date")
    date = (date if date.tzinfo else date.replace(tzinfo=dt.UTC)).replace(microsecond=0)
    return wrapper_der(header_der(date=date, **fields), type_name or p.type,
                       p.body if body is None else body, p.extensions)


def flip(der: bytes, *offsets: int, mask: int = 0x01) -> bytes:
    """``der`` with the bits of ``mask`` flipped at each offset (negative: from the end)."""
    out = bytearray(der)
    for offset in offsets:
        out[offset] ^= mask
    return bytes(out)


def flip_body(der: bytes, from_end: int = 1) -> bytes:
    """``der`` with one bit flipped ``from_end`` octets before the end of the SET body (inside
    its signature or envelope: the header and the profile extension stay intact)."""
    p = split(der)
    return flip(der, der.rindex(p.body) + len(p.body) - from_end)


def preq_halves(preq: bytes) -> tuple[bytes, bytes]:
    """(PIDualSigned, OIDualSigned) DER of a dual-signed PReq."""
    body = split(preq).body
    _, start, end = tlv_at(body, 0, len(body))
    _, _, pi_end = tlv_at(body, start, end)
    return body[start:pi_end], body[pi_end:end]


def preq_body(pi_dual_signed: bytes, oi_dual_signed: bytes) -> bytes:
    """PReq ::= [0] IMPLICIT PReqDualSigned around two halves (maybe of different purchases)."""
    return cder.implicit_constructed(0, pi_dual_signed + oi_dual_signed)


def wrap(type_name: str, body: bytes, *, now: dt.datetime | None = None, like: bytes | None = None,
         **ids) -> bytes:
    """A wrapper around ``body`` with the modern-profile extension (copied from ``like``, a genuine
    wrapper, or setmail's own) and the given header ids/rrpid."""
    from setmail.roles.wire import wrap as role_wrap
    if like is not None:
        return wrapper_der(header_der(date=now or utcnow(), sw_ident="setmail/0.1", **ids),
                           type_name, body, split(like).extensions)
    return role_wrap(type_name, body, now=now or utcnow(), **ids)


def preq_parts(preq: bytes) -> tuple[bytes, bytes, dict]:
    """(PIDualSigned DER, OIData DER, OIData values) of a dual-signed PReq."""
    body = split(preq).body
    _, start, end = tlv_at(body, 0, len(body))          # [0] IMPLICIT PReqDualSigned
    _, _, pi_end = tlv_at(body, start, end)             # PIDualSigned
    _, oi_start, oi_end = tlv_at(body, pi_end, end)     # OIDualSigned
    _, _, data_end = tlv_at(body, oi_start, oi_end)     # OIData
    oi = body[oi_start:data_end]
    return body[start:pi_end], oi, decode_native(pu.OIData, oi, raw=("trans_ids", "hod"))


def cap_token_of(auth_res: bytes) -> bytes:
    """The CapToken an AuthRes carries in its baggage, outside the envelope: anybody on the
    wire can copy it."""
    baggage = gw.AuthRes.load(split(auth_res).body)["auth_res_baggage"]
    return baggage["cap_token"].untag().dump()
