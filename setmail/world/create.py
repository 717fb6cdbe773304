"""``setmail init``: create a demo world on disk.

Parties: cardholders ``alice`` and ``bob`` (cards at ``bank``), merchant ``shop``, payment gateway
``gateway``, issuer ``bank`` and the CA agents ``cca`` (cardholders), ``mca`` (merchants) and
``pca`` (gateways).  The CA tree is created here.  Merchants and gateways get their signature and
key-exchange certificates by mail (``certificates="mail"``, the default): init writes the
registration code each agrees with its acquirer (world.toml ``registration_code``, which the
MCA/PCA check) and queues its ``register`` command (a merchant's ``pcert`` too), which its agent
runs when ``setmail run`` starts.  ``certificates="direct"`` issues them here instead (tests that
are not about registration: fast), with each merchant's copy of its gateway's certificates
(``world.peers``).  Cardholders get theirs by mail (``setmail register``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from setmail.crypto.suite import get_suite
from setmail.errors import WorldError, WorldExists
from setmail.mail.maildir import ensure_maildir
from setmail.pki.hierarchy import create_hierarchy
from setmail.pki.parse import to_pem
from setmail.pki.pinned import pinned_certificate
from setmail.pki.setext import MerchantInfo, MerName
from setmail.store.lock import AlreadyRunning, FileLock, WorldBusy, agent_lock, world_lock
from setmail.store.shared import open_store, submit
from setmail.world.config import WORLD_FILE, AgentSpec, Card, World, dump_toml
from setmail.world.keys import save_ca, save_chain, save_identity
from setmail.world.peers import peer_dir

#: how merchants and gateways get their certificates: by mail (the product) or issued by init
CERTIFICATES = ("mail", "direct")

DEMO_AGENTS = (
    AgentSpec("alice", "cardholder", "alice@cardholder.example", options={"ca": "cca"}),
    AgentSpec("bob", "cardholder", "bob@cardholder.example", options={"ca": "cca"}),
    AgentSpec("shop", "merchant", "shop@merchant.example",
              options={"gateway": "gateway", "auto_capture": True, "mer_id": "SHOP-0001",
                       "acquirer_bin": "41111111", "display_name": "The Shop"}),
    AgentSpec("gateway", "gateway", "gateway@gateway.example", options={"issuer": "bank"}),
    AgentSpec("bank", "issuer", "bank@issuer.example"),
    AgentSpec("cca", "ca", "cca@ca.example", options={"ca": "cca"}),
    AgentSpec("mca", "ca", "mca@ca.example", options={"ca": "mca"}),
    AgentSpec("pca", "ca", "pca@ca.example", options={"ca": "pca"}),
)
DEMO_CARDS = (
    Card("alice-visa", "alice", "bank", "4111111111111111", "202912", "5000.00"),
    Card("bob-visa", "bob", "bank", "4012888888881881", "202806", "1500.00"),
)
#: the issuer's card accounts (``status``: active, or blocked = ISO 8583 "05 do not honor")
ACCOUNTS_DDL = ("CREATE TABLE IF NOT EXISTS issuer_accounts (pan TEXT PRIMARY KEY, "
                "expiry TEXT NOT NULL, holder TEXT NOT NULL, credit_limit_minor INTEGER NOT NULL, "
                "currency TEXT NOT NULL, created_at REAL NOT NULL, "
                "status TEXT NOT NULL DEFAULT 'active')",)


def _minor(amount: str) -> int:
    units, _, cents = amount.partition(".")
    return int(units) * 100 + int((cents + "00")[:2])


def _mkdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def create_world(home: Path, *, smtp_host: str = "127.0.0.1", smtp_port: int = 2525,
                 force: bool = False, suite: str = "rsa2048", brand: str = "Visa",
                 mailboxes: Path | None = None, now: dt.datetime | None = None,
                 extra_agents: tuple[AgentSpec, ...] = (), extra_cards: tuple[Card, ...] = (),
                 certificates: str = "mail") -> World:
    """Create the demo world; ``extra_agents``/``extra_cards`` add parties and card accounts
    (tests use them for a second gateway or a card its issuer does not know); ``certificates``:
    "mail" or "direct" (module doc).  Holds the world lock, and with ``force`` refuses
    (``WorldBusy``) while any agent of the world runs."""
    if certificates not in CERTIFICATES:
        raise WorldError(f"certificates must be one of {', '.join(CERTIFICATES)}")
    home = Path(home).absolute()
    try:
        _mkdir(home)
        lock = world_lock(home, shared=False)  # one init at a time, no agent starting meanwhile
    except OSError as exc:
        raise WorldError(f"cannot create the world at {home}: {exc}") from exc
    with lock:
        if ((home / WORLD_FILE).exists() or (home / "agents").exists()) and not force:
            raise WorldExists(f"a world already exists at {home}; use --force to recreate it")
        with _stopped_agents(home):
            return _create(home, smtp_host=smtp_host, smtp_port=smtp_port, force=force, suite=suite,
                           brand=brand, mailboxes=mailboxes, now=now,
                           extra_agents=extra_agents, extra_cards=extra_cards,
                           by_mail=certificates == "mail")


@contextmanager
def _stopped_agents(home: Path) -> Iterator[None]:
    """Every agent lock of the world at ``home``, held while it is wiped and written: refuses
    (``WorldBusy``, exit 3) while any agent runs, and keeps agents from starting meanwhile."""
    held: list[FileLock] = []
    try:
        agents = home / "agents"
        for entry in sorted(agents.iterdir()) if agents.is_dir() else ():
            if not entry.is_dir() or entry.is_symlink():
                continue
            try:
                held.append(agent_lock(entry, entry.name))
            except AlreadyRunning as exc:
                raise WorldBusy(f"agent {entry.name} is running (pid {exc.pid or 'unknown'}): "
                                f"stop it before re-creating the world at {home}",
                                exc.pid) from None
        yield
    finally:
        for lock in held:
            lock.release()


def _create(home: Path, *, smtp_host: str, smtp_port: int, force: bool, suite: str, brand: str,
            mailboxes: Path | None, now: dt.datetime | None, extra_agents: tuple[AgentSpec, ...],
            extra_cards: tuple[Card, ...], by_mail: bool) -> World:
    if force:
        for sub in ("agents", "pki", WORLD_FILE):
            target = home / sub
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    crypto = get_suite(suite)
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    mailboxes = Path(mailboxes).absolute() if mailboxes else home / "mailboxes"
    agents = (*DEMO_AGENTS, *extra_agents)
    if by_mail:
        agents = tuple(_with_code(a) for a in agents)
    world = World(home, "demo", suite, brand, smtp_host, smtp_port, mailboxes,
                  {a.name: a for a in agents},
                  {c.name: c for c in (*DEMO_CARDS, *extra_cards)},
                  now.isoformat())
    try:
        _mkdir(home)
        for name in world.agents:
            _mkdir(world.keys_dir(name))
            maildir = world.maildir(name)
            if force and maildir.exists():
                shutil.rmtree(maildir)
            ensure_maildir(maildir)
        _write_pki(world, crypto, now, by_mail=by_mail)
        _write_accounts(world, now)
        if by_mail:
            _queue_registrations(world, now)
        (home / WORLD_FILE).write_text(
            "# setmail world: parties, mail addresses, SMTP, suite, demo card accounts\n"
            + dump_toml(world.to_dict()))
        private_tree(home)
        private_tree(mailboxes)
    except OSError as exc:
        raise WorldError(f"cannot create the world at {home}: {exc}") from exc
    return world


def private_tree(root: Path) -> None:
    """Directories 0700, files 0600: keys, PANs (world.toml, the issuer's store) and mail."""
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o700)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o600)


