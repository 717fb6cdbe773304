"""setmail.pki: hierarchy, profiles, path validation and its specific refusals."""
from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509

from setmail.errors import (BadChain, BadKey, BadSignature, CardholderMismatch, ChainTooLong,
                            Expired, KeyAlreadyCertified, MissingCertificate, NotYetValid,
                            Revoked, UntrustedRoot, WrongCertificateType, WrongKeyUsage)
from setmail.pki import (CertificateAuthority, TrustStore, cardholder_common_name, check_crl,
                         key_identifier, load_certificate, pan_secret, profiles, set_name, setext,
                         to_der, to_pem, validate_path, verify_cardholder_id)
from tests.test_pki_world import CARD_SECRET, EXPIRY, MERCHANT, NOW, PAN, SUITE, foreign, world

SIG, KEX = "digital_signature", "key_encipherment"


def _validate(leaf, ca, *, expected, usage=SIG, now=NOW, crls=None, trust=None, chain=None):
    w = world()
    trust = trust or w.h.trust_store()
    chain = w.chain(ca) if chain is None else chain
    return validate_path(leaf, chain, trust, now=now, expected_type=expected, key_usage=usage,
                         crls=crls)


# --- hierarchy and profiles ----------------------------------------------------------------------
def test_hierarchy_shape_and_types():
    h = world().h
    expect = {h.root: "rca", h.brand: "bca", h.geo: "gca", h.cca: "cca", h.mca: "mca",
              h.pca: "pca"}
    for ca, bit in expect.items():
        assert setext.read_certificate_type(ca.certificate) == {bit}
        bc = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == ca.profile.path_length
        assert ca.crl is not None and ca.crl.is_signature_valid(ca.key.public_key())
    assert [ca.certificate for ca in (h.cca, h.geo, h.brand, h.root)] == h.cca.chain
    for xca in (h.cca, h.mca, h.pca):
        ku = xca.key_exchange_certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_encipherment and not ku.digital_signature
    committed = setext.read_hashed_root_key(h.root.certificate)
    assert committed == SUITE.digest(setext.spki_der(h.root.next_root_key.public_key()))
    assert setext.read_hashed_root_key(h.brand.certificate) is None


def test_hierarchy_without_geo_and_validity_nesting():
    w = world()
    h = foreign()
    assert h.geo is not None and w.h.geo is not None
    for ca in w.h.cas[1:]:
        assert ca.certificate.not_valid_after_utc <= ca.parent.certificate.not_valid_after_utc


@pytest.mark.parametrize("which,ca_name,expected,usage", [
    ("cardholder", "cca", "card", SIG),
    ("merchant-sig", "mca", "mer", SIG),
    ("merchant-kex", "mca", "mer", KEX),
    ("gateway-sig", "pca", "pgwy", SIG),
    ("gateway-kex", "pca", "pgwy", KEX),
    ("cca-kex", "geo", "cca", KEX),
    ("mca-kex", "geo", "mca", KEX),
    ("pca-kex", "geo", "pca", KEX),
    ("cca-sig", "geo", "cca", SIG),
])
def test_each_end_entity_validates(which, ca_name, expected, usage):
    w = world()
    h = w.h
    leaf = {"cardholder": w.certs["cardholder"].certificate,
            "merchant-sig": w.certs["merchant"][0], "merchant-kex": w.certs["merchant"][1],
            "gateway-sig": w.certs["gateway"][0], "gateway-kex": w.certs["gateway"][1],
            "cca-kex": h.cca.key_exchange_certificate, "mca-kex": h.mca.key_exchange_certificate,
            "pca-kex": h.pca.key_exchange_certificate, "cca-sig": h.cca.certificate}[which]
    ca = getattr(h, ca_name)
    chain = w.chain(ca) + [w.certs["merchant"][0], h.pca.certificate]  # extras are ignored
    random.Random(7).shuffle(chain)
    vp = _validate(to_der(leaf), ca, expected=expected, usage=usage, crls=h.crls(), chain=chain)
    assert vp.leaf == leaf and vp.root == h.root.certificate
    assert expected in vp.certificate_types and len(vp.path) == len(ca.chain) + 1


def test_merchant_and_gateway_extensions():
    w = world()
    sig, kex = w.certs["merchant"]
    assert setext.read_merchant_data(sig) == MERCHANT == setext.read_merchant_data(kex)
    gsig, gkex = w.certs["gateway"]
    for cert in (gsig, gkex):
        assert setext.read_card_cert_required(cert) is True
        assert setext.read_tunneling(cert) == (setext.AES256_GCM,)
    crit = {e.oid.dotted_string: e.critical for e in sig.extensions}
    assert crit["2.23.42.7.1"] is True and crit["2.23.42.7.2"] is False


