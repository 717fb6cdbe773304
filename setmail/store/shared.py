"""Opening an agent's store that another process (the agent, the CLI) may be opening too, and
queueing a command into it.

Why here, below the agent and the world: ``setmail init`` writes the issuer's accounts into its
store and queues the merchants' and gateways' ``register`` commands, the CLI queues commands into
any agent's store, and the agent opens its own; all of them open it the same way and share the
same command table (``agent.commands`` re-exports both).
"""
from __future__ import annotations

import json
import time
from typing import Any

from setmail.store.db import Store


def open_store(path) -> Store:
    """Open an agent's store from another process (the CLI) while the agent may open it too:
    safe since ``Store._migrate`` reads the schema version again under its write lock."""
    return Store(path)


#: the queue a running agent polls (``agent.commands``): one row per command
COMMANDS_DDL = (
    ("CREATE TABLE IF NOT EXISTS agent_commands (id INTEGER PRIMARY KEY AUTOINCREMENT, "
     "name TEXT NOT NULL, args TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', "
     "txkey TEXT, detail TEXT, submitted_at REAL NOT NULL, done_at REAL)"),
    # the agent looks for pending rows several times a second; done ones pile up
    ("CREATE INDEX IF NOT EXISTS agent_commands_pending ON agent_commands (id) "
     "WHERE status = 'pending'"))
#: columns added since the table was first created (older stores gain them on open)
_ADDED = (("deadline", "REAL"),)


def ensure_tables(store, ddl=COMMANDS_DDL) -> None:
    with store.transaction(now=time.time()) as tx:
        for statement in ddl:
            tx.execute(statement)
        if ddl is COMMANDS_DDL:
            have = {r[1] for r in tx.execute("PRAGMA table_info(agent_commands)").fetchall()}
            for column, kind in _ADDED:
                if column not in have:
                    tx.execute(f"ALTER TABLE agent_commands ADD COLUMN {column} {kind}")


def submit(store, name: str, args: dict[str, Any] | None = None, *,
           now: float | None = None, deadline: float | None = None) -> int:
    """Queue a command for the agent owning ``store``; returns its id.  ``deadline`` (epoch
    seconds): the agent never carries it out later than that (a ``--wait`` that timed out must
    not turn into a purchase the user believes failed)."""
    ensure_tables(store)
    now = time.time() if now is None else now
    with store.transaction(now=now) as tx:
        cur = tx.execute("INSERT INTO agent_commands (name, args, submitted_at, deadline) "
                         "VALUES (?, ?, ?, ?)",
                         (name, json.dumps(args or {}, sort_keys=True), now, deadline))
        return cur.lastrowid
