"""Outgoing SET mail: deterministic Message-IDs, threading headers and the Sent folder.

Message-IDs are ``<tx>.<seq>.<agent>@<domain>``: the same transaction step, reprocessed after a
crash (the store transaction rolled back, so the sequence did too), builds byte-identical ids,
and the receiver's dedupe sees the same mail.  The wallet's first PInitReq of a purchase is the
one exception: its id is the purchase's thread root, which every party derives from the XID in
the clear MessageHeader (``mail.threads``), so all mails of a purchase form one thread (D-420).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from pathlib import Path

from setmail.asn1.wrapper import MIME_TYPES
from setmail.errors import MaildirError
from setmail.mail import maildir
from setmail.mail.mime import ParsedMail, build_mail
from setmail.mail.threads import reply_headers, thread_root
from setmail.roles.base import Send
from setmail.roles.wire import wrapper_ids
from setmail.store import MailFacts

log = logging.getLogger("setmail.agent")

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_token(text: str, limit: int = 80) -> str:
    token = _SAFE.sub("-", text)[:limit].strip(".-")
    return token or hashlib.sha256(text.encode()).hexdigest()[:16]


def domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "setmail.local"


def message_id(agent: str, address: str, txkey: str, seq: int) -> str:
    return f"{safe_token(txkey, 96)}.{seq}.{safe_token(agent, 40)}@{domain_of(address)}"


def subject_tx(txkey: str) -> str:
    """The transaction as the Subject names it (and the store's mail index looks it up)."""
    return safe_token(txkey, 64)


def subject(message_type: str, txkey: str) -> str:
    return f"SET {message_type} {subject_tx(txkey)}"


def purchase_xid(message_type: str, der: bytes) -> str | None:
    """The XID (hex) of a purchase's message from its clear MessageHeader: its XID, or for a
    PInitReq (sent before SET assigns one) the LID-M, which this wallet makes the XID."""
    ids = wrapper_ids(der)
    xid = ids.get("xid") or (ids.get("lid_m") if message_type == "PInitReq" else None)
    return bytes(xid).hex() if xid and len(xid) <= 64 else None


def build(*, agent: str, address: str, send: Send, txkey: str, seq: int, now: dt.datetime,
          request: ParsedMail | None) -> tuple[str, bytes]:
    """(Message-ID, mail) of ``send``, the ``seq``-th mail of transaction ``txkey``, sent while
    processing ``request`` (None: a command's or a timer's)."""
    xid = purchase_xid(send.message_type, send.wrapper_der)
    root = thread_root(xid) if xid else None
    msgid = (root if root and seq == 1 and send.message_type == "PInitReq"
             else message_id(agent, address, txkey, seq))
    parent, refs = reply_headers(msgid, root=root, answers=send.in_reply_to,
                                 request=(request.message_id, request.references)
                                 if request else None)
    raw = build_mail(send.wrapper_der, content_type=MIME_TYPES[send.message_type], sender=address,
                     recipient=send.to, message_id=msgid, subject=subject(send.message_type, txkey),
                     in_reply_to=parent, references=refs, date=now,
                     extra_headers={"X-SET-Message-Type": send.message_type})
    return msgid, raw


_SUBJECT = re.compile(rb"^Subject: SET (\S+) (\S+)", re.M)
_MESSAGE_ID = re.compile(rb"^Message-ID: <([^<>\r\n]+)>", re.M | re.I)


def describe_raw(raw: bytes) -> tuple[str, str]:
    """(message type, transaction) from a mail we built (for log lines)."""
    found = _SUBJECT.search(raw[:4096])
    return (found.group(1).decode(), found.group(2).decode()) if found else ("?", "?")


def mail_facts(raw: bytes, mail: ParsedMail | None, claimed: str | None) -> MailFacts:
    """A received mail as the store's index keeps it: what its head says (``mail``: parsed,
    None if it did not parse) and when it was delivered (the claimed file's mtime)."""
    found = _SUBJECT.search(raw[:8192])
    mtype, tx = ((found.group(1).decode(errors="replace")[:40],
                  found.group(2).decode(errors="replace")[:100]) if found else (None, None))
    try:
        delivered = os.stat(claimed).st_mtime if claimed else None
    except OSError:
        delivered = None
    if mail is None:
        return MailFacts(mtype, tx, None, None, len(raw), delivered)
    return MailFacts(mail.header("X-SET-Message-Type") or mtype, tx, mail.sender[:320],
                     mail.message_id, len(raw), delivered)


def sent_key(ident: bytes) -> str:
    """The .Sent key of a mail by its Message-ID (without <>)."""
    return hashlib.sha256(ident).hexdigest()[:40] + ".sent"


class SentFolder:
    """The agent's ``.Sent`` folder: a copy of every mail SMTP took (``keep`` after its 250),
    filed durably by ``file`` before the outbox records the 250s (``drain_outbox``'s
    ``before_record``), so no mail leaves the outbox without its copy.  Copies are named by
    Message-ID: a mail sent again after a crash keeps one."""

    def __init__(self, mailbox: Path):
        self.mailbox = Path(mailbox)
        self.folder = self.mailbox / maildir.SENT
        self._waiting: list[tuple[str, bytes]] = []

    def keep(self, raw: bytes) -> None:
        found = _MESSAGE_ID.search(raw[:8192])
        ident = found.group(1) if found else raw
        self._waiting.append((sent_key(ident), raw))

    def read(self, message_id: str) -> bytes | None:
        """The filed copy of the mail sent as ``message_id`` (None: not there, e.g. deleted by a
        mail client): where a dedupe record's answer is kept once it has left the outbox."""
        try:
            return maildir.read(self.mailbox, sent_key(message_id.encode()))
        except MaildirError:  # MaildirKeyError included
            return None

    def file(self) -> None:
        """File the copies kept so far.  A disk error is logged, not raised: the mails went,
        and sending them again would not bring their copies back."""
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        try:
            maildir.file_copies(self.folder, waiting)
        except MaildirError as exc:
            log.error("%s: %d Sent copies lost: %s", self.folder, len(waiting), exc)
