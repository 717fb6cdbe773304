"""scripts/bench entry point: ``python -m setmail.bench core [--seconds S]``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    core = sub.add_parser("core", help="build+parse rate of a signed-and-enveloped message vs its RSA ops")
    core.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    core.add_argument("--suite", default="rsa2048", help="crypto suite (rsa2048 or rsa3072)")
    args = parser.parse_args(argv)
    if args.what == "core":
        from setmail.bench.core import run
        return run(seconds=args.seconds, suite_name=args.suite)
    return 2


if __name__ == "__main__":
    sys.exit(main())
