"""``setmail buy``, ``tx list|show``, ``capture``, ``inquire`` and ``trace`` (``ledger`` lives in
``ledger_cmds``).

``buy`` plays the shopping phase SET leaves outside the protocol: it picks the XID, hands the
order (description, amount) to the merchant's agent and the purchase to the cardholder's wallet,
both as queued commands; the agents do the rest by mail.  The other commands read the agents'
stores and Maildirs (``setmail.txview``) or queue a command for one agent.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from setmail.cli.common import cards_for, home_option, load
from setmail.cli.common import fail as _fail

EXIT_FAILED, EXIT_USAGE = 1, 2
#: wallet states after which nothing more happens without a new command
WALLET_FINAL = ("APPROVED", "CAPTURED", "DECLINED", "REJECTED", "FAILED")
tx_app = typer.Typer(no_args_is_help=True, help="List and show purchases.")


def _agent_of_kind(world, name: str, kind: str):
    spec = world.agent(name)
    if spec.kind != kind:
        _fail(f"{name} is a {spec.kind}, not a {kind}")
    return spec


def _submit(world, name: str, command: str, args: dict) -> int:
    from setmail.agent import commands as cmdq
    store = cmdq.open_store(world.store_path(name))
    try:
        return cmdq.submit(store, command, args)
    finally:
        store.close()


def _state(world, name: str, xid: str) -> dict:
    from setmail.txview import open_store
    store = open_store(world, name)
    try:
        return store.get_state("tx/" + xid) or {}
    finally:
        store.close()


def _command_failure(world, name: str, command_id: int) -> str | None:
    from setmail.agent import commands as cmdq
    store = cmdq.open_store(world.store_path(name))
    try:
        row = cmdq.get(store, command_id)
    finally:
        store.close()
    return (row.detail or "refused") if row is not None and row.status == "failed" else None


def _summary(state: dict) -> dict:
    from setmail.money import format_amount
    out = {"state": state.get("state")}
    for key in ("completion", "auth_code", "iso_code", "iso_text", "auth_amt", "cap_code",
                "failure", "refused"):
        if state.get(key) not in (None, ""):
            out[key] = state[key]
    if isinstance(out.get("auth_amt"), int) and state.get("currency"):
        out["auth_amt"] = format_amount(out["auth_amt"], state["currency"],
                                        state.get("amt_exp10", -2))
    return out


def buy(cardholder: str = typer.Option(..., "--cardholder", help="cardholder agent, e.g. alice"),
        merchant: str = typer.Option(..., "--merchant", help="merchant agent, e.g. shop"),
        amount: str = typer.Option(..., "--amount", help="amount in currency units, e.g. 12.34"),
        currency: str = typer.Option(None, "--currency",
                                     help="ISO 4217 code (default: the card's currency)"),
        description: str = typer.Option("setmail order", "--description",
                                         help="order description (only the merchant sees it)"),
        card: str = typer.Option(None, "--card", help="card name in world.toml "
                                 "(default: the cardholder's first card)"),
        ship_now: str = typer.Option(None, "--ship-now", help="authorise only this much now "
                                     "(a split shipment; the rest with `setmail authorize`)"),
        instalments: int = typer.Option(None, "--instalments", help="pay in N instalments "
                                        "(terms the cardholder signs in HOD)"),
        recurring: int = typer.Option(None, "--recurring", help="a recurring payment every DAYS "
                                      "days (with --until)"),
        until: str = typer.Option(None, "--until", help="last day of the recurring payments, "
                                  "YYYYMMDD"),
        wait: float = typer.Option(0.0, "--wait", help="seconds to wait for the outcome"),
        json_out: bool = typer.Option(False, "--json", help="print JSON"),
        xid: str = typer.Option(None, "--xid", help="the order's XID, when the merchant runs on "
                                "another host and took the order there (`setmail order`)"),
        home: Path = home_option()) -> None:
    """Start a purchase: print its XID; with --wait, the outcome (exit 1 unless approved)."""
    from setmail.crypto.suite import fresh
    from setmail.money import format_amount, parse_amount
    world = load(home)
    holder = _agent_of_kind(world, cardholder, "cardholder")
    shop = _agent_of_kind(world, merchant, "merchant")
    if not description.strip() or len(description) > 1000:
        _fail("--description must be 1..1000 characters")
    cards = cards_for(world, cardholder, card)
    minor, number, exp10 = parse_amount(amount, currency or cards[0].currency)
    terms = _terms(instalments, recurring, until)
    shop_here = merchant in world.local_agents()  # else its host took the order
    if not shop_here and not xid:
        _fail(f"{merchant} runs on another host: take the order there (`setmail order`) and "
              "give its --xid")
    from setmail.txview import normalise_xid
    xid = normalise_xid(xid) if xid else fresh(20).hex()
    order = {"xid": xid, "description": description, "amount": minor, "currency": number,
             "amt_exp10": exp10, "cardholder": holder.address, **terms}
    if ship_now is not None:
        order["ship_now"] = parse_amount(ship_now, currency or cards[0].currency)[0]
        if order["ship_now"] > minor:
            _fail("--ship-now is more than the amount")
    if shop_here:
        _submit(world, merchant, "order", order)
    buy_id = _submit(world, cardholder, "buy", {
        "xid": xid, "merchant": shop.address, "pan": cards[0].pan, "expiry": cards[0].expiry,
        "description": description, "amount": minor, "currency": number, "amt_exp10": exp10,
        "brand": world.brand, **terms})
    shown = format_amount(minor, number, exp10)
    if wait <= 0:
        typer.echo(json.dumps({"xid": xid, "amount": shown}) if json_out else xid)
        return
    if not json_out:
        typer.echo(f"{xid}  {cardholder} -> {merchant}  {shown}  (card ending {cards[0].pan[-4:]})")
    state = _wait_wallet(world, cardholder, xid, buy_id, wait)
    if state.get("state") == "APPROVED" and shop.options.get("auto_capture") and shop_here:
        merchant_state = _wait_merchant_captured(world, merchant, xid, wait)
        if merchant_state.get("state") == "CAPTURED":
            state = {**state, "captured": True}
    result = {"xid": xid, "amount": shown, **_summary(state),
              **({"captured": True} if state.get("captured") else {})}
    if json_out:
        typer.echo(json.dumps(result))
    else:
        typer.echo(_outcome_line(result))
    if result["state"] not in ("APPROVED", "CAPTURED"):
        raise typer.Exit(EXIT_FAILED)


def _terms(instalments: int | None, recurring: int | None, until: str | None) -> dict:
    """The ``buy``/``order`` arguments of the instalment or recurring terms (checked as the
    wallet and the merchant check them: one line and exit 2 otherwise)."""
    from setmail.roles.purchase_msgs import order_terms
    if (recurring is None) != (until is None):
        _fail("--recurring DAYS and --until YYYYMMDD go together")
    args = {"instalments": instalments} if instalments is not None else {}
    if recurring is not None:
        args["recurring"] = {"days": recurring, "until": until}
    try:
        order_terms(args)
    except ValueError as exc:
        _fail(str(exc))
    return args


def _outcome_line(r: dict) -> str:
    parts = [f"{r['xid'][:16]}…  {r['state']}"]
    for key in ("auth_code", "iso_code", "iso_text", "auth_amt", "failure", "refused"):
        if r.get(key):
            parts.append(f"{key}={r[key]}")
    if r.get("captured"):
        parts.append("captured")
    return "  ".join(str(p) for p in parts)


def _wait_wallet(world, name: str, xid: str, command_id: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    state: dict = {}
    while time.monotonic() < deadline:
        failure = _command_failure(world, name, command_id)
        if failure:
            return {"state": "FAILED", "failure": failure}
        state = _state(world, name, xid)
        if state.get("state") in WALLET_FINAL:
            return state
        time.sleep(0.1)
    return {"state": "TIMED OUT", "failure": f"still {state.get('state') or 'not started'} after "
            f"{seconds:g} s (is `setmail run` running?)"}


def _wait_merchant_captured(world, name: str, xid: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    state: dict = {}
    while time.monotonic() < deadline:
        state = _state(world, name, xid)
        if state.get("state") in ("CAPTURED", "DECLINED") or state.get("cap_code") not in (
                None, "success"):
            return state
        time.sleep(0.1)
    return state


def _holder_of(world, xid: str, kind: str) -> str:
    from setmail.txview import agent_states
    for name, state in agent_states(world, xid).items():
        if state["kind"] == kind:
            return name
    _fail(f"no {kind} knows purchase {xid}", EXIT_FAILED)
    return ""  # unreachable


@tx_app.command("list")
def tx_list(json_out: bool = typer.Option(False, "--json", help="print JSON"),
            home: Path = home_option()) -> None:
    """Every purchase the world's merchants and cardholders know."""
    from setmail.money import format_amount
    from setmail.txview import transactions
    rows = transactions(load(home))
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no purchases yet (start one with `setmail buy`)")
    for r in rows:
        amount = (format_amount(r["amount"], r.get("currency", 840), r.get("amt_exp10", -2))
                  if isinstance(r.get("amount"), int) else "?")
        typer.echo(f"{r['xid']}  {amount:>14}  {r.get('cardholder', '?')}:"
                   f"{r.get('cardholder_state') or '-'}  {r.get('merchant', '?')}:"
                   f"{r.get('merchant_state') or '-'}")


