"""One running world per test module (tests/adversary/harness.py), shared by its tests in file
order; every agent a test stopped or crashed is started again after it."""
from __future__ import annotations

import pytest

from tests.adversary.harness import Attacker, keep_running, start_world


@pytest.fixture(scope="module")
def rw(tmp_path_factory, request):
    world = start_world(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
                        / "world")
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture(scope="module")
def attacker(rw):
    return Attacker(rw)


@pytest.fixture(autouse=True)
def _agents_running(request):
    yield
    if "rw" in request.fixturenames:
        keep_running(request.getfixturevalue("rw"))
