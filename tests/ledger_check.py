"""The ledger's invariant as every lifecycle test checks it at its end (``setmail.agent.
ledger_check``: available = limit - held - posted + credited per card, every hold released exactly
once, credits never above captures, reversals never above holds).

``assert_ledger_holds(target)`` / ``ledger_violations(target)`` take:

* a running or created world (``tests.e2e_world.RunningWorld``, a ``World``, or a world's home
  ``Path``): every issuer agent's store, as ``setmail ledger --check`` reads it;
* a role-level ``tests.roles_net.Net``: the issuer role's effects are written to a fresh Store,
  one commit per effect as the agent does, with its transaction states and shared totals, then
  checked the same way (``issuer=`` its address; default: the one issuer role of the net);
* a ``Store`` of an issuer.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from setmail.agent.ledger_check import check_ledger


def _issuer_stores(target):
    from setmail.agent.commands import open_store
    from setmail.world import load_world
    world = getattr(target, "world", target)
    if isinstance(world, (str, Path)):
        world = load_world(Path(world))
    for spec in world.agents_of_kind("issuer"):
        store = open_store(world.store_path(spec.name))
        try:
            yield spec.name, store
        finally:
            store.close()


def _net_violations(net, issuer: str | None) -> list[dict]:
    from setmail.agent.effects import EffectContext, stage
    from setmail.money import currency_code
    from setmail.roles.issuer import Issuer
    from setmail.store import Store
    from setmail.world.create import ACCOUNTS_DDL
    if issuer is None:
        (issuer,) = [a for a, r in net.roles.items() if isinstance(r, Issuer)]
    role = net.roles[issuer]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "issuer.db")
        try:
            with store.transaction(now=0.0) as tx:
                for statement in ACCOUNTS_DDL:
                    tx.execute(statement)
                for pan, a in role.config.accounts.items():
                    tx.execute("INSERT INTO issuer_accounts VALUES (?, ?, ?, ?, ?, 0, ?)",
                               (pan, a.expiry, a.holder, a.limit, currency_code(a.currency),
                                a.status))
            for n, (address, effect) in enumerate(net.effects):
                if address == issuer:
                    with store.transaction(now=float(n + 1)) as tx:
                        stage(EffectContext(issuer, Path(tmp)), tx, [effect])
            with store.transaction(now=0.0) as tx:
                for (address, key), state in net.states.items():
                    if address == issuer:
                        tx.put_state("tx/" + key, state)
                tx.put_state("shared/ledger", net.shared.get(issuer) or {})
            return check_ledger(store)
        finally:
            store.close()


def ledger_violations(target, issuer: str | None = None) -> list[dict]:
    """Every violation of the invariant in ``target``'s issuer ledger(s); [] when it holds."""
    if hasattr(target, "roles") and hasattr(target, "effects"):
        return _net_violations(target, issuer)
    if hasattr(target, "query") and hasattr(target, "get_state"):
        return check_ledger(target)
    out = []
    for name, store in _issuer_stores(target):
        if issuer in (None, name):
            out.extend({**v, "issuer": name} for v in check_ledger(store))
    return out


def assert_ledger_holds(target, issuer: str | None = None) -> None:
    found = ledger_violations(target, issuer)
    assert not found, "the ledger's invariant fails:\n" + "\n".join(
        f"  {v.get('issuer', '')} {v['where']}: {v['problem']} "
        f"({', '.join(e['kind'] + ' ' + str(e['amount']) for e in v['entries'])})"
        for v in found)
