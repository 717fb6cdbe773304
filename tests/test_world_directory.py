"""The world's directory: every agent's address bound to the certificate identities on disk."""
from __future__ import annotations

from setmail.roles.exchange import subject_hex
from setmail.world import create_world, load_world
from setmail.world.directory import load_directory
from setmail.world.keys import load_cert


def test_directory_binds_addresses_to_certificate_identities(tmp_path):
    create_world(tmp_path / "w", smtp_port=2599, certificates="direct")
    world = load_world(tmp_path / "w")
    directory = load_directory(world)
    shop = directory.merchant("SHOP-0001")
    assert shop is not None and shop.address == world.agent("shop").address
    gw_cert = load_cert(world.keys_dir("gateway") / "sig.cert.pem")
    assert directory.holder_of(gw_cert, "gateway").name == "gateway"
    assert directory.holder_of(gw_cert, "issuer") is None  # a gateway's subject names no issuer
    shop_cert = load_cert(world.keys_dir("shop") / "sig.cert.pem")
    assert directory.holder_of(shop_cert, "merchant").name == "shop"
    assert directory.by_address("ALICE@cardholder.example").kind == "cardholder"
    assert directory.by_address("mallory@evil.example") is None
    assert {p.name for p in directory.of_kind("ca")} == {"cca", "mca", "pca"}
    assert subject_hex(gw_cert) == gw_cert.subject.public_bytes().hex()


def test_gateway_directory_reads_a_merchant_certified_after_it_was_built(tmp_path):
    """A merchant certified by mail after the gateway started is found at its first request
    (the race the demo met: the gateway refused the shop's first AuthReq)."""
    from setmail.agent.compose import fresh_merchant_addresses
    from setmail.agent.factories.gateway import FreshDirectory
    create_world(tmp_path / "w", smtp_port=2599, certificates="direct")
    world = load_world(tmp_path / "w")
    keys = world.keys_dir("shop")
    hidden = keys.with_name("keys.hidden")
    keys.rename(hidden)  # the shop before its registration
    directory, addresses = FreshDirectory(world), fresh_merchant_addresses(world)
    assert addresses("SHOP-0001") is None or addresses("SHOP-0001") == world.agent("shop").address
    hidden.rename(keys)  # the shop's certificates arrive by mail
    assert directory.merchant("SHOP-0001").address == world.agent("shop").address
    assert addresses("SHOP-0001") == world.agent("shop").address
    assert directory.merchant("NOBODY-9") is None
