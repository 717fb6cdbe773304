"""How a CLI command reaches a running agent: a row in that agent's own store.

``setmail register alice`` opens ``agents/alice/state.db`` (SQLite WAL allows a second process),
inserts a row into ``agent_commands`` and returns its id.  The agent polls the table (every
``poll`` seconds, default 0.25), runs each pending row as ``Command(name, args)`` through the same
commit path as mail, and marks the row ``done`` (with the transaction key) *in that same store
transaction* — so a command runs exactly once even if the agent crashes around it.  A role that
refuses the command marks it ``failed`` with the reason.  The CLI then polls the row (and
whatever result it waits for) to report back.

A command is never carried out late: one past its ``deadline`` is closed ``expired`` instead of
run, and one the user withdrew (``setmail queue cancel``, or a ``--wait`` that timed out before
the agent picked it up) is closed ``withdrawn``.  Withdrawing only takes a row still ``pending``,
in one UPDATE, so a command is either withdrawn or carried out, never both.
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
    deadline: float | None = None
    done_at: float | None = None


def _row(r) -> CommandRow:
    return CommandRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])


_COLS = "id, name, args, status, txkey, detail, submitted_at, deadline, done_at"
#: how a command ended: carried out, refused by the role, past its deadline, withdrawn
FINAL = ("done", "failed", "expired", "withdrawn")


def pending(store) -> list[CommandRow]:
    ensure_tables(store)
    return [_row(r) for r in store.query(
        f"SELECT {_COLS} FROM agent_commands WHERE status = 'pending' ORDER BY id")]


def listing(store, *, every: bool = False, limit: int = 50) -> list[CommandRow]:
    """The pending commands (``every``: the latest ``limit`` of all), oldest first."""
    ensure_tables(store)
    where = "" if every else "WHERE status = 'pending'"
    rows = store.query(f"SELECT {_COLS} FROM agent_commands {where} ORDER BY id DESC LIMIT ?",
                       (limit,))
    return [_row(r) for r in reversed(rows)]


def withdraw(store, command_id: int, reason: str, *, now: float | None = None) -> bool:
    """Withdraw a command the agent has not picked up: True if it was still pending (it will
    never run), False if the agent took it already (or it never existed)."""
    import time
    ensure_tables(store)
    with store.transaction(now=time.time() if now is None else now) as tx:
        row = tx.execute("SELECT status FROM agent_commands WHERE id = ?",
                         (command_id,)).fetchone()
        if row is None or row[0] != "pending":
            return False
        finish(tx, command_id, "withdrawn", detail=reason)
        return True


def failure_detail(exc: BaseException) -> str:
    """Why a command failed, as the CLI shows it: a deliberate refusal (``SetmailError``) in its
    own words, anything else (an internal error) with its class for the log reader."""
    from setmail.errors import SetmailError
    text = str(exc).replace("\n", " ")
    return text if isinstance(exc, SetmailError) and text else f"{type(exc).__name__}: {text}"


def get(store, command_id: int) -> CommandRow | None:
    rows = store.query(f"SELECT {_COLS} FROM agent_commands WHERE id = ?", (command_id,))
    return _row(rows[0]) if rows else None


REDACTED = "(redacted)"
#: arguments that carry a secret (card data, form values, registration codes): redacting one is a
#: wipe, so the store makes it unreadable in every file (the others are redacted all the same)
SECRET_ARGS = frozenset({"pan", "expiry", "card_expiry", "cvv", "fields", "registration_code",
                         "card_secret"})


class CommandGone(Exception):
    """The command is no longer pending (withdrawn meanwhile): the transaction that would have
    carried it out must roll back."""


def expire_if_late(store, row: CommandRow, now: float) -> bool:
    """Close ``row`` as ``expired`` if it is past its deadline (True: do not run it)."""
    if row.deadline is None or row.deadline >= now:
        return False
    try:
        with store.transaction(now=now) as tx:
            finish(tx, row.id, "expired", detail="not carried out: it was still waiting after "
                   "its deadline (the command that queued it had given up)")
    except CommandGone:
        pass
    return True


def finish(tx, command_id: int, status: str, *, txkey: str | None = None,
           detail: str | None = None) -> None:
    """Close a pending command (CommandGone if it is not pending any more); its arguments (a
    PAN, form values) are redacted, only names stay, and the store is told a secret went (its
    WAL is checkpointed after the commit)."""
    row = tx.execute("SELECT args FROM agent_commands WHERE id = ?", (command_id,)).fetchone()
    args = json.loads(row[0]) if row else {}
    redacted = json.dumps({k: REDACTED for k in args})
    if any(v != REDACTED for k, v in args.items() if k in SECRET_ARGS):
        tx.note_wipe()
    cur = tx.execute("UPDATE agent_commands SET status = ?, txkey = ?, detail = ?, done_at = ?, "
                     "args = ? WHERE id = ? AND status = 'pending'",
                     (status, txkey, detail, tx.now, redacted, command_id))
    if cur.rowcount == 0:
        raise CommandGone(command_id)
