"""Outgoing SET mail: deterministic Message-IDs and threading headers.

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

