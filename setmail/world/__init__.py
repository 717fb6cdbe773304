"""A world: the parties of one SET deployment on disk (world.toml, PKI, keys, stores, Maildirs).

``create_world`` (``setmail init``) writes a demo world; ``load_world`` reads one; ``load_ca_tree``
rebuilds the CA objects from their key files.  See docs/runtime.md for the layout.
"""
from setmail.world.config import (ENV_HOME, WORLD_FILE, AgentSpec, Card, World, dump_toml,
                                  load_world, resolve_home)
from setmail.world.create import create_world
from setmail.world.trees import load_ca_tree, trust_store

__all__ = ["ENV_HOME", "WORLD_FILE", "AgentSpec", "Card", "World", "create_world", "dump_toml",
           "load_ca_tree", "load_world", "resolve_home", "trust_store"]
