"""``setmail trace XID --follow``: the purchase drawn as it happens.

It polls (the agents write their stores and Maildirs from other processes, and a poll sees the
same files a reader would), redraws the diagram in place with rich ``Live`` on a terminal, and
appends one plain line per mail once its recipient has judged it when the output is a pipe or a
file.  It ends when the purchase settles (``Trace.settled``), after ``timeout`` seconds, or on
Ctrl-C, leaving the last picture on the screen.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live

from setmail.tracedraw.model import Trace
from setmail.tracedraw.text import diagram, line

SETTLED, INTERRUPTED, TIMED_OUT = "settled", "interrupted", "timed out"


def follow(snapshot: Callable[[], Trace], console: Console, *, interval: float = 0.3,
           timeout: float = 0.0, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep,
           started: Callable[[], None] = lambda: None) -> tuple[str, Trace | None]:
    """Draw ``snapshot()`` until it settles; (how it ended, the last trace).  ``started`` runs
    once Ctrl-C is handled here (a caller announces itself with it)."""
    deadline = clock() + timeout if timeout > 0 else None
    last: Trace | None = None
    try:
        started()
        if console.is_terminal:
            with Live(console=console, auto_refresh=False, vertical_overflow="visible") as live:
                while True:
                    last = snapshot()
                    live.update(diagram(last, console.width), refresh=True)
                    if last.settled or (deadline is not None and clock() >= deadline):
                        break
                    sleep(interval)
        else:
            shown: set[tuple[str, str]] = set()
            while True:
                last = snapshot()
                done = last.settled or (deadline is not None and clock() >= deadline)
                for arrow in last.arrows:
                    if (arrow.recipient, arrow.key) not in shown and (
                            arrow.verdict != "pending" or done):
                        shown.add((arrow.recipient, arrow.key))
                        console.print(line(arrow), soft_wrap=True, highlight=False,
                                      markup=False)
                if done:
                    break
                sleep(interval)
    except KeyboardInterrupt:
        return INTERRUPTED, last
    if last is not None and last.settled:
        if not console.is_terminal:
            console.print("settled: " + ", ".join(f"{lane.name} {lane.state}" for lane in
                                                  last.lanes if lane.state),
                          soft_wrap=True, highlight=False, markup=False)
        return SETTLED, last
    return TIMED_OUT, last
