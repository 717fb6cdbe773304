"""Opening an agent's store that another process (the agent, the CLI) may be opening too.

Why here, below the agent and the world: ``setmail init`` writes the issuer's accounts into its
store, the CLI queues commands into any agent's store, and the agent opens its own; all of them
need the same work-around (``agent.commands`` re-exports it).
"""
from __future__ import annotations

import time

from setmail.errors import StoreError
from setmail.store.db import Store


def open_store(path, *, attempts: int = 5) -> Store:
    """Open an agent's store from another process (the CLI) while the agent may open it too.

    Works around a race in ``Store._migrate`` (it reads ``user_version`` outside the migration
    transaction, so two processes creating one database at once can both try migration 1).
    """
    for attempt in range(attempts):
        try:
            return Store(path)
        except StoreError as exc:
            if "already exists" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