def _write_pki(world: World, crypto, now: dt.datetime, *, by_mail: bool) -> None:
    tree = create_hierarchy(crypto, now, brand=world.brand)
    for label, ca in (("root", tree.root), ("brand", tree.brand)):
        _mkdir(world.pki_dir / label)
        save_ca(world.pki_dir / label, ca)
    _mkdir(world.pki_dir / "trust")
    (world.pki_dir / "trust" / "root.cert.pem").write_bytes(to_pem(tree.root.certificate))
    for spec in world.agents_of_kind("ca"):
        save_ca(world.keys_dir(spec.name), getattr(tree, spec.options.get("ca", spec.name)))
    _write_issuers(world, crypto, now)
    if by_mail:
        return
    for spec in world.agents_of_kind("merchant"):
        sig, kex = crypto.generate_key(), crypto.generate_key()
        name = spec.options.get("display_name", spec.name)
        info = MerchantInfo(spec.options.get("mer_id", spec.name.upper()),
                            spec.options.get("acquirer_bin", "41111111"),
                            (MerName("en", name, "Springfield", "US"),), 840)
        sig_cert, kex_cert = tree.issue_merchant(sig.public_key(), kex.public_key(), info, now)
        _save_ee(world, spec.name, sig, sig_cert, kex, kex_cert, tree.mca.chain)
    for spec in world.agents_of_kind("gateway"):
        sig, kex = crypto.generate_key(), crypto.generate_key()
        sig_cert, kex_cert = tree.issue_gateway(sig.public_key(), kex.public_key(), now,
                                                name=spec.name)
        _save_ee(world, spec.name, sig, sig_cert, kex, kex_cert, tree.pca.chain)
    for spec in world.agents_of_kind("merchant"):  # as the acquirer hands them over
        gateway = world.agents.get(spec.options.get("gateway") or "")
        if gateway is not None:
            _copy_peer(world, spec.name, gateway.name)


