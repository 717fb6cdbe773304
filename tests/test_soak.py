"""scripts/soak, small: purchases with refunds, voids and the batches' settlement while random
processes are SIGKILLed and restarted; nothing lost, nothing doubled, the books exact.  The long
run (200 purchases) is marked slow."""
from __future__ import annotations

import re

import pytest

from setmail.bench.soak import draw_plans, run


def _soak(tmp_path, n: int, kill_every: float, seed: int) -> tuple[int, str]:
    lines: list[str] = []
    code = run(n, kill_every=kill_every, seed=seed, home=tmp_path, log=lines.append)
    return code, "\n".join(lines)


def test_plans_cover_every_flow():
    import random
    plans = draw_plans(40, random.Random(7))
    assert {"capture", "refund", "capture2", "void"} <= set(plans)


def test_small_soak_under_kills(tmp_path):
    code, out = _soak(tmp_path, 20, 0.6, 11)
    assert code == 0, out
    assert "lost: 0, doubled: 0" in out
    kills = int(re.search(r"kills: (\d+)", out).group(1))
    assert kills >= 2, out
    assert "died on their own: 0" in out


@pytest.mark.slow
def test_soak_200(tmp_path):
    code, out = _soak(tmp_path, 200, 2.0, 200)
    assert code == 0, out
