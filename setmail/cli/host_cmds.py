"""One party per host: ``setmail export`` (a bundle), ``setmail postfix-config`` (the host's
Postfix), ``setmail order`` (the shop front-end's half of ``buy`` on the merchant's host) and
``setmail accounts`` (an issuer's accounts for cards added since).
docs/deploy.md walks through them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import typer

from setmail.cli.common import fail, home_option, load

EXIT_ENV = 3


def _host_port(text: str | None, option: str) -> tuple[str | None, int | None]:
    if not text:
        return None, None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter("expected HOST:PORT", param_hint=option)
    return host, int(port)


def export(agent: str = typer.Argument(..., help="the agent, or 'all': one bundle per agent "
                                       "in DIR/<agent>"),
           dest: Path = typer.Argument(..., help="the bundle's folder (new or empty)"),
           smtp: str = typer.Option(None, "--smtp", metavar="HOST:PORT",
                                    help="where the agent submits its mail: its host's Postfix "
                                    "(default: the world's SMTP server)"),
           mailboxes: Path = typer.Option(None, "--mailboxes", help="the Maildir folder on its "
                                          "host, shared by the bundles of one host "
                                          "(default: DIR/mailboxes)"),
           force: bool = typer.Option(False, "--force", help="replace a bundle already at DIR"),
           update: bool = typer.Option(False, "--update", help="bring the bundle at DIR (or "
                                       "a copy of its world.toml) up to date: new parties, "
                                       "certificates, CRLs; its own folder untouched"),
           register: bool = typer.Option(False, "--register", help="queue the registration by "
                                         "mail of a merchant or gateway added after init"),
           home: Path = home_option()) -> None:
    """Write a party's bundle: its own keys and store, its counterparts' addresses and public
    certificates, trust anchors and CRLs; card data only for its holder, its issuer and the CCA.
    `setmail agent --home DIR` runs it on its own host; stop the agent here first."""
    from setmail.world import load_world
    from setmail.world.bundle import export_bundle, update_bundle
    world = load(home)
    host, port = _host_port(smtp, "--smtp")
    names = world.local_agents() if agent == "all" else [agent]
    for name in names:
        target = dest / name if agent == "all" else dest
        if update:
            if load_world(target).bundle != name:
                fail(f"{target} holds no bundle of {name}")
            bundle = update_bundle(world, target)
            typer.echo(f"{name:<8} updated at {bundle.home}: world.toml and public files; "
                       "restart its agent")
            continue
        bundle = export_bundle(world, name, target, smtp_host=host, smtp_port=port,
                               mailboxes=mailboxes, force=force, register=register)
        others = sorted(n for n in bundle.agents if n != name)
        typer.echo(f"{name:<8} -> {bundle.home}  (mail to {bundle.smtp_host}:{bundle.smtp_port}; "
                   f"Maildir {bundle.maildir(name)}; knows {', '.join(others)}; "
                   f"{len(bundle.cards)} card(s))")
    if not update:
        typer.echo("each party now runs from its bundle: `setmail agent --home DIR` on its host")


def _user(name: str):
    import pwd
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _owner(name: str) -> tuple[int, int]:
    entry = _user(name)
    if entry is None:
        fail(f"no user {name!r} to own the Maildirs: create it (useradd --system {name}) or "
             "give --mail-owner", EXIT_ENV)
    if entry.pw_uid < 100:
        fail(f"--mail-owner {name} has uid {entry.pw_uid}: Postfix's virtual delivery refuses "
             "uids below 100 (virtual_minimum_uid)")
    return entry.pw_uid, entry.pw_gid


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, not {value!r}", param_hint=option)
        out[key.strip()] = rest.strip()
    return out


def _postmap(config_dir: Path) -> None:
    tool = shutil.which("postmap") or ("/usr/sbin/postmap" if os.path.exists("/usr/sbin/postmap")
                                       else None)
    if tool is None:
        typer.echo(f"postmap not found: run `postmap -c {config_dir} {config_dir}/transport "
                   f"{config_dir}/vmailbox` where Postfix is installed")
        return
    done = subprocess.run([tool, "-c", str(config_dir), str(config_dir / "transport"),
                           str(config_dir / "vmailbox")], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        fail(f"postmap failed: {lines[-1]}", EXIT_ENV)


def _public_dir(path: Path) -> None:
    """Create ``path`` and its missing parents 0755 (not as setmail's umask would: Postfix's
    daemons, running as the postfix user, must reach their configuration and queue)."""
    for folder in reversed([p for p in (path, *path.parents) if not p.exists()]):
        folder.mkdir()
        os.chmod(folder, 0o755)


def _blocked(base: Path, uid: int) -> Path | None:
    """The first folder above ``base`` the mail owner cannot pass through, if any."""
    for folder in reversed(base.parents):
        st = folder.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            return folder
    return None


def _own_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def postfix_config(
        bundles: list[Path] = typer.Argument(..., help="the bundles whose agents this host runs"),
        config_dir: Path = typer.Option(..., "--config-dir",
                                        help="where to write main.cf, master.cf, transport, "
                                        "vmailbox (`postfix -c DIR start`)"),
        listen: str = typer.Option("all", "--listen", help="the address Postfix listens on "
                                   "(an IP address, or 'all')"),
        hostname: str = typer.Option(None, "--hostname", help="myhostname (default mx.DOMAIN)"),
        queue_dir: Path = typer.Option(None, "--queue-dir", help="queue_directory"),
        data_dir: Path = typer.Option(None, "--data-dir", help="data_directory"),
        log_file: Path = typer.Option(None, "--log", help="maillog_file (default: syslog)"),
        route: list[str] = typer.Option([], "--route", metavar="DOMAIN=HOST[:PORT]",
                                        help="send mail for DOMAIN straight to HOST (repeat)"),
        routes_only: bool = typer.Option(False, "--routes-only", help="a closed network: no DNS, "
                                         "mail only to this host's domains and the --route ones"),
        mynetworks: str = typer.Option(None, "--mynetworks", help="the clients that may send "
                                       "out through this host (default: the --listen address)"),
        mail_owner: str = typer.Option("setmail", "--mail-owner",
                                       help="the user owning the Maildirs (the agents' user)"),
        setting: list[str] = typer.Option([], "--set", metavar="NAME=VALUE",
                                          help="a further main.cf parameter (repeat)"),
        postmap: bool = typer.Option(True, "--postmap/--no-postmap",
                                     help="build the .db maps with postmap")) -> None:
    """Write the Postfix configuration of a host: virtual delivery into its agents' Maildirs,
    relay to the other hosts, no open relay, our message size limit.  As root it also gives
    the Maildirs to --mail-owner and creates the queue and data directories."""
    from setmail.world import load_world
    from setmail.world.postfix import Host, host_files, mailbox_base, mismatched_smtp
    worlds = [load_world(b) for b in bundles]
    uid, gid = _owner(mail_owner)
    config_dir = config_dir.absolute()
    host = Host(config_dir, listen=listen, hostname=hostname or "",
                queue_dir=queue_dir.absolute() if queue_dir else None,
                data_dir=data_dir.absolute() if data_dir else None,
                log_file=log_file.absolute() if log_file else None,
                routes=_pairs(route, "--route"), routes_only=routes_only,
                mynetworks=mynetworks or "", uid=uid, gid=gid, extra=_pairs(setting, "--set"))
    files = host_files(worlds, host)
    _public_dir(config_dir)
    for name, text in files.items():
        (config_dir / name).write_text(text)
        os.chmod(config_dir / name, 0o644)
    if os.geteuid() == 0:
        _own_tree(mailbox_base(worlds), uid, gid)
        for folder in (host.queue_dir, host.data_dir):
            if folder is not None:
                _public_dir(folder)
        postfix = _user("postfix")  # data_directory must be the postfix user's
        if host.data_dir is not None and postfix is not None:
            os.chown(host.data_dir, postfix.pw_uid, postfix.pw_gid)
    if postmap:
        _postmap(config_dir)
    for line in mismatched_smtp(worlds, host):
        typer.echo(f"warning: {line}")
    blocked = _blocked(mailbox_base(worlds), uid)
    if blocked is not None:
        typer.echo(f"warning: {mail_owner} cannot pass through {blocked} (mode "
                   f"{blocked.stat().st_mode & 0o777:o}): Postfix cannot deliver below it")
    typer.echo(f"wrote {', '.join(files)} to {config_dir} for "
               f"{', '.join(w.bundle for w in worlds)}; start it with "
               f"`postfix -c {config_dir} start`")


def order(amount: str = typer.Option(..., "--amount", help="amount in currency units"),
          cardholder_address: str = typer.Option(..., "--cardholder-address",
                                                 help="where the merchant answers the customer"),
          currency: str = typer.Option("EUR", "--currency", help="ISO 4217 code"),
          description: str = typer.Option("setmail order", "--description",
                                          help="order description, as the cardholder's buy"),
          merchant: str = typer.Option(None, "--merchant",
                                       help="merchant agent (default: the bundle's)"),
          xid: str = typer.Option(None, "--xid", help="the purchase's XID (default: a new one)"),
          wait: float = typer.Option(0, "--wait", min=0, metavar="SECONDS",
                                     help="wait until the merchant's agent has taken the order "
                                     "(0: queue it and return)"),
          json_out: bool = typer.Option(False, "--json", help="print JSON"),
          home: Path = home_option()) -> None:
    """Take an order at the merchant's host (the shop front-end SET leaves outside the protocol)
    and print its XID, for the cardholder's `setmail buy --xid XID` on its own host."""
    from setmail.cli.waiting import End, Wait, report
    from setmail.crypto.suite import fresh
    from setmail.money import parse_amount
    from setmail.txview import normalise_xid
    world = load(home)
    name = merchant or world.bundle
    if not name or world.agent(name).kind != "merchant" or name not in world.local_agents():
        fail("give --merchant, a merchant that runs from this --home")
    if not description.strip() or len(description) > 1000:
        fail("--description must be 1..1000 characters")
    minor, number, exp10 = parse_amount(amount, currency)
    xid = normalise_xid(xid) if xid else fresh(20).hex()
    waiting = Wait(world, wait, what=f"{name} takes the order", json_out=json_out)
    waiting.submit(name, "order", {"xid": xid, "description": description, "amount": minor,
                                   "currency": number, "amt_exp10": exp10,
                                   "cardholder": cardholder_address.strip()})
    fields = {"xid": xid, "merchant": name}
    if wait <= 0:
        typer.echo(json.dumps(fields) if json_out else xid)
        return

    def taken(view) -> End | None:
        state = view.state(name, xid).get("state")
        return None if state is None else End(
            "done", f"{name} took the order: {xid} ({state}); the cardholder pays it with "
            f"`setmail buy --xid {xid}`", fields={**fields, "state": state})
    end = waiting.until(taken)
    if not json_out and end.outcome == "done":
        typer.echo(xid)
    report(end, json_out=json_out, wait=waiting)


def accounts(issuer: str = typer.Option(None, "--issuer", help="issuer agent (default: the "
                                        "bundle's, or every issuer of the world)"),
             home: Path = home_option()) -> None:
    """Open the card accounts world.toml gives an issuer and its store lacks (a cardholder
    added since); the accounts it has keep their status and limit.  Restart its agent."""
    import datetime as dt

    from setmail.world.create import write_accounts
    world = load(home)
    names = [issuer] if issuer else [n for n in world.local_agents()
                                     if world.agent(n).kind == "issuer"]
    for name in names:
        if world.agent(name).kind != "issuer" or name not in world.local_agents():
            fail(f"{name} is not an issuer that runs from this --home")
        write_accounts(world, name, dt.datetime.now(dt.timezone.utc), keep=True)
        cards = sorted(c.name for c in world.cards.values() if c.issuer == name)
        typer.echo(f"{name}: accounts for {', '.join(cards) or 'no card'}; restart its agent")


def register_commands(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("postfix-config")(postfix_config)
    app.command("order")(order)
    app.command("accounts")(accounts)
