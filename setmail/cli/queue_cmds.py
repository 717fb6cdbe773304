"""``setmail queue list|cancel``: the commands waiting for an agent to pick them up.

Why: a command is a row in its agent's store (``agent.commands``), carried out when the agent
runs.  A user who queued a purchase while no agent was running must be able to see it and take it
back before it becomes a real payment.  Commands are named ``AGENT#ID`` (ids count per agent).
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, load

queue_app = typer.Typer(no_args_is_help=True, help="Commands waiting for their agent.")


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _rows(world, agent: str, every: bool):
    from setmail.agent import commands as cmdq
    path = world.store_path(agent)
    if not path.exists():
        return []
    store = cmdq.open_store(path)
    try:
        return cmdq.listing(store, every=every)
    finally:
        store.close()


def _shown(agent: str, row) -> dict:
    """A command without its arguments' values (a PAN, form fields): names only."""
    return {"command": f"{agent}#{row.id}", "agent": agent, "name": row.name,
            "status": row.status, "submitted": _when(row.submitted_at),
            "deadline": _when(row.deadline), "args": sorted(row.args), "detail": row.detail}


@queue_app.command("list")
def queue_list(agent: str = typer.Option(None, "--agent", help="one agent (default: all)"),
               every: bool = typer.Option(False, "--all", help="also the latest finished ones"),
               json_out: bool = typer.Option(False, "--json", help="print JSON"),
               home: Path = home_option()) -> None:
    """The commands waiting for their agent (with --all, the latest finished ones too)."""
    world = load(home)
    names = [world.agent(agent).name] if agent else list(world.agents)
    shown = [_shown(n, r) for n in names for r in _rows(world, n, every)]
    if json_out:
        typer.echo(json.dumps(shown, indent=2))
        return
    if not shown:
        typer.echo("no command waiting" if not every else "no command")
        return
    for c in shown:
        until = f"  until {c['deadline']}" if c["deadline"] else ""
        typer.echo(f"{c['command']:<12} {c['name']:<16} {c['status']:<10} {c['submitted']}{until}"
                   + (f"  {c['detail']}" if c["detail"] and c["status"] != "pending" else ""))


def parse_ref(ref: str, agent: str | None) -> tuple[str, int]:
    """``alice#3`` (or ``3`` with --agent alice) -> ("alice", 3); exit 2 otherwise."""
    name, _, number = ref.rpartition("#")
    name = name or agent or ""
    if not name or not number.isdigit():
        fail(f"name a command as AGENT#ID (as `setmail queue list` shows it), not {ref!r}")
    return name, int(number)


@queue_app.command("cancel")
def queue_cancel(ref: str = typer.Argument(..., help="the command, e.g. alice#3"),
                 agent: str = typer.Option(None, "--agent", help="agent, if REF is a bare id"),
                 home: Path = home_option()) -> None:
    """Withdraw a command its agent has not picked up yet: it will never be carried out."""
    from setmail.agent import commands as cmdq
    world = load(home)
    name, number = parse_ref(ref, agent)
    world.agent(name)
    store = cmdq.open_store(world.store_path(name))
    try:
        if cmdq.withdraw(store, number, "cancelled by the user (setmail queue cancel)"):
            typer.echo(f"{name}#{number} withdrawn: it will not be carried out")
            return
        row = cmdq.get(store, number)
    finally:
        store.close()
    if row is None:
        fail(f"{name} has no command #{number}")
    fail(f"{name}#{number} is {row.status} already: too late to cancel"
         + (" (follow it with `setmail tx show`)" if row.status == "done" else ""), 1)


def register_commands(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
