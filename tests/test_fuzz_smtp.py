"""scripts/fuzz, small: mutants of genuine SET mail over SMTP to every agent of a running world;
every process alive, no traceback, nothing changed, memory bounded, a genuine purchase after.
The full run (10,000 mutants) is marked slow."""
from __future__ import annotations

import re

import pytest

from setmail.bench.fuzz import run


def _fuzz(tmp_path, n: int, seed: int) -> tuple[int, str]:
    lines: list[str] = []
    code = run(n, seed=seed, home=tmp_path, log=lines.append)
    return code, "\n".join(lines)


def test_small_fuzz_over_smtp(tmp_path):
    code, out = _fuzz(tmp_path, 300, 3)
    assert code == 0, out
    accepted = int(re.search(r"accepted (\d+)", out).group(1))
    assert accepted > 200, out
    assert "quarantined" in out and "genuine purchase after the fuzz: completed" in out


@pytest.mark.slow
def test_fuzz_10000(tmp_path):
    code, out = _fuzz(tmp_path, 10000, 10)
    assert code == 0, out
