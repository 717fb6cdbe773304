"""Breadth-first exploration of every interleaving of the model's events, up to a depth.

From each state, every event that may happen next is a successor:

* ``deliver`` any distinct mail in flight (every order of delivery);
* ``duplicate`` one: delivered while a copy stays in flight (a relay's or a sender's repeat);
* ``lose`` one: it never arrives (the parties' own retry timers must make up for it);
* ``timer``: the earliest pending timer fires, the clock moving to its due time (any one of
  several due at once); mail in flight meanwhile has simply been slow;
* ``crash`` a party: it restarts from its last commit.  The runtime commits a step's state,
  outbox, timers and effects in one transaction, so the state survives as it is and the only
  trace of the crash is the outbox of its last commit sent again (SMTP accepted it, the crash
  came before the row was deleted);
* ``replay``: the attacker sends any mail seen on the wire so far again, to its addressee or to
  any other party that takes that type of message.

Duplicates, losses, crashes and replays each have a budget per path.  States are deduplicated by
``System.key``; each new state is checked (``invariants.violations``) and settled
(``world.settle``: every mail delivered in order, every timer fired) to check that every
purchase still ends, and ends agreed (``invariants.unsettled``), the settling run's states being
checked on the way.  BFS, so the first trace found to a violation is a shortest one.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from setmail.check.invariants import unsettled, violations
from setmail.check.model import Mail, Roles, System
from setmail.check.world import SETTLE_LIMIT, settle, timer_label

FAULTS = ("duplicate", "lose", "crash", "replay")


@dataclass(frozen=True)
class Bounds:
    """How far to look: BFS depth and the faults allowed on one path."""

    depth: int = 12
    duplicate: int = 1
    lose: int = 1
    crash: int = 0
    replay: int = 0
    #: stop after this many distinct violations (each with its shortest trace)
    max_violations: int = 5


@dataclass
class Finding:
    problem: str
    trace: list[str]


@dataclass
class Report:
    """What the exploration saw: distinct states, transitions, depth reached, per-level counts,
    the role steps (and how many came from the cache), time and the findings."""

    states: int = 0
    transitions: int = 0
    depth: int = 0
    levels: list[int] = field(default_factory=list)
    settled: int = 0
    seconds: float = 0.0
    role_steps: int = 0
    role_computed: int = 0
    complete: bool = False  # the frontier ran out before the depth bound
    findings: list[Finding] = field(default_factory=list)


class Explorer:
    def __init__(self, roles: Roles, initial: System, purchases, bounds: Bounds):
        self.roles, self.initial, self.purchases, self.bounds = roles, initial, purchases, bounds
        self.index = {a: i for i, a in enumerate(roles.addresses)}
        self.parent: dict[str, tuple[str | None, str]] = {initial.key: (None, "start")}
        self.verdict: dict[str, tuple[str, list[str]] | None] = {}
        self.report = Report()
        self._problems: set[str] = set()

    # -- successors -----------------------------------------------------------------------------
    def successors(self, s: System):
        """(label, next state, bug) of every event that may happen in ``s``."""
        b, roles = self.bounds, self.roles
        for mail in s.mails():
            r = roles.deliver(s, mail)
            yield f"deliver {mail.label()}", r.system, r.bug
            if s.uses("duplicate") < b.duplicate:
                r = roles.deliver(s, mail, keep=True)
                yield f"duplicate {mail.label()}", r.system.spend("duplicate"), r.bug
            if s.uses("lose") < b.lose:
                yield f"lose {mail.label()}", s.with_flight(remove=mail).spend("lose"), None
        timers = s.timers()
        for due, i, tx, name in timers:
            if due != timers[0][0]:
                break
            r = roles.fire(s, i, tx, name)
            yield timer_label(roles, s, i, tx, name), r.system, r.bug
        if s.uses("crash") < b.crash:
            for i, local in enumerate(s.parties):
                if local.outbox:
                    again = ", ".join(m.type for m in local.outbox)
                    yield (f"crash {roles.addresses[i].split('@')[0]}: restarts, its last "
                           f"outbox sent again ({again})",
                           s.with_flight(local.outbox, track=roles.track_seen).spend("crash"),
                           None)
        if s.uses("replay") < b.replay:
            for mail in sorted(s.seen):
                for to in self._targets(mail):
                    copy = Mail(to, mail.sender, mail.type, mail.digest)
                    r = roles.deliver(s.with_flight((copy,)), copy)
                    yield f"replay {mail.label()} to {to.split('@')[0]}", \
                        r.system.spend("replay"), r.bug

    def _targets(self, mail: Mail) -> list[str]:
        """The addressee and every other party whose role takes this type of message."""
        out = [mail.to]
        for address, role in zip(self.roles.addresses, self.roles.roles):
            if address != mail.to and any(mail.type in events
                                          for events in role.TRANSITIONS.values()):
                out.append(address)
        return out

    # -- checks ---------------------------------------------------------------------------------
    def _check(self, s: System, bug: str | None) -> list[str]:
        return ([f"role bug: {bug}"] if bug else []) + violations(s, self.index, self.purchases)

    def _settles(self, s: System) -> tuple[str, list[str]] | None:
        """None if ``s`` settles to an agreed quiet state with every invariant kept on the way;
        else (problem, the settling steps up to it).  Memoised on every state it passes."""
        if s.key in self.verdict:
            return self.verdict[s.key]
        self.report.settled += 1
        quiet, path, problem = settle(self.roles, s, SETTLE_LIMIT)
        labels = [label for label, _ in path]
        verdict, seen = None, [s.key]
        for n, (_, state) in enumerate(path):
            known = self.verdict.get(state.key, False)
            if known is not False:  # settled before: the same end from here
                verdict = None if known is None else (known[0], labels[:n + 1] + known[1])
                break
            seen.append(state.key)
            problems = violations(state, self.index, self.purchases)
            if problems:
                verdict = (problems[0], labels[:n + 1])
                break
        else:
            problems = [problem] if problem else unsettled(quiet, self.index, self.purchases)
            if problems:
                verdict = (problems[0], [*labels, "(quiet: nothing in flight, no timer)"])
        for n, key in enumerate(seen):  # every state on the way ends the same way
            self.verdict.setdefault(key, None if verdict is None else (verdict[0], verdict[1][n:]))
        return verdict

    def trace(self, key: str) -> list[str]:
        steps = []
        while key is not None:
            key, label = self.parent[key]
            steps.append(label)
        return steps[::-1][1:]

    def _found(self, problem: str, key: str, tail: list[str] = ()) -> None:
        kind = re.sub(r"[0-9a-f]{8,}…?|\d+", "#", problem)
        if kind in self._problems:
            return
        self._problems.add(kind)
        self.report.findings.append(Finding(problem, self.trace(key) + list(tail)))

    # -- the search -----------------------------------------------------------------------------
    def run(self, progress=None) -> Report:
        start, rep = time.monotonic(), self.report
        frontier = [self.initial]
        rep.states, rep.levels = 1, [1]
        self._visit(self.initial, self.initial.key, None)
        for depth in range(1, self.bounds.depth + 1):
            nxt = []
            for s in frontier:
                for label, t, bug in self.successors(s):
                    rep.transitions += 1
                    if t.key in self.parent:
                        continue
                    self.parent[t.key] = (s.key, label)
                    rep.states += 1
                    self._visit(t, t.key, bug)
                    nxt.append(t)
                if len(rep.findings) >= self.bounds.max_violations:
                    break
            if not nxt:
                rep.complete = True
                break
            rep.depth, frontier = depth, nxt
            rep.levels.append(len(nxt))
            if progress:
                progress(depth, len(nxt), rep.states, time.monotonic() - start)
            if len(rep.findings) >= self.bounds.max_violations:
                break
        rep.seconds = time.monotonic() - start
        rep.role_steps = self.roles.steps
        rep.role_computed = self.roles.steps - self.roles.cached
        return rep

    def _visit(self, s: System, key: str, bug: str | None) -> None:
        problems = self._check(s, bug)
        if problems:
            self._found(problems[0], key)
            return
        verdict = self._settles(s)
        if verdict is not None:
            self._found(verdict[0], key, ["— then, settling —", *verdict[1]])
