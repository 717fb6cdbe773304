"""Which role an agent of a world runs: a registry keyed by the agent's ``kind`` (world.toml).

The modules of ``setmail.agent.factories`` register the purchase parties (``register_role
("merchant")`` …); ``build_agent`` returns None for a kind without a role; ``setmail run`` then
still accepts that agent's mail (it waits in the Maildir) but does not process it.
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
    from setmail.agent.factories import load_all
    load_all()
    spec = world.agent(name)
    factory = ROLE_FACTORIES.get(spec.kind)
    if factory is None:
        return None
    return Agent(agent_config(world, name), factory(world, spec), **kwargs)


@register_role("ca")
def _ca(world: World, spec: AgentSpec) -> Role:
    from setmail.roles.ca import CAConfig, CARole
    from setmail.world.trees import load_ca_tree, trust_store
    label = spec.options.get("ca", spec.name)
    key = str(world.home)
    if key not in _TREES:  # one load per world and process: cca, mca, pca share the tree
        _TREES[key] = load_ca_tree(world)
    return CARole(CAConfig(ca=_TREES[key][label], kind=label, address=spec.address,
                           trust=trust_store(world)))


_TREES: dict[str, dict] = {}
