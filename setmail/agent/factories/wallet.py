"""The cardholder agent: registration and the purchase wallet as one role (``Dispatch``).

The wallet's credentials are the files registration's effects write (``setmail.agent.effects``):
``keys/<key_id>.key.pem``, ``.cert.pem``, ``.chain.pem``, ``.pansecret`` and the index
``wallet.json`` ({key_id: {pan_last4, brand, not_after, ...}}).  ``WalletFiles`` reads them at
each call, so a certificate obtained while the agent runs is found at once, and parses each file
version once (cached by modification time): a purchase asks for its card twice.

The wallet checks the merchant's and the gateway's certificate paths against every CA's CRL
(``setmail.world.trees.crls``, read when the agent starts), and takes a PInitRes only from a
certificate carrying the merID the world's directory binds to the merchant address it buys from
(``DirectoryMerchants``).  world.toml options of a cardholder:

* ``retry_after`` (seconds, default 1800) and ``max_retries`` (default 3): re-sends of PInitReq,
  PReq and InqReq, after which the purchase FAILS (secrets dropped) or the inquiry gives up;
* ``expire_after`` (seconds, default 86400 = 1 day): how long a PReq the merchant said it has
  (orderReceived) may wait for its outcome before the purchase FAILS (secrets dropped; a late
  PRes or an inquiry still records the outcome).
"""
from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from setmail.agent.factory import register_role
from setmail.crypto.cms import Identity
from setmail.errors import WorldError
from setmail.roles.base import Role
from setmail.roles.wallet import WalletCard
from setmail.world.config import AgentSpec, World
from setmail.world.keys import load_cert, load_chain, load_key

_FILES = (".key.pem", ".cert.pem", ".chain.pem", ".pansecret")


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


class WalletFiles:
    """``credentials(pan_last4, brand)`` over an agent's wallet files: the newest certificate
    (latest not_after) registered for that card and brand, or None."""

    def __init__(self, home: Path):
        self.home = home
        self._cache: dict[str, tuple[tuple, WalletCard]] = {}

    def __call__(self, pan_last4: str, brand: str) -> WalletCard | None:
        index = self.home / "wallet.json"
        try:
            entries = json.loads(index.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise WorldError(f"cannot read {index}: {exc}") from exc
        mine = [(str(e.get("not_after", "")), name) for name, e in entries.items()
                if e.get("pan_last4") == pan_last4
                and str(e.get("brand", "")).lower() == str(brand).lower()]
        for _, name in sorted(mine, reverse=True):
            card = self._load(name)
            if card is not None:
                return card
        return None

    def _load(self, name: str) -> WalletCard | None:
        key, cert, chain, secret = (self.home / "keys" / (name + ext) for ext in _FILES)
        stamp = tuple(_mtime(p) for p in (key, cert, chain, secret))  # one stat a file
        if None in (stamp[0], stamp[1], stamp[3]):
            return None  # registration not finished (the key comes before the certificate)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        certs = load_chain(chain) if stamp[2] is not None else []
        try:
            pan_secret = bytes.fromhex(secret.read_text().strip())
        except (OSError, ValueError) as exc:
            raise WorldError(f"cannot read PANSecret {secret}: {exc}") from exc
        # the pinned root is never sent along: every verifier has it
        card = WalletCard(Identity(load_key(key), load_cert(cert),
                                   tuple(c for c in certs if c.issuer != c.subject)), pan_secret)
        self._cache[name] = (stamp, card)
        return card


class DirectoryMerchants(Mapping):
    """merchant address (any case) -> merID, from the world's directory (``world.directory``):
    read when first asked, and again when an address is not found (a merchant registered since)."""

    def __init__(self, world: World):
        self.world = world
        self._ids: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        from setmail.world.directory import load_directory
        self._ids = {p.address.lower(): p.mer_id for p in load_directory(self.world).of_kind(
            "merchant") if p.mer_id}
        return self._ids

    def __getitem__(self, address: str) -> str:
        key = str(address).lower()
        ids = self._ids if self._ids is not None else self._load()
        if key not in ids:
            ids = self._load()
        return ids[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids if self._ids is not None else self._load())

    def __len__(self) -> int:
        return len(self._ids if self._ids is not None else self._load())


@register_role("cardholder")
def cardholder(world: World, spec: AgentSpec) -> Role:
    from setmail.crypto.suite import get_suite
    from setmail.roles.cardholder_reg import CardholderRegConfig, CardholderRegistration
    from setmail.roles.dispatch import Dispatch
    from setmail.roles.wallet import Wallet, WalletConfig
    from setmail.world.trees import crls, trust_store
    keys, suite, trust = world.keys_dir(spec.name), get_suite(world.suite), trust_store(world)
    opts = spec.options

    def key_lookup(key_id: str):
        path = keys / f"{key_id}.key.pem"
        return load_key(path) if path.exists() else None

    revoked = crls(world)
    registration = CardholderRegistration(CardholderRegConfig(
        name=spec.address, trust=trust, suite=suite, key_lookup=key_lookup, crls=revoked))
    wallet = Wallet(WalletConfig(
        name=spec.address, trust=trust, suite=suite, agent=spec.name, crls=revoked,
        retry_after=dt.timedelta(seconds=float(opts.get("retry_after", 1800))),
        max_retries=int(opts.get("max_retries", 3)),
        expire_after=dt.timedelta(seconds=float(opts.get("expire_after", 86400))),
        abandon_after=dt.timedelta(seconds=world.purchase_expiry),
        merchants=DirectoryMerchants(world),
        credentials=WalletFiles(world.agent_home(spec.name))))
    from setmail.agent.factories.issuer import statement_keeper  # the issuer's Statements
    return Dispatch([wallet, statement_keeper(world, spec), registration], name="cardholder")
