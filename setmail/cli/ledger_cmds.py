"""``setmail ledger [--check]`` and ``setmail statement``: the issuer's books.

Both read the issuer's store (``setmail.agent.ledger``); nothing here changes it.  ``ledger
--check`` runs the invariant (``setmail.agent.ledger_check``) on every issuer (or ``--issuer``)
and exits 1 with the entries involved when it does not hold.  ``statement`` prints a cardholder's
statement at its issuer (``setmail.agent.statement``), queues the issuer's ``statement`` command
that mails it signed (``--mail``), or shows the statements the cardholder's wallet kept
(``--received``).
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, json_option, load
from setmail.cli.show import a_kind, short_xid, with_amounts

EXIT_FAILED = 1


def _issuer_names(world, issuer: str | None) -> list[str]:
    names = [issuer] if issuer else [a.name for a in world.agents_of_kind("issuer")]
    if not names:
        fail("the world has no issuer")
    for name in names:
        if world.agent(name).kind != "issuer":
            fail(f"{name} is {a_kind(world.agent(name).kind)}, not an issuer")
    return names


def ledger(issuer: str = typer.Option(None, "--issuer", help="issuer agent (default: the first)"),
           json_out: bool = json_option(),
           check: bool = typer.Option(False, "--check", help="check the ledger's invariant "
                                      "(every issuer unless --issuer); exit 1 if it fails"),
           home: Path = home_option()) -> None:
    """The issuer's card accounts: limit, held, posted, available, and every entry."""
    from setmail.agent.ledger import ledger_report
    from setmail.txview import open_store
    world = load(home)
    names = _issuer_names(world, issuer)
    if check:
        return _check(world, names, json_out)
    store = open_store(world, names[0])
    try:
        report = ledger_report(store)
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(with_amounts(report), indent=2, default=str))
        return
    typer.echo(render_ledger(report))


def _check(world, names: list[str], json_out: bool) -> None:
    from setmail.agent.ledger import ledger_rows
    from setmail.agent.ledger_check import check_ledger
    from setmail.txview import open_store
    found, counts = {}, {}
    for name in names:
        store = open_store(world, name)
        try:
            found[name], counts[name] = check_ledger(store), len(ledger_rows(store))
        finally:
            store.close()
    if json_out:
        typer.echo(json.dumps(with_amounts(found), indent=2, default=str))
    else:
        for name in names:
            if not found[name]:
                typer.echo(f"{name}: {counts[name]} ledger rows, the invariant holds")
            for v in found[name]:
                typer.echo(f"{name}: {v['where']}: {v['problem']}")
                for e in v["entries"]:
                    typer.echo(f"    {e['at']}  {e['kind']:<16} {e['amount']:>12}  "
                               f"{e.get('code') or ''}  xid {short_xid(e['xid'])}")
    if any(found.values()):
        raise typer.Exit(EXIT_FAILED)


def render_ledger(report) -> str:
    """Text form of ``ledger_report``: one line per card, then its entries."""
    from setmail.money import format_amount
    lines = []
    for acct in report:
        cur, exp = acct.get("currency_number", 840), acct.get("amt_exp10", -2)
        money = lambda v: format_amount(v, cur, exp)
        credited = f"  credited {money(acct['credited'])}" if acct.get("credited") else ""
        lines.append(f"{acct['holder']:<8} card …{acct['pan_last4']}  limit {money(acct['limit'])}"
                     f"  held {money(acct['held'])}  posted {money(acct['posted'])}{credited}"
                     f"  available {money(acct['available'])}")
        for e in acct.get("entries", []):
            lines.append(f"    {e.get('at', '')}  {e['kind']:<8} {money(e.get('amount') or 0):>14}"
                         f"  {e.get('code') or ''}  xid {short_xid(e.get('xid', ''))}")
    return "\n".join(lines)


