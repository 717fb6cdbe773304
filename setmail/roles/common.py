"""What every SET role does around its protocol logic: wrap, unwrap, refuse, validate.

* ``wrap`` builds a MessageWrapper (version 1, ``date = now``, RRPID and message ids copied from
  the payload, swIdent, the critical ``PROFILE_MODERN_2026`` mwExtension so a 1997-profile peer
  never misreads us silently).
* ``unwrap`` is the receive side for untrusted bytes: strict DER, the type named by the mail must be
  the type inside, version 1, our profile, and a date inside the acceptance window.  Every failure is
  a ``SetmailError`` whose ``set_error_code`` names the SET ErrorCode to answer with.
* ``error_wrapper``/``refusal`` answer bad input with a SET Error (never an Error to an Error);
  ``read_error`` parses a received one.
* ``path_check`` plugs ``pki.validate_path`` into the crypto operators' ``validate=`` hook.
* ``pop_identity`` lets a key that has no certificate yet sign (proof of possession, D-302).
* ``guarded`` turns a handler's ``SetmailError`` on bad input into a refusal outcome, so no
  exception about a peer's bytes ever escapes ``Role.step``.
"""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from setmail.asn1.base import MessageHeader, MsgExtensions, decode
from setmail.asn1.codes import ErrorCode
from setmail.asn1.der import tlv_at
from setmail.asn1.error import MAX_BAD_WRAPPER, Error, ErrorTBS
from setmail.asn1.oids import PROFILE_MODERN_2026
from setmail.asn1.strict import decode_native
from setmail.asn1.wrapper import TYPE_BY_TAG, decode_wrapper, header_der, wrapper_der
from setmail.crypto.cms import Identity, cert_der, load_cert
from setmail.crypto.operators import S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError, SetmailError, SignatureInvalid
from setmail.pki.setext import spki_der
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.pki.validate import validate_path
from setmail.roles.base import START, Inbound, Outcome, Send

SW_IDENT = "setmail/0.1"
#: a message dated more than this in the past is refused (messageTooOld); e-mail is slow (D-304)
MAX_AGE = dt.timedelta(days=30)
#: ... or more than this in the future (messageTooNew): clock skew between agents
MAX_SKEW = dt.timedelta(hours=1)
_ERROR_CODES = frozenset(ErrorCode._map.values())
_PROFILE_EXT = [{"ext_id": PROFILE_MODERN_2026, "critical": True, "ext_value": b"\x05\x00"}]
#: the MessageWrapper's [1] IMPLICIT mwExtensions field carrying _PROFILE_EXT, encoded once
_PROFILE_EXT_DER = MsgExtensions(_PROFILE_EXT, implicit=1).dump()
_PROFILE_EXT_NATIVE = MsgExtensions(_PROFILE_EXT).native


def h(b: bytes | None) -> str | None:
    """bytes -> hex for JSON state."""
    return None if b is None else bytes(b).hex()


def unh(s: str | None) -> bytes | None:
    return None if s is None else bytes.fromhex(s)


def error_code(exc: BaseException) -> str:
    """The SET ErrorCode name an exception maps to (unspecifiedFailure if it names none)."""
    code = getattr(exc, "set_error_code", None)
    return code if code in _ERROR_CODES else "unspecifiedFailure"


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


