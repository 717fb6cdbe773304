"""SET Errors: answering bad input, and reading an Error a peer sent.

* ``error_wrapper``/``refusal`` answer bad input with a SET Error (never an Error to an Error);
  ``read_error`` parses a received one.
* ``guarded`` turns a handler's ``SetmailError`` on bad input into a refusal outcome, so no
  exception about a peer's bytes ever escapes ``Role.step``.
"""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Callable

from setmail.asn1.base import decode
from setmail.asn1.codes import ErrorCode
from setmail.asn1.error import MAX_BAD_WRAPPER, Error, ErrorTBS
from setmail.asn1.wrapper import decode_wrapper
from setmail.crypto.cms import Identity
from setmail.crypto.operators import S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import SetmailError
from setmail.roles.base import START, Inbound, Outcome, Send
from setmail.roles.wire import Parsed, wrap

_ERROR_CODES = frozenset(ErrorCode._map.values())


def error_code(exc: BaseException) -> str:
    """The SET ErrorCode name an exception maps to (unspecifiedFailure if it names none)."""
    code = getattr(exc, "set_error_code", None)
    return code if code in _ERROR_CODES else "unspecifiedFailure"


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
