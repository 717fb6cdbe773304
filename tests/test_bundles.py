"""One party per host: ``setmail export`` bundles hold only their owner's secrets, and a bundle is a
world its agent runs from alone (issue 14, items 1 and 5).  The Postfix side runs in
tests/test_postfix_hosts.py; here the bundles are checked byte by byte."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from setmail.world import create_world, load_world
from setmail.world.keys import load_key
from tests.e2e_world import run_cli


def private_keys(root: Path) -> dict[Path, list[bytes]]:
    """Every private key file under ``root`` -> the byte strings that would betray it: its PEM
    (base64 body lines too), its PKCS#8 DER and its RSA private exponent."""
    out = {}
    for path in sorted(root.rglob("*.key.pem")):
        key = load_key(path)
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        d = key.private_numbers().d
        lines = [ln for ln in path.read_bytes().splitlines() if ln and not ln.startswith(b"-----")]
        out[path] = [path.read_bytes(), der, d.to_bytes((d.bit_length() + 7) // 8, "big"),
                     *lines[1:-1]]  # inner base64 lines: 64 characters of the key each
    return out


def bundle_files(bundle: Path) -> dict[Path, bytes]:
    """Every file of a bundle and of its Maildirs (wherever they are)."""
    roots = [bundle, load_world(bundle).mailboxes]
    return {p: p.read_bytes() for root in roots for p in root.rglob("*") if p.is_file()}


def check_bundle(bundle: Path, world_keys: dict[Path, list[bytes]], world) -> None:
    """The byte-wise rules of issue 14: no other party's private key, and card numbers only
    where SET puts them (its holder, its issuer, the Cardholder CA that checks it: D-400)."""
    b = load_world(bundle)
    owner = world.agent(b.bundle)
    own_keys = world.agent_home(owner.name)
    allowed = {c.pan for c in world.cards.values()
               if b.bundle in (c.holder, c.issuer)
               or (owner.kind, owner.options.get("ca")) == ("ca", "cca")}
    files = bundle_files(bundle)
    assert files, bundle
    for path, data in files.items():
        for key_path, needles in world_keys.items():
            if key_path.is_relative_to(own_keys):
                continue
            assert not any(n in data for n in needles), f"{path} holds {key_path}"
        for card in world.cards.values():
            if card.pan not in allowed:
                assert card.pan.encode() not in data, f"{path} holds {card.name}'s PAN"
                assert card.pan.encode("utf-16-le") not in data, path


@pytest.fixture(scope="module", params=["mail", "direct"])
def exported(request, tmp_path_factory):
    """A world whose merchants and gateways register by mail (no keys yet), or are certified
    by init (their keys on disk too)."""
    base = tmp_path_factory.mktemp("bundles")
    world = create_world(base / "world", smtp_port=2599, certificates=request.param)
    code, out, err = run_cli("export", "all", str(base / "b"), "--smtp", "127.0.0.9:25",
                             "--home", str(world.home))
    assert code == 0, err
    return world, base / "b"


def test_every_bundle_holds_only_its_owners_secrets(exported):
    world, bundles = exported
    keys = private_keys(world.home)
    # root, next root, brand, 3 CAs x 2, issuer x 2 (and merchants' and gateways' x 2)
    assert len(keys) == 11 + 4 * (world.agent("shop").options.get("registration_code") is None)
    assert sorted(p.name for p in bundles.iterdir()) == sorted(world.agents)
    for name in world.agents:
        check_bundle(bundles / name, keys, world)
    shop = load_world(bundles / "shop")
    assert shop.cards == {} and shop.bundle == "shop"
    assert set(shop.agents) == {"shop", "gateway", "cca", "mca", "pca"}
    assert (shop.smtp_host, shop.smtp_port) == ("127.0.0.9", 25)
    alice = load_world(bundles / "alice")
    assert set(alice.cards) == {"alice-visa"} and "bob" not in alice.agents
    bank = load_world(bundles / "bank")
    assert set(bank.cards) == {"alice-visa", "bob-visa"}
    # a registration code is known to its party and to the CA it registers with, nobody else
    code = world.agent("shop").options.get("registration_code")
    holders = sorted(n for n in world.agents
                     if code and code.encode() in b"".join(bundle_files(bundles / n).values()))
    assert holders == (["mca", "shop"] if code else [])
    # only the owner's private keys, and no Root or Brand CA key anywhere
    for name in world.agents:
        found = {p.relative_to(bundles / name) for p in (bundles / name).rglob("*.key.pem")}
        assert all(str(p).startswith(f"agents/{name}/") for p in found), (name, found)


def test_a_bundle_runs_its_own_agent_only(exported):
    _, bundles = exported
    code, _, err = run_cli("agent", "gateway", "--home", str(bundles / "shop"))
    assert code == 2 and "bundle of shop" in err
    code, _, err = run_cli("export", "shop", str(bundles / "again"), "--home",
                           str(bundles / "shop"))
    assert code != 0 and "is itself a bundle" in err
    code, _, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount", "1",
                           "--home", str(bundles / "alice"))
    assert code == 2 and "setmail order" in err
    assert not (bundles / "alice" / "agents" / "shop" / "state.db").exists()


