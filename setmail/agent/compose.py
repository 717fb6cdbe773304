"""What an agent runs: its party's role (from ``agent.factories``) with the certificate lifecycle
composed around it, and what makes the agent build it again (``agent.reload``).

* **Merchant**: ``Dispatch`` of the PCert client (its copy of its gateway's certificates, by
  mail), merchant/gateway registration (``register``, ``renew``) and the merchant role.  The
  merchant role needs its own certificates and its gateway's key-exchange certificate; until both
  are there the agent runs only what it can (registration; then the PCert client), and is rebuilt
  when an effect or a watched file says they arrived.  The merchant factory reads its gateway's
  certificates where the world keeps that gateway's keys; here it is shown the merchant's own copy
  instead (``peers/<gateway>/``, written by ``pcert.gateway``), so no agent reads another
  agent's key files for them.
* **Gateway**: the PCert server, registration and the gateway role (which needs its own
  certificates; until then registration runs alone).
* **Issuer**: its role pins its gateways' certificates (D-130); until they exist it waits
  (``Waiting``) and watches for them.
* **CA**, **cardholder**: their factories' roles as they are.

Watched files: the brand's CRL publication (every CA's ``crl.pem`` and the brand's ``bci.pem``)
for the parties that carry a BrandCRLIdentifier to others (CAs, gateways, merchants: in SET they
are the ones the brand's revocations reach first); the merchants' certificates for a gateway (its
directory), the gateways' certificates for an issuer (its pins); and the files a party waits for.
A cardholder's wallet watches nothing: it learns of a revocation from the BCI of a response
(``Reloader.stale``), as SET has it.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

from setmail.agent import certfiles  # noqa: F401  (registers the ee.* and pcert.* effects)
from setmail.agent.reload import Built, Waiting
from setmail.crypto.cms import Identity
from setmail.crypto.suite import get_suite
from setmail.pki.setext import read_merchant_data
from setmail.roles.base import Role
from setmail.roles.ca_renewal import gateway_subject
from setmail.roles.dispatch import Dispatch
from setmail.roles.ee_reg import EERegConfig, EERegistration
from setmail.roles.pcert import (PCertClient, PCertClientConfig, PCertServer, PCertServerConfig,
                                 with_current)
from setmail.world.config import AgentSpec, World
from setmail.world.directory import load_directory
from setmail.world.keys import CA_TREE, load_cert, load_chain, load_key
from setmail.world.peers import peer_dir
from setmail.world.trees import brand_bci, ca_directory, crls, trust_store

Factory = Callable[[World, AgentSpec], Role]
_OWN = ("sig.key.pem", "sig.cert.pem", "kex.key.pem", "kex.cert.pem", "chain.pem")


def publication(world: World) -> tuple[Path, ...]:
    """The brand's revocation publication: every CA's CRL and the brand's BCI."""
    return (*(ca_directory(world, label) / "crl.pem" for label, _, _ in CA_TREE),
            ca_directory(world, "brand") / "bci.pem")


def bci_sequence(world: World) -> int | None:
    bci = brand_bci(world)
    return None if bci is None else int(bci["tbs"]["sequence_num"].native)


def _seconds(spec: AgentSpec, option: str, default: float) -> dt.timedelta:
    return dt.timedelta(seconds=float(spec.options.get(option, default)))


def own_identity(world: World, name: str) -> Identity | None:
    """The party's signature identity (CA chain without the root), None before it has one."""
    keys = world.keys_dir(name)
    if not all((keys / f).exists() for f in _OWN):
        return None
    chain = tuple(c for c in load_chain(keys / "chain.pem") if c.subject != c.issuer)
    return Identity(load_key(keys / "sig.key.pem"), load_cert(keys / "sig.cert.pem"), chain)


def compose(world: World, spec: AgentSpec, factory: Factory) -> Built:
    if spec.kind in ("merchant", "gateway"):
        return _certified(world, spec, factory)
    if spec.kind == "issuer":
        return _issuer(world, spec, factory)
    watch = publication(world) if spec.kind == "ca" else ()
    role = factory(world, spec)
    if spec.kind == "cardholder":
        role = _renewing_cards(world, spec, role)
    return Built(role, bci_sequence=bci_sequence(world), watch=watch)


def _renewing_cards(world: World, spec: AgentSpec, role: Role) -> Role:
    """The cardholder's registration, able to renew: it signs with the card's current
    certificate from the wallet's files (unless its factory gave it a way already)."""
    from setmail.agent.factories.wallet import WalletFiles
    from setmail.roles.cardholder_reg import CardholderRegistration
    subs = getattr(role, "roles", ())
    if not any(isinstance(r, CardholderRegistration) and r.config.current is None for r in subs):
        return role
    files = WalletFiles(world.agent_home(spec.name))

    def current(pan_last4: str, brand: str):
        card = files(pan_last4, brand)
        return None if card is None else card.identity

    subs = [CardholderRegistration(dataclasses.replace(r.config, current=current))
            if isinstance(r, CardholderRegistration) else r for r in subs]
    return Dispatch(subs, name=role.name, primary=role.shared_key and next(
        (r.name for r in subs if r.shared_key == role.shared_key), None),
        errors_to=role.errors_to.name if role.errors_to is not None else None)


