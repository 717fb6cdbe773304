"""``setmail batch list|show|open|close``: a merchant's settlement batches (BatchAdminReq,
docs/lifecycle.md).

``list`` and ``show`` read the merchant's own record of its batches; ``show --query``, ``open``
and ``close`` queue a ``batch`` command and, with ``--wait``, follow it (``waiting``) to the
gateway's BatchAdminRes: exit 0 when it did it, 3 when it refused (its code), 4 when no answer
came in time, and for ``close`` 1 when the gateway's totals and ours disagree (OUT_OF_BALANCE:
both totals shown, never hidden).  ``--json``: items as {seq, kind, xid, amount} and every amount
as {amount, currency, minor}.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, json_option, load, wait_option
from setmail.cli.show import explain, money, short_xid, with_amounts
from setmail.cli.waiting import End, View, Wait, report

batch_app = typer.Typer(no_args_is_help=True, help="A merchant's settlement batches.")


def _merchant(world, name: str | None) -> str:
    merchants = [a.name for a in world.agents_of_kind("merchant")
                 if a.name in world.local_agents()]
    if name is None:
        if len(merchants) != 1:
            fail(f"give --merchant ({', '.join(merchants) or 'no merchant runs here'})")
        return merchants[0]
    if name not in merchants:
        fail(f"{name} is no merchant of this world ({', '.join(merchants)})")
    return name


def _records(world, merchant: str) -> tuple[dict, dict]:
    """(batch records by id, the ``batches`` transaction's state) of a merchant's store."""
    from setmail.roles.merchant_batch import BATCHES, SHARED_KEY, merchant_shared
    from setmail.store import parts
    from setmail.txview import open_store
    store = open_store(world, merchant)
    try:
        shared = merchant_shared(parts.load(store, "shared/" + SHARED_KEY)[0])
        return shared["batches"], store.get_state("tx/" + BATCHES) or {}
    finally:
        store.close()


def batch_json(record: dict | None) -> dict | None:
    """A batch record for --json: items and differences as objects, amounts as money."""
    if record is None:
        return None
    from setmail.roles.merchant_batch import totals
    out = dict(record)
    out["items"] = [{"seq": seq, "kind": kind, "xid": xid, "amount": amount}
                    for seq, kind, xid, amount in record.get("items", [])]
    out["totals"] = totals(record.get("items", []))
    rec = record.get("reconciliation")
    if rec:
        pair = (lambda p: None if not p else {"xid": p[0], "amount": p[1]})  # noqa: E731
        out["reconciliation"] = {**rec, "differences": [
            {**d, "ours": pair(d.get("ours")), "gateway": pair(d.get("gateway"))}
            for d in rec.get("differences", [])]}
    return with_amounts(out)


def _totals(t: dict | None, record: dict) -> str:
    if not t:
        return "-"
    amount = lambda v: money(v, record.get("currency"), record.get("amt_exp10", -2))  # noqa
    return (f"debits {t['debit_count']} = {amount(t['debit_total'])}, credits "
            f"{t['credit_count']} = {amount(t['credit_total'])}, net {amount(t['net'])}")


def _request(world, merchant: str, operation: str, batch_id: int | None, wait: float,
             json_out: bool) -> tuple[Wait, End]:
    """Queue a batch command; with ``wait``, follow it to the gateway's answer."""
    from setmail.crypto.suite import fresh
    ref = fresh(8).hex()
    waiting = Wait(world, wait, what=f"{merchant}: batch {operation}", json_out=json_out)
    queued = waiting.submit(merchant, "batch", {"operation": operation, "batch_id": batch_id,
                                                "ref": ref})

    def answered(view: View) -> End | None:
        from setmail.roles.merchant_batch import BATCHES
        entry = next((r for r in view.state(merchant, BATCHES).get("requests", [])
                      if r.get("ref") == ref), None)
        if entry is None or not entry.get("result"):
            return None
        result = entry["result"]
        code, balance = result.get("code"), result.get("reconciliation")
        fields = {"merchant": merchant, **entry}
        said = (f"batch {result.get('batch_id') or '-'} {operation}: {code}"
                + (f"  {balance}" if balance else ""))
        if code != "success":
            return End("refused", f"{said} — {explain(code)}", party="gateway", code=code,
                       fields=fields)
        if balance == "OUT_OF_BALANCE":
            return End("out of balance", said, party="gateway", code=code, fields=fields)
        return End("done", said, party="gateway", code=code, fields=fields)

    end = waiting.until(answered, where=lambda v: f"{merchant} sent the BatchAdminReq and "
                        "waits for the gateway: `setmail batch list` shows it")
    if end.outcome == "queued":
        end.message = f"queued batch {operation} for {merchant} as {queued.ref}"
        end.fields = {"merchant": merchant, "commands": [queued.ref]}
    return waiting, end


@batch_app.command("list")
def batch_list(merchant: str = typer.Option(None, "--merchant", help="merchant agent"),
               json_out: bool = json_option(), home: Path = home_option()) -> None:
    """The merchant's own record of its batches: status, items, totals, reconciliation."""
    world = load(home)
    name = _merchant(world, merchant)
    records, _ = _records(world, name)
    rows = sorted(records.values(), key=lambda r: r["id"])
    if json_out:
        typer.echo(json.dumps([batch_json(r) for r in rows], indent=2))
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
               wait: float = typer.Option(30.0, "--wait", metavar="SECONDS",
                                          help="with --query: seconds to wait"),
               json_out: bool = json_option(), home: Path = home_option()) -> None:
    """One batch: its items, our totals and the gateway's, the reconciliation."""
    world = load(home)
    name = _merchant(world, merchant)
    if batch_id <= 0:
        fail("a batch id is a positive number")
    if query:
        waiting, end = _request(world, name, "query", batch_id, wait, True)
        if end.outcome not in ("done", "queued"):
            report(end, json_out=json_out, wait=waiting)
    record = _records(world, name)[0].get(str(batch_id))
    if record is None:
        fail(f"{name} knows no batch {batch_id}")
    if json_out:
        typer.echo(json.dumps(batch_json(record), indent=2))
        return
    typer.echo(describe(record))


