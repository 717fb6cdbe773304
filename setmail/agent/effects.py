"""Effect handlers: what an agent does with a role's ``Effect(kind, data)``.

A registry other issues extend (e.g. the issuer's ledger)::

    @register_effect("ledger.hold")
    def hold(ctx, tx, data): tx.execute("INSERT INTO ledger ...")          # inside the commit

    register_effect("wallet.key", after_commit=write_key)                   # files, after it

Two phases, so the all-or-nothing commit is kept even for effects that write files:

* ``in_tx(ctx, tx, data)`` runs inside the agent's single store transaction (SQL effects).
* ``after_commit(ctx, data)`` runs after the commit.  Its data is written to the
  ``agent_effect_journal`` table in the same transaction and deleted once applied; a restart
  re-applies whatever is still in the journal, so the handler must be idempotent (write a file
  atomically, same content).

A kind without a handler is kept in ``agent_effect_log`` (with a warning) rather than failing the
mail: the effect is not lost and a later handler can pick it up.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from setmail.world.files import write_private  # a world file; below the agent (issue 12)

log = logging.getLogger("setmail.agent")

JOURNAL_DDL = (
    "CREATE TABLE IF NOT EXISTS agent_effect_journal (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "kind TEXT NOT NULL, data TEXT NOT NULL, created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS agent_effect_log (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "kind TEXT NOT NULL, data TEXT NOT NULL, created_at REAL NOT NULL)",
)


@dataclass(frozen=True)
class EffectContext:
    """Where an agent keeps its files: ``home`` = ``<world>/agents/<name>``."""

    agent: str
    home: Path

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"


InTx = Callable[[EffectContext, Any, Mapping[str, Any]], None]
AfterCommit = Callable[[EffectContext, Mapping[str, Any]], None]


@dataclass(frozen=True)
class EffectHandler:
    kind: str
    in_tx: InTx | None = None
    after_commit: AfterCommit | None = None


HANDLERS: dict[str, EffectHandler] = {}


def register_effect(kind: str, *, in_tx: InTx | None = None,
                    after_commit: AfterCommit | None = None):
    """Register handlers for ``kind``; usable as a decorator for an ``in_tx`` handler."""
    if in_tx is not None or after_commit is not None:
        HANDLERS[kind] = EffectHandler(kind, in_tx, after_commit)
        return None

    def deco(fn: InTx) -> InTx:
        HANDLERS[kind] = EffectHandler(kind, fn, None)
        return fn
    return deco


# -- JSON with bytes ---------------------------------------------------------------------------
def _enc(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, Mapping):
        return {str(k): _enc(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_enc(v) for v in value]
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        return {k: _dec(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dec(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(_enc(value), separators=(",", ":"), sort_keys=True)


def loads(text: str) -> Any:
    return _dec(json.loads(text))


# -- the two phases ------------------------------------------------------------------------------
def stage(ctx: EffectContext, tx, effects) -> None:
    """Inside the commit: run in-transaction handlers, journal the after-commit ones."""
    for effect in effects:
        handler = HANDLERS.get(effect.kind)
        data = dict(effect.data)
        if handler is None:
            log.warning("%s: no handler for effect %s; kept in agent_effect_log", ctx.agent,
                        effect.kind)
            tx.execute("INSERT INTO agent_effect_log (kind, data, created_at) VALUES (?, ?, ?)",
                       (effect.kind, dumps(data), tx.now))
            continue
        if handler.in_tx is not None:
            handler.in_tx(ctx, tx, data)
        if handler.after_commit is not None:
            tx.execute("INSERT INTO agent_effect_journal (kind, data, created_at) VALUES (?, ?, ?)",
                       (effect.kind, dumps(data), tx.now))


def acts_outside(effects) -> bool:
    """Whether any of ``effects`` acts after the commit (files, a reload): such a step's commit
    must be durable before it acts, so it never joins a group commit (``Agent.grouped``)."""
    return any(getattr(HANDLERS.get(e.kind), "after_commit", None) is not None
               for e in effects)


def apply_journal(ctx: EffectContext, store, now: float) -> int:
    """Apply and delete journaled after-commit effects (oldest first); returns how many."""
    rows = store.query("SELECT id, kind, data FROM agent_effect_journal ORDER BY id")
    for row_id, kind, data in rows:
        handler = HANDLERS.get(kind)
        if handler is not None and handler.after_commit is not None:
            handler.after_commit(ctx, loads(data))
        with store.transaction(now=now) as tx:
            tx.execute("DELETE FROM agent_effect_journal WHERE id = ?", (row_id,))
            if '"secret"' in data:  # e.g. a new key's PEM, now in its 0600 file only
                tx.note_wipe()
    return len(rows)


# -- built-in handlers: the cardholder wallet ----------------------------------------------------
def _blob(data: Mapping[str, Any], *names: str) -> bytes:
    """The first str/bytes value under ``names``, looked up in ``data`` and ``data["secret"]``."""
    for where in (data, data.get("secret") or {}):
        for name in names:
            value = where.get(name)
            if isinstance(value, str):
                return value.encode()
            if isinstance(value, (bytes, bytearray)):
                return bytes(value)
    raise ValueError(f"effect data has none of {', '.join(names)}")


def _wallet_name(data: Mapping[str, Any]) -> str:
    name = str(data.get("key_id") or "wallet")
    return "".join(c for c in name if c.isalnum() or c in "-_.")[:64] or "wallet"


def _wallet_key(ctx: EffectContext, data: Mapping[str, Any]) -> None:
    """``keys/<key_id>.key.pem`` (0600): the cardholder's new signature key."""
    write_private(ctx.keys_dir / f"{_wallet_name(data)}.key.pem",
                  _blob(data, "private_key_pem", "key_pem", "pem"))


def _wallet_certificate(ctx: EffectContext, data: Mapping[str, Any]) -> None:
    """``keys/<key_id>.cert.pem``, ``.chain.pem``, ``.pansecret`` and the index ``wallet.json``."""
    name = _wallet_name(data)
    write_private(ctx.keys_dir / f"{name}.cert.pem",
                  _blob(data, "certificate_pem", "cert_pem", "pem"))
    chain = data.get("chain_pem") or []
    chain = [chain] if isinstance(chain, (str, bytes)) else chain
    if chain:
        write_private(ctx.keys_dir / f"{name}.chain.pem", b"".join(
            c.encode() if isinstance(c, str) else bytes(c) for c in chain))
    secret = (data.get("secret") or {}).get("pan_secret")
    if secret:
        write_private(ctx.keys_dir / f"{name}.pansecret", str(secret).encode() + b"\n")
    index_path = ctx.home / "wallet.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[name] = {k: data[k] for k in ("transaction", "key_id", "brand", "cardholder_id",
                                        "not_after", "pan_last4") if k in data}
    write_private(index_path, json.dumps(index, indent=2, sort_keys=True).encode())


register_effect("wallet.key", after_commit=_wallet_key)
register_effect("wallet.certificate", after_commit=_wallet_certificate)