@tx_app.command("show")
def tx_show(xid: str = typer.Argument(..., help="the purchase's XID"),
            json_out: bool = typer.Option(False, "--json", help="print JSON"),
            home: Path = home_option()) -> None:
    """Each agent's state of one purchase: states, amounts, status codes (no secrets)."""
    from setmail.txview import agent_states, normalise_xid
    xid = normalise_xid(xid)
    states = agent_states(load(home), xid)
    if not states:
        _fail(f"no agent knows purchase {xid}", EXIT_FAILED)
    if json_out:
        typer.echo(json.dumps({"xid": xid, "agents": states}, indent=2, default=str))
        return
    typer.echo(f"purchase {xid}")
    for name, state in states.items():
        typer.echo(f"  {name} ({state.pop('kind')}): {state.pop('state', '?')}")
        for key, value in sorted(state.items()):
            if value not in (None, "", [], {}):
                typer.echo(f"      {key:<15} {_shown(key, value, state)}")


_AMOUNTS = ("amount", "auth_amt", "cap_amt", "cap_req_amt", "rev_amt", "late_amt",  # roles' state
            "captured", "credited", "ship_now", "reauth_amt",  # the merchant's lifecycle
            "authorized", "held")  # the issuer's


def _shown(key: str, value, state: dict) -> str:
    """A state value for people: amounts with their currency, DER blobs by size (--json has
    everything as stored)."""
    from setmail.money import format_amount
    if (key in _AMOUNTS and isinstance(value, int) and not isinstance(value, bool)
            and isinstance(state.get("currency"), int)):
        return format_amount(value, state["currency"], state.get("amt_exp10", -2))
    if isinstance(value, str) and len(value) > 64 and all(c in "0123456789abcdef" for c in value):
        return f"({len(value) // 2} octets, --json shows them)"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_shown(key, v, state) if not isinstance(v, dict) else
                         ", ".join(f"{k}={w}" for k, w in v.items()) for v in value)
    return str(value)


