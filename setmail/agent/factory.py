"""Which role an agent of a world runs: a registry keyed by the agent's ``kind`` (world.toml).

The modules of ``setmail.agent.factories`` register the purchase parties (``register_role
("merchant")`` …); ``build_agent`` composes the certificate lifecycle around the role a kind's
factory returns (``agent.compose``) and gives the agent what it needs to build it again while it
runs (``agent.reload``).  It returns None for a kind without a role; ``setmail run`` then still
accepts that agent's mail (it waits in the Maildir) but does not process it.
"""
from __future__ import annotations

from collections.abc import Callable

from setmail.agent.runtime import Agent, AgentConfig
from setmail.roles.base import Role
from setmail.world.config import AgentSpec, World

RoleFactory = Callable[[World, AgentSpec], Role]
ROLE_FACTORIES: dict[str, RoleFactory] = {}


def register_role(kind: str):
    def deco(fn: RoleFactory) -> RoleFactory:
        ROLE_FACTORIES[kind] = fn
        return fn
    return deco


def agent_config(world: World, name: str) -> AgentConfig:
    host, port = world.smtp_for(name)
    spec = world.agent(name)
    return AgentConfig(name, spec.address, world.agent_home(name), world.maildir(name), host,
                       port, world.peers())


def build_agent(world: World, name: str, **kwargs) -> Agent | None:
    from setmail.agent.compose import compose
    from setmail.agent.factories import load_all
    from setmail.agent.reload import Reloader
    load_all()
    spec = world.agent(name)
    factory = ROLE_FACTORIES.get(spec.kind)
    if factory is None:
        return None
    built = compose(world, spec, factory)
    reloader = Reloader(lambda: compose(world, world.agent(name), factory), built)
    return Agent(agent_config(world, name), built.role, reloader=reloader, **kwargs)


@register_role("ca")
def _ca(world: World, spec: AgentSpec) -> Role:
    """A CA agent: world.toml option ``ca`` (cca, mca or pca: which CA of the tree it is) and
    ``expire_after`` (seconds a registration may wait for its next request, default 86400).
    It carries the brand's current BCI and checks a certificate to renew against the current
    CRLs: the tree is loaded again when they change (``setmail revoke``)."""
    import datetime as dt

    from setmail.agent.compose import publication
    from setmail.agent.reload import stamps
    from setmail.roles.ca import CAConfig, CARole
    from setmail.world.trees import crls, load_ca_tree, trust_store
    label = spec.options.get("ca", spec.name)
    key, stamp = str(world.home), stamps(publication(world))
    if _TREES.get(key, (None,))[0] != stamp:  # one load per world, process and publication
        _TREES[key] = (stamp, load_ca_tree(world))
    directory, cards, codes = ca_members(world, label)
    return CARole(CAConfig(ca=_TREES[key][1][label], kind=label, address=spec.address,
                           trust=trust_store(world), directory=directory, cards=cards,
                           codes=codes, crls=crls(world), expire_after=dt.timedelta(
                               seconds=float(spec.options.get("expire_after", 86400)))))


def ca_members(world: World, label: str):
    """What the CA ``label`` knows of the parties it certifies: the world's directory slice of
    their kind (a merchant's merID from its certificate, else its world.toml ``mer_id``), the
    PANs each cardholder holds (world.toml ``cards``, by ``holder``) and the SHA-256 of each
    merchant's or gateway's ``registration_code`` option (none: not certified by mail)."""
    import dataclasses

    from setmail.roles.ca_issue import CERTIFIES, code_digest
    from setmail.roles.directory import Directory
    from setmail.world.directory import load_directory
    kind = CERTIFIES.get(label)
    members = []
    for party in load_directory(world).of_kind(kind):
        options = world.agent(party.name).options
        if kind == "merchant" and not party.mer_id and options.get("mer_id"):
            party = dataclasses.replace(party, mer_id=str(options["mer_id"]))
        members.append(party)
    cards: dict[str, set] = {}
    for card in world.cards.values():
        if card.holder in world.agents:
            cards.setdefault(world.agent(card.holder).address.lower(), set()).add(card.pan)
    codes = {p.address.lower(): code_digest(str(world.agent(p.name).options["registration_code"]))
             for p in members if world.agent(p.name).options.get("registration_code")}
    return (Directory(members), {a: frozenset(p) for a, p in cards.items()} if kind == "cardholder"
            else {}, codes)


_TREES: dict[str, tuple] = {}
