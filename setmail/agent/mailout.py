"""Outgoing SET mail: deterministic Message-IDs, threading headers, and the SET Error reply.

Message-IDs are ``<tx>.<seq>.<agent>@<domain>``: the same transaction step, reprocessed after a
crash (the store transaction rolled back, so the sequence did too), builds byte-identical ids,
and the receiver's dedupe sees the same mail.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re

from setmail.mail.mime import build_mail

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_token(text: str, limit: int = 80) -> str:
    token = _SAFE.sub("-", text)[:limit].strip(".-")
    return token or hashlib.sha256(text.encode()).hexdigest()[:16]


def domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "setmail.local"


def message_id(agent: str, address: str, txkey: str, seq: int) -> str:
    return f"{safe_token(txkey, 96)}.{seq}.{safe_token(agent, 40)}@{domain_of(address)}"


def subject(message_type: str, txkey: str) -> str:
    return f"SET {message_type} {safe_token(txkey, 64)}"


def build(*, der: bytes, content_type: str, sender: str, recipient: str, msgid: str,
          message_type: str, txkey: str, now: dt.datetime, reply_to_id: str | None = None,
          reply_refs: tuple[str, ...] = ()) -> bytes:
    refs = (*reply_refs, reply_to_id) if reply_to_id else ()
    return build_mail(der, content_type=content_type, sender=sender, recipient=recipient,
                      message_id=msgid, subject=subject(message_type, txkey),
                      in_reply_to=reply_to_id, references=tuple(dict.fromkeys(refs))[-10:],
                      date=now, extra_headers={"X-SET-Message-Type": message_type})


_SUBJECT = re.compile(rb"^Subject: SET (\S+) (\S+)", re.M)


def describe_raw(raw: bytes) -> tuple[str, str]:
    """(message type, transaction) from a mail we built (for log lines)."""
    found = _SUBJECT.search(raw[:4096])
    return (found.group(1).decode(), found.group(2).decode()) if found else ("?", "?")


def build_error(code: str, offending_der: bytes, now: dt.datetime) -> bytes:
    """An unsigned SET Error answering ``offending_der`` (its MessageHeader and RRPID echoed).

    Uses the roles' ``setmail.roles.common.error_wrapper`` (which also adds our profile
    extension); the fallback below only keeps the runtime usable without the roles package.
    """
    try:
        from setmail.roles.common import error_wrapper
    except ImportError:  # pragma: no cover - the roles' helper is part of the tree
        error_wrapper = None
    if error_wrapper is not None:
        return error_wrapper(code, offending_der, now=now)
    from setmail.asn1.base import MessageHeader  # pragma: no cover
    from setmail.asn1.codes import ErrorCode
    from setmail.asn1.error import Error, ErrorMsg, ErrorTBS
    from setmail.asn1.wrapper import decode_wrapper, make_wrapper
    from setmail.crypto.suite import fresh
    offending = decode_wrapper(offending_der)["message_header"]
    if code not in ErrorCode._map.values():
        code = "unspecifiedFailure"
    tbs = ErrorTBS({"error_code": code, "error_nonce": fresh(),
                    "error_msg": ErrorMsg(name="message_header", value=offending)})
    header = {"version": 1, "date": now.astimezone(dt.timezone.utc).replace(microsecond=0),
              "sw_ident": "setmail/0.1"}
    if offending["rrpid"].native is not None:
        header["rrpid"] = offending["rrpid"].native
    return make_wrapper(MessageHeader(header), "Error",
                        Error(name="unsigned_error", value=tbs)).dump()
