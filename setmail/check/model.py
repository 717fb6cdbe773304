"""The parties' roles on an in-memory network, stepped by the agent's own rules, as values.

A ``System`` is one global state: every party's committed store (``Local``: transaction states,
shared state, timers, dedupe records, effects), the multiset of mails in flight, the virtual
clock, the faults used so far and (for the attacker) every mail seen on the wire.  Everything is
immutable and hashed canonically (``System.key``), so the explorer can tell two orders of events
that lead to the same state apart from two that do not.

The rules are ``setmail.agent.runtime``'s, which commits a step's state, shared state, outbox,
timers, effects and dedupe record in ONE store transaction:

* a mail whose exact MessageWrapper DER the party accepted before (its dedupe record) changes no
  state: a request's stored answers are sent again at most ``MAX_RESENDS`` times, a response is
  absorbed (``agent.dedupe``);
* otherwise the role steps; a ``SetmailError`` quarantines the mail (nothing changes); a refused
  mail commits the role's note but records no dedupe entry; an accepted one records its answers,
  and a ``Send.answers`` adds the mail to the earlier request's record;
* a due timer steps the role with the transaction it was set for; the fired timer goes unless the
  step set it again; a step that raises drops the timer.

Roles are deterministic given (state, event, now, shared) except for fresh randomness (nonces,
content keys, RSA padding): ``Roles.step`` caches the first outcome computed for a (party,
transaction state, shared state, event, now) and uses it as the representative of every other.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from setmail.agent.dedupe import MAX_RESENDS
from setmail.asn1.wrapper import decode_wrapper
from setmail.errors import SetmailError
from setmail.roles.base import CancelTimer, Command, Inbound, Outcome, Role, SetTimer, TimerFired
from setmail.roles.base import is_response


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not plain data")


def canon(value: Any) -> str:
    """Canonical JSON (sorted keys, bytes as hex): what states are stored and hashed as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


_SHORT: dict[str, str] = {}


def short(text: str | None) -> str:
    """The SHA-256 of a state's JSON, computed once per distinct text (states are shared by
    every System that holds them)."""
    if text is None:
        return ""
    found = _SHORT.get(text)
    if found is None:
        found = _SHORT[text] = digest(text)[:32]
    return found


@dataclass(frozen=True, order=True)
class Mail:
    """One mail on the wire: its addressee, its From, the SET type and the SHA-256 of its DER
    (the bytes themselves are in ``Roles.ders``)."""

    to: str
    sender: str
    type: str
    digest: str

    def label(self) -> str:
        return f"{self.type} {self.sender.split('@')[0]}→{self.to.split('@')[0]} [{self.digest[:8]}]"


