"""``setmail tx list|show`` and ``setmail cancel``: the purchases of a world, and ending one
nobody has paid yet.

``tx list`` reads the merchants' and cardholders' stores (``txview.transactions``), filtered by
state and age; ``tx show`` every party's state of one purchase.  ``cancel`` queues the role
command ``cancel`` for the cardholder and the merchant that hold the purchase before its payment
(the wallet before its PReq, the merchant before the PReq reached it): they move to CANCELLED,
and a PReq arriving later is refused (unknownXID).  After the authorisation a purchase is voided
or refunded instead.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, json_option, load, wait_option, xid_of
from setmail.cli.show import money, money_json, short_xid, with_amounts
from setmail.cli.waiting import EXIT_REFUSED, End, View, Wait, report

tx_app = typer.Typer(no_args_is_help=True, help="List and show purchases.")
#: where each kind of party can still cancel a purchase (before the payment left it / reached it)
CANCELLABLE = {"cardholder": ("PINIT_SENT",), "merchant": ("ORDERED", "PARKED", "PINIT_SENT")}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """"90", "90s", "30m", "2h", "1d" -> seconds (exit 2 otherwise)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not match:
        fail(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1d)")
    return float(match[1]) * _UNITS[match[2] or "s"]


def _age(created, now: dt.datetime) -> float | None:
    try:
        when = dt.datetime.fromisoformat(str(created))
    except ValueError:
        return None
    return (now - (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc))).total_seconds()


def _short_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


