"""The reads every store connection shares, and one unit of work's writes (``Transaction``):
what a role step, a command or the sender commits, always inside ``Store.transaction``.

Values of role state are JSON-able objects or raw bytes, opaque to the store except a dict's
``state`` and ``created`` items, which listings read from columns of their own (D-487).
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

from setmail.errors import DedupeConflict, StoreDamaged, StoreError
from setmail.store.records import DedupeRecord, MailFacts, OutgoingMail

def _encode_value(value: Any) -> tuple[str, Any]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", bytes(value)
    return "json", _json(value)


def _json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value is not JSON-serialisable: {exc}") from exc


def _text(item: Any) -> str | None:
    return None if item is None else str(item)


def _decode_value(kind: str, value: Any) -> Any:
    return bytes(value) if kind == "bytes" else json.loads(value)


#: a dedupe record's answers; one stored by reference (``raw`` NULL, schema V3) takes its bytes
#: from the outbox while it waits there, else ``raw`` stays None: the agent reads its Sent copy
_ANSWERS = ("SELECT recipient, host, port, COALESCE(raw, (SELECT o.raw FROM outbox o WHERE "
            "o.message_id = d.message_id ORDER BY o.id DESC LIMIT 1)), message_id "
            "FROM dedupe_response d WHERE digest = ? ORDER BY seq")


class _Reads:
    """Queries shared by :class:`Store` (own snapshot) and :class:`Transaction` (inside it)."""

    path = "the store"

    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - overridden
        raise NotImplementedError

    def get_state(self, txkey: str, default: Any = None) -> Any:
        row = self._conn().execute(
            "SELECT kind, value FROM role_state WHERE txkey = ?", (txkey,)).fetchone()
        return default if row is None else _decode_value(*row)

    def lookup_dedupe(self, digest: bytes) -> DedupeRecord | None:
        """The record of the accepted mail whose MessageWrapper DER hashes to ``digest``."""
        conn = self._conn()
        key = (bytes(digest),)
        row = conn.execute("SELECT msg_type, txkey, processed_at, resends FROM dedupe "
                           "WHERE digest = ?", key).fetchone()
        if row is None:
            return None
        responses = tuple(OutgoingMail(r, h, p, None if raw is None else bytes(raw), m)
                          for r, h, p, raw, m in conn.execute(_ANSWERS, key))
        return DedupeRecord(bytes(digest), *row, responses)

    def processed_status(self, maildir_key: str) -> str | None:
        row = self._conn().execute("SELECT status FROM processed_mail WHERE maildir_key = ?",
                                   (maildir_key,)).fetchone()
        return None if row is None else row[0]

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Read-only SQL for tables other layers own (ledger, ...)."""
        try:
            return self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            if any(d in str(exc) for d in _DAMAGED):
                raise damaged(self.path, exc) from exc
            raise StoreError(f"query failed: {exc}") from exc