def describe(r: dict) -> str:
    from setmail.roles.merchant_batch import totals
    amount = lambda v: money(v, r.get("currency"), r.get("amt_exp10", -2))  # noqa: E731
    lines = [f"batch {r['id']}  {r['status']}  opened {r.get('opened', '-')}"
             + (f"  closed {r['closed']}" if r.get("closed") else "")
             + (f"  auto-close {r['auto_close']}" if r.get("auto_close") else "")]
    for seq, kind, xid, minor in r.get("items", []):
        lines.append(f"    {seq!s:>4}  {kind:<8} {amount(minor):>14}  xid {short_xid(xid)}")
    lines.append(f"  ours:    {_totals(totals(r.get('items', [])), r)}")
    rec = r.get("reconciliation")
    if rec:
        item = lambda p: "-" if not p else f"xid {short_xid(p[0])} {amount(p[1])}"  # noqa
        lines.append(f"  gateway: {_totals(rec.get('gateway'), r)}")
        lines.append(f"  reconciliation ({rec.get('op')} at {rec.get('at')}): {rec['result']}")
        for d in rec.get("differences", []):
            lines.append(f"    seq {d['seq']}: ours {item(d['ours'])}, gateway "
                         f"{item(d['gateway'])}")
    for refusal in r.get("refusals", []):
        lines.append(f"  {refusal['at']}  {refusal['op']} refused: {refusal['code']}")
    return "\n".join(lines)


@batch_app.command("close")
def batch_close(batch_id: int = typer.Argument(None, help="the batch id (default: the open "
                                               "batch, as the gateway knows it)"),
                merchant: str = typer.Option(None, "--merchant", help="merchant agent"),
                wait: float = wait_option("the gateway's answer"),
                json_out: bool = json_option(), home: Path = home_option()) -> None:
    """Close a batch (BatchAdminReq close) and reconcile the gateway's totals with ours: exit 1
    when they disagree (OUT_OF_BALANCE, both totals shown), 3 when the gateway refuses."""
    _batch_command(home, merchant, "close", batch_id, wait, json_out)


@batch_app.command("open")
def batch_open(merchant: str = typer.Option(None, "--merchant", help="merchant agent"),
               wait: float = wait_option("the gateway's answer"),
               json_out: bool = json_option(), home: Path = home_option()) -> None:
    """Open a new batch at the gateway (batchAlreadyOpen if one is open)."""
    _batch_command(home, merchant, "open", None, wait, json_out)


def _batch_command(home, merchant, operation: str, batch_id, wait: float,
                   json_out: bool) -> None:
    world = load(home)
    name = _merchant(world, merchant)
    if batch_id is not None and batch_id <= 0:
        fail("a batch id is a positive number")
    waiting, end = _request(world, name, operation, batch_id, wait, json_out)
    result = end.fields.get("result") or {}
    record = _records(world, name)[0].get(str(result.get("batch_id"))) if result else None
    if record is not None:
        end.fields["batch"] = batch_json(record)
        if operation == "close" and not json_out:
            end.message += "\n" + describe(record)
    report(end, json_out=json_out, wait=waiting)


def register_commands(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")
