"""``setmail void``, ``refund``, ``authorize``, ``capture-reverse`` and ``batch``: what a merchant
does after the authorisation (docs/lifecycle.md).

Each command queues one command for the merchant's agent (the merchant that knows the purchase,
or ``--merchant`` for batches) and prints the command number; with ``--wait`` it polls the
merchant's state until the gateway's answer is in (the purchase's ``result`` names another
request's RRPID than before; a batch request's entry in the ``batches`` transaction has a result)
and prints it on one line, amounts with their currency: exit 0 when the gateway did it, 1 when it
refused (its SET code shown), when the merchant refused the command (its reason) or when no answer
came in time.  ``batch close`` also exits 1 when the close is OUT_OF_BALANCE; both totals are
printed, never hidden.  ``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import json
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, load
from setmail.cli.purchase_cmds import (EXIT_FAILED, _command_failure, _holder_of, _state,
                                       _submit)

batch_app = typer.Typer(no_args_is_help=True, help="A merchant's settlement batches.")
#: the merchant's states that wait for the gateway after the authorisation
WAITING = ("CAP_SENT", "REAUTH_SENT", "AUTHREV_SENT", "CRED_SENT", "CREDREV_SENT", "CAPREV_SENT")
#: SET codes that say the gateway did what was asked
DONE = ("approved", "success")


def _money(minor, state: dict) -> str:
    from setmail.money import format_amount
    if not isinstance(minor, int) or not isinstance(state.get("currency"), int):
        return "-"
    return format_amount(minor, state["currency"], state.get("amt_exp10", -2))


def _minor(text: str, state: dict, *, zero: bool = False) -> int:
    """An amount typed in currency units, in the purchase's currency (minor units)."""
    from setmail.money import currency_code, parse_amount
    if zero:
        try:
            if Decimal(text.strip()) == 0:
                return 0
        except (InvalidOperation, AttributeError):
            pass
    return parse_amount(text, currency_code(state.get("currency", 840)))[0]


def _purchase(world, xid: str) -> tuple[str, str, dict]:
    from setmail.txview import normalise_xid
    xid = normalise_xid(xid)
    merchant = _holder_of(world, xid, "merchant")
    return xid, merchant, _state(world, merchant, xid)


def _ask(world, xid: str, merchant: str, before: dict, command: str, args: dict, what: str,
         wait: float, json_out: bool) -> None:
    """Queue ``command`` for the merchant, and with ``wait`` print the gateway's answer."""
    command_id = _submit(world, merchant, command, {"xid": xid, **args})
    if wait <= 0:
        typer.echo(json.dumps({"xid": xid, "merchant": merchant, "command": command_id})
                   if json_out else f"queued {what} of {xid} for {merchant} as command "
                   f"#{command_id}")
        return
    old = (before.get("result") or {}).get("rrpid")
    deadline = time.monotonic() + wait
    while True:
        failure = _command_failure(world, merchant, command_id)
        if failure:
            fail(f"{what} refused by {merchant}: {_reason(failure)}", EXIT_FAILED)
        state = _state(world, merchant, xid)
        result = state.get("result") or {}
        if result.get("rrpid") not in (None, old) and state.get("state") not in WAITING:
            break
        if time.monotonic() >= deadline:
            fail(f"no answer from the gateway within {wait:g} s (is `setmail run` running?)",
                 EXIT_FAILED)
        time.sleep(0.1)
    _report(xid, state, json_out)
    if result.get("code") not in DONE:
        raise typer.Exit(EXIT_FAILED)


def _reason(failure: str) -> str:
    """The merchant's reason for refusing a command, without the exception's class and role
    name the agent records with it ("ProtocolError: merchant: void is not expected ...")."""
    for prefix in ("ProtocolError: ", "SetmailError: ", "merchant: "):
        failure = failure[len(prefix):] if failure.startswith(prefix) else failure
    return failure


def _report(xid: str, state: dict, json_out: bool) -> None:
    result = state.get("result") or {}
    shown = {"xid": xid, "state": state.get("state"), "request": result.get("request"),
             "code": result.get("code"), "amount": _money(result.get("amount"), state),
             "authorized": _money(state.get("auth_amt"), state),
             "captured": _money(state.get("captured", 0), state),
             "credited": _money(state.get("credited", 0), state)}
    if state.get("advice"):
        shown["advice"] = state["advice"]
    if json_out:
        typer.echo(json.dumps(shown))
        return
    line = (f"{xid[:16]}…  {shown['state']}  {shown['request']} {shown['code']}  "
            f"amount={shown['amount']}  authorized={shown['authorized']}  "
            f"captured={shown['captured']}  credited={shown['credited']}")
    typer.echo(line + (f"  advice: {shown['advice']}" if "advice" in shown else ""))


WAIT = typer.Option(0.0, "--wait", help="seconds to wait for the gateway's answer")
JSON = typer.Option(False, "--json", help="print JSON")