@dataclass(frozen=True)
class Local:
    """One party's committed store.  ``states``: {transaction: canonical JSON}; ``timers``:
    {(transaction, name): (due in model seconds, payload JSON)}; ``dedupe``: {digest: (re-sends,
    answers)}; ``effects``: every (kind, data JSON) committed, oldest first; ``outbox``: the mails
    of the last commit that sent any (what a crash may send again)."""

    states: Mapping[str, str] = field(default_factory=dict)
    shared: str | None = None
    timers: Mapping[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    dedupe: Mapping[str, tuple[int, tuple[Mail, ...]]] = field(default_factory=dict)
    effects: tuple[tuple[str, str], ...] = ()
    outbox: tuple[Mail, ...] = ()

    @cached_property
    def key(self) -> str:
        return digest(repr((sorted((tx, short(text)) for tx, text in self.states.items()),
                            short(self.shared), sorted(self.timers.items()),
                            sorted(self.dedupe.items()),
                            [(kind, short(data)) for kind, data in self.effects], self.outbox)))

    def state(self, tx: str) -> dict | None:
        text = self.states.get(tx)
        return None if text is None else json.loads(text)

    @cached_property
    def names(self) -> dict[str, str]:
        """{transaction: its state's name}."""
        return {tx: _name(text) for tx, text in self.states.items()}


_NAMES: dict[str, str] = {}


def _name(text: str) -> str:
    found = _NAMES.get(text)
    if found is None:
        found = _NAMES[text] = json.loads(text).get("state")
    return found


@dataclass(frozen=True)
class System:
    """A global state.  ``flight``: the mails in flight with their copies; ``now``: model seconds
    since ``Roles.t0``; ``used``: faults used so far by kind; ``seen``: every mail that was ever
    in flight (what the attacker may replay; empty unless replays are explored)."""

    parties: tuple[Local, ...]
    flight: tuple[tuple[Mail, int], ...] = ()
    now: int = 0
    used: tuple[tuple[str, int], ...] = ()
    seen: frozenset[Mail] = frozenset()

    @cached_property
    def key(self) -> str:
        return digest(repr(([p.key for p in self.parties], self.flight, self.now, self.used,
                            sorted(self.seen))))

    def uses(self, kind: str) -> int:
        return dict(self.used).get(kind, 0)

    def spend(self, kind: str) -> System:
        used = dict(self.used)
        used[kind] = used.get(kind, 0) + 1
        return replace(self, used=tuple(sorted(used.items())))

    def mails(self) -> list[Mail]:
        return [m for m, _ in self.flight]

    def with_flight(self, add: tuple[Mail, ...] = (), remove: Mail | None = None,
                    track: bool = False) -> System:
        count = Counter(dict(self.flight))
        if remove is not None:
            count[remove] -= 1
        count.update(add)
        seen = self.seen | set(add) if track else self.seen
        return replace(self, flight=tuple(sorted((m, n) for m, n in count.items() if n > 0)),
                       seen=seen)

    def timers(self) -> list[tuple[int, int, str, str]]:
        """Every pending timer as (due, party index, transaction, name), earliest first."""
        return sorted((due, i, tx, name) for i, p in enumerate(self.parties)
                      for (tx, name), (due, _) in p.timers.items())


@dataclass
class StepResult:
    """What one event did at one party: the new ``System``, the event's status as the agent
    logs it, and a bug if the role raised something other than a ``SetmailError``."""

    system: System
    status: str
    bug: str | None = None


@dataclass(frozen=True)
class Done:
    """A role's Outcome with what the agent commits already in canonical form (computed once
    per cached step): the state and shared state as JSON (None: deleted / unchanged), timers as
    (name, due in model seconds or None to cancel, payload JSON), effects as (kind, data JSON),
    and the mails with the request digest each also answers."""

    outcome: Outcome
    state: str | None
    shared: str | None
    timers: tuple[tuple[str, int | None, str], ...]
    effects: tuple[tuple[str, str], ...]
    mails: tuple[tuple[Mail, str | None], ...]

    @classmethod
    def of(cls, out: Outcome, roles: Roles, i: int) -> Done:
        timers = tuple((t.name, roles.seconds(t.due), canon(dict(t.payload)))
                       if isinstance(t, SetTimer) else (t.name, None, "")
                       for t in out.timers if isinstance(t, (SetTimer, CancelTimer)))
        mails = tuple((mail, send.answers) for send in out.sends
                      if (mail := roles.mail(roles.addresses[i], send)) is not None)
        keeps_shared = out.shared is not None and roles.roles[i].shared_key
        return cls(out, None if out.state is None else canon(dict(out.state)),
                   canon(dict(out.shared)) if keeps_shared else None, timers,
                   tuple((e.kind, canon(dict(e.data))) for e in out.effects), mails)


class Roles:
    """The parties (address -> role, in a fixed order), the model clock's origin, the DER of
    every mail and the cache of outcomes."""

    def __init__(self, roles: Mapping[str, Role], t0: dt.datetime, *, track_seen: bool = False):
        self.addresses = tuple(roles)
        self.index = {a.lower(): i for i, a in enumerate(self.addresses)}
        self.roles = tuple(roles[a] for a in self.addresses)
        self.t0 = t0
        self.track_seen = track_seen
        self.ders: dict[str, bytes] = {}
        self.dropped: Counter = Counter()  # mail to addresses outside the model, by type
        self._events: dict[tuple, Inbound] = {}
        self._keys: dict[tuple, str] = {}
        self._outcomes: dict[tuple, Outcome | SetmailError | Exception] = {}
        self.steps = self.cached = 0

    # -- time --------------------------------------------------------------------------------
    def at(self, seconds: int) -> dt.datetime:
        return self.t0 + dt.timedelta(seconds=seconds)

    def seconds(self, when: dt.datetime) -> int:
        return math.ceil((when - self.t0).total_seconds())

    # -- mails -------------------------------------------------------------------------------
    def mail(self, sender: str, send) -> Mail | None:
        """The ``Mail`` of a role's ``Send`` (None: addressed outside the model, dropped)."""
        if send.to.lower() not in self.index:
            self.dropped[send.message_type] += 1
            return None
        key = digest(send.wrapper_der)
        self.ders.setdefault(key, bytes(send.wrapper_der))
        return Mail(self.addresses[self.index[send.to.lower()]], sender, send.message_type, key)

    def inbound(self, mail: Mail) -> Inbound:
        """The event the agent makes of ``mail`` (its Message-ID stands for its content), one
        object per addressee (roles may keep what they opened on the event)."""
        key = (mail.to, mail.digest, mail.sender, mail.type)
        event = self._events.get(key)
        if event is None:
            der = self.ders[mail.digest]
            event = Inbound(mail.type, der, mail.sender, f"<{mail.digest[:24]}@model>",
                            decoded=decode_wrapper(der))
            self._events[key] = event
        return event

    def transaction_key(self, i: int, mail: Mail) -> str:
        key = (i, mail.digest, mail.sender, mail.type)
        if key not in self._keys:
            self._keys[key] = self.roles[i].transaction_key(self.inbound(mail))
        return self._keys[key]

    # -- the role step, cached ------------------------------------------------------------------
    def step(self, i: int, local: Local, tx: str, event, ident: tuple, now: int) -> Done:
        """``roles[i].step`` on the committed state; raises what the role raised."""
        role = self.roles[i]
        shared = local.shared if role.shared_key else None
        key = (i, tx, local.states.get(tx), shared, ident, now)
        self.steps += 1
        found = self._outcomes.get(key)
        if found is None:
            try:
                found = Done.of(role.step(local.state(tx), event, self.at(now),
                                          None if shared is None else json.loads(shared)),
                                self, i)
            except Exception as exc:  # noqa: BLE001 - judged by the caller, as the agent does
                found = exc
            self._outcomes[key] = found
        else:
            self.cached += 1
        if isinstance(found, Exception):
            raise found
        return found

    # -- the agent's commit ---------------------------------------------------------------------
    def commit(self, local: Local, tx: str, done: Done, *, accepted: str | None = None,
               fired: tuple[str, str, int] | None = None) -> tuple[Local, tuple[Mail, ...]]:
        """``Agent._commit``: the new Local and the mails queued.  ``accepted``: the digest of
        the mail to record for dedupe; ``fired``: (transaction, name, due) of the timer that
        fired (gone unless the step set it again)."""
        tx = done.outcome.transaction or tx
        states, timers, dedupe = dict(local.states), dict(local.timers), dict(local.dedupe)
        if done.state is None:
            states.pop(tx, None)
        else:
            states[tx] = done.state
        for name, due, payload in done.timers:
            if due is None:
                timers.pop((tx, name), None)
            else:
                timers[(tx, name)] = (due, payload)
        if fired is not None and timers.get(fired[:2], (None,))[0] == fired[2]:
            timers.pop(fired[:2])  # the runtime deletes the row by key and its old due time
        for mail, answers in done.mails:
            if answers and answers != accepted and answers in dedupe:
                resends, stored = dedupe[answers]
                dedupe[answers] = (resends, (*stored, mail))
        mails = tuple(mail for mail, _ in done.mails)
        if accepted is not None:
            dedupe[accepted] = (0, mails)
        new = Local(states, local.shared if done.shared is None else done.shared, timers, dedupe,
                    local.effects + done.effects, mails or local.outbox)
        return new, mails

    def _put(self, system: System, i: int, local: Local, mails=(), remove: Mail | None = None,
             now: int | None = None) -> System:
        parties = system.parties[:i] + (local,) + system.parties[i + 1:]
        out = replace(system, parties=parties, now=system.now if now is None else now)
        return out.with_flight(tuple(mails), remove, self.track_seen)

    # -- events ----------------------------------------------------------------------------------
    def deliver(self, system: System, mail: Mail, *, keep: bool = False) -> StepResult:
        """``Agent.process_mail`` of one copy of ``mail`` (``keep``: a duplicate, the copy in
        flight stays)."""
        i, remove = self.index[mail.to.lower()], None if keep else mail
        local = system.parties[i]
        record = local.dedupe.get(mail.digest)
        if record is not None:
            resends, answers = record
            if is_response(mail.type) or not answers or resends >= MAX_RESENDS:
                return StepResult(self._put(system, i, local, remove=remove), "absorbed")
            dedupe = {**local.dedupe, mail.digest: (resends + 1, answers)}
            local = replace(local, dedupe=dedupe)
            return StepResult(self._put(system, i, local, answers, remove), "duplicate")
        try:
            tx = self.transaction_key(i, mail)
            out = self.step(i, local, tx, self.inbound(mail), ("mail", mail.digest, mail.sender),
                            system.now)
        except SetmailError:
            return StepResult(self._put(system, i, local, remove=remove), "quarantined")
        except Exception as exc:  # noqa: BLE001 - the agent quarantines it; we report the bug
            return StepResult(self._put(system, i, local, remove=remove), "quarantined",
                              bug=f"{self.addresses[i]} raised {type(exc).__name__}: {exc} "
                                  f"on {mail.label()}")
        status = "refused" if out.outcome.refused is not None else "done"
        local, mails = self.commit(local, tx, out, accepted=mail.digest if status == "done"
                                   else None)
        return StepResult(self._put(system, i, local, mails, remove), status)

    def fire(self, system: System, i: int, tx: str, name: str) -> StepResult:
        """``Agent.fire_due_timers`` for one timer; the clock moves to its due time."""
        local = system.parties[i]
        due, payload = local.timers[(tx, name)]
        now = max(system.now, due)
        event = TimerFired(name, json.loads(payload))
        try:
            out = self.step(i, local, tx, event, ("timer", name, payload), now)
        except Exception as exc:  # noqa: BLE001 - the agent drops the timer
            timers = {k: v for k, v in local.timers.items() if k != (tx, name)}
            bug = None if isinstance(exc, SetmailError) else (
                f"{self.addresses[i]} raised {type(exc).__name__}: {exc} on timer {name}")
            return StepResult(self._put(system, i, replace(local, timers=timers), now=now),
                              "dropped", bug)
        local, mails = self.commit(local, tx, out, fired=(tx, name, due))
        return StepResult(self._put(system, i, local, mails, now=now), "fired")

    def command(self, system: System, i: int, name: str, args: Mapping[str, Any]) -> StepResult:
        """``Agent.process_commands`` for one command (committed even when refused)."""
        local, event = system.parties[i], Command(name, dict(args))
        try:
            tx = self.roles[i].transaction_key(event)
            out = self.step(i, local, tx, event, ("command", name, canon(dict(args))), system.now)
        except SetmailError as exc:
            return StepResult(system, f"failed: {exc}")
        local, mails = self.commit(local, tx, out)
        return StepResult(self._put(system, i, local, mails),
                          "refused" if out.outcome.refused else "done")
