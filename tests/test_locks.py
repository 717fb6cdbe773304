"""One process per agent, with real processes: a second `setmail run`/`setmail agent` for a
running agent fails at once with one line and exit code 3; `init --force` refuses while an agent
of the world runs; a killed agent leaves no stale lock; in one process, a second Agent for the
same home is refused too."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from setmail.agent import Agent
from setmail.mail.smtpd import pick_free_port
from setmail.store.lock import AlreadyRunning, WorldBusy, agent_lock, world_lock
from setmail.world.create import create_world
from tests.test_agent_runtime import PingRole, make_agents

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("locks") / "world"
    create_world(home, smtp_port=pick_free_port(), certificates="direct")
    return home


def spawn(home: Path, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SETMAIL_FAULT", None)
    return subprocess.Popen([sys.executable, "-m", "setmail.cli.main", *argv, "--home", str(home)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_agent(home: Path, name: str) -> subprocess.Popen:
    proc = spawn(home, "run", "--agents", name, "--no-smtp", "--poll", "0.05")
    lock = home / "agents" / name / "agent.lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{name} did not take its lock: {proc.communicate()}")


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out, err


def refused(proc: subprocess.Popen, seconds: float = 20) -> list[str]:
    """The lines a refused process wrote on stderr (it must exit 3 within ``seconds``)."""
    start = time.monotonic()
    out, err = proc.communicate(timeout=seconds)
    assert proc.returncode == 3 and out == "", (proc.returncode, out, err)
    assert time.monotonic() - start < seconds
    return err.strip().splitlines()


def test_a_second_process_for_a_running_agent_fails_at_once(home):
    first = run_agent(home, "shop")
    try:
        line = f"setmail: error: agent shop is already running (pid {first.pid})"
        for argv in (("run", "--agents", "shop", "--no-smtp"), ("agent", "shop"),
                     ("run",), ("agent", "shop", "--smtp-listen", "127.0.0.1:1")):
            assert refused(spawn(home, *argv)) == [line], argv
        other = run_agent(home, "bob")  # the other agents of the world are free to run
        stop(other)
    finally:
        _, err = stop(first)
    assert "Traceback" not in err
    assert (home / "agents" / "shop" / "agent.lock").read_text() == ""  # the pid went with it
    stop(run_agent(home, "shop"))  # free again


def test_a_killed_agent_leaves_no_stale_lock(home):
    first = run_agent(home, "bob")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=20)
    stop(run_agent(home, "bob"))  # the kernel dropped the flock with the process


def test_init_force_refuses_while_an_agent_of_the_world_runs(tmp_path):
    home = tmp_path / "world"
    create_world(home, smtp_port=pick_free_port(), certificates="direct")
    toml = (home / "world.toml").read_bytes()
    running = run_agent(home, "gateway")
    try:
        proc = spawn(home, "init", "--force")
        [line] = refused(proc)
        assert line == (f"setmail: error: agent gateway is running (pid {running.pid}): stop it "
                        f"before re-creating the world at {home}")
        assert (home / "world.toml").read_bytes() == toml  # nothing was wiped
        assert (home / "agents" / "gateway" / "state.db").exists()
        assert (home / "agents" / "shop" / "keys" / "sig.key.pem").exists()
    finally:
        stop(running)
    proc = spawn(home, "init", "--force", "--smtp-port", str(pick_free_port()))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "created world" in out, err
    assert (home / "world.toml").read_bytes() != toml


def test_agents_do_not_start_while_init_holds_the_world(home):
    with world_lock(home, shared=False):
        lines = refused(spawn(home, "run", "--agents", "alice", "--no-smtp"))
    assert lines == [f"setmail: error: the world at {home} is being created by setmail init "
                     f"(pid {os.getpid()})"]
    stop(run_agent(home, "alice"))


def test_init_force_in_process_refuses_and_names_the_agent(home):
    with agent_lock(home / "agents" / "pca", "pca"):
        with pytest.raises(WorldBusy, match=rf"agent pca is running \(pid {os.getpid()}\)"):
            create_world(home, force=True)
    assert (home / "world.toml").exists()


def test_a_second_agent_object_in_one_process_is_refused(tmp_path):
    cfg = make_agents(tmp_path, pick_free_port())["client"]
    first = Agent(cfg, PingRole())
    try:
        with pytest.raises(AlreadyRunning, match=rf"agent client is already running "
                                                 rf"\(pid {os.getpid()}\)") as info:
            Agent(cfg, PingRole())
        assert info.value.pid == os.getpid() and info.value.exit_code == 3
        assert first.store.get_state("tx/x") is None  # the first one is unharmed
    finally:
        first.close()
    second = Agent(cfg, PingRole())  # closing released it
    second.close()
    second.close()  # idempotent
