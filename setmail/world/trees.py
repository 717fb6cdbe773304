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
    """label -> CertificateAuthority for root, brand, cca, mca, pca (parents linked).  In a
    bundle only its own CA has a key: the others are there by certificate (``load_ca``)."""
    suite = get_suite(world.suite)
    cas: dict = {}
    for label, profile, parent in CA_TREE:
        directory = _ca_dir(world, label)
        if not (directory / ("sig.cert.pem" if world.bundle else "sig.key.pem")).exists():
            continue
        cas[label] = load_ca(directory, suite, profile, parent=cas.get(parent),
                             brand=None if label == "root" else world.brand)
    return cas


def ca_directory(world: World, label: str):
    """Where the CA ``label`` (root, brand, cca, mca, pca) keeps its keys, CRL and BCI."""
    return _ca_dir(world, label)


def crls(world: World) -> tuple:
    """Every CA's current CRL as saved on disk: what relying parties check paths against.

    Read when an agent starts; a revocation (``setmail revoke``) reaches a running agent when it
    restarts."""
    from setmail.pki.parse import load_crl
    out = []
    for label, _, _ in CA_TREE:
        path = _ca_dir(world, label) / "crl.pem"
        if path.exists():
            out.append(load_crl(path.read_bytes()))
    return tuple(out)


def brand_bci(world: World):
    """The brand's current BrandCRLIdentifier (carried in PInitRes, PRes, AuthRes, CapRes)."""
    from setmail.pki.parse import load_bci
    path = _ca_dir(world, "brand") / "bci.pem"
    return load_bci(path.read_bytes()) if path.exists() else None