def _write_issuers(world: World, crypto, now: dt.datetime) -> None:
    for spec in world.agents_of_kind("issuer"):  # outside SET's PKI: pinned certificates (D-130)
        keys = world.keys_dir(spec.name)
        for prefix, kex in (("sig", False), ("kex", True)):
            key = crypto.generate_key()
            cert = pinned_certificate(key, spec.options.get("display_name", spec.name), now,
                                      key_exchange=kex, suite=crypto)
            save_identity(keys, prefix, key, cert)


def _copy_peer(world: World, name: str, peer: str) -> None:
    """``name``'s copy of ``peer``'s certificates (what PCertRes would bring)."""
    folder, source = peer_dir(world.agent_home(name), peer), world.keys_dir(peer)
    _mkdir(folder.parent)
    _mkdir(folder)
    for file in ("sig.cert.pem", "kex.cert.pem", "chain.pem"):
        (folder / file).write_bytes((source / file).read_bytes())


def _with_code(spec: AgentSpec) -> AgentSpec:
    """A merchant or gateway with the registration code it agrees with its acquirer (kept if
    world.toml gives one): the MCA/PCA certify by mail only with it (D-147)."""
    if spec.kind not in ("merchant", "gateway") or spec.options.get("registration_code"):
        return spec
    return dataclasses.replace(spec, options={**spec.options,
                                              "registration_code": secrets.token_hex(16)})


def _ca_of(world: World, label: str) -> AgentSpec:
    found = [a for a in world.agents_of_kind("ca") if a.options.get("ca", a.name) == label]
    if not found:
        raise WorldError(f"no `{label}` CA agent to certify by mail; give init "
                         "certificates=\"direct\"")
    return found[0]


def registration_args(world: World, spec: AgentSpec) -> dict:
    """The ``register`` (or ``renew``) command of a merchant or gateway: its CA, its acquirer
    BIN, merID and the form (without the registration code)."""
    opts = spec.options
    if spec.kind == "merchant":
        return {"ca": _ca_of(world, "mca").address, "bin": str(opts.get("acquirer_bin", "41111111")),
                "merchant_id": str(opts.get("mer_id", spec.name.upper())),
                "fields": {"MerchantName": str(opts.get("display_name", spec.name)),
                           "City": str(opts.get("city", "Springfield")),
                           "CountryName": str(opts.get("country_name", "US")),
                           "CountryCode": str(opts.get("country_code", "840"))}}
    args = {"ca": _ca_of(world, "pca").address, "fields": {"GatewayName": spec.name},
            "bin": str(opts.get("acquirer_bin") or opts.get("acquirer_id") or "41111111")}
    if opts.get("acquirer_business_id"):
        args["acquirer_business_id"] = str(opts["acquirer_business_id"])
    return args


def _queue_registrations(world: World, now: dt.datetime) -> None:
    for spec in (*world.agents_of_kind("gateway"), *world.agents_of_kind("merchant")):
        queue_registration(world, spec, now)


def queue_registration(world: World, spec: AgentSpec, now: dt.datetime,
                       store_path: Path | None = None) -> None:
    """A merchant's or gateway's ``register`` (and a merchant's ``pcert``), run by its agent
    when it starts; ``store_path``: its store elsewhere than in ``world`` (a bundle's)."""
    args = registration_args(world, spec)
    args["fields"]["RegistrationCode"] = str(spec.options["registration_code"])
    store = open_store(store_path or world.store_path(spec.name))
    try:
        submit(store, "register", args, now=now.timestamp())
        if spec.kind == "merchant":
            submit(store, "pcert", {}, now=now.timestamp())
    finally:
        store.close()


def _save_ee(world, name, sig, sig_cert, kex, kex_cert, chain) -> None:
    keys = world.keys_dir(name)
    save_identity(keys, "sig", sig, sig_cert)
    save_identity(keys, "kex", kex, kex_cert)
    save_chain(keys / "chain.pem", chain)


def _write_accounts(world: World, now: dt.datetime) -> None:
    for spec in world.agents_of_kind("issuer"):
        write_accounts(world, spec.name, now)


def write_accounts(world: World, name: str, now: dt.datetime, *, store_path: Path | None = None,
                   keep: bool = False) -> None:
    """The card accounts of issuer ``name`` from world.toml into its store; ``keep``: leave the
    accounts it has as they are (their status and limit are the issuer's since), add the new."""
    path = store_path or world.store_path(name)
    store = open_store(path)
    try:
        with store.transaction(now=now.timestamp()) as tx:
            for statement in ACCOUNTS_DDL:
                tx.execute(statement)
            for card in world.cards.values():
                if card.issuer == name:
                    tx.execute(f"INSERT OR {'IGNORE' if keep else 'REPLACE'} INTO "
                               "issuer_accounts VALUES (?, ?, ?, ?, ?, ?, 'active')",
                               (card.pan, card.expiry, card.holder, _minor(card.credit_limit),
                                card.currency, now.timestamp()))
    finally:
        store.close()
    os.chmod(path, 0o600)
