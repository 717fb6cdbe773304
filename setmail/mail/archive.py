"""Archiving processed mail: an agent's ``cur/`` mails marked done (flag S) and older than a given
age move, by month, into dated Maildir++ folders (``.Archive.2026-12``) that mail clients list as
folders, so the inbox an agent or a reader scans stays small however long it has run.

Why only done mail: ``maildir.pending`` treats a ``cur/`` mail without S as claimed and not yet
finished (a crash between the commit and ``mark_done``), and a running agent may still take it
up; a done mail is never touched by the agent again.  The quarantine and ``.Sent`` stay (a Sent
copy may be the stored answer of a dedupe record, D-481).  A move is a ``rename`` on one file
system: after a crash the mail is in one place or the other, never lost; each folder touched is
fsynced once at the end so the moves survive power loss too.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from setmail.errors import MaildirError
from setmail.mail.maildir import _fsync_dir, _split

ARCHIVE_PREFIX = ".Archive."


def folder_name(mtime: float) -> str:
    """The archive folder of a mail delivered at ``mtime`` (UTC month)."""
    return ARCHIVE_PREFIX + dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m")


def _ensure_folder(root: Path, name: str) -> Path:
    folder = root / name
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / "maildirfolder").touch(mode=0o600, exist_ok=True)
    return folder


def archive(path: str | os.PathLike, *, older_than: float, now: float) -> dict[str, list[str]]:
    """Move the done mails of ``path``'s ``cur/`` last modified before ``now - older_than``
    seconds into their month's archive folder; folder name -> the keys moved there."""
    root = Path(path)
    cur = root / "cur"
    cutoff = now - older_than
    moved: dict[str, list[str]] = {}
    try:
        with os.scandir(cur) as it:
            entries = [e for e in it if not e.name.startswith(".")]
        for entry in entries:
            if "S" not in _split(entry.name)[1]:
                continue
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime >= cutoff:
                continue
            name = folder_name(mtime)
            target = _ensure_folder(root, name) / "cur" / entry.name
            try:
                os.rename(entry.path, target)
            except FileNotFoundError:  # moved meanwhile
                continue
            moved.setdefault(name, []).append(_split(entry.name)[0])
        for name in moved:
            _fsync_dir(root / name / "cur")
        if moved:
            _fsync_dir(cur)
    except OSError as exc:
        raise MaildirError(f"archiving {root} failed: {exc}") from exc
    return moved


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` -> seconds; ValueError for anything else."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"not an age: {text!r} (e.g. 30d, 12h, 90m)")
    return int(text[:-1]) * units[text[-1]]
