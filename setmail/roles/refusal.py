"""SET Errors: answering bad input, and reading an Error a peer sent.

* ``error_wrapper``/``refusal`` answer bad input with a SET Error (never an Error to an Error);
  ``read_error`` parses a received one.
* ``guarded`` turns a handler's ``SetmailError`` on bad input into a refusal outcome, so no
  exception about a peer's bytes ever escapes ``Role.step``.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from typing import Callable

from cryptography import x509

from setmail.asn1.base import decode
from setmail.asn1.codes import ErrorCode
from setmail.asn1.error import MAX_BAD_WRAPPER, Error, ErrorTBS
from setmail.asn1.wrapper import decode_wrapper
from setmail.crypto.cms import Identity
from setmail.crypto.operators import S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import SetmailError
from setmail.roles.base import START, Inbound, Outcome, Send, is_response
from setmail.roles.wire import Parsed, wrap

_ERROR_CODES = frozenset(ErrorCode._map.values())


def error_code(exc: BaseException) -> str:
    """The SET ErrorCode name an exception maps to (unspecifiedFailure if it names none)."""
    code = getattr(exc, "set_error_code", None)
    return code if code in _ERROR_CODES else "unspecifiedFailure"


def error_wrapper(code: str, offending: bytes, *, now: dt.datetime,
                  signer: Identity | None = None, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """Error answering the wrapper ``offending``: its MessageHeader if it parses, else BadWrapper
    (at most 20000 octets), and always ``refusedHash``, the SHA-256 of the whole refused wrapper
    (D-134).  The Error's own header repeats the offending RRPID and ids."""
    header = None
    try:
        header = decode_wrapper(offending)["message_header"]
    except SetmailError:
        pass
    msg = ({"message_header": header} if header is not None
           else {"bad_wrapper": bytes(offending[:MAX_BAD_WRAPPER])})
    name, value = next(iter(msg.items()))
    tbs = ErrorTBS({"error_code": code if code in _ERROR_CODES else "unspecifiedFailure",
                    "error_nonce": fresh(), "error_msg": {name: value},
                    "refused_hash": hashlib.sha256(offending).digest()})
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
            to: str | None = None, signer: Identity | None = None,
            suite: CryptoSuite = DEFAULT_SUITE) -> Outcome:
    """Refuse ``event``: the transaction stays where it was (a forgery must not end a genuine
    exchange; one that did not exist is not created), with a note of the refusal.

    A refused *request* is answered with an Error only to ``to``, an address the role trusts for
    this transaction (its directory entry, or the counterpart the state names) and never to the
    mail's From; a refused response or Error is never answered (``is_response``)."""
    code = error_code(exc)
    reason = f"{code}: {exc}"[:300]
    new = None if state.get("state", START) == START else {**state, "refused": {
        "type": event.message_type, "code": code, "reason": str(exc)[:200]}}
    sends: tuple[Send, ...] = ()
    if to is not None and not is_response(event.message_type):
        der = error_wrapper(code, event.wrapper_der, now=now, signer=signer, suite=suite)
        sends = (Send(to, "Error", der, event.mail_id or None),)
    return Outcome(transaction=transaction, state=new, sends=sends, refused=reason)


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
    """What a SET Error says.  ``signer`` is set only for a signed Error whose signature verified
    and whose signer's path passed ``validate``: only then does ``refused_hash`` mean anything."""

    code: str
    rrpid: bytes | None         # RRPID of the message the peer refused (its clear header)
    bad_wrapper: bytes | None   # or the refused bytes themselves
    refused_hash: bytes | None = None  # SHA-256 of the refused wrapper (D-134)
    signer: x509.Certificate | None = None


def read_error(parsed: Parsed, *, validate=None, suite: CryptoSuite = DEFAULT_SUITE) -> ReceivedError:
    """Parse an Error; a signed one must verify (``validate`` checks the signer's path), else a
    SetmailError."""
    error = decode(Error, parsed.body, what="Error")
    signer = None
    if error.name == "signed_error":
        signed = verify_S(error.chosen.untag().dump(), "ErrorTBS", validate=validate, suite=suite)
        tbs = decode(ErrorTBS, signed.content, what="ErrorTBS")
        signer = signed.signer
    else:
        tbs = error.chosen
    msg, code = tbs["error_msg"], tbs["error_code"].native
    refused_hash = tbs["refused_hash"].native
    if msg.name == "message_header":
        return ReceivedError(code, msg.chosen["rrpid"].native, None, refused_hash, signer)
    return ReceivedError(code, None, msg.chosen.native, refused_hash, signer)
