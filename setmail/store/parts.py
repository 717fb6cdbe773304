"""A role's shared state kept as several rows, so that a step writes what it changed, not the
whole (issue 16: one row grew with every capture of the open batch and every pending posting,
and rewriting it made each purchase cost more than the one before).

The role names its growing collections as *parts*, ``/``-separated paths into its shared state
(``*`` matches every key of a dict): ``"pending"``, ``"batches/*/live/*/items"``.  The row
``shared/<key>`` keeps the rest, each part replaced by a placeholder; an entry of a dict part is
a row of its own and a list part is kept in chunks of ``CHUNK`` items, each named
``shared/<key>`` + US + the JSON path of the entry (or chunk number).  Reading joins them again
(``load``); writing compares the new value with the one the step was given and writes only the
rows that differ (``save``), in the caller's transaction: one step is still one commit.

A store written before parts existed has only the one row: it is read as it is and split by the
first step that writes.  Paths are never PANs (only ``pending`` ids, merchant tags, batch ids).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from setmail.store.transaction import _decode_value

#: the placeholder's key in the ``shared/<key>`` row (no role uses a key starting with NUL)
PART = "\x00part"
#: items of a list part per row
CHUNK = 64
#: between ``shared/<key>`` and an entry's path in its row's key
SEP = "\x1f"


def carve(value: Any, parts: Sequence[str]) -> tuple[Any, dict[tuple, Any]]:
    """(the value with every part replaced by a placeholder, {path: part})."""
    found: dict[tuple, Any] = {}
    root = _carve(value, [p.split("/") for p in parts], (), found)
    return root, found


def _carve(node: Any, paths: list[list[str]], at: tuple, found: dict) -> Any:
    if [] in paths and isinstance(node, (dict, list)):
        found[at] = node
        return {PART: "list" if isinstance(node, list) else "dict"}
    if not isinstance(node, Mapping):
        return node
    out = dict(node)
    for k in node:
        sub = [p[1:] for p in paths if p and p[0] in ("*", k)]
        if sub:
            out[k] = _carve(node[k], sub, (*at, k), found)
    return out


def _rows(path: tuple, part: Any) -> dict[tuple, Any]:
    if isinstance(part, list):
        return {(*path, i): part[i * CHUNK:(i + 1) * CHUNK]
                for i in range((len(part) + CHUNK - 1) // CHUNK)}
    return {(*path, k): v for k, v in part.items()}


def changes(old: Any, new: Any, parts: Sequence[str], *, split: bool = True
            ) -> tuple[dict[tuple, Any], list[tuple]]:
    """({row path: value} to write, [row path] to delete) turning the rows of ``old`` into those
    of ``new``; ``()`` is the ``shared/<key>`` row.  ``split=False``: ``old`` is stored as one
    row (a store from before parts), so every row of ``new`` is written."""
    new_root, new_parts = carve(new, parts)
    old_root, old_parts = carve(old, parts) if split else (None, {})
    put: dict[tuple, Any] = {} if split and old_root == new_root else {(): new_root}
    gone: list[tuple] = []
    for path in old_parts.keys() | new_parts.keys():
        before, after = old_parts.get(path), new_parts.get(path)
        if before is after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):  # the common step: no copies
            _dict_changes(path, before, after, put, gone)
            continue
        was = _rows(path, before) if before is not None else {}
        now = _rows(path, after) if after is not None else {}
        for row, v in now.items():
            if row not in was or (was[row] is not v and was[row] != v):
                put[row] = v
        gone.extend(row for row in was if row not in now)
    return put, gone


_ABSENT = object()


def _dict_changes(path: tuple, before: dict, after: dict, put: dict, gone: list) -> None:
    """``changes`` for one dict part, entry by entry without building its rows: a step that
    adds one pending posting to 10,000 compares 10,000 references (the roles keep the entries
    they do not change), not 20,000 new tuples (5 ms a step at the issuer)."""
    for k, v in after.items():
        was = before.get(k, _ABSENT)
        if was is not v and was != v:
            put[(*path, k)] = v
    if len(before) > len(after) or not after.keys() >= before.keys():
        gone.extend((*path, k) for k in before.keys() - after.keys())


def row_key(name: str, path: tuple) -> str:
    """``shared/<key>`` for the root, else with the entry's JSON path after SEP."""
    return name if not path else name + SEP + json.dumps(list(path), separators=(",", ":"))


def join(root: Any, rows: list[tuple[list, Any]]) -> Any:
    """The value from its ``shared/<key>`` row and its entries' (path, value)."""
    root = _unplace(root)
    for path, v in sorted(rows, key=lambda r: r[0]):
        node = root
        for k in path[:-2]:
            node = node[k]
        container = node[path[-2]]
        if isinstance(container, list):
            container.extend(v)
        else:
            container[path[-1]] = v
    return root


def _unplace(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if PART in node:
        return [] if node[PART] == "list" else {}
    return {k: _unplace(v) for k, v in node.items()}


def load(store, name: str) -> tuple[Any, bool]:
    """(the shared state ``name`` = ``shared/<key>``, is it stored in parts?).  ``store``: a
    Store or Transaction.  The root row and its parts come from ONE query, so a reader in
    another process (the cli, a benchmark) never joins a root and parts of different commits."""
    read = getattr(store, "query", None) or (lambda sql, p: store.execute(sql, p).fetchall())
    found = read("SELECT txkey, kind, value FROM role_state WHERE txkey = ? "
                 "OR (txkey > ? AND txkey < ?)", (name, name + SEP, name + chr(ord(SEP) + 1)))
    root, rows = None, []
    for key, kind, value in found:
        if key == name:
            root = _decode_value(kind, value)
        else:
            rows.append((json.loads(key[len(name) + 1:]), _decode_value(kind, value)))
    if not rows and not _placed(root):
        return root, False
    return join(root, rows), True


def _placed(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    return PART in node or any(_placed(v) for v in node.values())


def save(tx, name: str, old: Any, new: Mapping, parts: Sequence[str], *, split: bool) -> None:
    """Write ``new`` over ``old`` (what ``load`` gave) in ``tx``, only the rows that changed."""
    put, gone = changes(old, new, parts, split=split)
    for path in gone:
        tx.delete_state(row_key(name, path))
    for path, v in put.items():
        tx.put_state(row_key(name, path), v)
