"""``bench scale --fill N``: grow one stopped agent to N processed mails and N transactions by
cloning what it really processed, so its start and the inspection commands can be timed at a
size that would take hours of real purchases to reach on this machine.

What is cloned, and why that is a fair test of what is timed: each clone of a mail is a hard
link to a real processed mail's file under a new Maildir name in ``cur/`` (done), with the real
row of the store's mail index copied under that name and a new transaction id; each clone of a
transaction is a real role state copied under a new XID (``tx/<xid>`` and its suffix).  The
files, rows, folder sizes and index shapes are those of real traffic; only their content repeats.
Nothing cloned is ever processed again (done mail), so the protocol is not exercised here: the
batches before the fill do that.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

#: the clones' XIDs: 40 hex digits no real purchase produces (a fixed prefix and a counter)
_XID_PREFIX = "f111"


def _xid(i: int) -> str:
    return f"{_XID_PREFIX}{i:036x}"


def fill(store_path: Path, maildir: Path, *, mails: int, transactions: int) -> dict[str, float]:
    """Clone until the agent holds ``mails`` processed mails and ``transactions`` ``tx/`` states;
    what it did and how long it took.  The agent must be stopped."""
    t0 = time.perf_counter()
    con = sqlite3.connect(store_path, timeout=60, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        made_tx = _clone_states(con, transactions)
        made_mail = _clone_mails(con, Path(maildir), mails)
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return {"mails_cloned": made_mail, "transactions_cloned": made_tx,
            "seconds": time.perf_counter() - t0}


def _clone_states(con: sqlite3.Connection, target: int) -> int:
    cols = "txkey, kind, value, updated_at, state_name, created"
    real = con.execute(f"SELECT {cols} FROM role_state WHERE txkey > 'tx/' AND txkey < 'tx0' "
                       "AND length(txkey) >= 43").fetchall()
    need = target - len(real)
    if need <= 0 or not real:
        return 0
    rows = []
    for i in range(need):
        key, *rest = real[i % len(real)]
        rows.append(("tx/" + _xid(i) + key[43:], *rest))
    con.executemany(f"INSERT INTO role_state ({cols}) VALUES (?, ?, ?, ?, ?, ?)", rows)
    return need


def _clone_mails(con: sqlite3.Connection, maildir: Path, target: int) -> int:
    cols = ("maildir_key, status, detail, txkey, processed_at, message_type, tx, sender, "
            "message_id, size, received_at")
    real = con.execute(f"SELECT {cols} FROM processed_mail WHERE size IS NOT NULL "
                       "AND folder IS NULL AND status = 'done'").fetchall()
    have = con.execute("SELECT COUNT(*) FROM processed_mail").fetchone()[0]
    need = target - have
    if need <= 0 or not real:
        return 0
    cur = maildir / "cur"
    files = {}
    for entry in os.scandir(cur):
        files[entry.name.partition(":")[0]] = entry.path
    real = [r for r in real if r[0] in files]
    oldest = min(r[10] for r in real) - need * 0.01  # the clones came before the real mail
    rows = []
    for i in range(need):
        key, status, detail, txkey, _, mtype, tx, sender, msgid, size, _ = real[i % len(real)]
        when = oldest + i * 0.01
        new_key = f"{int(when)}.M{i % 1_000_000:06d}P0Q{i}Rfill.bench"
        os.link(files[key], cur / f"{new_key}:2,S")
        suffix = tx[40:] if tx and len(tx) >= 40 else ""
        rows.append((new_key, status, detail, txkey, when, mtype, _xid(i) + suffix, sender,
                     f"fill{i}.{msgid}", size, when))
    con.executemany(f"INSERT INTO processed_mail ({cols}) VALUES ({', '.join('?' * 11)})",
                    rows)
    return need
