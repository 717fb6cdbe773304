"""Rebuild a world's CA tree and trust store from disk."""
from __future__ import annotations

from setmail.crypto.suite import get_suite
from setmail.pki.trust import TrustStore
from setmail.world.config import World
from setmail.world.keys import CA_TREE, load_ca, load_cert


def trust_store(world: World) -> TrustStore:
    return TrustStore([load_cert(world.pki_dir / "trust" / "root.cert.pem")],
                      suite=get_suite(world.suite))


def _ca_dir(world: World, label: str):
    agent = next((a.name for a in world.agents_of_kind("ca") if a.options.get("ca") == label),
                 None)
    return world.keys_dir(agent) if agent else world.pki_dir / label


def load_ca_tree(world: World) -> dict:
    """label -> CertificateAuthority for root, brand, cca, mca, pca (parents linked)."""
    suite = get_suite(world.suite)
    cas: dict = {}
    for label, profile, parent in CA_TREE:
        directory = _ca_dir(world, label)
        if not (directory / "sig.key.pem").exists():
            continue
        cas[label] = load_ca(directory, suite, profile, parent=cas.get(parent),
                             brand=None if label == "root" else world.brand)
    return cas
