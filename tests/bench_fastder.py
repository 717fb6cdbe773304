"""Micro-benchmark: ms per call of each builder switched to fastder, against its former asn1crypto
construction (tests/test_fastder_builders.py keeps those).  Not a test; run it by hand:

    .venv/bin/python -m tests.bench_fastder
"""
from __future__ import annotations

import timeit

from tests.test_fastder_builders import CASES, _call

#: the cases timed: the heaviest shape of each builder (BCI and AcqCardMsg present where possible)
TIMED = ["pinit_res_data/True", "auth_req_data", "cap_req_data", "p_res_data/AUTHORIZED/True/True",
         "p_res_data/CAPTURED/False/False", "auth_res_data/00/A1B2C3/True",
         "auth_res_baggage/True/True", "cap_res_data/success/True", "payload/IssAuthReq",
         "payload/IssAuthRes", "payload/IssCapReq", "payload/IssCapRes"]


def per_call(function, kwargs, repeat: int = 5) -> float:
    """Best of ``repeat`` runs, in ms per call."""
    _call(function, kwargs)
    timer = timeit.Timer(lambda: _call(function, kwargs))
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number * 1000


def main() -> None:
    cases = {label: (new, old, kwargs) for label, new, old, kwargs in CASES}
    print(f"{'builder':36} {'asn1crypto ms':>14} {'fastder ms':>11} {'speed-up':>9}")
    for label in TIMED:
        new, old, kwargs = cases[label]
        before, after = per_call(old, kwargs), per_call(new, kwargs)
        print(f"{label:36} {before:14.3f} {after:11.3f} {before / after:8.1f}x")


if __name__ == "__main__":
    main()
