"""How a CLI command reaches a running agent: a row in that agent's own store.

``setmail register alice`` opens ``agents/alice/state.db`` (SQLite WAL allows a second process),
inserts a row into ``agent_commands`` and returns its id.  The agent polls the table (every
``poll`` seconds, default 0.25), runs each pending row as ``Command(name, args)`` through the same
commit path as mail, and marks the row ``done`` (with the transaction key) *in that same store
transaction* — so a command runs exactly once even if the agent crashes around it.  A role that
refuses the command marks it ``failed`` with the reason.  The CLI then polls the row (and
whatever result it waits for) to report back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# the queue lives below the agent: ``setmail init`` (world) queues commands too
from setmail.store.shared import COMMANDS_DDL as DDL  # noqa: F401  (re-export)
from setmail.store.shared import ensure_tables, open_store, submit  # noqa: F401  (re-exports)


@dataclass(frozen=True)
class CommandRow:
    id: int
    name: str
    args: dict[str, Any]
    status: str
    txkey: str | None
    detail: str | None
    submitted_at: float


def _row(r) -> CommandRow:
    return CommandRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6])


_COLS = "id, name, args, status, txkey, detail, submitted_at"


def pending(store) -> list[CommandRow]:
    return [_row(r) for r in store.query(
        f"SELECT {_COLS} FROM agent_commands WHERE status = 'pending' ORDER BY id")]


def get(store, command_id: int) -> CommandRow | None:
    rows = store.query(f"SELECT {_COLS} FROM agent_commands WHERE id = ?", (command_id,))
    return _row(rows[0]) if rows else None


REDACTED = "(redacted)"
#: arguments that carry a secret (card data, form values, registration codes): redacting one is a
#: wipe, so the store makes it unreadable in every file (the others are redacted all the same)
SECRET_ARGS = frozenset({"pan", "expiry", "card_expiry", "cvv", "fields", "registration_code",
                         "card_secret"})


def finish(tx, command_id: int, status: str, *, txkey: str | None = None,
           detail: str | None = None) -> None:
    """Close a command; its arguments (a PAN, form values) are redacted, only names stay, and
    the store is told a secret went (its WAL is checkpointed after the commit)."""
    row = tx.execute("SELECT args FROM agent_commands WHERE id = ?", (command_id,)).fetchone()
    args = json.loads(row[0]) if row else {}
    redacted = json.dumps({k: REDACTED for k in args})
    if any(v != REDACTED for k, v in args.items() if k in SECRET_ARGS):
        tx.note_wipe()
    tx.execute("UPDATE agent_commands SET status = ?, txkey = ?, detail = ?, done_at = ?, "
               "args = ? WHERE id = ?", (status, txkey, detail, tx.now, redacted, command_id))