@tx_app.command("list")
def tx_list(state: str = typer.Option(None, "--state", help="only purchases a party holds in "
                                      "one of these states, e.g. ORDERED,PINIT_SENT"),
            older_than: str = typer.Option(None, "--older-than", "--age", metavar="DURATION",
                                           help="only purchases started longer ago, e.g. 30m"),
            limit: int = typer.Option(50, "--limit", "-n", min=0,
                                      help="show at most this many, newest first (0: all)"),
            json_out: bool = json_option(), home: Path = home_option()) -> None:
    """The purchases the world's merchants and cardholders know, newest first."""
    from setmail.txview import transactions, with_details
    now = dt.datetime.now(dt.timezone.utc)
    world = load(home)
    wanted = {s.strip().upper() for s in (state or "").split(",") if s.strip()}
    minimum = duration(older_than) if older_than else None
    rows = []
    for r in transactions(world):  # the age only of the rows a filter or the listing needs
        if wanted and not wanted & {r.get("cardholder_state"), r.get("merchant_state")}:
            continue
        if minimum is not None:
            age = _age(r.get("created"), now)
            if age is None or age < minimum:
                continue
        rows.append(r)
    rows.reverse()
    more = len(rows) - limit if limit and len(rows) > limit else 0
    rows = with_details(world, rows[:limit] if more else rows)
    rows = [{**r, "age": _age(r.get("created"), now)} for r in rows]
    if more:
        typer.echo(f"({more} older purchase{'s' if more > 1 else ''} not shown: --limit 0 "
                   "shows all)", err=True)
    if json_out:
        typer.echo(json.dumps([_row_json(r) for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no purchase matches" if wanted or minimum else
                   "no purchases yet (start one with `setmail buy`)")
    for r in rows:
        amount = money(r.get("amount"), r.get("currency"), r.get("amt_exp10", -2))
        typer.echo(f"{short_xid(r['xid'])}  {amount:>14}  {_short_age(r['age']):>4}  "
                   f"{r.get('cardholder', '?')}:{r.get('cardholder_state') or '-'}  "
                   f"{r.get('merchant', '?')}:{r.get('merchant_state') or '-'}")


def _row_json(r: dict) -> dict:
    out = {k: v for k, v in r.items() if k not in ("amount", "currency", "amt_exp10", "age")}
    out["amount"] = money_json(r.get("amount"), r.get("currency"), r.get("amt_exp10", -2))
    out["age_seconds"] = None if r["age"] is None else round(r["age"], 1)
    return out


@tx_app.command("show")
def tx_show(xid: str = typer.Argument(..., help="the purchase's XID (or a unique prefix)"),
            json_out: bool = json_option(), home: Path = home_option()) -> None:
    """Each agent's state of one purchase: states, amounts, status codes (no secrets)."""
    from setmail.txview import agent_states
    world = load(home)
    xid = xid_of(world, xid)
    states = agent_states(world, xid)
    if not states:
        fail(f"no agent knows purchase {short_xid(xid)}")
    if json_out:
        typer.echo(json.dumps({"xid": xid, "agents": with_amounts(states)}, indent=2,
                              default=str))
        return
    typer.echo(f"purchase {xid}")
    for name, state in states.items():
        typer.echo(f"  {name} ({state.pop('kind')}): {state.pop('state', '?')}")
        for key, value in sorted(state.items()):
            if value not in (None, "", [], {}):
                typer.echo(f"      {key:<15} {_shown(key, value, state)}")


def _shown(key: str, value, state: dict) -> str:
    """A state value for people: amounts with their currency, DER blobs by size (--json has
    everything as stored)."""
    from setmail.cli.show import AMOUNT_KEYS
    if key in AMOUNT_KEYS and isinstance(value, int) and not isinstance(value, bool):
        shown = money(value, state.get("currency"), state.get("amt_exp10", -2))
        return shown if shown != "-" else str(value)
    if key == "xid" and isinstance(value, str):
        return value
    if isinstance(value, str) and len(value) > 64 and all(c in "0123456789abcdef" for c in value):
        return f"({len(value) // 2} octets, --json shows them)"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(k, v, state)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_shown(key, v, state) for v in value)
    return str(value)


def cancel(xid: str = typer.Argument(..., help="the purchase's XID (or a unique prefix)"),
           agent: str = typer.Option(None, "--agent", help="only this cardholder or merchant "
                                     "(default: every one here that can still cancel it)"),
           reason: str = typer.Option("cancelled by the user", "--reason",
                                      help="why (kept in the merchant's state)"),
           wait: float = wait_option("the cancellation"),
           json_out: bool = json_option(), home: Path = home_option()) -> None:
    """End a purchase nobody has paid yet, at the cardholder and/or the merchant.

    The wallet cancels until its PReq is out, the merchant until the PReq reaches it (a PReq
    arriving later is refused); after that the merchant voids or refunds (`setmail void`,
    `setmail refund`)."""
    from setmail.txview import agent_states
    world = load(home)
    xid = xid_of(world, xid)
    held = {n: s for n, s in agent_states(world, xid).items()
            if s["kind"] in CANCELLABLE and n in world.local_agents()}
    if agent is not None:
        world.agent(agent)
        if agent not in held:
            fail(f"{agent} holds no purchase {short_xid(xid)} here")
        held = {agent: held[agent]}
    if not held:
        fail(f"no cardholder or merchant here knows purchase {short_xid(xid)}")
    targets = [n for n, s in held.items() if s.get("state") in CANCELLABLE[s["kind"]]]
    if not targets:
        stands = ", ".join(f"{n} has it {s.get('state')}" for n, s in held.items())
        fail(f"{short_xid(xid)} cannot be cancelled: {stands}. "
             + ("Already cancelled." if all(s.get("state") == "CANCELLED" for s in held.values())
                else "After the PReq reached the merchant it voids the authorisation "
                "(`setmail void`) or refunds (`setmail refund`)."), EXIT_REFUSED)
    waiting = Wait(world, wait, what=f"cancelling {short_xid(xid)}", json_out=json_out)
    waiting.watch_purchase(xid)
    for name in targets:
        waiting.submit(name, "cancel", {"xid": xid, "reason": reason[:200]})

    def cancelled(view: View) -> End | None:
        states = {n: view.state(n, xid).get("state") for n in targets}
        if all(s == "CANCELLED" for s in states.values()):
            return End("done", f"{short_xid(xid)} cancelled at {' and '.join(targets)}",
                       fields={"xid": xid, "states": states})
        return None

    end = waiting.until(cancelled)
    if end.outcome == "queued":
        refs = [q.ref for q in waiting.queued]
        end.message = f"queued cancel of {short_xid(xid)} at {', '.join(refs)}"
        end.fields = {"xid": xid, "commands": refs}
    report(end, json_out=json_out, wait=waiting)


def register_commands(app: typer.Typer) -> None:
    app.add_typer(tx_app, name="tx")
    app.command("cancel")(cancel)
