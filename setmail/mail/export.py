"""One purchase as one mbox: its mails gathered from every agent's Maildir, Sent and quarantine.

A mail is the purchase's if it is the thread root or names it in References (``mail.threads``),
or, for mail written before threading, if its Subject names the XID (``SET <type> <xid>...``).
The recipient's copy and the sender's Sent copy of one mail are the same mail: one copy per
Message-ID is kept (the delivered one rather than a quarantined one), ordered by Date, then by
when the copy reached its Maildir.  A quarantined copy is marked with an ``X-Setmail-Quarantined``
header naming the agent and the reason.  Headers choose what is exported, nothing else: this is
a reading aid for people, like the threads themselves (D-420).
"""
from __future__ import annotations

import hashlib
import mailbox
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

from setmail.mail import maildir
from setmail.mail.threads import thread_root

_PARSER = BytesHeaderParser(policy=compat32)
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_HEAD_LIMIT = 16384  # our headers are far shorter; a hostile mail's are not read further


@dataclass(frozen=True)
class FoundMail:
    agent: str
    folder: str        # "new", "cur", "sent" or "quarantine"
    key: str
    message_id: str
    date: float        # the Date header (epoch seconds), 0 when it has none or a bad one
    mtime: float       # when this copy reached its Maildir
    sender: str
    raw: bytes


def _head(raw: bytes):
    split = re.search(rb"\r?\n\r?\n", raw[:_HEAD_LIMIT])
    return _PARSER.parsebytes(raw[:split.start()] + b"\n\n" if split else raw[:_HEAD_LIMIT])


def _date(value) -> float:
    try:
        return parsedate_to_datetime(str(value)).timestamp() if value else 0.0
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0


#: (folder label, where) of the Maildir parts a purchase's mails can be in
_PARTS = (("new", "new"), ("cur", "cur"), ("sent", f"{maildir.SENT}/new"),
          ("sent", f"{maildir.SENT}/cur"), ("quarantine", f"{maildir.QUARANTINE}/new"),
          ("quarantine", f"{maildir.QUARANTINE}/cur"))


def _files(path: Path):
    """(folder label, key, file) of every mail in a Maildir, its Sent folder and quarantine."""
    for label, part in _PARTS:
        try:
            with os.scandir(path / part) as it:
                names = [e.name for e in it if not e.name.startswith(".")]
        except FileNotFoundError:
            continue
        for name in names:
            yield label, name.partition(":")[0], path / part / name


def purchase_mails(maildirs: Mapping[str, Path], xid: str, *,
                   only: Mapping[str, set[tuple[str, str]] | None] | None = None
                   ) -> list[FoundMail]:
    """Every copy of every mail of purchase ``xid`` (hex) in ``maildirs`` (agent -> Maildir).
    ``only``: agent -> the (folder label, key) worth reading (what an agent's store index says
    of ``xid``; None for an agent: read every file), so a big Maildir is not read whole."""
    root = thread_root(xid)
    needle = f" {xid.lower()}"
    found = []
    for agent, path in maildirs.items():
        wanted = (only or {}).get(agent)
        for folder, key, file in _files(Path(path)):
            if wanted is not None and (folder, key) not in wanted:
                continue
            try:
                raw, mtime = file.read_bytes(), file.stat().st_mtime
            except FileNotFoundError:
                continue  # moved meanwhile (a claim, a mail client's flag)
            head = _head(raw)
            ids = _ANGLE_ID.findall(str(head.get("Message-ID", "")))
            refs = _ANGLE_ID.findall(" ".join(str(v) for v in head.get_all("References") or ()))
            if root not in (*ids[:1], *refs) and needle not in str(head.get("Subject", "")).lower():
                continue
            ident = ids[0] if ids else "sha256:" + hashlib.sha256(raw).hexdigest()
            found.append(FoundMail(agent, folder, key, ident, _date(head["Date"]), mtime,
                                   parseaddr(str(head.get("From", "")))[1], raw))
    return found


def one_per_message(mails: list[FoundMail]) -> list[FoundMail]:
    """One copy per Message-ID (a delivered copy before a quarantined one, the earliest first),
    ordered by Date, then by arrival."""
    best: dict[str, FoundMail] = {}
    for mail in sorted(mails, key=lambda m: (m.folder == "quarantine", m.mtime)):
        best.setdefault(mail.message_id, mail)
    return sorted(best.values(), key=lambda m: (m.date or m.mtime, m.mtime, m.message_id))


def _mbox_bytes(mail: FoundMail, reason: str | None) -> bytes:
    """The mail as an mbox entry: its own From_ line, LF line ends (mbox is a Unix format) and,
    for a quarantined copy, the header saying so."""
    when = time.asctime(time.gmtime(mail.date or mail.mtime)).encode()
    body = mail.raw.replace(b"\r\n", b"\n")
    if mail.folder == "quarantine":
        note = f"{mail.agent}: {reason or 'quarantined'}".replace("\n", " ")[:900]
        body = b"X-Setmail-Quarantined: " + note.encode("ascii", "replace") + b"\n" + body
    return b"From " + (mail.sender or "MAILER-DAEMON").encode("ascii", "replace") + b" " + when \
        + b"\n" + body


def export_mbox(maildirs: Mapping[str, Path], xid: str, target: Path, *,
                only: Mapping[str, set[tuple[str, str]] | None] | None = None
                ) -> list[FoundMail]:
    """Write purchase ``xid`` as the mbox ``target`` (replaced whole, never half-written);
    the mails written, in order (none: nothing is written).  ``only``: as ``purchase_mails``."""
    mails = one_per_message(purchase_mails(maildirs, xid, only=only))
    if not mails:
        return mails
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        box = mailbox.mbox(tmp, create=True)
        try:
            for mail in mails:
                reason = (maildir.reason(maildirs[mail.agent], mail.key)
                          if mail.folder == "quarantine" else None)
                box.add(_mbox_bytes(mail, reason))
            box.flush()
        finally:
            box.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return mails
