"""``setmail mailbox list|show``: read an agent's Maildir with the SET content decoded;
``setmail export-thread``: one purchase's mails from every Maildir as one mbox."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, load, xid_of

mailbox_app = typer.Typer(no_args_is_help=True, help="Read an agent's Maildir (SET-decoded).")


#: how many of the newest mails ``mailbox list`` shows unless told (an agent may hold 100,000)
LIST_LIMIT = 100


def _row(world, mail) -> dict:
    from setmail.mail import maildir
    row = {"key": mail.key, "folder": mail.folder, "flags": mail.flags, "size": mail.size,
           "time": dt.datetime.fromtimestamp(mail.time, dt.timezone.utc).isoformat(
               timespec="seconds"),
           "from": mail.sender, "subject": mail.subject, "message_id": mail.message_id,
           "type": mail.message_type, "status": mail.status}
    if mail.folder == "quarantine":
        row["reason"] = maildir.reason(world.maildir(mail.agent), mail.key) or ""
    return row


@mailbox_app.command("list")
def list_(agent: str = typer.Argument(..., help="agent name"),
          json_out: bool = typer.Option(False, "--json", help="print JSON"),
          sent: bool = typer.Option(False, "--sent", help="the Sent folder's copies too"),
          limit: int = typer.Option(LIST_LIMIT, "--limit", min=0,
                                    help="the newest N mails (0: all)"),
          home: Path = home_option()) -> None:
    """List an agent's mail (new, cur and quarantine; --sent: what it sent), oldest first; the
    newest --limit of them, read from the agent's store index (only new mail is read from disk)."""
    from setmail.txview import open_store
    from setmail.txview.mails import mailbox
    world = load(home)
    world.agent(agent)
    store = open_store(world, agent) if world.store_path(agent).exists() else None
    try:
        mails, total = mailbox(world, agent, store, sent=sent, limit=limit or None)
    finally:
        if store is not None:
            store.close()
    rows = [_row(world, m) for m in mails]
    if total > len(rows):  # on stderr, as tx list says it: the listing stays machine-readable
        typer.echo(f"({total - len(rows):,} older mail(s) not shown: --limit 0 lists all)",
                   err=True)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"{agent}: no mail in {world.maildir(agent)}")
    for r in rows:
        state = {"new": "new", "quarantine": "QUAR", "sent": "sent"}.get(r["folder"],
                                                          "done" if "S" in r["flags"] else "cur")
        typer.echo(f"{r['time']}  {state:<4}  {r['type']:<14} {r['from']:<28} {r['key']}"
                   + (f"  [{r['reason']}]" if r.get("reason") else ""))


@mailbox_app.command("show")
def show(agent: str = typer.Argument(..., help="agent name"),
         key: str = typer.Argument(..., help="Maildir key (from `setmail mailbox list`)"),
         json_out: bool = typer.Option(False, "--json", help="print JSON"),
         home: Path = home_option()) -> None:
    """Decode one mail: MIME headers, SET MessageHeader, ASN.1 tree (encrypted parts stay so)."""
    from setmail.inspect import describe_mail, render_text
    from setmail.mail import maildir
    world = load(home)
    world.agent(agent)
    raw = maildir.read(world.maildir(agent), key.partition(":")[0])
    info = describe_mail(raw)
    reason = maildir.reason(world.maildir(agent), key.partition(":")[0])
    if reason is not None:
        info["quarantine_reason"] = reason
    typer.echo(json.dumps(info, indent=2, ensure_ascii=False) if json_out else render_text(info))


@mailbox_app.command("archive")
def archive(agent: str = typer.Argument(..., help="agent name"),
            older_than: str = typer.Option("30d", "--older-than",
                                           help="age of the processed mail to move (30d, 12h, 90m)"),
            home: Path = home_option()) -> None:
    """Move processed mail older than --older-than into dated folders (.Archive.2026-12); new,
    unfinished, quarantined and sent mail stay. Safe while the agent runs."""
    import time

    from setmail.errors import MaildirError
    from setmail.mail.archive import archive as archive_mail, parse_age
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        fail(str(exc))
    world = load(home)
    world.agent(agent)
    try:
        moved = archive_mail(world.maildir(agent), older_than=age, now=time.time())
    except MaildirError as exc:
        fail(str(exc), 1)
    if moved and world.store_path(agent).exists():  # the index follows (trace reads it there)
        from setmail.store import mailindex
        from setmail.txview import open_store
        store = open_store(world, agent)
        try:
            for folder, keys in moved.items():
                mailindex.set_folder(store, keys, folder, now=time.time())
        finally:
            store.close()
    if not moved:
        typer.echo(f"{agent}: no processed mail older than {older_than}")
    for folder, keys in sorted(moved.items()):
        typer.echo(f"{agent}: {len(keys)} mail(s) -> {folder}")


def export_thread(xid: str = typer.Argument(..., help="the purchase's XID (as buy prints it)"),
                  mbox: Path = typer.Option(..., "--mbox", help="mbox file to write (replaced)"),
                  maildirs: list[Path] = typer.Option(
                      None, "--maildir", help="read this Maildir instead of the world's "
                      "(repeatable: e.g. each host's, copied here)"),
                  home: Path = home_option()) -> None:
    """Write one purchase, every mail once across all agents' Maildirs (inbox, Sent,
    quarantine), as one mbox in date order."""
    from setmail.mail.export import export_mbox
    from setmail.txview import normalise_xid
    xid = normalise_xid(xid) if maildirs else xid_of(load(home), xid)
    if maildirs:
        sources = {}
        for path in maildirs:
            if not (path / "cur").is_dir():
                fail(f"{path} is not a Maildir (no cur/)")
            sources[f"{path.name}#{len(sources)}" if path.name in sources else path.name] = path
    only = None
    if not maildirs:  # the world's own: its stores' index says which files to read
        from setmail.txview.mails import purchase_files
        world = load(home)
        sources = {name: world.maildir(name) for name in world.agents}
        only = purchase_files(world, xid)
    written = export_mbox(sources, xid, mbox, only=only)
    if not written:
        fail(f"no mail of purchase {xid} in {len(sources)} Maildir(s)", 1)
    agents = sorted({m.agent for m in written})
    typer.echo(f"wrote {len(written)} mails of purchase {xid} to {mbox} "
               f"(from {', '.join(agents)})")


def register_commands(app: typer.Typer) -> None:
    app.add_typer(mailbox_app, name="mailbox")
    app.command("export-thread")(export_thread)
