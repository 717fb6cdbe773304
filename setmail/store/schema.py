"""The agent store's SQLite schema, as an ordered list of migrations.

``PRAGMA user_version`` is the number of migrations applied; opening a store applies the missing
ones in one transaction each, and refuses a database written by a newer setmail.  Later issues
append migrations here (never edit an applied one).  Tables other layers own (e.g. the issuer's
ledger) can be created with ``CREATE TABLE IF NOT EXISTS`` inside a store transaction.
"""
from __future__ import annotations

V1 = """
CREATE TABLE role_state (
    txkey       TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('json', 'bytes')),
    value       BLOB NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE dedupe (
    peer        TEXT NOT NULL,
    rrpid       BLOB NOT NULL,
    msg_type    TEXT NOT NULL,
    txkey       TEXT,
    processed_at REAL NOT NULL,
    PRIMARY KEY (peer, rrpid, msg_type)
);
CREATE TABLE dedupe_response (
    peer        TEXT NOT NULL,
    rrpid       BLOB NOT NULL,
    msg_type    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    recipient   TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    raw         BLOB NOT NULL,
    message_id  TEXT NOT NULL,
    PRIMARY KEY (peer, rrpid, msg_type, seq),
    FOREIGN KEY (peer, rrpid, msg_type) REFERENCES dedupe (peer, rrpid, msg_type)
        ON DELETE CASCADE
);
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient       TEXT NOT NULL,
    host            TEXT NOT NULL,
    port            INTEGER NOT NULL,
    raw             BLOB NOT NULL,
    message_id      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,              -- NULL: given up (dead letter), kept for inspection
    last_error      TEXT,
    created_at      REAL NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE TABLE sent_log (
    message_id  TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    sent_at     REAL
);
CREATE TABLE timers (
    key         TEXT PRIMARY KEY,
    due_at      REAL NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX timers_due ON timers (due_at);
CREATE TABLE processed_mail (
    maildir_key TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    detail      TEXT,
    txkey       TEXT,
    processed_at REAL NOT NULL
);
CREATE TABLE quarantine (
    maildir_key TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    message_id  TEXT,
    quarantined_at REAL NOT NULL
);
"""


#: issue 12: dedupe on the exact SET content.  The key is the SHA-256 of the MessageWrapper DER
#: (``Inbound.digest``), no longer (From, clear RRPID, type): a header anyone can forge must not
#: decide that a genuine mail is a repeat.  ``resends`` counts how often a repeat of the request
#: got the stored answers again (bounded by the agent).  V1's records cannot be re-keyed (the DER
#: was not kept) and are dropped: a repeat of a request processed before the upgrade reaches its
#: role again, which treats a repeat as it treats any other mail it already acted on.
V2 = """
DROP TABLE dedupe_response;
DROP TABLE dedupe;
CREATE TABLE dedupe (
    digest      BLOB PRIMARY KEY CHECK (length(digest) = 32),
    msg_type    TEXT NOT NULL,
    txkey       TEXT,
    processed_at REAL NOT NULL,
    resends     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE dedupe_response (
    digest      BLOB NOT NULL REFERENCES dedupe (digest) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    recipient   TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    raw         BLOB NOT NULL,
    message_id  TEXT NOT NULL,
    PRIMARY KEY (digest, seq)
);
"""

#: issue 16: each outgoing mail stored once.  A dedupe record's answers refer to the outgoing
#: mail by Message-ID (``raw`` NULL): its bytes are in the outbox until the next hop's 250 and
#: in the agent's .Sent folder after it (filed durably before the outbox row goes).  Records made
#: before the upgrade keep their own copy.  The indices find an answer's outbox row and the
#: records past the Date window (``agent.dedupe.expire``).
V3 = """
CREATE TABLE dedupe_answer (
    digest      BLOB NOT NULL REFERENCES dedupe (digest) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    recipient   TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    raw         BLOB,
    message_id  TEXT NOT NULL,
    PRIMARY KEY (digest, seq)
);
INSERT INTO dedupe_answer SELECT digest, seq, recipient, host, port, raw, message_id
    FROM dedupe_response;
DROP TABLE dedupe_response;
ALTER TABLE dedupe_answer RENAME TO dedupe_response;
CREATE INDEX outbox_message_id ON outbox (message_id);
CREATE INDEX dedupe_age ON dedupe (processed_at);
"""

#: issue 16: the store indexes its agent's mail, so ``trace``, ``mailbox list`` and the like
#: read a few rows instead of every file of a Maildir that may hold 100,000 (``txview.mails``).
#: A processed mail's row gets what its head said (for display and lookup only, never trusted:
#: ``tx`` is the Subject's transaction, an XID first) and when it was delivered; ``folder`` is
#: set when ``mailbox archive`` moves it.  An outgoing mail carries its type and transaction
#: into ``sent_log``, whose rows then list the Sent folder.  Rows written before the upgrade
#: have NULLs: their mails are read from their files, as before.  A role state's ``state`` and
#: ``created`` items get columns of their own (filled for the states already there), so
#: ``tx list`` sorts and filters 100,000 purchases without decoding each one's JSON.
V4 = """
ALTER TABLE role_state ADD COLUMN state_name TEXT;
ALTER TABLE role_state ADD COLUMN created TEXT;
UPDATE role_state SET state_name = value ->> '$.state', created = value ->> '$.created'
    WHERE kind = 'json' AND json_type(value) = 'object';
CREATE INDEX role_state_listing ON role_state (txkey, state_name, created);
ALTER TABLE processed_mail ADD COLUMN message_type TEXT;
ALTER TABLE processed_mail ADD COLUMN tx TEXT;
ALTER TABLE processed_mail ADD COLUMN sender TEXT;
ALTER TABLE processed_mail ADD COLUMN message_id TEXT;
ALTER TABLE processed_mail ADD COLUMN size INTEGER;
ALTER TABLE processed_mail ADD COLUMN received_at REAL;
ALTER TABLE processed_mail ADD COLUMN folder TEXT;
CREATE INDEX processed_mail_tx ON processed_mail (tx);
CREATE INDEX processed_mail_received ON processed_mail (received_at);
CREATE INDEX processed_mail_unindexed ON processed_mail (maildir_key) WHERE size IS NULL;
CREATE INDEX processed_mail_quarantined ON processed_mail (maildir_key)
    WHERE status = 'quarantined';
ALTER TABLE outbox ADD COLUMN message_type TEXT;
ALTER TABLE outbox ADD COLUMN tx TEXT;
ALTER TABLE sent_log ADD COLUMN message_type TEXT;
ALTER TABLE sent_log ADD COLUMN tx TEXT;
ALTER TABLE sent_log ADD COLUMN size INTEGER;
CREATE INDEX sent_log_tx ON sent_log (tx);
CREATE INDEX sent_log_sent ON sent_log (sent_at);
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3, V4)
SCHEMA_VERSION = len(MIGRATIONS)
