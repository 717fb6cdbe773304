"""Rebuilding a running agent's role (``agent.reload``) with real stores, Maildirs and SMTP: an
agent whose role cannot be built yet defers its mail, commands and timers and takes them after
the rebuild; a ``role.reload`` effect rebuilds after the commit, also when a crash came between
the two; a response carrying a newer BCI rebuilds and is judged again; a watched file rebuilds."""
from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from setmail.agent import Agent, register_effect
from setmail.agent import commands as cmdq
from setmail.agent import effects as fx
from setmail.agent.reload import WATCH_EVERY, Built, Reloader, Waiting
from setmail.mail import maildir
from setmail.roles.base import START, Command, Effect, Outcome, Role, SetTimer, TimerFired
from setmail.roles.dispatch import Dispatch
from tests.test_agent_runtime import PingRole, make_agents, pump, two_agents


class Setup(Role):
    """What runs before the party's role can be built: command ``setup`` writes the file the
    role is built from (an after-commit effect) and asks for the rebuild."""

    name = "setup"
    TRANSITIONS = {START: {"setup": "SET"}, "SET": {"setup": "SET"}}

    def transaction_key(self, event):
        return "setup"

    def on_setup(self, state, event, now, shared):
        return Outcome("setup", {"state": "SET"}, effects=(
            Effect("test.ready", {"version": event.args.get("version", 1)}),
            Effect("role.reload", {"why": "set up"})))


def _ready(ctx, data):
    (ctx.home / "ready").write_text(str(data["version"]))


register_effect("test.ready", after_commit=_ready)


def builder(home: Path, count: list):
    """The factory: Setup alone until ``ready`` exists, then Setup and PingRole; the version in
    ``ready`` is the BCI sequence the role is 'built from'."""
    def build() -> Built:
        count.append(1)
        ready = home / "ready"
        if not ready.exists():
            return Built(Dispatch([Setup()], name="server"), ready=False, waiting="ready",
                         watch=(ready,))
        return Built(Dispatch([Setup(), PingRole()], name="server", primary="ping"),
                     bci_sequence=int(ready.read_text()), watch=(ready,))
    return build


def with_reloader(cfg, count, clock=None) -> Agent:
    build = builder(cfg.home, count)
    built = build()
    kwargs = {"clock": clock} if clock else {}
    return Agent(cfg, built.role, reloader=Reloader(build, built, **kwargs))


def test_mail_waits_for_the_role_and_is_taken_after_the_rebuild(tmp_path):
    with two_agents(tmp_path) as (agents, cfgs, _):
        agents["server"].close()
        count = []
        agents["server"] = server = with_reloader(cfgs["server"], count)
        assert not server.reloader.ready
        cmdq.submit(agents["client"].store, "ping", {"id": "early", "to": "server@b.example"})
        pump(agents)
        (waiting,) = maildir.pending(cfgs["server"].maildir)  # claimed, not done, not recorded
        assert waiting.folder == "cur" and not server.store.query("SELECT * FROM dedupe")
        assert server.process_mail(waiting.key) == "deferred"
        cmdq.submit(server.store, "setup", {})
        server.process_commands()  # commit, effect writes the file, then the rebuild
        assert server.reloader.ready and len(count) == 2
        assert server.poll_reload() == [waiting.key]
        pump(agents)
        assert agents["client"].store.get_state(
            "tx/" + PingRole().transaction_key(Command("ping", {"id": "early"})))["state"] == \
            "DONE"
        assert not maildir.pending(cfgs["server"].maildir)


def test_commands_and_timers_wait_for_the_role_that_takes_them(tmp_path):
    cfg = make_agents(tmp_path, 2525)["server"]
    count = []
    server = with_reloader(cfg, count)
    try:
        ping = cmdq.submit(server.store, "ping", {"id": "x", "to": "client@a.example"})
        tx_key = PingRole().transaction_key(Command("ping", {"id": "x"}))
        with server.store.transaction(now=0) as tx:  # a timer of the role not built yet
            tx.set_timer(f"{tx_key}/retry", 0, {"tx": tx_key, "name": "retry",
                                                "payload": {"role": "ping"}})
        assert server.process_commands() == 0 and server.fire_due_timers() == 0
        assert cmdq.get(server.store, ping).status == "pending"
        assert server.store.due_timers(server.clock())
        cmdq.submit(server.store, "setup", {})
        server.process_commands()
        assert server.reloader.ready
        server.process_commands()  # the next round takes what waited
        assert cmdq.get(server.store, ping).status == "done"
        assert server.fire_due_timers() == 1
    finally:
        server.close()


