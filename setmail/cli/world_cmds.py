"""``setmail init`` and ``setmail register``."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from setmail.cli.common import agent_of_kind, cards_for, home_option, json_option, load
from setmail.cli.common import fail as _fail
from setmail.cli.common import wait_option
from setmail.cli.show import explain
from setmail.cli.waiting import EXIT_REFUSED, EXIT_USAGE, End, Queued, View, Wait, report


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
             wait: float = wait_option("the certificate"), json_out: bool = json_option(),
             home: Path = home_option()) -> None:
    """Ask a cardholder's agent to obtain a certificate from its CCA (over SMTP).

    The command is queued in the cardholder agent's store; the running agent (``setmail run``
    or ``setmail agent NAME``) picks it up.  With --wait: exit 0 once the certificate is stored,
    3 if the registration was refused or failed, 4 if it did not finish in time.
    """
    world = load(home)
    agent_of_kind(world, cardholder, "cardholder")
    spec = world.agent(cardholder)
    cards = cards_for(world, cardholder, card)
    ca = world.agent(spec.options.get("ca", "cca"))
    args = {"pan": cards[0].pan, "expiry": cards[0].expiry, "ca": ca.address,
            "brand": world.brand, "fields": {"CardholderName": name or cardholder.title(),
                                             "PostalCode": postal_code}}
    waiting = Wait(world, wait, what=f"{cardholder} registers card ending {cards[0].pan[-4:]} "
                   f"with {ca.name}", json_out=json_out)
    queued = waiting.submit(cardholder, "register", args)
    if not json_out:
        typer.echo(f"queued register for {cardholder} (card ending {cards[0].pan[-4:]}, "
                   f"CA {ca.address}) as {queued.ref}")
    end = follow_registration(waiting, queued, ca.name, "registration")
    report(end, json_out=json_out, wait=waiting)


def follow_registration(waiting: Wait, queued: Queued, ca: str, what: str) -> End:
    """Follow a ``register`` or ``renew`` command to its certificate (or its refusal)."""
    agent = queued.agent

    def key(view: View) -> str | None:
        row = view.command(queued)
        return row.txkey if row is not None and row.status == "done" else None

    def ended(view: View) -> End | None:
        state = view.state(agent, key(view))
        fields = {"agent": agent, "command": queued.ref, "state": state.get("state")}
        if state.get("state") == "DONE":
            cert = certificate_fields(state)
            shown = (f"serial {cert['serial']}, valid until {cert['not_after'][:10]}, subject "
                     f"{cert['subject']}" if cert else "see the agent's log")
            return End("done", f"{agent}: certificate issued — {shown}", party=ca,
                       fields={**fields, "certificate": cert})
        if state.get("state") == "FAILED":
            code = state.get("error_code")
            why = str(state.get("failure") or state.get("reason") or "see the agent's log")
            return End("refused" if code else "failed", f"{agent}: {what} failed: {why}"
                       + (f" — {explain(code)}" if code and code not in why else ""),
                       party=ca if code else agent, code=code, fields=fields)
        refused = state.get("refused")
        if isinstance(refused, dict):
            return End("refused", f"{agent} refused {ca}'s {refused.get('type')}: "
                       f"{explain(refused.get('code'))}", party=agent, code=refused.get("code"),
                       detail=refused.get("reason"), fields=fields,
                       hints=[f"the {what} stays open until its re-sends are spent"])
        return None

    waiting.watch(agent, key)
    end = waiting.until(ended, where=lambda v: (
        f"{agent} took it and waits for {ca} ({v.state(agent, key(v)).get('state', '?')}): "
        "`setmail queue list --all` shows the command"))
    if end.outcome == "queued":
        end.message = f"queued {queued.name} for {agent} as {queued.ref}"
        end.fields = {"agent": agent, "commands": [queued.ref]}
    return end


def certificate_fields(state: dict) -> dict | None:
    """Serial, validity and subject of the certificate a registration stored (None: none)."""
    from setmail.roles.certs import load_cert_hex
    value = state.get("certificate") or (state.get("certificates") or {}).get("signature")
    try:
        cert = load_cert_hex(value) if value else None
    except Exception:
        return None
    if cert is None:
        return None
    return {"serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "subject": cert.subject.rfc4514_string()}


def revoke(agent: str = typer.Argument(..., help="agent whose certificates to revoke"),
           reason: str = typer.Option("unspecified", "--reason",
                                      help="RFC 5280 reason, e.g. keyCompromise"),
           json_out: bool = json_option(), home: Path = home_option()) -> None:
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
            typer.echo(json.dumps({"agent": agent, "revoked": []}) if json_out else
                       f"{agent}: every certificate is already revoked")
            return
        _fail(f"{agent} holds no SET certificate to revoke", EXIT_REFUSED)
    if json_out:
        typer.echo(json.dumps({"agent": agent, "reason": reason, "revoked": [
            {"ca": ca, "serial": format(serial, "x"), "subject": subject}
            for ca, serial, subject in revoked]}))
        return
    for ca, serial, subject in revoked:
        typer.echo(f"revoked serial {serial:x} ({subject}) on the {ca} CRL")
    typer.echo("running agents take up the new CRLs and BrandCRLIdentifier themselves (CAs, "
               "gateways, merchants at once; wallets from the next BCI they receive)")



def register_commands(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("register")(register)
    app.command("revoke")(revoke)