def void(xid: str = typer.Argument(..., help="the purchase's XID"),
         amount: str = typer.Option(None, "--amount", help="what stays authorised, e.g. 5.00 "
                                    "(default: nothing: the whole authorisation is cancelled)"),
         wait: float = WAIT, json_out: bool = JSON, home: Path = home_option()) -> None:
    """Cancel an authorisation, or reduce it before capture (AuthRevReq)."""
    world = load(home)
    xid, merchant, state = _purchase(world, xid)
    args = {} if amount is None else {"amount": _minor(amount, state, zero=True)}
    _ask(world, xid, merchant, state, "void", args, "void", wait, json_out)


def refund(xid: str = typer.Argument(..., help="the purchase's XID"),
           amount: str = typer.Option(None, "--amount", help="amount to credit (default: what "
                                      "is still refundable)"),
           reverse: bool = typer.Option(False, "--reverse", help="reverse the latest credit "
                                        "not yet settled instead (CredRevReq)"),
           wait: float = WAIT, json_out: bool = JSON, home: Path = home_option()) -> None:
    """Credit a captured purchase (CredReq), or reverse its latest credit (--reverse)."""
    world = load(home)
    if reverse and amount is not None:
        fail("--reverse takes back the latest credit: it has no --amount")
    xid, merchant, state = _purchase(world, xid)
    if reverse:
        _ask(world, xid, merchant, state, "refund_reverse", {}, "refund reversal", wait,
             json_out)
        return
    args = {} if amount is None else {"amount": _minor(amount, state)}
    _ask(world, xid, merchant, state, "refund", args, "refund", wait, json_out)


def capture_reverse(xid: str = typer.Argument(..., help="the purchase's XID"),
                    wait: float = WAIT, json_out: bool = JSON,
                    home: Path = home_option()) -> None:
    """Undo the latest capture before its batch settles (CapRevReq); the purchase is
    AUTHORIZED again.  Settled: the gateway says originalProcessed (refund instead)."""
    world = load(home)
    xid, merchant, state = _purchase(world, xid)
    _ask(world, xid, merchant, state, "capture_reverse", {}, "capture reversal", wait, json_out)


def authorize(xid: str = typer.Argument(..., help="the purchase's XID"),
              amount: str = typer.Option(None, "--amount", help="amount to authorise (default: "
                                         "the rest of a split order, the next instalment or "
                                         "recurring payment)"),
              wait: float = WAIT, json_out: bool = JSON, home: Path = home_option()) -> None:
    """Authorise more of a purchase with the gateway's AuthToken (split shipment, instalments,
    recurring payments)."""
    world = load(home)
    xid, merchant, state = _purchase(world, xid)
    args = {} if amount is None else {"amount": _minor(amount, state)}
    _ask(world, xid, merchant, state, "authorize", args, "authorisation", wait, json_out)


# --- batches ----------------------------------------------------------------------------------------
def _merchant(world, name: str | None) -> str:
    merchants = [a.name for a in world.agents_of_kind("merchant")]
    if name is None:
        if len(merchants) != 1:
            fail(f"give --merchant ({', '.join(merchants) or 'the world has none'})")
        return merchants[0]
    if name not in merchants:
        fail(f"{name} is no merchant of this world ({', '.join(merchants)})")
    return name


def _records(world, merchant: str) -> tuple[dict, dict]:
    """(batch records by id, the ``batches`` transaction's state) of a merchant's store."""
    from setmail.roles.merchant_batch import BATCHES, SHARED_KEY, merchant_shared
    from setmail.txview import open_store
    store = open_store(world, merchant)
    try:
        shared = merchant_shared(store.get_state("shared/" + SHARED_KEY))
        return shared["batches"], store.get_state("tx/" + BATCHES) or {}
    finally:
        store.close()


def _totals(t: dict | None, record: dict) -> str:
    if not t:
        return "-"
    money = lambda v: _money(v, record)  # noqa: E731
    return (f"debits {t['debit_count']} = {money(t['debit_total'])}, credits "
            f"{t['credit_count']} = {money(t['credit_total'])}, net {money(t['net'])}")


def _batch_request(world, merchant: str, operation: str, batch_id: int | None, wait: float):
    """Queue a batch command; with ``wait``, the request's entry once answered (else None)."""
    from setmail.crypto.suite import fresh
    ref = fresh(8).hex()
    command_id = _submit(world, merchant, "batch", {"operation": operation,
                                                    "batch_id": batch_id, "ref": ref})
    if wait <= 0:
        typer.echo(f"queued batch {operation} for {merchant} as command #{command_id}")
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        failure = _command_failure(world, merchant, command_id)
        if failure:
            fail(f"batch {operation} refused by {merchant}: {_reason(failure)}", EXIT_FAILED)
        entry = next((r for r in _records(world, merchant)[1].get("requests", [])
                      if r.get("ref") == ref and r.get("result")), None)
        if entry is not None:
            return entry
        time.sleep(0.1)
    fail(f"no answer from the gateway within {wait:g} s (is `setmail run` running?)",
         EXIT_FAILED)
    return None


