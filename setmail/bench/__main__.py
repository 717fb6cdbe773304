"""scripts/bench entry point: ``python -m setmail.bench core|purchases ...``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    core = sub.add_parser("core", help="build+parse rate of a signed-and-enveloped message vs its RSA ops")
    core.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    core.add_argument("--suite", default="rsa2048", help="crypto suite (rsa2048 or rsa3072)")
    pur = sub.add_parser("purchases", help="N complete purchases over SMTP, all agents, vs the "
                         "same cryptography alone")
    pur.add_argument("n", type=int, nargs="?", default=200, help="purchases (default 200)")
    pur.add_argument("--sizes", default=None,
                     help="comma-separated batch sizes run one after another in one world, "
                     "e.g. 100,2000 (shows whether the per-purchase cost stays flat)")
    pur.add_argument("--window", type=int, default=16, help="purchases in flight (default 16)")
    pur.add_argument("--seconds", type=float, default=5.0, help="crypto-only measuring time")
    pur.add_argument("--suite", default="rsa2048", help="crypto suite (rsa2048 or rsa3072)")
    pur.add_argument("--json", action="store_true", help="print JSON")
    pur.add_argument("--keep", action="store_true", help="keep the world directory")
    args = parser.parse_args(argv)
    if args.what == "purchases":
        from setmail.bench.purchases import run as run_purchases
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
        if args.n < 1 or (sizes and min(sizes) < 1) or args.window < 1:
            parser.error("purchase counts and --window must be positive")
        return run_purchases(args.n, sizes=sizes, window=args.window, seconds=args.seconds,
                             suite_name=args.suite, keep=args.keep, as_json=args.json)
    if args.what == "core":
        from setmail.bench.core import run
        return run(seconds=args.seconds, suite_name=args.suite)
    return 2


if __name__ == "__main__":
    sys.exit(main())
