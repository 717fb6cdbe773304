"""The payment gateway agent's role, built from a world on disk.

world.toml options of a gateway: ``issuer`` (agent name; default: the world's only issuer),
``acquirer_id`` (DE 32, default "41111111"), ``retry_after`` (seconds, default 1800),
``max_retries`` (default 3), ``auth_expiry_days`` (days an uncaptured authorisation lives
before the gateway wipes the card and reverses the hold, default 7; fractions allowed) and
``max_batch_items`` (items a merchant's open batch takes before the next ones go to a new batch,
default 1000: the open batches live in the gateway's shared state, read at every step).  Merchant
addresses come from the world's directory (``setmail.world.directory``), bound to merIDs.  Keys: ``agents/<name>/keys/{sig,kex}.{key,cert}.pem`` and
``chain.pem`` (the PCA chain; the root is never sent); the issuer's pinned certificates from
``agents/<issuer>/keys/{sig,kex}.cert.pem``; the brand's BCI (omitted from AuthRes/CapRes if
absent) and every CA's CRL (merchant and cardholder paths are checked against them) as
``setmail.world.trees`` reads them when the agent starts.
"""
from __future__ import annotations

import datetime as dt

from setmail.agent.factory import register_role
from setmail.errors import WorldError
from setmail.roles.base import Role
from setmail.roles.directory import Directory, Party
from setmail.world.config import AgentSpec, World
from setmail.world.directory import load_directory


class FreshDirectory(Directory):
    """The world's directory, read again when a merID is not in it.

    Why: a merchant certified by mail after the gateway started is in the directory on disk but
    not in the copy the gateway was built with; without this its first AuthReq would be refused
    ("not in the directory") until the gateway noticed the new certificate file.  Only an
    authenticated request (a merchant certificate valid under the brand's Merchant CA) reaches
    the look-up, so a stranger cannot make the gateway read the disk at will."""

    def __init__(self, world: World):
        self.world = world
        super().__init__(load_directory(world).parties)

    def merchant(self, mer_id: str | None) -> Party | None:
        found = super().merchant(mer_id)
        if found is None and mer_id:
            super().__init__(load_directory(self.world).parties)
            found = super().merchant(mer_id)
        return found


@register_role("gateway")
def gateway(world: World, spec: AgentSpec) -> Role:
    from setmail.agent.certfiles import previous_key_exchange
    from setmail.crypto.cms import Identity
    from setmail.crypto.suite import get_suite
    from setmail.roles.gateway import Gateway, GatewayConfig
    from setmail.world.keys import load_cert, load_chain, load_key
    from setmail.world.trees import brand_bci, crls, trust_store

    opts = spec.options
    issuers = [opts["issuer"]] if opts.get("issuer") else [
        a.name for a in world.agents_of_kind("issuer")]
    if len(issuers) != 1:
        raise WorldError(f"gateway {spec.name} needs an `issuer` option in world.toml")
    issuer = world.agent(issuers[0])
    keys, issuer_keys = world.keys_dir(spec.name), world.keys_dir(issuer.name)
    chain = tuple(c for c in load_chain(keys / "chain.pem") if c.subject != c.issuer)
    return Gateway(GatewayConfig(
        name=spec.address,
        signature=Identity(load_key(keys / "sig.key.pem"), load_cert(keys / "sig.cert.pem"), chain),
        key_exchange=Identity(load_key(keys / "kex.key.pem"), load_cert(keys / "kex.cert.pem"),
                              chain, previous_key_exchange(keys)),
        trust=trust_store(world), issuer=issuer.address,
        issuer_sig=load_cert(issuer_keys / "sig.cert.pem"),
        issuer_kex=load_cert(issuer_keys / "kex.cert.pem"), bci=brand_bci(world),
        crls=crls(world), acquirer_id=str(opts.get("acquirer_id", "41111111")),
        suite=get_suite(world.suite),
        retry_after=dt.timedelta(seconds=float(opts.get("retry_after", 1800))),
        max_retries=int(opts.get("max_retries", 3)), directory=FreshDirectory(world),
        auth_expiry=days_option(spec.name, opts, "auth_expiry_days", 7),
        max_batch_items=count_option(spec.name, opts, "max_batch_items", 1000)))


def days_option(name: str, opts, option: str, default: float) -> dt.timedelta:
    """A positive number of days from world.toml (a clear error otherwise)."""
    try:
        days = float(opts.get(option, default))
    except (TypeError, ValueError):
        days = -1.0
    if not days > 0:
        raise WorldError(f"{name}: `{option}` must be a positive number of days")
    return dt.timedelta(days=days)


def count_option(name: str, opts, option: str, default: int) -> int:
    """A positive whole number from world.toml (a clear error otherwise)."""
    value = opts.get(option, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorldError(f"{name}: `{option}` must be a positive whole number")
    return value
