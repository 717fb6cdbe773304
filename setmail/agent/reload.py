"""Rebuilding a running agent's role from its factory: the ``role.reload`` mechanism.

Why: a role is built from files (the party's keys and certificates, its copy of its gateway's
certificates, the world's CRLs and BrandCRLIdentifier, the certificates of the parties it pins)
and keeps them in its configuration; when they change while the agent runs, the agent builds its
role again rather than being restarted.  Four things make it do so:

* an effect ``role.reload`` (a registration, renewal or PCertRes that wrote new certificate files),
  applied *after* the commit and after the effects journal wrote those files;
* a response whose BrandCRLIdentifier is newer than the one the role was built with (SET's signal
  that the CRLs it holds are stale, ``stale``): the agent fetches the CRLs and BCI from the world's
  files, rebuilds, and judges that same event again with the new role (nothing of the first
  judgement was committed: roles are sans-I/O);
* a watched file that changed (``Built.watch``): the brand's CRL publication for the parties that
  carry BCIs to others (CAs, gateways, merchants), the pinned certificates of an issuer's gateways,
  and the files a role that cannot be built yet is waiting for;
* the start of the agent (``setmail run`` builds every role from the files).

Durability: a reload changes nothing stored, so it needs no transaction of its own.  What it reads
was written by journaled after-commit effects that run before it; a crash before the reload (or
before those effects ran) leaves the journal in the store, the next start builds the role from the
files and re-applies the journal, and a journaled ``role.reload`` makes it rebuild once more.

A role that cannot be built yet (no certificate, no gateway certificate) is replaced by what can
run (its registration and PCert sub-roles only, or nothing: ``Waiting``); meanwhile the agent
*defers* what that stand-in does not take: mail stays claimed in ``cur/`` (nothing recorded), a
command stays pending, a timer stays due, and all are taken up after the rebuild.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from setmail.agent import effects as fx
from setmail.agent.effects import register_effect
from setmail.mail import maildir
from setmail.roles.base import Command, Inbound, Outcome, Role, TimerFired

log = logging.getLogger("setmail.agent")

#: the effect that asks the agent to rebuild its role after the commit
RELOAD = "role.reload"
#: at most one look at the watched files per this many seconds
WATCH_EVERY = 1.0


@dataclass(frozen=True)
class Built:
    """What a factory made: the ``role``; ``ready`` False when the party's own role could not be
    built yet (``waiting`` says for what); ``bci_sequence``, the brand's BCI sequence of the files
    it was built from (None: none); ``watch``, files whose change (appearing included) rebuilds it."""

    role: Role
    ready: bool = True
    waiting: str = ""
    bci_sequence: int | None = None
    watch: tuple[Path, ...] = ()
    stamps: tuple = field(default=(), compare=False)

    def stamped(self) -> Built:
        return dataclasses.replace(self, stamps=stamps(self.watch))


class Waiting(Role):
    """A party with nothing to run yet (an issuer whose gateway has no certificate): it takes no
    event, so the agent defers them all until a rebuild."""

    name = "waiting"
    TRANSITIONS: Mapping = {}

    def transaction_key(self, event) -> str:
        return "waiting"


def stamps(paths) -> tuple:
    """(path, mtime_ns, size) of each path, None for one that does not exist."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(path), None, None))
    return tuple(out)


def takes(role: Role, event) -> bool:
    """Whether ``role`` (a stand-in) can take ``event`` now rather than defer it."""
    routes = getattr(role, "routes", None)
    if isinstance(event, TimerFired):
        return str(event.payload.get("role")) in getattr(role, "by_name", {})
    if isinstance(event, Inbound) and event.message_type == "Error":
        return routes is not None  # a Dispatch routes it, or absorbs what nobody claims
    name = event.event if isinstance(event, (Inbound, Command)) else ""
    if routes is not None:
        return name in routes
    return any(name in events for events in role.TRANSITIONS.values())


def brand_sequence(role: Role, shared: Mapping | None) -> int | None:
    """The highest BCI sequence in a role's shared state: ``"brand"`` itself, or nested in the
    agent's own key (``Dispatch``)."""
    if not isinstance(shared, Mapping):
        return None
    seqs = shared if role.shared_key == "brand" else shared.get("brand")
    if not isinstance(seqs, Mapping):
        return None
    return max((v for v in seqs.values() if isinstance(v, int)), default=None)


