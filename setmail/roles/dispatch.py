"""One agent, several roles: ``Dispatch`` routes each event to the sub-role that owns it.

A cardholder's agent runs registration (``CardholderRegistration``) and purchases (``Wallet``) on
one store and one mailbox.  Each sub-role keys its transactions by fresh random ids (LID-EE hex,
XID hex), so their keys share one namespace without colliding, and each keeps its own table.

Routing, all decided before any state is read (the agent needs the key first):

* commands and inbound messages by name: the one sub-role whose TRANSITIONS mention it (a name
  claimed by two sub-roles is refused at construction);
* a SET Error by its MessageHeader: the first sub-role that claims the Error's message ids (its
  ``claims_error(ids)``, else the presence of its ``LID_FIELD``, the message id that keys its
  transactions), so list the most specific first: the wallet's lid-M before registration's
  lid-C, which purchase messages carry too.  The sub-role then judges it (``roles.exchange``: only
  its pinned counterpart naming its exact bytes ends a request).  An Error no sub-role claims goes
  to ``errors_to`` (a party's main role, which judges every Error it is sent, as it did alone),
  else it is absorbed here (``Outcome.refused``): never answered, nothing stored;
* timers by payload: every timer a sub-role sets (an exchange's re-send, a poll, an expiry) is
  tagged ``payload["role"] = its name``; an untagged timer goes to the last sub-role.

Shared state: the agent keeps one, under the ``shared_key`` of the ``primary`` sub-role (default:
the first that names one).  A sub-role naming the same key shares it (the wallet and registration
both keep the brand's BrandCRLIdentifier sequence in ``"brand"``: one brand, one sequence); a
sub-role naming another key gets its part *inside* the primary one, under its own key (a
merchant's registration and PCert client keep their ``"brand"`` sequences in the merchant's
shared state, next to the merchant's own: still one sequence per agent).

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

    def __init__(self, roles: Sequence[Role], name: str = "dispatch", *,
                 primary: str | None = None, errors_to: str | None = None):
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
        keyed = [r for r in self.roles if r.shared_key is not None]
        main = self.by_name.get(primary) if primary else (keyed[0] if keyed else None)
        self.shared_key = main.shared_key if main is not None else None
        self.shared_parts = main.shared_parts if main is not None else ()
        if errors_to is not None and errors_to not in self.by_name:
            raise ValueError(f"errors_to names no sub-role: {errors_to}")
        self.errors_to = self.by_name.get(errors_to) if errors_to else None
        self.tables = {r.name: r.TRANSITIONS for r in self.roles}
        self.TRANSITIONS = merge_tables(self.tables.values())

    def route(self, event: Event) -> Role | None:
        """The sub-role that takes ``event``; None for an Error no sub-role claims."""
        if isinstance(event, TimerFired):
            return self.by_name.get(str(event.payload.get("role")), self.roles[-1])
        if isinstance(event, Inbound) and event.message_type == "Error":
            ids = header_ids(event)
            return next((r for r in self.roles if _claims(r, ids)), self.errors_to)
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
        nested = role.shared_key is not None and role.shared_key != self.shared_key
        mine = (shared or {}).get(role.shared_key) if nested else shared
        out = role.step(state, event, now, mine)
        timers = tuple(dataclasses.replace(t, payload={**t.payload, "role": role.name})
                       if isinstance(t, SetTimer) else t for t in out.timers)
        changed = {"timers": timers}
        if nested and out.shared is not None:
            changed["shared"] = {**(shared or {}), role.shared_key: dict(out.shared)}
        elif nested or role.shared_key is None:
            changed["shared"] = None  # a sub-role without the agent's key never replaces it
        return dataclasses.replace(out, **changed)


def _claims(role: Role, ids: Mapping) -> bool:
    """Does ``role`` take an Error whose header carries ``ids``?"""
    claims = getattr(role, "claims_error", None)
    if claims is not None:
        return bool(claims(ids))
    field = getattr(role, "LID_FIELD", None)
    return bool(field and ids.get(field))
