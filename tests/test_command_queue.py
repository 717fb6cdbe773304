"""Queued commands under control, with real stores and a real SMTP server: a command past its
deadline is never carried out, a withdrawn one never runs, and withdrawing races the agent
safely (a command is withdrawn or carried out, never both)."""
from __future__ import annotations

import hashlib
import time

from setmail.agent import commands as cmdq
from tests.test_agent_runtime import SERVER, pump, world  # noqa: F401  (fixture)


def _tx(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def test_a_command_past_its_deadline_is_never_carried_out(world):  # noqa: F811
    _, agents, _, _ = world
    client = agents["client"]
    late = cmdq.submit(client.store, "ping", {"id": "late", "to": SERVER},
                       deadline=time.time() - 1)
    fresh = cmdq.submit(client.store, "ping", {"id": "fresh", "to": SERVER},
                        deadline=time.time() + 60)
    pump(agents)
    row = cmdq.get(client.store, late)
    assert row.status == "expired" and "deadline" in row.detail
    assert client.store.get_state("tx/" + _tx("late")) is None  # no purchase, no mail
    assert cmdq.get(client.store, fresh).status == "done"
    assert client.store.get_state("tx/" + _tx("fresh"))["state"] == "DONE"


def test_a_withdrawn_command_never_runs_and_its_secrets_go(world):  # noqa: F811
    _, agents, _, _ = world
    client = agents["client"]
    cid = cmdq.submit(client.store, "ping", {"id": "gone", "to": SERVER, "pan": "4111111111111111"})
    assert [r.id for r in cmdq.listing(client.store)] == [cid]
    assert cmdq.withdraw(client.store, cid, "cancelled by the user") is True
    assert cmdq.withdraw(client.store, cid, "again") is False  # only once
    pump(agents)
    row = cmdq.get(client.store, cid)
    assert row.status == "withdrawn" and row.detail == "cancelled by the user"
    assert row.args["pan"] == cmdq.REDACTED
    assert client.store.get_state("tx/" + _tx("gone")) is None
    assert cmdq.listing(client.store) == [] and len(cmdq.listing(client.store, every=True)) == 1


def test_a_command_withdrawn_while_the_agent_works_on_it_is_rolled_back(world):  # noqa: F811
    """The agent read the row as pending, then the user withdrew it before the commit: the whole
    transaction (state, outgoing mail) rolls back; nothing is sent."""
    _, agents, _, _ = world
    client = agents["client"]
    cid = cmdq.submit(client.store, "ping", {"id": "raced", "to": SERVER})
    step = client._step

    def withdraw_then_step(txkey, event):
        assert cmdq.withdraw(client.store, cid, "cancelled meanwhile")
        return step(txkey, event)

    client._step = withdraw_then_step
    client.process_commands()
    client._step = step
    pump(agents)
    assert cmdq.get(client.store, cid).status == "withdrawn"
    assert client.store.get_state("tx/" + _tx("raced")) is None
    assert client.store.outbox() == []


def test_a_command_already_taken_cannot_be_withdrawn(world):  # noqa: F811
    _, agents, _, _ = world
    client = agents["client"]
    cid = cmdq.submit(client.store, "ping", {"id": "taken", "to": SERVER})
    pump(agents)
    assert cmdq.withdraw(client.store, cid, "too late") is False
    assert cmdq.get(client.store, cid).status == "done"
