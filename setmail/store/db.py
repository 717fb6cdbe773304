"""One agent's durable store: SQLite in WAL mode with ``synchronous=FULL``.

Why one transaction for everything: an incoming mail's effects (new role state, the dedupe record
with its responses, outgoing mail, timers, effects such as the issuer's ledger) must be committed
all together or not at all; then a crash anywhere is recovered by reprocessing the mail, which the
dedupe record turns into a re-send of the stored responses.

``now`` is always passed in (epoch seconds as float): the store reads no clock, so tests and the
simulated world control time.  Values of role state are JSON-able objects or raw bytes, opaque to
the store.  Every ``sqlite3`` failure surfaces as :class:`~setmail.errors.StoreError`.

A ``Store`` may be shared by threads: one lock serialises its connection, and a transaction holds
it from ``BEGIN IMMEDIATE`` to ``COMMIT``.

Secrets (a PAN in a command's arguments or a transaction's state) must be gone from every file
once wiped: ``secure_delete`` zeroes deleted content in the database file, and a transaction that
wiped one (``Transaction.note_wipe``) is followed by a TRUNCATE checkpoint, which copies the WAL
into the database and empties the WAL, the one file that still holds the old page images.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from setmail.errors import StoreError
from setmail.store.records import DedupeRecord, OutboxRow, QuarantineRecord, Timer
from setmail.store.schema import MIGRATIONS, SCHEMA_VERSION
from setmail.store.transaction import _DAMAGED, Transaction, _Reads, damaged

_OUTBOX_COLS = ("id, recipient, host, port, raw, message_id, attempts, next_attempt_at, "
                "last_error, created_at")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


#: seconds a transaction's BEGIN keeps trying against a locked database (each try may itself wait
#: up to the connection's busy timeout); ``SETMAIL_STORE_PATIENCE`` sets it (docs/faults.md)
PATIENCE_ENV = "SETMAIL_STORE_PATIENCE"
try:
    BEGIN_PATIENCE = max(0.0, float(os.environ.get(PATIENCE_ENV) or 30.0))
except ValueError:
    BEGIN_PATIENCE = 30.0
class Store(_Reads):
    """The SQLite database of one agent (created and migrated on open)."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float | None = None):
        self.path = os.fspath(path)
        self.trouble_seen = False
        self._lock = threading.RLock()
        self._in_tx = False
        self._connection: sqlite3.Connection | None = None
        #: a wipe's checkpoint is owed (deferred, or the WAL was busy): ``retry_wipe`` does it
        self.wipe_pending = False
        #: seconds a wipe's checkpoint may wait so that the wipes of a busy agent share one (0: at
        #: once, after the commit); the agent sets it and calls ``retry_wipe`` after every round
        self.wipe_delay = 0.0
        self._wipe_due = 0.0
        #: group commit: the lowest outbox id committed without a flush of its own; such rows are
        #: not due (``due_outbox``) until ``flush`` or any durable commit has made them durable
        self._unflushed_outbox: int | None = None
        self._flush_owed = False
        self._wal_fd: int | None = None
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            if busy_timeout is None:
                busy_timeout = min(10.0, BEGIN_PATIENCE)
            self._connection = sqlite3.connect(self.path, timeout=busy_timeout,
                                               isolation_level=None, check_same_thread=False)
            mode = self._connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal" and self.path != ":memory:":
                raise StoreError(f"cannot switch {self.path} to WAL (got {mode})")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA foreign_keys=ON")
            self._connection.execute("PRAGMA secure_delete=ON")  # deleted content is zeroed
            self._migrate()
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.DatabaseError) and any(d in str(exc) for d in _DAMAGED):
                raise damaged(self.path, exc) from exc
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StoreError(f"cannot open store {self.path}: {exc}") from exc
            raise

    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError("store is closed")
        return self._connection

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema {version}, newer than this setmail "
                             f"({SCHEMA_VERSION})")
        for number in range(version, SCHEMA_VERSION):
            with self.transaction(now=0.0) as tx:
                # another process (the agent and a cli command opening one store at once) may
                # have migrated between our read and our write lock: read it again under the lock
                if tx.execute("PRAGMA user_version").fetchone()[0] > number:
                    continue
                for statement in _statements(MIGRATIONS[number]):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {number + 1}")

    def verify(self) -> None:
        """``PRAGMA quick_check`` (every page readable, b-trees well formed; indexes unchecked,
        so it reads the file once): a running agent checks its store before anything else, so a
        torn or corrupt file stops it at the start with ``StoreDamaged``, never mid-purchase."""
        try:
            with self._lock:
                rows = self._conn().execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from exc
        if [r[0] for r in rows] != ["ok"]:
            found = " ".join(str(r[0]) for r in rows).replace("*** in database main ***", "")
            raise damaged(self.path, " ".join(found.split())[:200])

    #: beside the database: its (size, mtime, inode) as the agent's last clean stop left it
    STAMP_SUFFIX = ".verified"

    def verify_unless_unchanged(self) -> bool:
        """``verify`` unless the file is exactly as the agent's last clean stop left it
        (``stamp_clean_stop``); whether the check ran.  Why: ``quick_check`` reads the whole
        file (0.6 s at 1.7 GB, 100,000 purchases), and a file nobody wrote since a clean stop
        cannot have been torn.  The stamp is consumed here, so after a crash, or any write by
        another process meanwhile, the next start checks in full."""
        stamp_path = self.path + self.STAMP_SUFFIX
        try:
            with open(stamp_path, encoding="ascii") as fh:
                stamp = fh.read().split()
            os.unlink(stamp_path)
        except (OSError, ValueError):
            stamp = None
        try:
            st = os.stat(self.path)
            unchanged = stamp == [str(st.st_size), str(st.st_mtime_ns), str(st.st_ino)]
        except OSError:
            unchanged = False
        if not unchanged:
            self.verify()
        return not unchanged

    def stamp_clean_stop(self) -> None:
        """After ``close`` on a clean stop: let the next start skip the full check if nothing
        writes the file meanwhile (best effort: without the stamp it simply checks).  Not
        after a run in which a transaction failed in SQLite: that may have been damage."""
        if self.trouble_seen:
            return
        try:
            st = os.stat(self.path)
            with open(self.path + self.STAMP_SUFFIX, "w", encoding="ascii") as fh:
                fh.write(f"{st.st_size} {st.st_mtime_ns} {st.st_ino}\n")
        except OSError:
            pass

    @property
    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self, *, now: float, durable: bool = True) -> Iterator[Transaction]:
        """All writes inside the ``with`` commit together; any exception rolls all back.

        ``durable=False`` commits without an fsync of its own (``synchronous=NORMAL`` for this
        commit): the change is atomic and survives a crash of the process, and it becomes
        durable against power loss with the next durable commit or checkpoint.  Only for changes
        whose loss merely repeats work that is idempotent anyway (``mark_sent``)."""
        with self._lock:
            if self._in_tx:
                raise StoreError("nested transactions are not supported")
            conn = self._conn()
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self._begin(conn, self.path)
                self._in_tx = True
                tx = Transaction(conn, now)
                try:
                    yield tx
                    conn.execute("COMMIT")
                    self._committed(tx, durable)
                except BaseException as exc:
                    if conn.in_transaction:
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:  # e.g. a full disk: SQLite has rolled back itself
                            pass
                    if isinstance(exc, (sqlite3.Error, StoreError)):
                        self.trouble_seen = True  # the next start checks the file in full
                    if isinstance(exc, sqlite3.Error):
                        raise StoreError(f"{self.path}: transaction failed: {exc}") from exc
                    raise
                finally:
                    tx._connection = None
                    self._in_tx = False
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")
            if tx.wiped:
                if self.wipe_delay <= 0:
                    self._checkpoint(conn)
                elif not self.wipe_pending:
                    self.wipe_pending, self._wipe_due = True, time.monotonic() + self.wipe_delay

    def _committed(self, tx: Transaction, durable: bool) -> None:
        """A FULL commit syncs the WAL, and with it every earlier commit's frames."""
        if durable:
            self._unflushed_outbox, self._flush_owed = None, False
            return
        self._flush_owed = True
        if tx.first_enqueued is not None and self._unflushed_outbox is None:
            self._unflushed_outbox = tx.first_enqueued

    def flush(self) -> None:
        """Make every commit so far durable with one fdatasync of the WAL: the group commit of
        several ``durable=False`` transactions (what SQLite's own FULL commit does, once for
        all of them).  Frames checkpointed meanwhile are in the database file, which a
        checkpoint syncs before the WAL is reused."""
        with self._lock:
            if not self._flush_owed:
                return
            wal = self.path + "-wal"
            try:
                if self._wal_fd is None and os.path.exists(wal):
                    self._wal_fd = os.open(wal, os.O_RDWR | os.O_CLOEXEC)
                if self._wal_fd is not None:
                    os.fdatasync(self._wal_fd)
            except OSError as exc:
                raise StoreError(f"cannot flush {wal}: {exc}") from exc
            self._unflushed_outbox, self._flush_owed = None, False

    #: how long a wipe's checkpoint waits for other connections' readers (ms): never the agent's
    #: mail waiting on a CLI's polling; a busy checkpoint is simply tried again later
    CHECKPOINT_PATIENCE_MS = 50
    #: seconds before a busy checkpoint is tried again
    CHECKPOINT_RETRY = 0.1

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        """TRUNCATE checkpoint: the WAL's pages go into the database file (where secure_delete
        has zeroed what was deleted) and the WAL is emptied.  Best effort: another process
        reading an older snapshot makes it busy, which is not an error."""
        try:
            timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
            conn.execute(f"PRAGMA busy_timeout = {self.CHECKPOINT_PATIENCE_MS}")
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
        except sqlite3.Error:
            busy = 1
        self.wipe_pending = bool(busy)
        if busy:  # tried again after a pause, not in a loop against the reader
            self._wipe_due = time.monotonic() + self.CHECKPOINT_RETRY
        return not busy

    def retry_wipe(self) -> bool:
        """Do the checkpoint a wipe still owes once it is due (deferred by ``wipe_delay``, or
        made busy by another reader); whether none is owed any more.  Why deferred: a busy agent
        wipes a card number at nearly every purchase step, and each TRUNCATE checkpoint fsyncs;
        one per ``wipe_delay`` serves them all, and the secret is gone from every file a
        fraction of a second later."""
        with self._lock:
            if not self.wipe_pending or self._in_tx or time.monotonic() < self._wipe_due:
                return not self.wipe_pending
            return self._checkpoint(self._conn())

    def wipe_due_in(self) -> float | None:
        """Seconds until the checkpoint a wipe owes is due (0: now), None if none is owed: the
        agent's wait ends then, so the promise "gone within ``wipe_delay`` plus one poll" holds
        even while no mail arrives."""
        if not self.wipe_pending:
            return None
        return max(0.0, self._wipe_due - time.monotonic())

    @staticmethod
    def _begin(conn: sqlite3.Connection, path: str) -> None:
        """BEGIN IMMEDIATE, retried while another connection holds the write lock: sqlite's busy
        timeout does not cover every case (a read snapshot that must be upgraded returns BUSY at
        once), and a CLI command or a reader must never make the agent give up a mail."""
        deadline, attempt = time.monotonic() + BEGIN_PATIENCE, 0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc).lower()
                if not busy or time.monotonic() >= deadline:
                    raise StoreError(f"{path}: cannot begin transaction: {exc}"
                                     + (f" (waited {BEGIN_PATIENCE:g} s)" if busy else "")
                                     ) from exc
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: cannot begin transaction: {exc}") from exc
            time.sleep(min(0.01 * 2 ** attempt, 0.5))
            attempt += 1

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self.query(sql, params)
            except StoreError:
                self.trouble_seen = True
                raise

    # -- outbox --------------------------------------------------------------------------------
    def due_outbox(self, now: float, *, limit: int = 100) -> list[OutboxRow]:
        """Rows due by ``now``; never one whose commit is not durable yet (``flush``): a mail
        must not leave before the state that made it would survive a power loss."""
        with self._lock:
            rows = self.query(f"SELECT {_OUTBOX_COLS} FROM outbox WHERE next_attempt_at IS NOT "
                              "NULL AND next_attempt_at <= ? AND id < ? "
                              "ORDER BY next_attempt_at, id LIMIT ?", (now, self._below(), limit))
        return [_outbox_row(r) for r in rows]

    def next_send_at(self) -> float | None:
        """When the next row (of those ``due_outbox`` may give) is due; None: none waits."""
        with self._lock:
            return self.query("SELECT MIN(next_attempt_at) FROM outbox WHERE next_attempt_at IS "
                              "NOT NULL AND id < ?", (self._below(),))[0][0]

    def _below(self) -> int:
        return self._unflushed_outbox if self._unflushed_outbox is not None else 1 << 62

    def outbox(self, *, include_dead: bool = True) -> list[OutboxRow]:
        where = "" if include_dead else "WHERE next_attempt_at IS NOT NULL"
        return [_outbox_row(r) for r in self._read(f"SELECT {_OUTBOX_COLS} FROM outbox {where} "
                                                   "ORDER BY id")]

    def mark_sent(self, outbox_id: int, *, now: float | None = None) -> bool:
        """The next hop answered 250: drop the row, keep a line in ``sent_log``."""
        return self.mark_sent_many((outbox_id,), now=now) == 1

    def mark_sent_many(self, outbox_ids: Iterable[int], *, now: float | None = None) -> int:
        """``mark_sent`` for every row a drain got a 250 for, in one commit; how many rows went.
        Not fsynced on its own (``durable=False``): if power fails before the next durable
        commit those mails are sent again, and the receiver answers the repeats from its
        dedupe record."""
        gone = 0
        with self.transaction(now=now or 0.0, durable=False) as tx:
            for outbox_id in outbox_ids:
                tx.execute("INSERT INTO sent_log (message_id, recipient, attempts, sent_at, "
                           "message_type, tx, size) SELECT message_id, recipient, attempts + 1, "
                           "?, message_type, tx, length(raw) FROM outbox WHERE id = ?",
                           (now, outbox_id))
                gone += tx.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,)).rowcount
        return gone

    def mark_failed(self, outbox_id: int, error: str, next_attempt_at: float | None) -> bool:
        """Count a failed attempt; ``next_attempt_at=None`` gives up (the row stays, dead)."""
        with self.transaction(now=0.0) as tx:
            return tx.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                              "next_attempt_at = ? WHERE id = ?",
                              (error, next_attempt_at, outbox_id)).rowcount > 0

    # -- timers, indexes -------------------------------------------------------------------------
    def due_timers(self, now: float, *, limit: int = 100) -> list[Timer]:
        rows = self._read("SELECT key, due_at, payload FROM timers WHERE due_at <= ? "
                          "ORDER BY due_at, key LIMIT ?", (now, limit))
        return [Timer(k, d, json.loads(p)) for k, d, p in rows]

    def next_timer_at(self) -> float | None:
        return self._read("SELECT MIN(due_at) FROM timers")[0][0]

    def quarantined(self) -> list[QuarantineRecord]:
        return [QuarantineRecord(*r) for r in self._read(
            "SELECT maildir_key, reason, message_id, quarantined_at FROM quarantine "
            "ORDER BY quarantined_at, maildir_key")]

    def get_state(self, txkey: str, default: Any = None) -> Any:
        with self._lock:
            return super().get_state(txkey, default)

    def lookup_dedupe(self, digest: bytes) -> DedupeRecord | None:
        with self._lock:
            return super().lookup_dedupe(digest)

    def processed_status(self, maildir_key: str) -> str | None:
        with self._lock:
            return super().processed_status(maildir_key)

    def state_keys(self) -> list[str]:
        return [r[0] for r in self._read("SELECT txkey FROM role_state ORDER BY txkey")]

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                if self._flush_owed:
                    self.flush()
                if self._wal_fd is not None:
                    os.close(self._wal_fd)
                    self._wal_fd = None
                if self.wipe_pending:  # usually the last connection: SQLite checkpoints anyway
                    self._checkpoint(self._connection)
                self._connection.close()
                self._connection = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _outbox_row(row: tuple) -> OutboxRow:
    return OutboxRow(row[0], row[1], row[2], row[3], bytes(row[4]), *row[5:])