def test_path_cache_hits_and_respects_time():
    w = world()
    trust = w.h.trust_store()
    leaf = w.certs["merchant"][0]
    first = _validate(leaf, w.h.mca, expected="mer", trust=trust)
    assert _validate(leaf, w.h.mca, expected="mer", trust=trust) is first
    assert trust.cache.hits == 1
    with pytest.raises(Expired):  # cached, but outside the window it was validated for
        _validate(leaf, w.h.mca, expected="mer", trust=trust, now=NOW + dt.timedelta(days=3000))


# --- refusals ------------------------------------------------------------------------------------
def test_expired_and_not_yet_valid():
    leaf = world().certs["cardholder"].certificate
    with pytest.raises(Expired):
        _validate(leaf, world().h.cca, expected="card", now=NOW + dt.timedelta(days=4 * 365))
    with pytest.raises(NotYetValid):
        _validate(leaf, world().h.cca, expected="card", now=NOW - dt.timedelta(seconds=1))


def test_revocation_is_one_call_and_invalidates_the_cache():
    w = world()
    h = w.h
    trust = h.trust_store()
    sig, kex = h.mca.issue_merchant(w.key().public_key(), w.key().public_key(), MERCHANT, NOW,
                                    name="Doomed Shop")
    before = h.crls()
    _validate(sig, h.mca, expected="mer", trust=trust, crls=before)
    old_bci_seq = h.brand.bci["tbs"]["sequence_num"].native
    later = NOW + dt.timedelta(hours=1)
    crl = h.mca.revoke(sig, later, x509.ReasonFlags.key_compromise)
    assert crl.get_revoked_certificate_by_serial_number(sig.serial_number) is not None
    assert h.brand.bci["tbs"]["sequence_num"].native == old_bci_seq + 1
    with pytest.raises(Revoked):
        _validate(sig, h.mca, expected="mer", trust=trust, crls=h.crls(), now=later)
    # a stale CRL set does not know yet; the key-exchange certificate is unaffected
    _validate(sig, h.mca, expected="mer", trust=trust, crls=before, now=later)
    _validate(kex, h.mca, expected="mer", usage=KEX, trust=trust, crls=h.crls(), now=later)
    with pytest.raises(MissingCertificate):
        h.mca.revoke(12345, later)


def test_wrong_type_merchant_presented_as_cardholder():
    with pytest.raises(WrongCertificateType):
        _validate(world().certs["merchant"][0], world().h.mca, expected="card")


def test_wrong_usage_key_exchange_used_to_sign():
    with pytest.raises(WrongKeyUsage):
        _validate(world().certs["merchant"][1], world().h.mca, expected="mer", usage=SIG)
    with pytest.raises(WrongKeyUsage):
        _validate(world().certs["cardholder"].certificate, world().h.cca, expected="card",
                  usage=KEX)


def test_foreign_root_refused():
    f = foreign()
    chain = list(reversed(f.mca.chain))
    leaf = f.mca.key_exchange_certificate
    with pytest.raises(UntrustedRoot):
        validate_path(leaf, chain, world().h.trust_store(), now=NOW, expected_type="mca",
                      key_usage=KEX)


def test_same_names_other_keys_is_a_broken_chain():
    w, f = world(), foreign()
    with pytest.raises(BadChain):
        _validate(w.certs["merchant"][0], w.h.mca, expected="mer", chain=list(f.mca.chain))


def test_missing_intermediate():
    w = world()
    chain = [c for c in w.chain(w.h.mca) if c != w.h.geo.certificate]
    with pytest.raises(MissingCertificate):
        _validate(w.certs["merchant"][0], w.h.mca, expected="mer", chain=chain)


def test_wrong_order_hierarchy_refused():
    """An MCA certifying a cardholder key: SET's type order forbids it."""
    w = world()
    h = w.h
    rogue = h.mca._sign_certificate(
        profiles.CARDHOLDER_SIGNATURE, set_name("rogue"), w.key().public_key(), NOW,
        issuer_name=h.mca.certificate.subject)
    with pytest.raises(BadChain):
        _validate(rogue, h.mca, expected="card")
    with pytest.raises(WrongCertificateType):  # and the public API refuses to make one
        h.mca.issue(profiles.CARDHOLDER_SIGNATURE, "x", w.key().public_key(), NOW)


def test_chain_too_long():
    w = world()
    h = w.h
    k1, k2 = w.key(), w.key()
    extra = CertificateAuthority(
        suite=SUITE, profile=profiles.GEO, key=k1, brand="Visa", parent=h.geo,
        certificate=h.geo._sign_certificate(profiles.GEO, set_name("Nested Geo"), k1.public_key(), NOW,
                                            issuer_name=h.geo.certificate.subject))
    cca2 = extra.create_subordinate(profiles.CCA, "Deep CCA", NOW, key=k2, key_exchange_key=k1)
    card = cca2.issue_cardholder(k1.public_key(), pan=PAN, expiry=EXPIRY,
                                 card_secret=CARD_SECRET, now=NOW).certificate
    with pytest.raises(ChainTooLong):  # card, CCA, Geo, Geo, Brand, Root: six certificates
        _validate(card, cca2, expected="card", chain=cca2.chain)
    with pytest.raises(BadChain):  # five certificates, but a Geo CA under a Geo CA
        _validate(cca2.certificate, cca2, expected="cca", chain=cca2.chain)