class Reloader:
    """The agent's current ``Built`` and how to make the next one (``build``)."""

    def __init__(self, build: Callable[[], Built], built: Built, *,
                 clock: Callable[[], float] = time.monotonic):
        self.build = build
        self.built = built.stamped()
        self.clock = clock
        self._looked = clock()
        self._tried = -1   # the newest BCI sequence a reload was already tried for

    @property
    def ready(self) -> bool:
        return self.built.ready

    def takes(self, event) -> bool:
        return self.built.ready or takes(self.built.role, event)

    def stale(self, role: Role, outcome: Outcome) -> str | None:
        """Why ``outcome`` makes the role stale: it took a BCI newer than the files the role was
        built from (once per sequence: files that lag behind are not read in a loop)."""
        if outcome.refused is not None:
            return None
        seen = brand_sequence(role, outcome.shared)
        known = max(-1 if self.built.bci_sequence is None else self.built.bci_sequence,
                    self._tried)
        if seen is None or seen <= known:
            return None
        self._tried = seen
        return (f"a BrandCRLIdentifier with sequence {seen} (the role's CRLs are those of "
                f"sequence {self.built.bci_sequence})")

    def changed(self) -> str | None:
        """Which watched file changed since the build (looked at most once per WATCH_EVERY)."""
        now = self.clock()
        if now - self._looked < WATCH_EVERY or not self.built.watch:
            return None
        self._looked = now
        for before, after in zip(self.built.stamps, stamps(self.built.watch)):
            if before != after:
                return f"{Path(after[0]).name} changed ({after[0]})"
        return None

    def rebuild(self, why: str, agent: str) -> Built | None:
        """The new ``Built``, or None (logged) when the factory fails: the old role runs on.
        A watched file is remembered as it was *before* the build: one that changed while the
        factory read it (another agent writing it) makes the next look rebuild again."""
        before = {s[0]: s for s in stamps(self.built.watch)}
        try:
            built = self.build()
            built = dataclasses.replace(built, stamps=tuple(
                before.get(s[0], s) for s in stamps(built.watch)))
        except Exception as exc:  # a broken file must not stop the agent
            log.error("%-8s RELOAD failed (%s): %s", agent, why, exc)
            self._looked = self.clock()
            self.built = Built(self.built.role, self.built.ready, self.built.waiting,
                               self.built.bci_sequence, self.built.watch,
                               stamps(self.built.watch))  # not again until the next change
            return None
        self.built = built
        self._looked = self.clock()
        state = "ready" if built.ready else f"waiting for {built.waiting}"
        log.info("%-8s RELOAD role %s, %s: %s", agent, built.role.name, state, why)
        return built


def journaled(store) -> bool:
    """Whether the effects journal holds a ``role.reload`` (a crash came before the reload)."""
    return bool(store.query("SELECT 1 FROM agent_effect_journal WHERE kind = ? LIMIT 1",
                            (RELOAD,)))


def asks_reload(outcome: Outcome) -> str | None:
    """The reason of the ``role.reload`` effect an outcome carries, or None."""
    for effect in outcome.effects:
        if effect.kind == RELOAD:
            return str(effect.data.get("why") or "a role.reload effect")
    return None


class Reloading:
    """The agent's side (``runtime.Agent`` mixes it in): rebuild, watch, replay the journal,
    defer.  Needs ``reloader``, ``role``, ``rescan``, ``store``, ``ctx``, ``config``, ``name``."""

    def reload(self, why: str) -> bool:
        """Build the role again from its factory (the files changed); whether it was."""
        built = self.reloader.rebuild(why, self.name) if self.reloader is not None else None
        if built is None:
            return False
        self.role, self.rescan = built.role, True
        return True

    def poll_reload(self) -> list[str]:
        """Rebuild if a watched file changed; the mail keys to take up again after a rebuild."""
        why = self.reloader.changed() if self.reloader is not None else None
        if why is not None:
            self.reload(why)
        if not self.rescan:
            return []
        self.rescan = False
        keys = [e.key for e in maildir.pending(self.config.maildir)]
        self.rescanned = set(keys)
        return keys

    def _apply_journal(self, now: float, asked: str | None = None, *, look: bool = True) -> None:
        """Apply journaled effects, then rebuild if ``asked`` (the commit's own ``role.reload``)
        or, when ``look``ing (after a crash), if the journal holds one."""
        if look and asked is None and self.reloader is not None and journaled(self.store):
            asked = "a role.reload left in the effects journal"
        fx.apply_journal(self.ctx, self.store, now)
        if asked is not None:
            self.reload(asked)

    def _defer(self, key: str, mtype: str) -> str:
        """Mail the role cannot take before it is rebuilt: left claimed in ``cur/`` (nothing
        recorded), taken up after the rebuild or at the next start."""
        if key not in self._deferred:
            self._deferred.add(key)
            log.info("%-8s IN   %-14s deferred until its role is built (waiting for %s)",
                     self.name, mtype, self.reloader.built.waiting)
        return "deferred"


def _noop(ctx, data) -> None:
    """Journaled only: the agent reloads once the effects before it have written their files."""


register_effect(RELOAD, after_commit=_noop)