class Transaction(_Reads):
    """The writes of one unit of work; valid only inside ``with store.transaction(now=...)``."""

    def __init__(self, conn: sqlite3.Connection, now: float):
        self._connection = conn
        self.now = now
        self.wiped = False
        self.first_enqueued: int | None = None  # the lowest outbox id this transaction made

    def note_wipe(self) -> None:
        """This transaction removes a secret: the store checkpoints the WAL after the commit."""
        self.wiped = True

    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError("transaction already finished")
        return self._connection

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Arbitrary SQL inside this transaction (effects tables, their DDL)."""
        try:
            return self._conn().execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(f"statement failed: {exc}") from exc

    def put_state(self, txkey: str, value: Any) -> None:
        """A dict's ``state`` and ``created`` items are also kept in columns (listings)."""
        kind, encoded = _encode_value(value)
        name, created = ((_text(value.get("state")), _text(value.get("created")))
                         if isinstance(value, dict) else (None, None))
        self.execute("INSERT INTO role_state (txkey, kind, value, updated_at, state_name, created) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (txkey) DO UPDATE SET "
                     "kind = excluded.kind, value = excluded.value, updated_at = "
                     "excluded.updated_at, state_name = excluded.state_name, "
                     "created = excluded.created", (txkey, kind, encoded, self.now, name, created))

    def state_secret(self, txkey: str) -> Any:
        """The ``"secret"`` item of a JSON state (None: it has none), without decoding the rest:
        what a commit compares to learn whether it wipes a secret."""
        row = self.execute("SELECT value -> '$.secret' FROM role_state WHERE txkey = ? "
                           "AND kind = 'json'", (txkey,)).fetchone()
        return None if row is None or row[0] is None else json.loads(row[0])

    def delete_state(self, txkey: str) -> None:
        self.execute("DELETE FROM role_state WHERE txkey = ?", (txkey,))

    def record_dedupe(self, digest: bytes, msg_type: str, responses: Iterable[OutgoingMail] = (),
                      *, txkey: str | None = None) -> None:
        """Remember that the mail with this digest was accepted, and what was answered."""
        digest = _digest(digest)
        try:
            self._conn().execute("INSERT INTO dedupe (digest, msg_type, txkey, processed_at) "
                                 "VALUES (?, ?, ?, ?)", (digest, msg_type, txkey, self.now))
        except sqlite3.IntegrityError as exc:
            raise DedupeConflict(f"already processed: {msg_type} {digest.hex()}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"dedupe insert failed: {exc}") from exc
        self._responses(digest, responses, 0)

    def _responses(self, digest: bytes, responses: Iterable[OutgoingMail], first: int) -> None:
        """The answers by reference (Message-ID): each is queued in the outbox by the same
        transaction, and its bytes are stored there and in the Sent folder, not a third time."""
        for seq, mail in enumerate(responses, start=first):
            self.execute("INSERT INTO dedupe_response (digest, seq, recipient, host, port, "
                         "message_id) VALUES (?, ?, ?, ?, ?, ?)",
                         (digest, seq, mail.recipient, mail.host, mail.port, mail.message_id))

    def add_dedupe_responses(self, digest: bytes, responses: Iterable[OutgoingMail]) -> bool:
        """Append answers to the dedupe record of a request accepted earlier (one answered in a
        later step); False, changing nothing, if there is no such record."""
        digest = _digest(digest)
        row = self.execute("SELECT (SELECT COALESCE(MAX(seq), -1) FROM dedupe_response WHERE "
                           "digest = ?) FROM dedupe WHERE digest = ?", (digest, digest)).fetchone()
        if row is None:
            return False
        self._responses(digest, responses, row[0] + 1)
        return True

    def count_resend(self, digest: bytes) -> int:
        """One more re-send of a record's answers; returns how many there have been."""
        row = self.execute("UPDATE dedupe SET resends = resends + 1 WHERE digest = ? "
                           "RETURNING resends", (_digest(digest),)).fetchone()
        return 0 if row is None else row[0]

    def enqueue(self, mail: OutgoingMail, *, not_before: float | None = None) -> int:
        """Put a mail in the outbox; returns its id.  Due at ``not_before`` (default: now)."""
        cur = self.execute(
            "INSERT INTO outbox (recipient, host, port, raw, message_id, next_attempt_at, "
            "created_at, message_type, tx) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (mail.recipient, mail.host, mail.port, mail.raw, mail.message_id,
             self.now if not_before is None else not_before, self.now, mail.message_type,
             mail.tx))
        if self.first_enqueued is None:
            self.first_enqueued = cur.lastrowid
        return cur.lastrowid

    def set_timer(self, key: str, due_at: float, payload: Any = None) -> None:
        """Create or move timer ``key`` (e.g. "resend PReq of tx 7 if no PRes by due_at")."""
        self.execute("INSERT INTO timers (key, due_at, payload) VALUES (?, ?, ?) ON CONFLICT (key) "
                     "DO UPDATE SET due_at = excluded.due_at, payload = excluded.payload",
                     (key, due_at, _json(payload)))

    def cancel_timer(self, key: str) -> bool:
        return self.execute("DELETE FROM timers WHERE key = ?", (key,)).rowcount > 0

    def mark_processed(self, maildir_key: str, status: str, *, detail: str | None = None,
                       txkey: str | None = None, facts: MailFacts | None = None) -> None:
        """The mail is processed (``status``); ``facts`` index it (``schema.V4``; without
        them the row is one the index does not describe)."""
        indexed = ((facts.message_type, facts.tx, facts.sender, facts.message_id, facts.size,
                    facts.received_at or self.now) if facts else (None,) * 6)
        self.execute("INSERT OR REPLACE INTO processed_mail (maildir_key, status, detail, txkey, "
                     "processed_at, message_type, tx, sender, message_id, size, received_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (maildir_key, status, detail, txkey, self.now, *indexed))

    def record_quarantine(self, maildir_key: str, reason: str,
                          message_id: str | None = None) -> None:
        self.execute("INSERT OR REPLACE INTO quarantine (maildir_key, reason, message_id, "
                     "quarantined_at) VALUES (?, ?, ?, ?)",
                     (maildir_key, reason, message_id, self.now))


#: what SQLite says of a file that is not (or no longer) a whole database
_DAMAGED = ("malformed", "not a database", "corrupt")


def damaged(path: str, problem: object) -> StoreDamaged:
    """The refusal for a damaged store: which file, what is wrong, what to do."""
    return StoreDamaged(
        f"store {path} is damaged ({problem}); the agent will not start without it. Stop every "
        f"process using it, move {os.path.basename(path)} and its -wal and -shm files aside, and "
        f"restore the last backup of {path} (a copy made by SQLite's backup, e.g. the bundle's "
        f"from setmail export)")


def _digest(digest: bytes) -> bytes:
    digest = bytes(digest)
    if len(digest) != 32:
        raise StoreError(f"a dedupe digest is 32 octets (SHA-256), not {len(digest)}")
    return digest