@batch_app.command("list")
def batch_list(merchant: str = typer.Option(None, "--merchant", help="merchant agent"),
               json_out: bool = JSON, home: Path = home_option()) -> None:
    """The merchant's own record of its batches: status, items, totals, reconciliation."""
    world = load(home)
    name = _merchant(world, merchant)
    records, _ = _records(world, name)
    rows = sorted(records.values(), key=lambda r: r["id"])
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"{name} has no batch yet (captures and credits open one at the gateway)")
    from setmail.roles.merchant_batch import totals
    for r in rows:
        rec = (r.get("reconciliation") or {}).get("result", "-")
        typer.echo(f"batch {r['id']:<4} {r['status']:<7} items {len(r.get('items', [])):<4} "
                   f"{_totals(totals(r.get('items', [])), r)}  reconciliation {rec}")


@batch_app.command("show")
def batch_show(batch_id: int = typer.Argument(..., help="the batch id"),
               merchant: str = typer.Option(None, "--merchant", help="merchant agent"),
               query: bool = typer.Option(False, "--query", help="ask the gateway first "
                                          "(BatchAdminReq query) and compare"),
               wait: float = typer.Option(30.0, "--wait", help="with --query: seconds to wait"),
               json_out: bool = JSON, home: Path = home_option()) -> None:
    """One batch: its items, our totals and the gateway's, the reconciliation."""
    world = load(home)
    name = _merchant(world, merchant)
    if batch_id <= 0:
        fail("a batch id is a positive number")
    if query:
        entry = _batch_request(world, name, "query", batch_id, wait)
        if entry is not None and entry["result"].get("code") != "success":
            fail(f"the gateway answered {entry['result'].get('code')}", EXIT_FAILED)
    record = _records(world, name)[0].get(str(batch_id))
    if record is None:
        fail(f"{name} knows no batch {batch_id}", EXIT_FAILED)
    if json_out:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo(_describe(record))


def _describe(r: dict) -> str:
    from setmail.roles.merchant_batch import totals
    lines = [f"batch {r['id']}  {r['status']}  opened {r.get('opened', '-')}"
             + (f"  closed {r['closed']}" if r.get("closed") else "")
             + (f"  auto-close {r['auto_close']}" if r.get("auto_close") else "")]
    for seq, kind, xid, amount in r.get("items", []):
        lines.append(f"    {seq!s:>4}  {kind:<8} {_money(amount, r):>14}  xid {xid[:16]}…")
    lines.append(f"  ours:    {_totals(totals(r.get('items', [])), r)}")
    rec = r.get("reconciliation")
    if rec:
        lines.append(f"  gateway: {_totals(rec.get('gateway'), r)}")
        lines.append(f"  reconciliation ({rec.get('op')} at {rec.get('at')}): {rec['result']}")
        for d in rec.get("differences", []):
            lines.append(f"    seq {d['seq']}: ours {_item(d['ours'], r)}, gateway "
                         f"{_item(d['gateway'], r)}")
    for refusal in r.get("refusals", []):
        lines.append(f"  {refusal['at']}  {refusal['op']} refused: {refusal['code']}")
    return "\n".join(lines)


def _item(pair, record: dict) -> str:
    return "-" if not pair else f"xid {pair[0][:16]}… {_money(pair[1], record)}"


@batch_app.command("close")
def batch_close(batch_id: int = typer.Argument(None, help="the batch id (default: the open "
                                               "batch, as the gateway knows it)"),
                merchant: str = typer.Option(None, "--merchant", help="merchant agent"),
                wait: float = WAIT, json_out: bool = JSON, home: Path = home_option()) -> None:
    """Close a batch (BatchAdminReq close) and reconcile the gateway's totals with ours: exit 1
    when they disagree (OUT_OF_BALANCE, both totals shown) or the gateway refuses."""
    _batch_command(home, merchant, "close", batch_id, wait, json_out)


@batch_app.command("open")
def batch_open(merchant: str = typer.Option(None, "--merchant", help="merchant agent"),
               wait: float = WAIT, json_out: bool = JSON, home: Path = home_option()) -> None:
    """Open a new batch at the gateway (batchAlreadyOpen if one is open)."""
    _batch_command(home, merchant, "open", None, wait, json_out)


def _batch_command(home, merchant, operation: str, batch_id, wait: float,
                   json_out: bool) -> None:
    world = load(home)
    name = _merchant(world, merchant)
    if batch_id is not None and batch_id <= 0:
        fail("a batch id is a positive number")
    entry = _batch_request(world, name, operation, batch_id, wait)
    if entry is None:
        return
    result = entry["result"]
    record = _records(world, name)[0].get(str(result.get("batch_id")))
    if json_out:
        typer.echo(json.dumps({"merchant": name, **entry, "batch": record}))
    else:
        typer.echo(f"batch {result.get('batch_id') or '-'} {operation}: {result.get('code')}"
                   + (f"  {result['reconciliation']}" if result.get("reconciliation") else ""))
        if record is not None and operation == "close":
            typer.echo(_describe(record))
    if result.get("code") != "success" or result.get("reconciliation") == "OUT_OF_BALANCE":
        raise typer.Exit(EXIT_FAILED)


def register_commands(app: typer.Typer) -> None:
    app.command("void")(void)
    app.command("refund")(refund)
    app.command("authorize")(authorize)
    app.command("capture-reverse")(capture_reverse)
    app.add_typer(batch_app, name="batch")
