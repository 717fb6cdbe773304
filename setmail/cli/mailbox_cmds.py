"""``setmail mailbox list|show``: read an agent's Maildir with the SET content decoded."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from setmail.cli.common import home_option, load

mailbox_app = typer.Typer(no_args_is_help=True, help="Read an agent's Maildir (SET-decoded).")


def _summary(world, name, entry) -> dict:
    from setmail.mail import maildir
    from setmail.mail.mime import parse_mail
    raw = maildir.read(world.maildir(name), entry.key)
    row = {"key": entry.key, "folder": entry.folder, "flags": entry.flags, "size": entry.size,
           "time": dt.datetime.fromtimestamp(entry.mtime, dt.timezone.utc).isoformat(
               timespec="seconds")}
    try:
        mail = parse_mail(raw, max_size=1 << 20)
        row.update({"from": mail.sender, "subject": mail.subject,
                    "message_id": mail.message_id,
                    "type": mail.header("X-SET-Message-Type") or mail.subject.split(" ")[1:2]})
        if isinstance(row["type"], list):
            row["type"] = row["type"][0] if row["type"] else "?"
    except Exception as exc:
        row.update({"from": "?", "subject": f"(not a SET mail: {type(exc).__name__})",
                    "type": "?"})
    if entry.folder == "quarantine":
        reason = world.maildir(name) / ".quarantine" / f"{entry.key}.reason"
        row["reason"] = reason.read_text().strip() if reason.exists() else ""
    return row


@mailbox_app.command("list")
def list_(agent: str = typer.Argument(..., help="agent name"),
          json_out: bool = typer.Option(False, "--json", help="print JSON"),
          home: Path = home_option()) -> None:
    """List an agent's mail (new, cur and quarantine), oldest first."""
    from setmail.mail import maildir
    world = load(home)
    world.agent(agent)
    rows = [_summary(world, agent, e) for e in maildir.list_messages(
        world.maildir(agent), include_quarantine=True)]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"{agent}: no mail in {world.maildir(agent)}")
    for r in rows:
        state = {"new": "new", "quarantine": "QUAR"}.get(r["folder"],
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
    reason = world.maildir(agent) / ".quarantine" / f"{key}.reason"
    if reason.exists():
        info["quarantine_reason"] = reason.read_text().strip()
    typer.echo(json.dumps(info, indent=2, ensure_ascii=False) if json_out else render_text(info))


def register_commands(app: typer.Typer) -> None:
    app.add_typer(mailbox_app, name="mailbox")
