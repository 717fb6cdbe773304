"""The store's index of its agent's mail (``schema.V4``): what ``trace``, ``mailbox list`` and
``mailbox archive`` read instead of every file of a Maildir that may hold 100,000 mails.

Rows are written with the state change they belong to (``Transaction.mark_processed``, the
outbox's line in ``sent_log``), so the index is exactly as durable as the processing.  It is an
accelerator, never the truth: the Maildir is.  Readers join it with the folder's file names
(``txview.mails``), so a mail the index does not know (delivered and not yet processed, or
processed before the upgrade) is read from its file, and a row whose file is gone is not shown.
Nothing here is trusted for a decision: the columns are what a mail's head said.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class IndexedMail:
    key: str
    status: str              # done, refused, duplicate, quarantined
    folder: str | None       # None: cur/ (or the quarantine); else the archive folder it is in
    message_type: str | None
    tx: str | None
    sender: str | None
    message_id: str | None
    size: int
    received_at: float       # delivery time (the processing time if it was not known)
    txkey: str | None
    detail: str | None


@dataclass(frozen=True)
class SentLine:
    message_id: str
    recipient: str
    message_type: str | None
    tx: str | None
    size: int | None
    sent_at: float | None


_COLS = ("maildir_key, status, folder, message_type, tx, sender, message_id, size, "
         "received_at, txkey, detail")


def _rows(store, where: str, params: tuple = (), tail: str = "") -> list[IndexedMail]:
    return [IndexedMail(*r) for r in store.query(
        f"SELECT {_COLS} FROM processed_mail WHERE size IS NOT NULL AND {where} {tail}", params)]


def _tx_range(xid: str) -> tuple[str, str]:
    """The index range of Subject transactions that start with ``xid`` (an XID alone, or an
    XID with a suffix such as the gateway's merchant)."""
    return xid, xid + "\U0010ffff"


def of_tx(store, xid: str) -> list[IndexedMail]:
    """The indexed mails whose Subject names transaction ``xid`` (or one starting with it)."""
    return _rows(store, "tx >= ? AND tx < ?", _tx_range(xid))


def newest(store, limit: int | None = None) -> list[IndexedMail]:
    """The indexed mails still in cur/ or the quarantine, newest first (``limit``: at most)."""
    tail = "ORDER BY received_at DESC" + (
        f" LIMIT {int(limit)}" if limit else "")
    return _rows(store, "folder IS NULL", (), tail)


def indexed_keys(store, *, status: str | None = None) -> set[str]:
    """The keys the index describes (of mails with ``status``, if given)."""
    where, params = ("AND status = ?", (status,)) if status else ("", ())  # a partial index
    return {r[0] for r in store.query(
        f"SELECT maildir_key FROM processed_mail WHERE size IS NOT NULL {where}", params)}


def indexed_among(store, keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` (a few) the index describes."""
    keys, found = list(keys), set()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        found.update(r[0] for r in store.query(
            "SELECT maildir_key FROM processed_mail WHERE size IS NOT NULL AND maildir_key IN "
            f"({', '.join('?' * len(chunk))})", chunk))
    return found


def unindexed_keys(store) -> set[str]:
    """The processed mails the index does not describe (processed before ``schema.V4``)."""
    return {r[0] for r in store.query("SELECT maildir_key FROM processed_mail "
                                      "WHERE size IS NULL")}


def sent(store, *, xid: str | None = None) -> dict[str, SentLine]:
    """Message-ID -> its line in ``sent_log`` (the first that knows its type: a re-sent answer
    is logged again, under the same Message-ID and Sent copy)."""
    where, params = ("WHERE tx >= ? AND tx < ?", _tx_range(xid)) if xid else ("", ())
    out: dict[str, SentLine] = {}
    for row in store.query("SELECT message_id, recipient, message_type, tx, size, sent_at "
                           f"FROM sent_log {where} ORDER BY rowid", params):
        if row[0] not in out or out[row[0]].message_type is None:
            out[row[0]] = SentLine(*row)
    return out


def set_folder(store, keys: Iterable[str], folder: str, *, now: float) -> int:
    """Record that ``keys`` moved to archive ``folder`` (``mailbox archive``); rows changed."""
    changed = 0
    with store.transaction(now=now, durable=False) as tx:
        for key in keys:
            changed += tx.execute("UPDATE processed_mail SET folder = ? WHERE maildir_key = ?",
                                  (folder, key)).rowcount
    return changed
