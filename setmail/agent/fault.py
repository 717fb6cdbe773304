"""Fault injection for crash tests: ``SETMAIL_FAULT=<point>[:<agent>][:<nth>]``.

The process dies with ``os._exit(99)`` (no cleanup, no flush: like a power cut for our purposes,
since every durable step fsyncs) the ``nth`` time (default 1) ``point`` is reached, counting only
hits by ``agent`` if one is named.  Several specs may be given, comma-separated.  Points:

``after_decode``     the mail is claimed and decoded, nothing committed
``after_commit``     the store transaction is committed, the mail is not yet marked done (cur/ ``:2,``)
``after_mark_done``  the mail is marked done (``:2,S``), its responses are still in the outbox
``mid_send``         inside a send batch: the next hop said 250 but the outbox row is not yet deleted
"""
from __future__ import annotations

import os
import sys
from collections import Counter

POINTS = ("after_decode", "after_commit", "after_mark_done", "mid_send")
EXIT_CODE = 99
ENV = "SETMAIL_FAULT"


def parse(spec: str | None) -> list[tuple[str, str | None, int]]:
    """``"after_commit:cca:2,mid_send"`` -> [("after_commit", "cca", 2), ("mid_send", None, 1)]."""
    out = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        point, agent, nth = parts[0], None, 1
        if point not in POINTS:
            raise ValueError(f"{ENV}: unknown fault point {point!r}; points: {', '.join(POINTS)}")
        for extra in parts[1:3]:
            if extra.isdigit():
                nth = int(extra)
            elif extra:
                agent = extra
        out.append((point, agent, max(nth, 1)))
    return out


class FaultPlan:
    def __init__(self, spec: str | None = None):
        self.specs = parse(os.environ.get(ENV) if spec is None else spec)
        self.hits: Counter = Counter()

    def hit(self, point: str, agent: str) -> None:
        """Called at each named point; exits the process when a spec's count is reached."""
        for spec_point, spec_agent, nth in self.specs:
            if spec_point != point or (spec_agent is not None and spec_agent != agent):
                continue
            key = (spec_point, spec_agent)
            self.hits[key] += 1
            if self.hits[key] == nth:
                sys.stderr.write(f"setmail: FAULT INJECTED at {point} ({agent}, hit {nth})\n")
                sys.stderr.flush()
                os._exit(EXIT_CODE)


_plan: FaultPlan | None = None


def plan() -> FaultPlan:
    global _plan
    if _plan is None:
        _plan = FaultPlan()
    return _plan


def hit(point: str, agent: str) -> None:
    plan().hit(point, agent)


def reset(spec: str | None = None) -> None:
    """Re-read the environment (or use ``spec``); for tests."""
    global _plan
    _plan = FaultPlan(spec)
