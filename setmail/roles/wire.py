"""SET framing around every role's protocol logic: the MessageWrapper both ways.

* ``wrap`` builds a MessageWrapper (version 1, ``date = now``, RRPID and message ids copied from
  the payload, swIdent, the critical ``PROFILE_MODERN_2026`` mwExtension so a 1997-profile peer
  never misreads us silently).
* ``unwrap`` is the receive side for untrusted bytes: strict DER, the type named by the mail must be
  the type inside, version 1, our profile, and a date inside the acceptance window.  Every failure is
  a ``SetmailError`` whose ``set_error_code`` names the SET ErrorCode to answer with.
* ``check_echo``/``check_header``: a response echoes what our request carried, and the clear
  header agrees with the protected payload.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from setmail.asn1.base import MessageHeader, MsgExtensions
from setmail.asn1.codec.der import tlv_at
from setmail.asn1.oids import PROFILE_MODERN_2026
from setmail.asn1.codec.strict import decode_native
from setmail.asn1.wrapper import TYPE_BY_TAG, header_der, wrapper_der
from setmail.errors import ProtocolError, SetmailError
from setmail.roles.base import Inbound

SW_IDENT = "setmail/0.1"
#: a message dated more than this in the past is refused (messageTooOld); e-mail is slow (D-304)
MAX_AGE = dt.timedelta(days=30)
#: ... or more than this in the future (messageTooNew): clock skew between agents
MAX_SKEW = dt.timedelta(hours=1)
_PROFILE_EXT = [{"ext_id": PROFILE_MODERN_2026, "critical": True, "ext_value": b"\x05\x00"}]
#: the MessageWrapper's [1] IMPLICIT mwExtensions field carrying _PROFILE_EXT, encoded once
_PROFILE_EXT_DER = MsgExtensions(_PROFILE_EXT, implicit=1).dump()
_PROFILE_EXT_NATIVE = MsgExtensions(_PROFILE_EXT).native


def h(b: bytes | None) -> str | None:
    """bytes -> hex for JSON state."""
    return None if b is None else bytes(b).hex()


def unh(s: str | None) -> bytes | None:
    return None if s is None else bytes.fromhex(s)


# --- wrapper ------------------------------------------------------------------------------------
def wrap(type_name: str, message, *, now: dt.datetime, rrpid: bytes | None = None,
         lid_c: bytes | None = None, lid_m: bytes | None = None, xid: bytes | None = None,
         sw_ident: str = SW_IDENT) -> bytes:
    """DER MessageWrapper around ``message`` (its DER, or an instance of its MESSAGE_TYPES class)."""
    if not isinstance(message, (bytes, bytearray)):
        message = message.dump()
    header = header_der(date=now.astimezone(dt.timezone.utc).replace(microsecond=0),
                        sw_ident=sw_ident, lid_c=lid_c, lid_m=lid_m, xid=xid, rrpid=rrpid)
    return wrapper_der(header, type_name, message, _PROFILE_EXT_DER)


@dataclass(frozen=True)
class Wire:
    """An inbound wrapper's parts, read once per event from the DER the strict decode accepted:
    the message type its Message CHOICE tag names, the MessageHeader as plain values
    (``decode_native``), the message body's DER and the mwExtensions field's DER (b"": none).
    Why: the asn1crypto wrapper re-parses a level at every field read; the roles read the header
    three times per message (transaction key, unwrap, the answer's ids)."""

    type: str
    header: dict
    body: bytes
    extensions: bytes


def wire(event: Inbound) -> Wire:
    """``event``'s wrapper parts (MalformedMessage if it does not decode), computed once and kept
    in the event as ``functools.cached_property`` keeps ``Inbound.wrapper``."""
    found = event.__dict__.get("_wire")
    if found is None:
        event.wrapper  # noqa: B018  the strict decode of these very bytes (the agent's, or now)
        found = event.__dict__["_wire"] = _split(bytes(event.wrapper_der))
    return found


def received(der: bytes, sender: str, mail_id: str | None, decoded) -> Inbound:
    """The Inbound for a MessageWrapper the agent has strictly decoded (``decoded``): its type
    read from the Message CHOICE tag and its parts split once, here, for every reader after
    (``wire``) — the agent's dedupe key included."""
    parts = _split(bytes(der))
    event = Inbound(parts.type, der, sender, mail_id, decoded=decoded)
    event.__dict__["_wire"] = parts
    return event


def _split(der: bytes) -> Wire:
    """The parts of a MessageWrapper already strictly decoded (so only split here)."""
    _, start, end = tlv_at(der, 0, len(der))
    _, _, header_end = tlv_at(der, start, end)
    _, message, message_end = tlv_at(der, header_end, end)  # message [0] EXPLICIT Message
    ident, body, body_end = tlv_at(der, message, message_end)  # the CHOICE's [n] EXPLICIT
    tag = ident >> 8 if ident & 0x1F == 0x1F else ident & 0x1F
    return Wire(TYPE_BY_TAG[tag], decode_native(MessageHeader, der[start:header_end]),
                der[body:body_end], der[message_end:end])


def header_ids(event: Inbound) -> dict:
    """The header's message ids (lid_c, lid_m, xid; those present) of an inbound message; {} if
    it does not decode (a transaction key for unroutable input)."""
    try:
        return wire(event).header["message_ids"] or {}
    except SetmailError:
        return {}


def wrapper_ids(der: bytes) -> dict:
    """The header's message ids of a MessageWrapper we built (an outgoing Send's): {} if none
    (the agent threads a purchase's mails by its XID, ``mail.threads``)."""
    try:
        return _split(bytes(der)).header["message_ids"] or {}
    except (SetmailError, KeyError, ValueError):
        return {}


@dataclass(frozen=True)
class Parsed:
    """An unwrapped message: its type, the DER of the message body, and the clear header (as
    plain values: ``decode_native(MessageHeader)``)."""

    type: str
    body: bytes
    header: dict
    wrapper_der: bytes

    @property
    def rrpid(self) -> bytes | None:
        return self.header["rrpid"]

    def message_id(self, name: str) -> bytes | None:
        return (self.header["message_ids"] or {}).get(name)


def unwrap(event: Inbound, now: dt.datetime, *, max_age: dt.timedelta = MAX_AGE,
           max_skew: dt.timedelta = MAX_SKEW) -> Parsed:
    """Decode and check an inbound wrapper's framing (not its payload's protection)."""
    parts = wire(event)
    found = parts.type
    if found != event.message_type:
        raise ProtocolError(f"mail announced {event.message_type}, wrapper holds {found}",
                            "wrapperMsgMismatch")
    header = parts.header
    version = header["version"]
    if version != 1 or header["revision"] != 0:
        raise ProtocolError(f"SET version {version}.{header['revision']} is not 1.0",
                            "versionTooOld" if version < 1 else "versionTooNew")
    exts = _PROFILE_EXT_NATIVE if parts.extensions == _PROFILE_EXT_DER else (
        event.wrapper["mw_extensions"].native or [])
    ours = [e for e in exts if e["ext_id"] == PROFILE_MODERN_2026]
    for ext in exts:
        if ext["critical"] and ext["ext_id"] != PROFILE_MODERN_2026:
            raise ProtocolError(f"unknown critical extension {ext['ext_id']}",
                                "unrecognizedExtension")
    if not ours:  # a SET 1.0 (1997 algorithms) peer: never interoperate silently (D-304)
        raise ProtocolError("message lacks the setmail modern-profile extension", "versionTooOld")
    date = header["date"]
    if date.tzinfo is None:
        date = date.replace(tzinfo=dt.timezone.utc)
    if date < now - max_age:
        raise ProtocolError(f"message dated {date:%Y-%m-%d} is too old", "messageTooOld")
    if date > now + max_skew:
        raise ProtocolError(f"message dated {date:%Y-%m-%d %H:%M} is in the future", "messageTooNew")
    return Parsed(found, parts.body, header, bytes(event.wrapper_der))


def check_echo(what: str, got, want, code: str = "challengeMismatch") -> None:
    """A response must echo what our request carried (RRPID, LID-EE, Chall-*)."""
    if got != want:
        raise ProtocolError(f"{what} does not match our request", code)


def check_header(parsed: Parsed, rrpid: bytes, lid: bytes, lid_field: str) -> None:
    """The clear header must agree with the protected payload (set-protocol.md §4.1)."""
    if parsed.rrpid != rrpid or parsed.message_id(lid_field) != lid:
        raise ProtocolError("MessageHeader RRPID/LID disagree with the payload", "badMessageHeader")