def _registration(world: World, spec: AgentSpec) -> EERegistration:
    keys = world.keys_dir(spec.name)

    def pending_key(key_id: str):
        path = keys / "pending" / f"{key_id}.key.pem"
        return load_key(path) if path.exists() else None

    return EERegistration(EERegConfig(
        name=spec.address, trust=trust_store(world), suite=get_suite(world.suite),
        crls=crls(world), key_lookup=pending_key, kind=spec.kind,
        current=lambda: own_identity(world, spec.name),
        retry_after=_seconds(spec, "retry_after", 1800),
        max_retries=int(spec.options.get("max_retries", 3))))


def _certified(world: World, spec: AgentSpec, factory: Factory) -> Built:
    own = own_identity(world, spec.name)
    watch = [*publication(world), world.keys_dir(spec.name) / "sig.cert.pem"]
    subs: list[Role] = []
    view, waiting = world, "its certificates (registration by mail)"
    if spec.kind == "merchant":
        gateway = world.agent(spec.options.get("gateway") or "")
        folder = peer_dir(world.agent_home(spec.name), gateway.name)
        watch.append(folder / "kex.cert.pem")
        if own is not None:
            subs.append(_pcert_client(world, spec, own, gateway, folder))
            waiting = f"the certificates of its gateway {gateway.name} (PCertReq)"
        view = copy.copy(world)  # the merchant factory reads its gateway's certificates here
        view.keys_dir = lambda name, _w=world, _g=gateway.name, _f=folder: (
            _f if name == _g else World.keys_dir(_w, name))
        ready = own is not None and (folder / "kex.cert.pem").exists()
    else:
        if own is not None:
            subs.append(_pcert_server(world, spec, own))
        watch += [world.keys_dir(m.name) / "sig.cert.pem" for m in world.agents_of_kind("merchant")]
        ready = own is not None
    subs.append(_registration(world, spec))
    main = factory(view, spec) if ready else None
    if main is not None:
        subs.append(main)
    role = Dispatch(subs, name=spec.kind,
                    primary=main.name if main is not None and main.shared_key else None,
                    errors_to=main.name if main is not None else None)
    return Built(role, ready=ready, waiting="" if ready else waiting,
                 bci_sequence=bci_sequence(world), watch=tuple(watch))


def _pcert_client(world, spec, own: Identity, gateway: AgentSpec, folder: Path) -> PCertClient:
    info = read_merchant_data(own.cert)
    current = load_cert(folder / "kex.cert.pem") if (folder / "kex.cert.pem").exists() else None
    return PCertClient(with_current(PCertClientConfig(
        name=spec.address, sig=own, mer_id=str(spec.options.get("mer_id") or info.mer_id),
        gateway=gateway.address, peer=gateway.name,
        gateway_subject=gateway_subject(world.brand, gateway.name).public_bytes(),
        trust=trust_store(world), brand=world.brand,
        bin=str(spec.options.get("acquirer_bin", "41111111")), crls=crls(world),
        suite=get_suite(world.suite),
        retry_after=_seconds(spec, "retry_after", 1800),
        max_retries=int(spec.options.get("max_retries", 3)),
        refresh_after=_seconds(spec, "pcert_refresh", 86400)), current))


def merchant_addresses(world: World) -> dict[str, str]:
    """merID -> address of the world's merchants: agreed in world.toml (``mer_id``) or carried
    by their certificates."""
    out = {p.mer_id: p.address for p in load_directory(world).of_kind("merchant") if p.mer_id}
    for m in world.agents_of_kind("merchant"):
        if m.options.get("mer_id"):
            out.setdefault(str(m.options["mer_id"]), m.address)
    return out


def fresh_merchant_addresses(world: World) -> Callable[[str], str | None]:
    """merID -> address, read again when a merID is not known (a merchant certified by mail
    after this role was built asks at once for its gateway's certificates)."""
    known = merchant_addresses(world)

    def address(mer_id: str) -> str | None:
        if mer_id not in known:
            known.update(merchant_addresses(world))
        return known.get(mer_id)
    return address


def _pcert_server(world, spec, own: Identity) -> PCertServer:
    opts = spec.options
    return PCertServer(PCertServerConfig(
        name=spec.address, sig=own, kex=load_cert(world.keys_dir(spec.name) / "kex.cert.pem"),
        trust=trust_store(world), brand=world.brand, merchants=fresh_merchant_addresses(world),
        bins=(str(opts.get("acquirer_bin") or opts.get("acquirer_id") or "41111111"),),
        bci=brand_bci(world), crls=crls(world), suite=get_suite(world.suite)))


def _issuer(world: World, spec: AgentSpec, factory: Factory) -> Built:
    pins = [world.keys_dir(g.name) / f for g in world.agents_of_kind("gateway")
            for f in ("sig.cert.pem", "kex.cert.pem")]
    if not all(p.exists() for p in pins):
        return Built(Waiting(), ready=False, waiting="its gateways' certificates",
                     watch=tuple(pins))
    return Built(factory(world, spec), bci_sequence=bci_sequence(world), watch=tuple(pins))
