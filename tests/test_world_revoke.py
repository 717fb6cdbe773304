"""Revocation of a world's certificates on disk (`setmail revoke`): CRLs and BCI rewritten,
revocation state surviving a reload, and path validation with the world's CRLs refusing."""
from __future__ import annotations

import datetime as dt

import pytest

from setmail.errors import Revoked
from setmail.pki.bci import listed_crl_thumbs
from setmail.pki.thumbs import thumbprint
from setmail.pki.validate import validate_path
from setmail.world import load_world
from setmail.world.create import create_world
from setmail.world.keys import load_cert, load_chain
from setmail.world.trees import brand_bci, crls, load_ca_tree, trust_store
from tests.e2e_world import run_cli


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("revoke") / "world"
    create_world(home, smtp_port=2599, certificates="direct")
    return home


def _shop(world):
    keys = world.keys_dir("shop")
    return load_cert(keys / "sig.cert.pem"), load_chain(keys / "chain.pem")


def test_revoke_writes_crl_and_bci_and_validation_refuses(home):
    world = load_world(home)
    now = dt.datetime.now(dt.timezone.utc)
    cert, chain = _shop(world)
    validate_path(cert, chain, trust_store(world), now=now, expected_type="mer",
                  key_usage="digital_signature", crls=crls(world))
    bci_before = brand_bci(world)
    code, out, err = run_cli("revoke", "shop", "--reason", "keyCompromise", "--home", str(home))
    assert code == 0, err
    assert out.count("revoked serial") == 2 and "mca CRL" in out  # signature and key exchange
    with pytest.raises(Revoked):
        validate_path(cert, chain, trust_store(world), now=now + dt.timedelta(seconds=5),
                      expected_type="mer",
                  key_usage="digital_signature",
                      crls=crls(world))
    bci = brand_bci(world)
    assert bci["tbs"]["sequence_num"].native > bci_before["tbs"]["sequence_num"].native
    mca_crl = next(c for c in crls(world) if c.issuer == cert.issuer)
    assert thumbprint(mca_crl) in set(listed_crl_thumbs(bci))


def test_revocation_state_survives_a_reload_and_numbers_go_on(home):
    world = load_world(home)
    tree = load_ca_tree(world)
    cert, _ = _shop(world)
    mca = tree["mca"]
    assert mca.is_revoked(cert.serial_number)
    number = lambda crl: crl.extensions.get_extension_for_class(  # noqa: E731
        __import__("cryptography").x509.CRLNumber).value.crl_number
    before = number(mca.crl)
    assert run_cli("revoke", "gateway", "--home", str(home))[0] == 0
    assert run_cli("revoke", "shop", "--home", str(home))[0] == 0  # again: still listed once
    tree = load_ca_tree(load_world(home))
    assert number(tree["mca"].crl) == before  # nothing new to sign for shop
    serials = [r.serial_number for r in tree["mca"].crl]
    assert serials.count(cert.serial_number) == 1
    assert len(list(tree["pca"].crl)) == 2


def test_revoke_refusals(home):
    assert run_cli("revoke", "mallory", "--home", str(home))[0] == 2
    code, _, err = run_cli("revoke", "bank", "--home", str(home))  # pinned, not SET certificates
    assert code == 3 and "no SET certificate" in err
    code, _, err = run_cli("revoke", "shop", "--reason", "bogus", "--home", str(home))
    assert code == 2 and "unknown reason" in err