def capture(xid: str = typer.Argument(..., help="the purchase's XID"),
            amount: str = typer.Option(None, "--amount", help="amount to capture "
                                       "(default: what is authorised and not captured)"),
            reverse: bool = typer.Option(False, "--reverse", help="undo the latest capture "
                                         "instead (CapRevReq; `setmail capture-reverse`)"),
            wait: float = typer.Option(0.0, "--wait", help="seconds to wait for the CapRes"),
            home: Path = home_option()) -> None:
    """Ask the merchant's agent to capture an authorised purchase (CapReq to the gateway)."""
    from setmail.money import currency_code, parse_amount
    from setmail.txview import normalise_xid
    if reverse:
        if amount is not None:
            _fail("--reverse takes back the latest capture: it has no --amount")
        from setmail.cli.lifecycle_cmds import capture_reverse
        capture_reverse(xid, wait=wait, json_out=False, home=home)
        return
    world = load(home)
    xid = normalise_xid(xid)
    merchant = _holder_of(world, xid, "merchant")
    args: dict = {"xid": xid}
    before = _state(world, merchant, xid)
    if amount is not None:
        args["amount"], _, _ = parse_amount(amount, currency_code(before.get("currency", 840)))
    command_id = _submit(world, merchant, "capture", args)
    typer.echo(f"queued capture of {xid} for {merchant} as command #{command_id}")
    state = _await(world, merchant, xid, command_id, wait, "capture", "a CapRes",
                   lambda s: s.get("state") != "CAP_SENT"
                   and s.get("cap_rrpid") not in (None, before.get("cap_rrpid")))
    if state is not None:
        code = state.get("cap_code")
        typer.echo(f"{xid[:16]}…  {state.get('state')}  cap_code={code}  "
                   f"cap_amt={_shown('cap_amt', state.get('cap_amt'), state)}")
        if code != "success":
            raise typer.Exit(EXIT_FAILED)


def _await(world, agent: str, xid: str, command_id: int, wait: float, what: str, answer: str,
           done) -> dict | None:
    """Poll ``agent``'s state of ``xid`` until ``done(state)`` (returned), the command is refused
    (exit 1 with the reason) or ``wait`` seconds pass (exit 1); None when not asked to wait."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        failure = _command_failure(world, agent, command_id)
        if failure:
            _fail(f"{what} refused by {agent}: {failure}", EXIT_FAILED)
        state = _state(world, agent, xid)
        if done(state):
            return state
        time.sleep(0.1)
    if wait > 0:
        _fail(f"no {answer} within {wait:g} s", EXIT_FAILED)
    return None


def inquire(xid: str = typer.Argument(..., help="the purchase's XID"),
            wait: float = typer.Option(0.0, "--wait", help="seconds to wait for the InqRes"),
            home: Path = home_option()) -> None:
    """Ask the cardholder's wallet to send InqReq; with --wait, print the answer."""
    from setmail.txview import normalise_xid
    world = load(home)
    xid = normalise_xid(xid)
    holder = _holder_of(world, xid, "cardholder")
    before = _state(world, holder, xid).get("inquiries", 0)
    command_id = _submit(world, holder, "inquire", {"xid": xid})
    typer.echo(f"queued inquiry of {xid} for {holder} as command #{command_id}")
    state = _await(world, holder, xid, command_id, wait, "inquiry", "InqRes",
                   lambda s: s.get("inquiries", 0) > before and not s.get("inquiry_pending"))
    if state is not None:
        typer.echo(_outcome_line({"xid": xid, **_summary(state)}))


def register_commands(app: typer.Typer) -> None:
    app.command("buy")(buy)
    app.add_typer(tx_app, name="tx")
    app.command("capture")(capture)
    app.command("inquire")(inquire)
    from setmail.cli.trace_cmds import trace  # the pictures: setmail/tracedraw/
    app.command("trace")(trace)