# --- Error --------------------------------------------------------------------------------------
def error_wrapper(code: str, offending: bytes, *, now: dt.datetime,
                  signer: Identity | None = None, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """Error answering the wrapper ``offending``: its MessageHeader if it parses, else BadWrapper
    (at most 20000 octets).  The Error's own header repeats the offending RRPID and ids."""
    header = None
    try:
        header = decode_wrapper(offending)["message_header"]
    except SetmailError:
        pass
    msg = ({"message_header": header} if header is not None
           else {"bad_wrapper": bytes(offending[:MAX_BAD_WRAPPER])})
    name, value = next(iter(msg.items()))
    tbs = ErrorTBS({"error_code": code if code in _ERROR_CODES else "unspecifiedFailure",
                    "error_nonce": fresh(), "error_msg": {name: value}})
    if signer is None:
        error = Error(name="unsigned_error", value=tbs)
    else:
        from asn1crypto import cms
        error = Error(name="signed_error",
                      value=cms.ContentInfo.load(S(signer, "ErrorTBS", tbs.dump(), suite=suite)))
    ids = header["message_ids"].native if header is not None else None
    return wrap("Error", error, now=now, rrpid=None if header is None else header["rrpid"].native,
                **(ids or {}))


def refusal(state: dict, event: Inbound, exc: SetmailError, now: dt.datetime, *, transaction: str,
            signer: Identity | None = None, suite: CryptoSuite = DEFAULT_SUITE) -> Outcome:
    """Answer bad input with an Error and keep the transaction where it was (an attacker's forgery
    must not end a genuine exchange); a transaction that did not exist is not created."""
    code = error_code(exc)
    new = None if state.get("state", START) == START else {**state, "refused": {
        "type": event.message_type, "code": code, "reason": str(exc)[:200]}}
    der = error_wrapper(code, event.wrapper_der, now=now, signer=signer, suite=suite)
    return Outcome(transaction=transaction, state=new,
                   sends=(Send(event.sender, "Error", der, event.mail_id or None),))


def guarded(handler: Callable) -> Callable:
    """Handler decorator: bad peer input (a SetmailError) becomes ``self.refuse(...)``."""
    @functools.wraps(handler)
    def inner(self, state, event, now, shared):
        try:
            return handler(self, state, event, now, shared)
        except SetmailError as exc:
            return self.refuse(state, event, exc, now)
    return inner


@dataclass(frozen=True)
class ReceivedError:
    code: str
    rrpid: bytes | None       # RRPID of the message the peer refused
    bad_wrapper: bytes | None  # or the refused bytes themselves


def read_error(parsed: Parsed, *, validate=None, suite: CryptoSuite = DEFAULT_SUITE) -> ReceivedError:
    """Parse an Error; a signed one must verify (``validate`` checks the signer's path)."""
    error = decode(Error, parsed.body, what="Error")
    if error.name == "signed_error":
        signed = verify_S(error.chosen.untag().dump(), "ErrorTBS", validate=validate, suite=suite)
        tbs = decode(ErrorTBS, signed.content, what="ErrorTBS")
    else:
        tbs = error.chosen
    msg = tbs["error_msg"]
    if msg.name == "message_header":
        return ReceivedError(tbs["error_code"].native, msg.chosen["rrpid"].native, None)
    return ReceivedError(tbs["error_code"].native, None, msg.chosen.native)


# --- PKI ----------------------------------------------------------------------------------------
def path_check(trust: TrustStore, now: dt.datetime, expected_type, key_usage: str = "digital_signature",
               crls=None) -> Callable:
    """A ``validate=`` callable for verify_*/open_*: the signer's path must reach a pinned root."""
    def validate(signer, included):
        validate_path(signer, included, trust, now=now, expected_type=expected_type,
                      key_usage=key_usage, crls=crls)
    return validate


def find_certificate(certs, thumb: bytes) -> x509.Certificate:
    for c in certs:
        if thumbprint(c) == thumb:
            return c
    raise ProtocolError("a certificate named by thumbprint is missing", "missingCertificate")


def spki(public_key) -> bytes:
    return spki_der(public_key)


def pop_identity(key, now: dt.datetime, suite: CryptoSuite = DEFAULT_SUITE) -> Identity:
    """Proof of possession (D-302): a key without a certificate signs through a self-signed carrier
    certificate that names it; the CA verifies the signature, then compares the carrier's key with
    the key the request asks it to certify.  The carrier is no SET certificate (no certificateType),
    so ``validate_path`` never accepts it anywhere else."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "setmail proof of possession")])
    start = now.astimezone(dt.timezone.utc).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(int.from_bytes(fresh(16), "big") >> 1 or 1)
            .not_valid_before(start - dt.timedelta(hours=1)).not_valid_after(start + dt.timedelta(days=30))
            .sign(key, suite.hash_algorithm, rsa_padding=suite.pss_padding))
    return Identity(key, cert, ())


def check_pop(signer: x509.Certificate, requested_spki: bytes) -> None:
    """The request was signed by the key it asks to certify."""
    if spki(signer.public_key()) != requested_spki:
        raise SignatureInvalid("CertReq is not signed by the key it asks to certify")


def private_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_cert_hex(value: str) -> x509.Certificate:
    return load_cert(bytes.fromhex(value))


def cert_hex(cert: x509.Certificate) -> str:
    return cert_der(cert).hex()


def luhn_ok(pan: str) -> bool:
    """ISO/IEC 7812 check digit."""
    if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
        return False
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def public_key_info(spki_der: bytes):
    """asn1crypto PublicKeyInfo for CertReqData.publicKeySorE."""
    from asn1crypto import keys
    return keys.PublicKeyInfo.load(spki_der)


def fill_form(form_data, values: dict) -> tuple[list, int | None, str | None]:
    """RegFormItems for the CA's regTemplate from our values; (items, regFormID, problem)."""
    template = form_data["reg_template"]
    if template.native is None:
        return [], None, None
    items = []
    for field in template["reg_field_seq"]:
        name, length = field["field_name"].native, field["field_len"].native
        value = values.get(name)
        if value in (None, ""):
            if field["field_required"].native:
                return [], None, f"registration form needs {name!r}"
            continue
        value = str(value)
        if len(value) > length:
            return [], None, f"{name!r} is longer than {length} characters"
        items.append({"field_name": name, "field_value": value})
    return items, template["reg_form_id"].native, None
