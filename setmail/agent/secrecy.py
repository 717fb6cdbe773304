"""Keeping secrets out of an agent's logs and files: a role's reason made fit for a log line,
and whether a commit wipes a secret (the store then checkpoints its WAL; docs/runtime.md)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_DIGITS = re.compile(r"\d{12,}")


def loggable(text: Any, limit: int = 300) -> str:
    """One line, bounded, and no run of 12 or more digits: a PAN never reaches a log, whatever a
    role or an exception puts in its text."""
    return _DIGITS.sub("[digits]", " ".join(str(text).split()))[:limit]


def secret_lost(before: Any, state: Mapping[str, Any] | None) -> bool:
    """Whether a transaction's ``"secret"`` (``before``, as stored) loses an item in ``state``
    (the new state; None: deleted): gone, or replaced by another secret."""
    if not before:
        return False
    after = (state or {}).get("secret") or {}
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return before != after
    return any(k not in after or after[k] != v for k, v in before.items())
