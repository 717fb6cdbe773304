"""``setmail export AGENT DIR``: one party's bundle, the world as its own host sees it.

A bundle is a world directory (``setmail agent --home DIR`` runs it) whose world.toml names the
one agent it runs (``[world] bundle``) and lists its counterparts by address, with the options
others may know (merID, acquirer BIN, CA label).  It holds (docs/deploy.md):

* the agent's own folder: its keys, certificates, store (commands queued by ``init``: a
  registration), its copy of its gateway's certificates;
* its counterparts' *public* files only: certificates, chains, CRLs, the brand's BCI, the
  pinned root (``pki/trust``); the Root and Brand CA keys stay where ``init`` ran (offline);
* card data only where SET puts it: a cardholder its own cards, an issuer the cards it issued,
  the Cardholder CA the cards of the cardholders it certifies (it checks each PAN: D-400);
* a registration code only in the bundles of the party it belongs to and of the CA it registers
  with.

No private key but the owner's is copied: the copy is by an explicit list of public file names.

A party added to world.toml later gets its bundle the same way (``register``: its registration
by mail queued in the bundle's store, as ``init`` does for the first ones), and each of its
counterparts' bundles is brought up to date (``update_bundle``): world.toml and the public
files again, the owner's folder untouched.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import sqlite3
from pathlib import Path

from setmail.errors import WorldError
from setmail.mail.maildir import ensure_maildir
from setmail.roles.ca_issue import CERTIFIES
from setmail.store.lock import agent_lock, world_lock
from setmail.world.config import WORLD_FILE, AgentSpec, World, dump_toml, load_world
from setmail.world.create import private_tree, queue_registration

#: the files of another party (or of the Root and Brand CA) a bundle may hold
PUBLIC_FILES = ("sig.cert.pem", "kex.cert.pem", "chain.pem", "crl.pem", "bci.pem")
#: world.toml options of a counterpart a bundle keeps (nothing secret, no other agent's name)
PUBLIC_OPTIONS = ("ca", "mer_id", "acquirer_bin", "acquirer_id", "acquirer_business_id",
                  "display_name", "auth_expiry_days")
#: files of the owner's folder not copied: its lock, its store (copied by SQLite's backup)
_SKIP = ("agent.lock", "state.db", "state.db-wal", "state.db-shm", "state.db-journal")


def _names(world: World, kind: str) -> set[str]:
    return {a.name for a in world.agents_of_kind(kind)}


def _gateway_issuer(world: World, gateway: AgentSpec) -> str | None:
    if gateway.options.get("issuer"):
        return str(gateway.options["issuer"])
    issuers = _names(world, "issuer")
    return next(iter(issuers)) if len(issuers) == 1 else None


def counterparts(world: World, spec: AgentSpec) -> set[str]:
    """The agents ``spec`` exchanges mail with or checks certificates of, besides the CAs."""
    kind, name = spec.kind, spec.name
    if kind == "cardholder":
        return _names(world, "merchant") | {c.issuer for c in world.cards_of(name)}
    if kind == "merchant":
        return {str(spec.options.get("gateway") or "")} & set(world.agents)
    if kind == "gateway":
        return ({_gateway_issuer(world, spec)} & set(world.agents)) | {
            m.name for m in world.agents_of_kind("merchant") if m.options.get("gateway") == name}
    if kind == "issuer":
        return {g.name for g in world.agents_of_kind("gateway")
                if _gateway_issuer(world, g) == name} | {
            c.holder for c in world.cards.values() if c.issuer == name}
    if kind == "ca":
        return _names(world, CERTIFIES.get(str(spec.options.get("ca", name)), ""))
    return set()


def _ca_label(world: World, spec: AgentSpec) -> str:
    return str(spec.options.get("ca", spec.name)) if spec.kind == "ca" else ""


def bundle_world(world: World, name: str, home: Path, *, smtp_host: str, smtp_port: int,
                 mailboxes: Path) -> World:
    """The bundle's world.toml content for agent ``name`` (module docstring)."""
    own = world.agent(name)
    members = counterparts(world, own)
    label = _ca_label(world, own)
    agents = {name: dataclasses.replace(own, smtp_host=None, smtp_port=None)}
    for other in sorted(members | _names(world, "ca")):
        spec = world.agent(other)
        options = {k: v for k, v in spec.options.items() if k in PUBLIC_OPTIONS}
        if CERTIFIES.get(label) == spec.kind and spec.options.get("registration_code"):
            options["registration_code"] = spec.options["registration_code"]
        agents[other] = AgentSpec(other, spec.kind, spec.address, options=options)
    if own.kind == "cardholder":
        cards = world.cards_of(name)
    elif own.kind == "issuer":
        cards = [c for c in world.cards.values() if c.issuer == name]
    elif label == "cca":
        cards = [c for c in world.cards.values() if c.holder in members]
    else:
        cards = []
    return World(home, world.name, world.suite, world.brand, smtp_host, smtp_port, mailboxes,
                 agents, {c.name: c for c in cards}, world.created, bundle=name,
                 purchase_expiry=world.purchase_expiry)