def test_a_ca_bundle_builds_its_ca_with_the_chain_above_it(exported):
    """The CA's role signs with its own key and names the Brand and Root CA by certificate."""
    from setmail.agent.factory import build_agent
    from setmail.world.trees import load_ca_tree
    world, bundles = exported
    b = load_world(bundles / "mca")
    agent = build_agent(b, "mca")
    try:
        ca = agent.role.config.ca
        whole = load_ca_tree(world)["mca"]
        assert ca.key is not None and ca.chain == whole.chain
        assert ca.parent.key is None and ca.parent.bci is not None
    finally:
        agent.close()


def test_export_refuses_to_overwrite_what_is_no_bundle(exported, tmp_path):
    world, bundles = exported
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli("export", "shop", str(tmp_path), "--force", "--home", str(world.home))
    assert code != 0 and "holds no bundle" in err and (tmp_path / "notes.txt").exists()
    code, _, err = run_cli("export", "shop", str(bundles / "shop"), "--home", str(world.home))
    assert code != 0 and "--force" in err
    code, out, err = run_cli("export", "shop", str(bundles / "shop"), "--force", "--home",
                             str(world.home))
    assert code == 0, err


def test_postfix_config_of_a_host(exported, tmp_path):
    _, bundles = exported
    code, out, err = run_cli(
        "postfix-config", str(bundles / "shop"), "--config-dir", str(tmp_path / "etc"),
        "--listen", "127.0.0.9", "--route", "gateway.example=127.0.0.10",
        "--route", "cardholder.example=mx.cardholder.example:2525", "--mail-owner", "nobody",
        "--set", "queue_run_delay=1s", "--no-postmap")
    assert code == 0, err
    main = {k.strip(): v.strip() for k, _, v in (
        line.partition("=") for line in (tmp_path / "etc" / "main.cf").read_text().splitlines()
        if not line.startswith("#"))}
    assert main["smtpd_relay_restrictions"] == "permit_mynetworks, reject_unauth_destination"
    assert main["mynetworks"] == "127.0.0.9/32" and main["inet_interfaces"] == "127.0.0.9"
    assert main["virtual_mailbox_domains"] == "merchant.example"
    assert main["message_size_limit"] == str(1 << 20) and main["queue_run_delay"] == "1s"
    assert main["myhostname"] == "mx.merchant.example" and main["mydestination"] == ""
    base = Path(main["virtual_mailbox_base"])
    vmailbox = (tmp_path / "etc" / "vmailbox").read_text().split()
    assert vmailbox[0] == "shop@merchant.example" and (base / vmailbox[1] / "new").is_dir()
    assert (tmp_path / "etc" / "transport").read_text().splitlines() == [
        "cardholder.example smtp:[mx.cardholder.example]:2525",
        "gateway.example smtp:[127.0.0.10]:25"]
    assert "chroot" in (tmp_path / "etc" / "master.cf").read_text()
    assert "warning: shop sends to 127.0.0.9:25" not in out
    code, _, err = run_cli("postfix-config", str(bundles / "shop"), str(bundles / "alice"),
                           "--config-dir", str(tmp_path / "x"), "--mail-owner", "nobody")
    assert code != 0 and "--mailboxes" in err


