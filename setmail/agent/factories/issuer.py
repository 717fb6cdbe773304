"""The issuer agent's role, built from a world on disk.

Accounts come from the ``issuer_accounts`` table of the issuer's own store (``setmail init`` fills
it from world.toml; the currency's alphabetic code becomes ISO numeric and exponent, ``money``),
read once when the agent starts; the pinned gateway certificates from
``agents/<gateway>/keys/{sig,kex}.cert.pem`` of every gateway of the world; the issuer's own keys
from ``agents/<name>/keys/{sig,kex}.{key,cert}.pem``.  world.toml option ``hold_days`` (default
10; fractions allowed): a hold neither captured nor reversed is released after that many days.
Statements go to the directory address of each cardholder holding one of this issuer's cards
(``holders``).  Importing this module registers the ledger effects (``setmail.agent.ledger``).

``statement_keeper`` builds the cardholder's side: the wallet's ``Statements`` sub-role, pinned to
the signature certificates of the issuers of that cardholder's cards, each found in the world's
directory (its address, and its certificate's subject among the issuer's identities).
"""
from __future__ import annotations

import setmail.agent.ledger  # noqa: F401  (registers the ledger.* effects)
from setmail.agent.factories.gateway import days_option
from setmail.agent.factory import register_role
from setmail.roles.base import Role
from setmail.world.config import AgentSpec, World


def load_accounts(world: World, name: str) -> dict:
    """{pan: Account} from the issuer's store (an issuer without the table has no accounts)."""
    from setmail.agent.commands import open_store
    from setmail.money import currency_number
    from setmail.roles.issuer import Account
    store = open_store(world.store_path(name))
    try:
        if not store.query("SELECT 1 FROM sqlite_master WHERE name = 'issuer_accounts'"):
            return {}
        rows = store.query("SELECT pan, expiry, holder, credit_limit_minor, currency, status "
                           "FROM issuer_accounts")
    finally:
        store.close()
    accounts = {}
    for pan, expiry, holder, limit, currency, status in rows:
        number, exp10 = currency_number(currency)
        accounts[pan] = Account(expiry=expiry, limit=int(limit), currency=number, status=status,
                                holder=holder, amt_exp10=exp10)
    return accounts


@register_role("issuer")
def issuer(world: World, spec: AgentSpec) -> Role:
    from setmail.crypto.cms import Identity
    from setmail.crypto.suite import get_suite
    from setmail.roles.issuer import Issuer, IssuerConfig
    from setmail.world.directory import load_directory
    from setmail.world.keys import load_cert, load_key
    keys = world.keys_dir(spec.name)
    directory = load_directory(world)
    mine = {c.holder for c in world.cards.values() if c.issuer == spec.name}
    holders = {p.name: p.address for p in directory.of_kind("cardholder") if p.name in mine}
    # a gateway without certificates yet (registering by mail) is pinned when it has them: the
    # agent rebuilds this role when they appear (agent.compose watches them)
    gateways = {g.address: (load_cert(world.keys_dir(g.name) / "sig.cert.pem"),
                            load_cert(world.keys_dir(g.name) / "kex.cert.pem"))
                for g in world.agents_of_kind("gateway")
                if (world.keys_dir(g.name) / "kex.cert.pem").exists()
                and (world.keys_dir(g.name) / "sig.cert.pem").exists()}
    return Issuer(IssuerConfig(
        name=spec.address,
        signature=Identity(load_key(keys / "sig.key.pem"), load_cert(keys / "sig.cert.pem")),
        key_exchange=Identity(load_key(keys / "kex.key.pem"), load_cert(keys / "kex.cert.pem")),
        gateways=gateways, accounts=load_accounts(world, spec.name), suite=get_suite(world.suite),
        hold_expiry=days_option(spec.name, spec.options, "hold_days", 10), holders=holders))


def statement_keeper(world: World, spec: AgentSpec) -> Role:
    """The cardholder ``spec``'s ``Statements`` sub-role (the wallet factory adds it)."""
    from setmail.crypto.suite import get_suite
    from setmail.errors import WorldError
    from setmail.roles.statements import Statements, StatementsConfig
    from setmail.world.directory import load_directory
    from setmail.world.keys import load_cert
    directory, issuers = load_directory(world), {}
    for name in sorted({c.issuer for c in world.cards.values() if c.holder == spec.name}):
        party = directory.by_address(world.agent(name).address)
        path = world.keys_dir(name) / "sig.cert.pem"
        if party is None or party.kind != "issuer" or not path.exists():
            continue  # no such issuer (yet): its statements are refused
        cert = load_cert(path)
        if cert.subject.public_bytes() not in party.subjects:
            raise WorldError(f"{path} is not a certificate the directory gives {name}")
        issuers[party.address] = cert
    return Statements(StatementsConfig(holder=spec.name, issuers=issuers,
                                       suite=get_suite(world.suite)))
