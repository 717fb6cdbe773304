"""The model's parties: a world on disk built by ``setmail init`` and its agents' own factories.

Merchant and gateway certificates come from init (``certificates="direct"``); each cardholder
registers with its Cardholder CA *through the roles* (CardholderRegistration and the CCA's role
on the model's network), and the wallet files are written by the agent's own effect handlers, so
the wallets the explorer drives are the ones ``setmail run`` would build.  The purchases are
queued as ``setmail buy`` queues them: the order to the merchant, ``buy`` to the wallet.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from pathlib import Path

from setmail.agent.effects import HANDLERS, EffectContext
from setmail.agent.factories import load_all
from setmail.agent.factory import ROLE_FACTORIES
from setmail.check.invariants import Purchase
from setmail.check.model import Local, Roles, System
from setmail.errors import WorldError
from setmail.money import currency_number
from setmail.world import load_world
from setmail.world.config import World
from setmail.world.create import create_world

#: (cardholder, merchant, amount in minor units) of the first, second, ... purchase
PURCHASES = (("alice", "shop", 1234), ("bob", "shop", 567))
#: steps a registration (or a settling run) may take before it is called stuck
SETTLE_LIMIT = 400


def settle(roles: Roles, system: System, limit: int = SETTLE_LIMIT, *, timers: bool = True
           ) -> tuple[System, list[tuple[str, System]], str | None]:
    """Deliver every mail in flight (in the canonical order of ``System.flight``) and fire the
    earliest timer when none is left, until nothing is in flight and no timer is pending.
    Returns the last state, each step's (label, state), and what went wrong (a role's bug, or
    no quiet state within ``limit`` steps), None if nothing did."""
    path: list[tuple[str, System]] = []
    for _ in range(limit):
        if system.flight:
            mail = system.flight[0][0]
            result, label = roles.deliver(system, mail), f"deliver {mail.label()}"
        elif timers and system.timers():
            _, i, tx, name = system.timers()[0]
            result = roles.fire(system, i, tx, name)
            label = timer_label(roles, system, i, tx, name)
        else:
            return system, path, None
        system = result.system
        path.append((label, system))
        if result.bug:
            return system, path, f"role bug: {result.bug}"
    return system, path, f"no quiet state within {limit} steps"


def timer_label(roles: Roles, system: System, i: int, tx: str, name: str) -> str:
    due = system.parties[i].timers[(tx, name)][0]
    return (f"timer {name} at {roles.addresses[i].split('@')[0]} (tx {tx[:8]}…) "
            f"fires at +{_hours(max(due, system.now))}")


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g} h"


class ModelWorld:
    """A world in ``home`` with certified cardholders; ``system(n)`` the model of n purchases."""

    def __init__(self, home: Path):
        create_world(home, certificates="direct")
        self.world: World = load_world(home)
        load_all()
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        self.t0 = now + dt.timedelta(minutes=1)
        self.shared: dict[str, str | None] = {}
        for holder, _, _ in PURCHASES:
            self._register(holder)

    def role(self, name: str, options: dict | None = None):
        """``name``'s role as its agent builds it, ``options`` laid over its world.toml ones."""
        spec = self.world.agent(name)
        spec = replace(spec, options={**spec.options, **(options or {})})
        return ROLE_FACTORIES[spec.kind](self.world, spec)

    def address(self, name: str) -> str:
        return self.world.agent(name).address

    def name(self, address: str) -> str:
        return next(s.name for s in self.world.agents.values() if s.address == address)

    def _register(self, holder: str) -> None:
        """``setmail register HOLDER`` through the roles; the effects written as the agent does."""
        spec = self.world.agent(holder)
        ca = self.world.agent(spec.options.get("ca", "cca"))
        card = self.world.cards_of(holder)[0]
        roles = Roles({spec.address: self.role(holder), ca.address: self.role(ca.name)}, self.t0)
        system = System((Local(), Local()))
        args = {"pan": card.pan, "expiry": card.expiry, "ca": ca.address,
                "brand": self.world.brand,
                "fields": {"CardholderName": holder.title(), "PostalCode": "10001"}}
        system = roles.command(system, 0, "register", args).system
        system, _, bug = settle(roles, system, timers=False)
        ctx = EffectContext(holder, self.world.agent_home(holder))
        for kind, data in system.parties[0].effects:
            handler = HANDLERS.get(kind)
            if handler is not None and handler.after_commit is not None:
                handler.after_commit(ctx, json.loads(data))
        card_ok = (ctx.home / "wallet.json").exists()
        if bug or not card_ok:
            raise WorldError(f"{holder} could not register with {ca.name}: "
                             f"{bug or system.parties[0].names}")
        self.shared[spec.address] = system.parties[0].shared

    def purchases(self, n: int) -> tuple[Purchase, ...]:
        if not 1 <= n <= len(PURCHASES):
            raise WorldError(f"the model has 1 to {len(PURCHASES)} purchases, not {n}")
        out = []
        for k, (holder, merchant, amount) in enumerate(PURCHASES[:n]):
            spec = self.world.agent(merchant)
            gateway = self.world.agent(spec.options["gateway"])
            issuer = self.world.agent(gateway.options.get("issuer", "bank"))
            card = self.world.cards_of(holder)[0]
            xid = hashlib.sha256(f"model purchase {k}".encode()).hexdigest()[:40]
            out.append(Purchase(self.address(holder), spec.address, gateway.address,
                                issuer.address, xid, card.pan,
                                f"model order {k + 1}: {amount} cents of {merchant} goods",
                                amount))
        return tuple(out)

    def system(self, n: int, *, track_seen: bool = False, options: dict | None = None
               ) -> tuple[Roles, System, tuple]:
        """The roles of n purchases' parties and the state once both commands are taken.
        ``options``: {agent name: world.toml options} laid over the world's."""
        purchases = self.purchases(n)
        names = {}
        for p in purchases:
            for address in (p.holder, p.merchant, p.gateway, p.issuer):
                names.setdefault(address, self.name(address))
        options = options or {}
        roles = Roles({a: self.role(name, options.get(name)) for a, name in names.items()},
                      self.t0, track_seen=track_seen)
        system = System(tuple(Local(shared=self.shared.get(a)) for a in roles.addresses))
        for p in purchases:
            card = self.world.cards_of(self.name(p.holder))[0]
            number, exp10 = currency_number(card.currency)
            money = {"amount": p.amount, "currency": number, "amt_exp10": exp10}
            order = {"xid": p.xid, "description": p.description, "cardholder": p.holder, **money}
            buy = {"xid": p.xid, "merchant": p.merchant, "pan": p.pan, "expiry": card.expiry,
                   "description": p.description, "brand": self.world.brand, **money}
            for address, name, args in ((p.merchant, "order", order), (p.holder, "buy", buy)):
                result = roles.command(system, roles.index[address.lower()], name, args)
                if result.status != "done":
                    raise WorldError(f"{name} at {address}: {result.status}")
                system = result.system
        return roles, system, purchases