def test_the_byte_scan_finds_a_planted_secret(exported, tmp_path):
    """The scan itself: a foreign key's base64 line, or a PAN inside a store, is found."""
    import shutil
    world, bundles = exported
    keys = private_keys(world.home)
    for planted in (keys[world.keys_dir("bank") / "sig.key.pem"][4],
                    world.cards["bob-visa"].pan.encode()):
        copy = shutil.copytree(bundles / "alice", tmp_path / f"alice{len(planted)}")
        (copy / "agents" / "alice" / "notes.bin").write_bytes(b"x" + planted + b"y")
        with pytest.raises(AssertionError):
            check_bundle(copy, keys, world)


def test_a_merchant_and_a_cardholder_added_later(tmp_path):
    """docs/deploy.md's recipe: add them to the init world's world.toml, export their bundles
    (the merchant's registration queued), update their counterparts' bundles from a copy of
    their world.toml, open the new card's account at the issuer."""
    import sqlite3

    from setmail.world.config import WORLD_FILE, AgentSpec, Card, dump_toml
    world = create_world(tmp_path / "w", smtp_port=2599)
    code, _, err = run_cli("export", "all", str(tmp_path / "b"), "--home", str(world.home))
    assert code == 0, err
    bank_db = load_world(tmp_path / "b" / "bank").store_path("bank")
    with sqlite3.connect(bank_db) as con:  # the issuer's own decision since the export
        con.execute("UPDATE issuer_accounts SET status = 'blocked' WHERE holder = 'bob'")
    world.agents["shop2"] = AgentSpec("shop2", "merchant", "shop2@merchant2.example", options={
        "gateway": "gateway", "mer_id": "SHOP-0002", "registration_code": "c0de" * 8})
    world.agents["carol"] = AgentSpec("carol", "cardholder", "carol@cardholder.example",
                                      options={"ca": "cca"})
    world.cards["carol-visa"] = Card("carol-visa", "carol", "bank", "4000056655665556",
                                     "203001", "700.00")
    (world.home / WORLD_FILE).write_text(dump_toml(world.to_dict()))
    for name, extra in (("shop2", ["--register"]), ("carol", [])):
        code, _, err = run_cli("export", name, str(tmp_path / "b" / name), *extra,
                               "--home", str(world.home))
        assert code == 0, err
    import shutil
    for name in ("mca", "gateway", "alice", "bank", "cca"):
        # on the brand's machine, from a copy of the bundle's world.toml; then copied back
        skeleton = tmp_path / "up" / name
        skeleton.mkdir(parents=True)
        shutil.copyfile(tmp_path / "b" / name / WORLD_FILE, skeleton / WORLD_FILE)
        code, out, err = run_cli("export", name, str(skeleton), "--update",
                                 "--home", str(world.home))
        assert code == 0 and "restart its agent" in out, err
        assert not (skeleton / "agents" / name).exists()  # nothing of the owner's own
        shutil.copytree(skeleton, tmp_path / "b" / name, dirs_exist_ok=True)
    code, out, err = run_cli("accounts", "--home", str(tmp_path / "b" / "bank"))
    assert code == 0 and "carol-visa" in out, err
    b = {n: load_world(tmp_path / "b" / n) for n in (*world.agents,)}
    assert b["mca"].agent("shop2").options["registration_code"] == "c0de" * 8
    assert b["gateway"].agent("shop2").options["mer_id"] == "SHOP-0002"
    assert "shop2" in b["alice"].agents and "carol-visa" in b["cca"].cards
    with sqlite3.connect(b["shop2"].store_path("shop2")) as con:
        assert sorted(r[0] for r in con.execute("SELECT name FROM agent_commands")) == [
            "pcert", "register"]
    with sqlite3.connect(bank_db) as con:
        assert dict(con.execute("SELECT holder, status FROM issuer_accounts")) == {
            "alice": "active", "bob": "blocked", "carol": "active"}
    keys = private_keys(world.home)
    for name in world.agents:
        check_bundle(tmp_path / "b" / name, keys, load_world(world.home))
    code, _, err = run_cli("export", "carol", str(tmp_path / "b" / "bob"), "--update",
                           "--home", str(world.home))
    assert code == 2 and "no bundle of carol" in err