def test_tampered_certificate_signature():
    w = world()
    der = bytearray(to_der(w.certs["merchant"][0]))
    der[-5] ^= 1
    with pytest.raises(BadSignature):
        _validate(bytes(der), w.h.mca, expected="mer")


def test_ca_refuses_key_it_already_certified():
    w = world()
    sig = w.certs["merchant"][0]
    with pytest.raises(KeyAlreadyCertified):
        w.h.mca.issue_merchant(sig.public_key(), w.key().public_key(), MERCHANT, NOW)


def test_crl_from_the_wrong_issuer():
    w = world()
    h = w.h
    with pytest.raises(BadChain):
        check_crl(h.mca.crl, h.cca.certificate, SUITE)
    forged = (x509.CertificateRevocationListBuilder()
              .issuer_name(h.cca.certificate.subject).last_update(NOW)
              .next_update(NOW + dt.timedelta(days=1))
              .add_extension(x509.CRLNumber(99), False)
              .add_extension(x509.AuthorityKeyIdentifier(
                  key_identifier(h.mca.key.public_key()), None, None), False)
              .sign(h.mca.key, SUITE.hash_algorithm, rsa_padding=SUITE.pss_padding))
    with pytest.raises(BadChain):
        _validate(w.certs["cardholder"].certificate, h.cca, expected="card",
                  crls=[*h.crls(), forged])


# --- root rollover -------------------------------------------------------------------------------
def test_root_rollover_accepted_and_pinned():
    w = world()
    h = w.h
    trust = h.trust_store()
    new_root = h.root.rollover(NOW)
    assert setext.read_hashed_root_key(new_root.certificate) != setext.read_hashed_root_key(
        h.root.certificate)
    new_brand = new_root.create_subordinate(profiles.BRAND, h.brand.certificate.subject, NOW,
                                            key=h.brand.key, brand="Visa")
    assert not trust.is_pinned(new_root.certificate)
    vp = validate_path(new_brand.certificate, [new_root.certificate], trust, now=NOW,
                       expected_type="bca", key_usage="key_cert_sign")
    assert vp.root == new_root.certificate and trust.is_pinned(new_root.certificate)


def test_root_with_uncommitted_key_refused():
    w = world()
    impostor = CertificateAuthority.create_root(SUITE, NOW, name=w.h.root.certificate.subject,
                                                key=w.key(), next_root_key=w.key())
    brand = impostor.create_subordinate(profiles.BRAND, "Visa Brand CA", NOW, key=w.h.brand.key,
                                        brand="Visa")
    with pytest.raises(UntrustedRoot):
        validate_path(brand.certificate, [impostor.certificate], w.h.trust_store(), now=NOW,
                      expected_type="bca", key_usage="key_cert_sign")
    with pytest.raises(UntrustedRoot):
        TrustStore([w.h.brand.certificate])


# --- cardholder identifier -----------------------------------------------------------------------
def _packed_bcd(digits: str) -> bytes:
    return bytes.fromhex(digits if len(digits) % 2 == 0 else digits + "f")


def test_cardholder_certificate_never_contains_the_pan():
    issued = world().certs["cardholder"]
    der = to_der(issued.certificate)
    for needle in (PAN.encode(), PAN.encode("utf-16-be"), _packed_bcd(PAN), _packed_bcd("0" + PAN),
                   PAN[6:].encode(), _packed_bcd(PAN[:12])):
        assert needle not in der
    assert PAN.encode() not in to_pem(issued.certificate)
    assert issued.pan_secret == pan_secret(CARD_SECRET, issued.nonce_cca)
    verify_cardholder_id(issued.certificate, issued.pan_secret, PAN, EXPIRY)


def test_gateway_cardholder_check_refuses_other_cards():
    issued = world().certs["cardholder"]
    with pytest.raises(CardholderMismatch):
        verify_cardholder_id(issued.certificate, issued.pan_secret, "4111111111111112", EXPIRY)
    with pytest.raises(CardholderMismatch):
        verify_cardholder_id(issued.certificate, issued.pan_secret, PAN, "202901")
    with pytest.raises(CardholderMismatch):
        verify_cardholder_id(issued.certificate, bytes(31) + b"\1", PAN, EXPIRY)
    with pytest.raises(BadKey):
        cardholder_common_name(bytes(32), PAN, EXPIRY)


def test_pem_and_der_round_trip():
    cert = world().certs["gateway"][0]
    assert load_certificate(to_pem(cert)) == cert == load_certificate(to_der(cert))
