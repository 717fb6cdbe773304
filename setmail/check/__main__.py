"""``python -m setmail.check`` (``scripts/modelcheck``): explore, print the figures and findings.

Exit status 0: no invariant failed within the bound; 1: a finding (each printed with the shortest
sequence of steps that leads to it); 2: bad arguments.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from setmail.check.explore import Bounds, Explorer, Report
from setmail.check.world import ModelWorld


def _args(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="modelcheck", description=(
        "Explore every order of delivery of a purchase's mails with duplicates, losses, crashes "
        "and replays up to a bound, checking the invariants in every state (docs/modelcheck.md)."))
    ap.add_argument("--purchases", type=int, choices=(1, 2), default=1,
                    help="concurrent purchases at one merchant (default 1)")
    ap.add_argument("--depth", type=int, default=12, help="steps explored (default 12)")
    ap.add_argument("--duplicates", type=int, default=1, metavar="K",
                    help="duplicated mails per path (default 1)")
    ap.add_argument("--losses", type=int, default=1, metavar="K",
                    help="lost mails per path (default 1)")
    ap.add_argument("--crash", nargs="?", type=int, const=1, default=0, metavar="K",
                    help="crashes and restarts per path (default 0; --crash alone: 1)")
    ap.add_argument("--replay", nargs="?", type=int, const=1, default=0, metavar="K",
                    help="attacker replays per path (default 0; --replay alone: 1)")
    ap.add_argument("--max-findings", type=int, default=5, metavar="N",
                    help="stop after N distinct findings (default 5)")
    ap.add_argument("--quiet", action="store_true", help="no per-level progress")
    args = ap.parse_args(argv)
    if args.depth < 0 or min(args.duplicates, args.losses, args.crash, args.replay) < 0:
        ap.error("depth and budgets must not be negative")
    return args


def render(report: Report, bounds: Bounds, purchases: int) -> str:
    faults = ", ".join(f"{getattr(bounds, k)} {k}" for k in ("duplicate", "lose", "crash",
                                                              "replay"))
    lines = [f"modelcheck: {purchases} purchase(s), depth {bounds.depth}, per path: {faults}",
             f"explored {report.states} states, {report.transitions} transitions, to depth "
             f"{report.depth}{' (every state reached: the frontier ran out)' if report.complete else ''}"
             f", in {report.seconds:.1f} s",
             f"states per level: {' '.join(map(str, report.levels))}",
             f"settled (no deadlock) from every state: {report.settled} settling runs; role steps "
             f"{report.role_steps} ({report.role_computed} computed, the rest cached)"]
    if not report.findings:
        lines.append("no finding: every invariant held in every state")
    for n, finding in enumerate(report.findings, 1):
        lines.append(f"FINDING {n}: {finding.problem}")
        lines.append(f"  shortest trace ({sum(not s.startswith(('—', '(')) for s in finding.trace)}"
                     " steps):")
        lines += [f"    {k:3}. {step}" for k, step in enumerate(finding.trace, 1)]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _args(argv)
    bounds = Bounds(depth=args.depth, duplicate=args.duplicates, lose=args.losses,
                    crash=args.crash, replay=args.replay, max_violations=args.max_findings)
    with tempfile.TemporaryDirectory(prefix="modelcheck-") as tmp:
        world = ModelWorld(Path(tmp) / "world")
        roles, initial, purchases = world.system(args.purchases, track_seen=bounds.replay > 0)
        explorer = Explorer(roles, initial, purchases, bounds)

        def progress(depth, frontier, states, seconds):
            if not args.quiet:
                print(f"  depth {depth:3}: {frontier:7} new, {states:8} states, {seconds:7.1f} s",
                      file=sys.stderr, flush=True)
        report = explorer.run(progress)
    print(render(report, bounds, args.purchases))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