def _copy_public(source: Path, target: Path) -> None:
    """A counterpart's public files; its folder exists even without them (a party certified by
    mail later: where its certificates go when they are handed over)."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for file in PUBLIC_FILES:
        if (source / file).is_file():
            shutil.copyfile(source / file, target / file)


def _copy_own(source: Path, target: Path) -> None:
    """The owner's folder: files as they are, its SQLite store by the backup API (consistent
    even with a write-ahead log beside it)."""
    def skip(folder, names):
        return [n for n in names if n in _SKIP or (n.startswith(".") and n.endswith(".tmp"))]
    shutil.copytree(source, target, ignore=skip, dirs_exist_ok=True)
    if (source / "state.db").exists():
        src = sqlite3.connect(f"file:{source / 'state.db'}?mode=ro", uri=True)
        dst = sqlite3.connect(target / "state.db")
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()


def _prepare(dest: Path, force: bool) -> None:
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise WorldError(f"{dest} is not empty; use --force to replace the bundle there")
        try:
            old = load_world(dest)
        except WorldError:
            old = None
        if old is None or not old.bundle:
            raise WorldError(f"{dest} holds no bundle: refusing to replace it")
        with agent_lock(old.agent_home(old.bundle), old.bundle):
            pass  # refuses (AlreadyRunning) while the bundle's agent runs
        shutil.rmtree(dest)
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)


def _source(world: World) -> None:
    if world.bundle:
        raise WorldError(f"{world.home} is itself a bundle of {world.bundle}: export from the "
                         "world `setmail init` wrote")


def _write_slice(world: World, bundle: World) -> None:
    """world.toml and every public file of the bundle (never the owner's folder)."""
    name = bundle.bundle
    for other in bundle.agents:
        if other != name:
            _copy_public(world.keys_dir(other), bundle.keys_dir(other))
    for label in ("root", "brand"):
        _copy_public(world.pki_dir / label, bundle.pki_dir / label)
    (bundle.pki_dir / "trust").mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(world.pki_dir / "trust" / "root.cert.pem",
                    bundle.pki_dir / "trust" / "root.cert.pem")
    spec = bundle.agent(name)
    (bundle.home / WORLD_FILE).write_text(
        f"# setmail bundle of {name} ({spec.kind}, {spec.address}): its own keys, its "
        "counterparts' addresses and certificates\n" + dump_toml(bundle.to_dict()))
    private_tree(bundle.home)


def export_bundle(world: World, name: str, dest: Path, *, smtp_host: str | None = None,
                  smtp_port: int | None = None, mailboxes: Path | None = None,
                  force: bool = False, register: bool = False) -> World:
    """Write agent ``name``'s bundle at ``dest`` (module docstring) and return it.  The agent
    must not be running meanwhile (its lock is held while its store is copied); afterwards it
    runs from the bundle, not from this world.  ``register``: queue its registration by mail
    (a merchant or gateway added to world.toml after ``init``)."""
    _source(world)
    spec = world.agent(name)
    dest = Path(dest).absolute()
    if dest == world.home or dest.is_relative_to(world.home / "agents"):
        raise WorldError(f"{dest} is inside the world: give a folder of its own")
    if register and not (spec.kind in ("merchant", "gateway")
                         and spec.options.get("registration_code")):
        raise WorldError(f"{name} registers by mail only as a merchant or gateway with a "
                         "registration_code in world.toml")
    mailboxes = Path(mailboxes).absolute() if mailboxes else dest / "mailboxes"
    world.agent_home(name).mkdir(mode=0o700, parents=True, exist_ok=True)  # added since init
    with world_lock(world.home, shared=True), agent_lock(world.agent_home(name), name):
        _prepare(dest, force)
        bundle = bundle_world(world, name, dest, smtp_host=smtp_host or world.smtp_host,
                              smtp_port=smtp_port or world.smtp_port, mailboxes=mailboxes)
        try:
            _copy_own(world.agent_home(name), bundle.agent_home(name))
            if register:
                queue_registration(world, spec, _now(), bundle.store_path(name))
            ensure_maildir(bundle.maildir(name))
            _write_slice(world, bundle)
        except OSError as exc:
            raise WorldError(f"cannot write the bundle at {dest}: {exc}") from exc
    return bundle


def update_bundle(world: World, dest: Path) -> World:
    """Bring the bundle at ``dest`` up to date with ``world`` (parties added, certificates
    issued, CRLs published): its world.toml and the public files again, never the owner's
    folder.  ``dest`` may hold only the bundle's world.toml (a copy from its host): what is
    written there is public, to be copied back over the bundle; its agent reads the new
    world.toml when it starts again (an issuer's new cards: ``setmail accounts``)."""
    _source(world)
    old = load_world(dest)
    if not old.bundle:
        raise WorldError(f"{old.home} holds no bundle to update")
    bundle = bundle_world(world, old.bundle, old.home, smtp_host=old.smtp_host,
                          smtp_port=old.smtp_port, mailboxes=old.mailboxes)
    try:
        _write_slice(world, bundle)
    except OSError as exc:
        raise WorldError(f"cannot update the bundle at {old.home}: {exc}") from exc
    return bundle


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
