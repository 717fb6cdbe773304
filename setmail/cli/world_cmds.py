"""``setmail init`` and ``setmail register``."""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from setmail.cli.common import cards_for, home_option, load
from setmail.cli.common import fail as _fail

EXIT_FAILED, EXIT_USAGE = 1, 2


def init(home: Path = home_option(),
         smtp_port: int = typer.Option(2525, "--smtp-port", help="port of the world's SMTP server"),
         smtp_host: str = typer.Option("127.0.0.1", "--smtp-host", help="SMTP host agents send to"),
         mailboxes: Path = typer.Option(None, "--mailboxes",
                                        help="Maildir folder (default: <home>/mailboxes)"),
         suite: str = typer.Option("rsa2048", help="crypto suite: rsa2048 or rsa3072"),
         force: bool = typer.Option(False, "--force", help="recreate an existing world")) -> None:
    """Create the demo world: parties, CA tree, merchant/gateway certificates, card accounts."""
    import os
    from setmail.world import create_world, resolve_home
    os.umask(0o077)
    if not 0 < smtp_port < 65536:
        raise typer.BadParameter("must be 1..65535", param_hint="--smtp-port")
    world = create_world(resolve_home(home), smtp_host=smtp_host, smtp_port=smtp_port,
                         force=force, suite=suite, mailboxes=mailboxes)
    typer.echo(f"created world at {world.home} (SMTP {world.smtp_host}:{world.smtp_port}, "
               f"mailboxes {world.mailboxes})")
    for spec in world.agents.values():
        typer.echo(f"  {spec.name:<8} {spec.kind:<10} {spec.address}")
    typer.echo("next: `setmail run` in one terminal, `setmail register alice --wait 60` in another")


def register(cardholder: str = typer.Argument(..., help="cardholder agent, e.g. alice"),
             card: str = typer.Option(None, "--card", help="card name in world.toml "
                                      "(default: the cardholder's first card)"),
             name: str = typer.Option(None, "--name", help="CardholderName for the form"),
             postal_code: str = typer.Option("10001", "--postal-code",
                                             help="PostalCode for the form"),
             wait: float = typer.Option(0.0, "--wait", help="seconds to wait for the certificate "
                                        "(0: queue the command and return)"),
             home: Path = home_option()) -> None:
    """Ask a cardholder's agent to obtain a certificate from its CCA (over SMTP).

    The command is queued in the cardholder agent's store; the running agent (``setmail run``
    or ``setmail agent NAME``) picks it up.  Exit 0 once the certificate is stored (with
    --wait), 1 if the registration failed or did not finish in time.
    """
    from setmail.agent import commands as cmdq
    world = load(home)
    spec = world.agent(cardholder)
    if spec.kind != "cardholder":
        _fail(f"{cardholder} is a {spec.kind}, not a cardholder", EXIT_USAGE)
    cards = cards_for(world, cardholder, card)
    ca = world.agent(spec.options.get("ca", "cca"))
    args = {"pan": cards[0].pan, "expiry": cards[0].expiry, "ca": ca.address,
            "brand": world.brand, "fields": {"CardholderName": name or cardholder.title(),
                                             "PostalCode": postal_code}}
    store = cmdq.open_store(world.store_path(cardholder))
    try:
        command_id = cmdq.submit(store, "register", args)
        typer.echo(f"queued register for {cardholder} (card ending {cards[0].pan[-4:]}, "
                   f"CA {ca.address}) as command #{command_id}")
        if wait <= 0:
            return
        result = _wait_registration(store, command_id, wait)
    finally:
        store.close()
    status, detail = result
    if status == "DONE":
        typer.echo(f"{cardholder}: certificate issued — {detail}")
        return
    _fail(f"{cardholder}: registration {status.lower()}: {detail}", EXIT_FAILED)


def _wait_registration(store, command_id: int, seconds: float) -> tuple[str, str]:
    from setmail.agent import commands as cmdq
    deadline = time.monotonic() + seconds
    state: dict = {}
    row = None
    while time.monotonic() < deadline:
        row = cmdq.get(store, command_id)
        if row is not None and row.status == "failed":
            return "FAILED", row.detail or "the agent refused the command"
        if row is not None and row.status == "done" and row.txkey:
            state = store.get_state("tx/" + row.txkey) or {}
            if state.get("state") == "DONE":
                return "DONE", _certificate_summary(store, state)
            if state.get("state") == "FAILED":
                return "FAILED", str(state.get("failure") or state.get("reason")
                                     or state.get("refused") or "see the agent's log")
        time.sleep(0.2)
    if row is None or row.status == "pending":
        return "TIMED OUT", (f"the agent did not pick the command up within {seconds:g} s "
                             "(is `setmail run` running?)")
    return "TIMED OUT", f"still in state {state.get('state', '?')} after {seconds:g} s"


def _certificate_summary(store, state: dict) -> str:
    from setmail.roles.certs import load_cert_hex
    try:
        cert = load_cert_hex(state["certificate"])
        return (f"serial {cert.serial_number:x}, valid until "
                f"{cert.not_valid_after_utc:%Y-%m-%d}, subject {cert.subject.rfc4514_string()}")
    except Exception:
        return json.dumps({k: v for k, v in state.items() if k in ("state", "brand")})


def revoke(agent: str = typer.Argument(..., help="agent whose certificates to revoke"),
           reason: str = typer.Option("unspecified", "--reason",
                                      help="RFC 5280 reason, e.g. keyCompromise"),
           home: Path = home_option()) -> None:
    """Revoke an agent's SET certificates: each issuing CA signs a new CRL, the brand a new BCI.

    Running agents take them up without a restart: CAs, gateways and merchants at once, wallets
    from the next response whose BrandCRLIdentifier names them."""
    import datetime as dt
    from cryptography import x509
    from setmail.world.revoke import revoke_agent
    world = load(home)
    try:
        flag = x509.ReasonFlags(reason)
    except ValueError:
        _fail(f"unknown reason {reason!r} (e.g. keyCompromise, cessationOfOperation)", EXIT_USAGE)
    from setmail.world.revoke import agent_certificates
    revoked = revoke_agent(world, agent, dt.datetime.now(dt.timezone.utc), flag)
    if not revoked:
        if agent_certificates(world, agent) and agent not in {a.name for a in
                                                             world.agents_of_kind("issuer")}:
            typer.echo(f"{agent}: every certificate is already revoked")
            return
        _fail(f"{agent} holds no SET certificate to revoke", EXIT_FAILED)
    for ca, serial, subject in revoked:
        typer.echo(f"revoked serial {serial:x} ({subject}) on the {ca} CRL")
    typer.echo("running agents take up the new CRLs and BrandCRLIdentifier themselves (CAs, "
               "gateways, merchants at once; wallets from the next BCI they receive)")



def register_commands(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("register")(register)
    app.command("revoke")(revoke)