def test_a_crash_between_the_commit_and_the_rebuild_rebuilds_at_the_next_start(tmp_path):
    """The commit journaled the effects (file and reload); the process died before applying
    them.  The next start builds the stand-in (no file yet), applies the journal, rebuilds."""
    cfg = make_agents(tmp_path, 2525)["server"]
    count = []
    server = with_reloader(cfg, count)
    with server.store.transaction(now=0) as tx:
        fx.stage(server.ctx, tx, Setup().on_setup({}, Command("setup", {}), None, {}).effects)
    server.close()  # the crash: nothing after the commit ran
    assert not (cfg.home / "ready").exists()
    restarted = with_reloader(cfg, count)
    try:
        assert not restarted.reloader.ready
        restarted.recover()
        assert restarted.reloader.ready and (cfg.home / "ready").exists()
        assert not restarted.store.query("SELECT * FROM agent_effect_journal")
    finally:
        restarted.close()


class Judge(Role):
    """Accepts ``see`` naming a BCI sequence and records which build judged it (the version)."""

    name = "judge"
    shared_key = "brand"
    TRANSITIONS = {START: {"see": START}}

    def __init__(self, version: int):
        self.version = version

    def transaction_key(self, event):
        return "seen"

    def on_see(self, state, event, now, shared):
        seq = int(event.args["seq"])
        return Outcome("seen", {"state": START, "judged_by": self.version},
                       shared={**shared, "Visa": max(seq, shared.get("Visa", -1))})


def test_a_newer_bci_rebuilds_the_role_and_the_event_is_judged_again(tmp_path):
    cfg = make_agents(tmp_path, 2525)["client"]
    version = cfg.home / "version"
    cfg.home.mkdir(parents=True)
    version.write_text("4")
    builds = []

    def build():
        builds.append(1)
        return Built(Judge(int(version.read_text())), bci_sequence=int(version.read_text()))

    agent = Agent(cfg, build().role, reloader=Reloader(build, build()))
    try:
        version.write_text("5")  # `setmail revoke` published sequence 5
        cmdq.submit(agent.store, "see", {"seq": 5})
        agent.process_commands()
        assert agent.store.get_state("tx/seen")["judged_by"] == 5  # the first judgement dropped
        assert agent.store.get_state("shared/brand") == {"Visa": 5} and len(builds) == 3
        cmdq.submit(agent.store, "see", {"seq": 6})  # the files lag behind: one try, not a loop
        cmdq.submit(agent.store, "see", {"seq": 6})
        agent.process_commands()
        assert len(builds) == 4 and agent.store.get_state("tx/seen")["judged_by"] == 5
    finally:
        agent.close()


def test_a_watched_file_that_changes_rebuilds_the_role(tmp_path):
    cfg = make_agents(tmp_path, 2525)["server"]
    ticks = itertools.count(step=WATCH_EVERY)
    count = []
    server = with_reloader(cfg, count, clock=lambda: next(ticks))
    try:
        assert server.poll_reload() == [] and len(count) == 1  # nothing changed
        (cfg.home / "ready").write_text("7")  # what the stand-in waited for appears
        assert server.poll_reload() == [] and server.reloader.ready
        assert server.reloader.built.bci_sequence == 7 and len(count) == 2
        assert server.poll_reload() == [] and len(count) == 2
    finally:
        server.close()


def test_a_failing_factory_keeps_the_role_that_runs(tmp_path, caplog):
    cfg = make_agents(tmp_path, 2525)["server"]
    calls = []

    def build():
        calls.append(1)
        if len(calls) > 1:
            raise OSError("a half-written file")
        return Built(Waiting(), ready=False, waiting="something")

    agent = Agent(cfg, Waiting(), reloader=Reloader(build, build()))
    try:
        assert agent.reload("test") is False and agent.role.name == "waiting"
        assert "RELOAD failed" in caplog.text and "half-written" in caplog.text
    finally:
        agent.close()


@pytest.mark.parametrize("event,taken", [(Command("setup"), True), (Command("ping"), False),
                                         (TimerFired("retry", {"role": "setup"}), True),
                                         (TimerFired("retry", {"role": "ping"}), False),
                                         (TimerFired("retry", {}), False)])
def test_what_a_stand_in_takes(event, taken):
    from setmail.agent.reload import takes
    assert takes(Dispatch([Setup()]), event) is taken
    assert takes(Waiting(), event) is False


def test_timer_payload_roles_are_tagged_by_dispatch():
    now = dt.datetime.now(dt.timezone.utc)
    out = Dispatch([Setup(), PingRole()]).step(None, Command("ping", {
        "id": "a", "to": "x@y.example", "retry": 5}), now)
    assert out.timers and all(isinstance(t, SetTimer) and t.payload["role"] == "ping"
                              for t in out.timers)