def _date(text: str | None, *, end: bool = False) -> dt.datetime | None:
    """YYYY-MM-DD (a whole day: ``--to`` includes it) or an ISO 8601 time (UTC if naive)."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"not a date: {text!r} (YYYY-MM-DD or ISO 8601)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if end and len(text) == 10:
        moment += dt.timedelta(days=1)
    return moment


def statement(cardholder: str = typer.Argument(..., help="the cardholder agent"),
              start: str = typer.Option(None, "--from", help="first day of the entries shown"),
              end: str = typer.Option(None, "--to", help="last day of the entries shown"),
              issuer: str = typer.Option(None, "--issuer",
                                         help="issuer agent (default: the first of the holder's)"),
              json_out: bool = json_option(),
              mail: bool = typer.Option(False, "--mail", help="have the issuer mail it, signed"),
              received: bool = typer.Option(False, "--received",
                                            help="the statements the cardholder's wallet kept"),
              home: Path = home_option()) -> None:
    """A cardholder's statement: its cards' holds, postings, credits, settled and pending
    amounts, balance and entries, from the issuer's ledger."""
    from setmail.agent.statement import statement_report
    from setmail.txview import open_store
    world = load(home)
    if cardholder not in world.agents or world.agent(cardholder).kind != "cardholder":
        fail(f"{cardholder} is not a cardholder of the world")
    if received:
        return _received(world, cardholder, json_out)
    issuers = sorted({c.issuer for c in world.cards_of(cardholder)})
    if issuer is not None and issuer not in issuers:
        fail(f"{cardholder} has no card issued by {issuer}")
    if not issuers:
        fail(f"{cardholder} has no card in the world")
    name = issuer or issuers[0]
    store = open_store(world, name)
    try:
        report = statement_report(store, cardholder, issuer=world.agent(name).address,
                                  now=dt.datetime.now(dt.UTC), start=_date(start),
                                  end=_date(end, end=True))
    finally:
        store.close()
    if mail:
        return _mail(world, name, cardholder, report)
    typer.echo(json.dumps(with_amounts(report), indent=2) if json_out
               else render_statement(report))


def _mail(world, issuer: str, cardholder: str, report: dict) -> None:
    from setmail.agent import commands as cmdq
    from setmail.crypto.suite import fresh
    ident = fresh(16).hex()
    store = cmdq.open_store(world.store_path(issuer))
    try:
        number = cmdq.submit(store, "statement", {"statement_id": ident, "holder": cardholder,
                                                  "statement": report}, now=time.time())
    finally:
        store.close()
    typer.echo(f"statement {ident} of {cardholder} queued at {issuer} (command {number}); "
               f"{issuer} mails it signed when it runs")


def _received(world, cardholder: str, json_out: bool) -> None:
    from setmail.txview import open_store
    store = open_store(world, cardholder)
    try:
        kept = [s for s in (store.get_state(k) for k in store.state_keys()
                            if k.startswith("tx/stmt/")) if s and s.get("state") == "KEPT"]
    finally:
        store.close()
    kept.sort(key=lambda s: s.get("received_at", ""))
    if json_out:
        typer.echo(json.dumps(with_amounts(kept), indent=2))
        return
    if not kept:
        typer.echo(f"{cardholder} has received no statement")
    for s in kept:
        typer.echo(f"received {s['received_at']} from {s['issuer']} "
                   f"(statement {s['statement']['statement_id'][:16]}…)")
        typer.echo(render_statement(s["statement"], indent="    "))


def render_statement(doc: dict, indent: str = "") -> str:
    """Text form of a statement (``statement_report`` or a kept one)."""
    from setmail.money import format_amount
    period = (f" entries {doc.get('period_from') or '…'} to {doc.get('period_to') or '…'}"
              if doc.get("period_from") or doc.get("period_to") else "")
    lines = [f"{indent}statement of {doc['holder']} by {doc['issuer']}, issued "
             f"{doc['issued']}{period}"]
    if not doc["cards"]:
        lines.append(f"{indent}  no card")
    for c in doc["cards"]:
        money = lambda v: format_amount(v, c["currency"], c["amt_exp10"])
        lines.append(f"{indent}  card …{c['pan_last4']}  limit {money(c['limit'])}  "
                     f"held {money(c['held'])}  balance {money(c['balance'])}  "
                     f"available {money(c['available'])}")
        lines.append(f"{indent}    posted {money(c['posted_pending'])} pending, "
                     f"{money(c['posted_settled'])} settled; credited "
                     f"{money(c['credited_pending'])} pending, "
                     f"{money(c['credited_settled'])} settled")
        for e in c["entries"]:
            lines.append(f"{indent}    {e['at']}  {e['kind']:<16} {money(e['amount']):>14}  "
                         f"{e.get('merchant_id') or '':<10} xid {short_xid(e['xid'])}")
    return "\n".join(lines)


def register_commands(app: typer.Typer) -> None:
    app.command("ledger")(ledger)
    app.command("statement")(statement)
