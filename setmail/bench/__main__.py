"""scripts/bench entry point: ``python -m setmail.bench core|purchases|transport ...``."""
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
    tra = sub.add_parser("transport", help="N chains of 12 mails through the same runtime with no "
                         "cryptography: the store-and-forward floor, vs crypto-only")
    tra.add_argument("n", type=int, nargs="?", default=300, help="chains (default 300)")
    tra.add_argument("--window", type=int, default=16, help="chains in flight (default 16)")
    tra.add_argument("--size", type=int, default=6000, help="octets per mail's SET message")
    tra.add_argument("--state", type=int, default=4000, help="octets of transaction state")
    tra.add_argument("--seconds", type=float, default=5.0, help="crypto-only measuring time")
    tra.add_argument("--keep", action="store_true", help="keep the Maildirs and stores")
    sca = sub.add_parser("scale", help="batches of purchases in one growing world: CPU per "
                         "purchase, inspection commands and an agent's start after each")
    sca.add_argument("--sizes", default="100,1000",
                     help="comma-separated batch sizes, run one after another (default 100,1000)")
    sca.add_argument("--window", type=int, default=16, help="purchases in flight (default 16)")
    sca.add_argument("--fill", type=int, default=0, metavar="N",
                     help="then grow the merchant to N mails and N transactions by cloning "
                     "its history and time the commands on it (e.g. 100000)")
    sca.add_argument("--json", action="store_true", help="print JSON")
    sca.add_argument("--keep", action="store_true", help="keep the world directory")
    args = parser.parse_args(argv)
    if args.what == "scale":
        from setmail.bench.scale import run as run_scale
        try:
            sizes = [int(s) for s in args.sizes.split(",")]
        except ValueError:
            parser.error("--sizes takes comma-separated whole numbers, e.g. 100,1000")
        if min(sizes) < 1 or args.window < 1:
            parser.error("batch sizes and --window must be positive")
        if args.fill < 0:
            parser.error("--fill takes a number of mails, e.g. 100000")
        return run_scale(sizes, window=args.window, keep=args.keep, as_json=args.json,
                         fill=args.fill)
    if args.what == "transport":
        from setmail.bench.transport import run as run_transport
        if args.n < 1 or args.window < 1 or not 0 <= args.size <= 20000 or args.state < 0:
            parser.error("n and --window must be positive, --size 0..20000, --state >= 0")
        return run_transport(args.n, window=args.window, size=args.size, pad=args.state,
                             seconds=args.seconds, keep=args.keep)
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
