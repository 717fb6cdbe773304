"""One agent, several roles: ``Dispatch`` routes each event to the sub-role that owns it.

A cardholder's agent runs registration (``CardholderRegistration``) and purchases (``Wallet``) on
one store and one mailbox.  Each sub-role keys its transactions by fresh random ids (LID-EE hex,
XID hex), so their keys share one namespace without colliding, and each keeps its own table.

Routing, all decided before any state is read (the agent needs the key first):

* commands and inbound messages by name: the one sub-role whose TRANSITIONS mention it (a name
  claimed by two sub-roles is refused at construction);
* a SET Error by its MessageHeader: the first sub-role whose ``LID_FIELD`` (the message id that
  keys its transactions) the Error's message ids carry, so list the most specific first: the
  wallet's lid-M before registration's lid-C, which purchase messages carry too.  The sub-role
  then judges it (``roles.exchange``: only its pinned counterpart naming its exact bytes ends a
  request).  An Error that names no sub-role's transaction, or that does not decode, is absorbed
  here (``Outcome.refused``): never answered, nothing stored;
* timers by payload: every timer a sub-role sets (an exchange's re-send, a poll, an expiry) is
  tagged ``payload["role"] = its name``; an untagged timer goes to the last sub-role.

Shared state: the sub-roles may name one ``shared_key`` between them (the wallet and registration
both keep the brand's BrandCRLIdentifier sequence in ``"brand"``: one brand, one sequence).

``TRANSITIONS`` is the union of the sub-roles' tables (what the agent accepts in each state name;
for docs); ``tables`` keeps each one.  ``step`` is checked by the sub-role against its own table.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from setmail.errors import ProtocolError
from setmail.roles.base import Event, Inbound, Outcome, Role, SetTimer, TimerFired
from setmail.roles.wire import header_ids

#: the transaction key of an Error no sub-role claims (nothing is ever stored under it)
UNCLAIMED = "unclaimed-error"


def merge_tables(tables) -> dict[str, dict[str, tuple[str, ...]]]:
    """{state: {event: next states}} of several tables; next states of a shared entry unioned."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for table in tables:
        for state, events in table.items():
            row = out.setdefault(state, {})
            for event, nexts in events.items():
                nexts = (nexts,) if isinstance(nexts, str) else tuple(nexts)
                row[event] = tuple(dict.fromkeys((*row.get(event, ()), *nexts)))
    return out


class Dispatch(Role):
    """A composite role: the sub-roles' events, each handled by the sub-role that owns it."""

    def __init__(self, roles: Sequence[Role], name: str = "dispatch"):
        if not roles:
            raise ValueError("Dispatch needs at least one role")
        self.name, self.roles = name, tuple(roles)
        self.by_name = {r.name: r for r in self.roles}
        self.routes: dict[str, Role] = {}
        for role in self.roles:
            for event in {e for events in role.TRANSITIONS.values() for e in events}:
                if event == "Error" or event.startswith("timer:"):
                    continue
                owner = self.routes.setdefault(event, role)
                if owner is not role:
                    raise ValueError(f"{event} belongs to both {owner.name} and {role.name}")
        shared = {r.shared_key for r in self.roles} - {None}
        if len(shared) > 1:
            raise ValueError(f"sub-roles need different shared states: {sorted(shared)}")
        self.shared_key = next(iter(shared), None)
        self.tables = {r.name: r.TRANSITIONS for r in self.roles}
        self.TRANSITIONS = merge_tables(self.tables.values())

    def route(self, event: Event) -> Role | None:
        """The sub-role that takes ``event``; None for an Error no sub-role claims."""
        if isinstance(event, TimerFired):
            return self.by_name.get(str(event.payload.get("role")), self.roles[-1])
        if isinstance(event, Inbound) and event.message_type == "Error":
            ids = header_ids(event)
            return next((r for r in self.roles
                         if getattr(r, "LID_FIELD", None) and ids.get(r.LID_FIELD)), None)
        role = self.routes.get(event.event)
        if role is None:
            raise ProtocolError(f"{self.name}: no role takes {event.event}",
                                "messageNotSupported" if isinstance(event, Inbound) else None)
        return role

    def transaction_key(self, event: Event) -> str:
        role = self.route(event)
        return UNCLAIMED if role is None else role.transaction_key(event)

    def step(self, state: Mapping[str, Any] | None, event: Event, now: dt.datetime,
             shared: Mapping[str, Any] | None = None) -> Outcome:
        role = self.route(event)
        if role is None:
            return Outcome(UNCLAIMED, None, refused="Error names no transaction here: absorbed")
        out = role.step(state, event, now, shared)
        timers = tuple(dataclasses.replace(t, payload={**t.payload, "role": role.name})
                       if isinstance(t, SetTimer) else t for t in out.timers)
        return dataclasses.replace(out, timers=timers)
