"""``setmail renew AGENT``: a party renews its certificate by mail, before it expires.

The command is queued in the agent's store (``renew``) and its running agent asks its CA with
SET's renewal request type (cardholders ``cardRenewalSig``, merchants ``merRenewalBoth``, gateways
``pgwyRenewalBoth``), signed by the certificate it renews (``roles.ca_renewal``).  The old
certificate is not revoked: it stays valid until it expires.  Refused here, before anything is
sent, with the reason: an agent without a certificate, an expired one, a revoked one (the world's
CRLs).  The CA refuses them too (CertRes ``rejectByCA``), should the request reach it.
After a gateway's renewal (with ``--wait``) its merchants are asked to fetch its new certificates
(a ``pcert`` command each): until they do, they encrypt to the old key-exchange certificate.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import typer

from setmail.cli.common import cards_for, home_option, json_option, load, wait_option
from setmail.cli.common import fail as _fail
from setmail.cli.show import a_kind

EXIT_USAGE = 2


def _current(world, spec, card):
    """(the certificate to renew or None, the ``renew`` arguments)."""
    from setmail.pki.parse import load_certificate
    from setmail.world.create import registration_args
    if spec.kind in ("merchant", "gateway"):
        path = world.keys_dir(spec.name) / "sig.cert.pem"
        cert = load_certificate(path.read_bytes()) if path.exists() else None
        return cert, registration_args(world, spec)
    index = world.agent_home(spec.name) / "wallet.json"
    entries = json.loads(index.read_text()) if index.exists() else {}
    mine = sorted((str(e.get("not_after", "")), name) for name, e in entries.items()
                  if e.get("pan_last4") == card.pan[-4:]
                  and str(e.get("brand", "")).lower() == world.brand.lower())
    cert = None
    if mine:
        path = world.keys_dir(spec.name) / f"{mine[-1][1]}.cert.pem"
        cert = load_certificate(path.read_bytes()) if path.exists() else None
    ca = world.agent(spec.options.get("ca", "cca"))
    return cert, {"pan": card.pan, "expiry": card.expiry, "ca": ca.address, "brand": world.brand}


def refusal(world, cert, now: dt.datetime) -> str | None:
    """Why ``cert`` cannot be renewed (none held, expired, revoked), or None."""
    from setmail.world.trees import crls
    if cert is None:
        return "holds no certificate to renew (register first)"
    serial = format(cert.serial_number, "x")
    if cert.not_valid_after_utc <= now:
        return (f"certificate {serial} expired on {cert.not_valid_after_utc:%Y-%m-%d}: only a "
                "valid certificate is renewed (register anew)")
    for crl in crls(world):
        if crl.issuer != cert.issuer:
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return (f"certificate {serial} was revoked on {entry.revocation_date_utc:%Y-%m-%d}: "
                    "a revoked certificate cannot be renewed (register anew)")
    return None


def renew(agent: str = typer.Argument(..., help="agent whose certificate to renew"),
          card: str = typer.Option(None, "--card", help="cardholders: the card (default: the "
                                   "cardholder's first)"),
          name: str = typer.Option(None, "--name", help="cardholders: CardholderName"),
          postal_code: str = typer.Option("10001", "--postal-code",
                                          help="cardholders: PostalCode"),
          wait: float = wait_option("the new certificate"), json_out: bool = json_option(),
          home: Path = home_option()) -> None:
    """Renew a cardholder's, merchant's or gateway's certificate by mail, before it expires.

    Exit 0 once queued (or, with --wait, once the new certificate is stored), 3 if it cannot
    be renewed (none, expired, revoked) or was refused, 4 if it did not finish in time."""
    from setmail.cli.waiting import EXIT_REFUSED, Wait, report
    from setmail.cli.world_cmds import follow_registration
    world = load(home)
    spec = world.agent(agent)
    if spec.kind not in ("cardholder", "merchant", "gateway"):
        _fail(f"{agent} is {a_kind(spec.kind)}: only cardholders, merchants and gateways hold "
              "certificates to renew", EXIT_USAGE)
    chosen = cards_for(world, agent, card)[0] if spec.kind == "cardholder" else None
    cert, args = _current(world, spec, chosen)
    why = refusal(world, cert, dt.datetime.now(dt.timezone.utc))
    if why is not None:
        _fail(f"{agent}: {why}", EXIT_REFUSED)
    if chosen is not None:
        args["fields"] = {"CardholderName": name or agent.title(), "PostalCode": postal_code}
    waiting = Wait(world, wait, what=f"{agent} renews certificate {cert.serial_number:x}",
                   json_out=json_out)
    queued = waiting.submit(agent, "renew", args)
    if not json_out:
        typer.echo(f"queued renew for {agent} (certificate {cert.serial_number:x}, valid until "
                   f"{cert.not_valid_after_utc:%Y-%m-%d}) as {queued.ref}")
    started = time.monotonic()
    ca = str(spec.options.get("ca") or _CA_OF[spec.kind])
    end = follow_registration(waiting, queued, ca, "renewal")
    if end.outcome == "done":
        state = _state_of(world, queued)
        if not _installed(world, spec, state, wait - (time.monotonic() - started)):
            end.outcome, end.message = "timed out", "issued, but not yet in the agent's files"
        else:
            end.message = (f"{agent}: certificate renewed — {_summary(state)}; the old one "
                           "stays valid until it expires")
            if spec.kind == "gateway":
                end.hints = _refresh_merchants(world, agent)
    report(end, json_out=json_out, wait=waiting)


#: the CA agent that certifies each kind (world.toml ``ca`` option overrides)
_CA_OF = {"cardholder": "cca", "merchant": "mca", "gateway": "pca"}


def _state_of(world, queued) -> dict:
    from setmail.agent import commands as cmdq
    store = cmdq.open_store(world.store_path(queued.agent))
    try:
        row = cmdq.get(store, queued.id)
        return (store.get_state("tx/" + row.txkey) or {}) if row and row.txkey else {}
    finally:
        store.close()


def _new_certificate(state: dict):
    from setmail.roles.certs import load_cert_hex
    value = state.get("certificate") or (state.get("certificates") or {}).get("signature")
    return load_cert_hex(value) if value else None


def _summary(state: dict) -> str:
    cert = _new_certificate(state)
    if cert is None:
        return "see the agent's log"
    return (f"serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}, "
            f"subject {cert.subject.rfc4514_string()}")


def _installed(world, spec, state: dict, seconds: float) -> bool:
    """Wait (up to ``seconds``) until the agent's files hold the new certificate: it writes
    them right after the commit the state shows."""
    from setmail.pki.parse import load_certificate
    new = _new_certificate(state)
    path = (world.keys_dir(spec.name) / "sig.cert.pem" if spec.kind != "cardholder"
            else world.keys_dir(spec.name) / f"{state.get('key_id')}.cert.pem")
    deadline = time.monotonic() + max(seconds, 1.0)
    while new is not None:
        try:
            if load_certificate(path.read_bytes()) == new:
                return True
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _refresh_merchants(world, gateway: str) -> list[str]:
    """Each merchant of ``gateway`` fetches its new certificates (PCertReq); what was queued."""
    from setmail.agent import commands as cmdq
    queued = []
    for merchant in world.agents_of_kind("merchant"):
        if merchant.options.get("gateway") != gateway:
            continue
        store = cmdq.open_store(world.store_path(merchant.name))
        try:
            cmdq.submit(store, "pcert", {})
        finally:
            store.close()
        queued.append(f"queued pcert for {merchant.name}: it fetches {gateway}'s new "
                      "certificates")
    return queued


def register_commands(app: typer.Typer) -> None:
    app.command("renew")(renew)
