"""An agent's mail as ``mailbox list`` and ``trace`` show it: the store's index joined with the
names of the files in its Maildir (``store.mailindex`` says why both).

A file's name costs nothing to list; reading and parsing its head is what made the old scans
slow.  So a mail the index describes is shown from its row, and only the others are read: the
new ones (delivered, not yet processed), and those processed before the store kept an index.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from setmail.agent.mailout import sent_key
from setmail.mail import maildir
from setmail.mail.maildir import QUARANTINE, SENT
from setmail.store import mailindex
from setmail.txview import open_store
from setmail.world.config import World


@dataclass(frozen=True)
class Mail:
    agent: str
    key: str
    folder: str              # new, cur, quarantine, sent, or an archive folder (.Archive.2026-12)
    flags: str
    size: int
    time: float              # delivered (sent, for the Sent folder)
    sender: str
    subject: str
    message_type: str
    message_id: str | None
    status: str | None = None  # the agent's verdict; None: not processed (or a sent copy)


def _names(*directories: Path) -> dict[str, str]:
    """key -> flags of every file in ``directories`` (names only: no stat, no read)."""
    out = {}
    for directory in directories:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        out.update(maildir.split_name(name) for name in names if not name.startswith("."))
    return out


def _folders(root: Path) -> dict[str, dict[str, str]]:
    return {"cur": _names(root / "cur"),
            "quarantine": _names(root / QUARANTINE / "new", root / QUARANTINE / "cur")}


def _unindexed(store, folders: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    """(key, folder, flags) of the files the index does not describe, found without reading
    its 100,000 keys: in cur/, a file without the S flag (claimed, not yet finished) or one
    whose row predates the index; in the quarantine (small), any file without an indexed row."""
    cur, quarantine = folders["cur"], folders["quarantine"]
    keys = {k for k, flags in cur.items() if "S" not in flags}
    known: set[str] = set()
    if store is not None:
        keys -= mailindex.indexed_among(store, keys)  # committed, not yet marked done
        keys |= mailindex.unindexed_keys(store) & cur.keys()
        known = mailindex.indexed_keys(store, status="quarantined") if quarantine else set()
    return ([(k, "cur", cur[k]) for k in keys]
            + [(k, "quarantine", "") for k in quarantine.keys() - known])


def _read(root: Path, key: str, folder: str) -> tuple[bytes, float] | None:
    """(bytes, delivery time) of a mail, None if it went meanwhile."""
    base = root / folder if folder.startswith(".Archive.") else root
    try:
        return maildir.read_stamped(base, key)
    except Exception:
        return None


def from_file(agent: str, root: Path, key: str, folder: str, flags: str = "",
              loaded: tuple[bytes, float] | None = None) -> Mail | None:
    """The slow path: the file's head (``loaded``: its bytes and time, read already; None if
    it went meanwhile)."""
    from setmail.mail.mime import parse_mail
    loaded = loaded or _read(root, key, folder)
    if loaded is None:
        return None
    raw, mtime = loaded
    try:
        mail = parse_mail(raw, max_size=1 << 21)
        mtype = mail.header("X-SET-Message-Type") or (mail.subject.split(" ")[1:2] or ["?"])[0]
        return Mail(agent, key, folder, flags, len(raw), mtime, mail.sender, mail.subject,
                    mtype, mail.message_id)
    except Exception as exc:
        return Mail(agent, key, folder, flags, len(raw), mtime, "?",
                    f"(not a SET mail: {type(exc).__name__})", "?", None)


def _indexed(agent: str, row: mailindex.IndexedMail, flags: str) -> Mail:
    folder = row.folder or ("quarantine" if row.status == "quarantined" else "cur")
    mtype = row.message_type or "?"
    return Mail(agent, row.key, folder, flags, row.size, row.received_at, row.sender or "?",
                f"SET {mtype} {row.tx or '?'}", mtype, row.message_id, row.status)


def mailbox(world: World, agent: str, store, *, sent: bool = False,
            limit: int | None = None) -> tuple[list[Mail], int]:
    """(the newest ``limit`` mails, oldest first; how many there are) of ``agent``'s new/, cur/
    and quarantine (and Sent folder); ``store``: its store (None: it has none yet)."""
    root = world.maildir(agent)
    folders = _folders(root)
    fresh = maildir.fresh(root)
    total = len(fresh) + sum(len(n) for n in folders.values())
    out = [m for e in fresh if (m := from_file(agent, root, e.key, "new")) is not None]
    out += [m for key, folder, flags in _unindexed(store, folders)
            if (m := from_file(agent, root, key, folder, flags)) is not None]
    wanted = None if limit is None else limit + len(out)
    rows = mailindex.newest(store, wanted) if store is not None else []
    shown = _present(agent, rows, folders)
    if wanted is not None and len(rows) == wanted and len(shown) < wanted:
        shown = _present(agent, mailindex.newest(store), folders)  # rows of deleted files
    out += shown
    if sent:
        out += _sent(world, agent, root, store)
        total += len(_names(root / SENT / "new", root / SENT / "cur"))
    out.sort(key=lambda m: (m.time, m.key))
    return (out if limit is None else out[-limit:]), total


def _present(agent: str, rows: list[mailindex.IndexedMail], folders: dict) -> list[Mail]:
    """The rows whose file is still there (a mail client may have deleted or moved one)."""
    out = []
    for row in rows:
        names = folders["quarantine" if row.status == "quarantined" else "cur"]
        if row.key in names:
            out.append(_indexed(agent, row, names[row.key]))
    return out


def _sent(world: World, agent: str, root: Path, store) -> list[Mail]:
    names = _names(root / SENT / "new", root / SENT / "cur")
    lines = {sent_key(mid.encode()): line
             for mid, line in (mailindex.sent(store) if store is not None else {}).items()}
    out = []
    for key, flags in names.items():
        line = lines.get(key)
        if line is None or line.message_type is None:
            mail = from_file(agent, root, key, "sent", flags)
        else:
            mail = Mail(agent, key, "sent", flags, line.size or 0, line.sent_at or 0.0,
                        world.agent(agent).address, f"SET {line.message_type} {line.tx}",
                        line.message_type, line.message_id)
        if mail is not None:
            out.append(mail)
    return out


def of_purchase(world: World, agent: str, store, xid: str, needle: bytes) -> list[Mail]:
    """``agent``'s mails whose Subject names transaction ``xid``: the index's rows whose file is
    still there, and of the unindexed mails (new ones, or ones processed before the index) those
    whose head holds ``needle``."""
    root = world.maildir(agent)
    folders = _folders(root)
    out = []
    for row in (mailindex.of_tx(store, xid) if store is not None else []):
        if row.folder is not None:  # archived: its folder is read when the mail is
            out.append(_indexed(agent, row, "S"))
            continue
        names = folders["quarantine" if row.status == "quarantined" else "cur"]
        if row.key in names:
            out.append(_indexed(agent, row, names[row.key]))
    unindexed = [(e.key, "new", "") for e in maildir.fresh(root)]
    for key, folder, flags in unindexed + _unindexed(store, folders):
        loaded = _read(root, key, folder)
        if loaded is not None and _head_holds(loaded[0], needle):
            mail = from_file(agent, root, key, folder, flags, loaded)
            if mail is not None:
                out.append(mail if folder != "cur" else _with_status(mail, store))
    return out


def _head_holds(raw: bytes, needle: bytes) -> bool:
    end = raw.find(b"\r\n\r\n")
    return needle in raw[:end if end >= 0 else 4096]


def _with_status(mail: Mail, store) -> Mail:
    """An unindexed processed mail (before the upgrade) with the status its store recorded."""
    return replace(mail, status=store.processed_status(mail.key) if store is not None else None)


def purchase_files(world: World, xid: str) -> dict[str, set[tuple[str, str]] | None]:
    """agent -> the (folder, key) of its files that may hold purchase ``xid`` (``export-thread``
    reads only those): the index's received mails and Sent copies of ``xid``, and every file
    the index does not describe.  None for an agent whose store predates the index."""
    out: dict[str, set[tuple[str, str]] | None] = {}
    needle = f" {xid}".encode()
    for name in world.agents:
        if not world.maildir(name).exists() or not world.store_path(name).exists():
            out[name] = None
            continue
        store = open_store(world, name)
        try:
            if mailindex.unindexed_keys(store):
                out[name] = None
                continue
            files = {(m.folder, m.key) for m in of_purchase(world, name, store, xid, needle)}
            files |= {("sent", sent_key(mid.encode())) for mid in mailindex.sent(store, xid=xid)}
            out[name] = files
        finally:
            store.close()
    return out
