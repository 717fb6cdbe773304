"""BrandCRLIdentifier and the thumbprint cache."""
from __future__ import annotations

import datetime as dt

import pytest

from setmail.errors import (BadChain, BadSignature, Expired, MalformedCertificate, MissingCertificate,
                            WrongCertificateType)
from setmail.pki import (CertCache, profiles, listed_crl_thumbs, load_bci, missing_crls, peer_lacks,
                         thumbprint, to_der, to_pem, verify_bci)
from tests.test_pki_world import NOW, SUITE, foreign, world


def test_bci_signature_verifies_and_lists_current_crls():
    h = world().h
    bci = verify_bci(to_der(h.brand.bci), h.brand.certificate, now=NOW, suite=SUITE)
    assert bci["tbs"]["brand_id"].native == "Visa"
    assert listed_crl_thumbs(bci) == {thumbprint(crl) for crl in h.crls()}
    assert missing_crls(bci, h.crls()) == set()
    assert missing_crls(bci, h.crls()[1:]) == {thumbprint(h.crls()[0])}
    numbers = {c["issuer"].human_friendly: c["crl_number"].native
               for c in bci["tbs"]["crl_identifier_seq"]}
    assert len(numbers) == len(h.cas)


def test_bci_follows_every_revocation():
    w = world()
    h = w.h
    seq = h.brand.bci["tbs"]["sequence_num"].native
    cert = h.pca.issue(profiles.GATEWAY_SIGNATURE, "Short-lived Gateway", w.key().public_key(),
                       NOW)
    h.pca.revoke(cert, NOW)
    bci = h.brand.bci
    assert bci["tbs"]["sequence_num"].native == seq + 1
    assert thumbprint(h.pca.crl) in listed_crl_thumbs(bci)
    assert verify_bci(bci, h.brand.certificate, now=NOW, suite=SUITE) is not None


def test_bci_refusals():
    h = world().h
    der = bytearray(to_der(h.brand.bci))
    der[-3] ^= 0x40
    with pytest.raises(BadSignature):
        verify_bci(bytes(der), h.brand.certificate, now=NOW, suite=SUITE)
    with pytest.raises(BadChain):  # names another Brand CA key than this one
        verify_bci(h.brand.bci, foreign().brand.certificate, now=NOW, suite=SUITE)
    with pytest.raises(WrongCertificateType):
        verify_bci(h.brand.bci, h.mca.certificate, now=NOW, suite=SUITE)
    with pytest.raises(Expired):
        verify_bci(h.brand.bci, h.brand.certificate, now=NOW + dt.timedelta(days=30), suite=SUITE)
    with pytest.raises(MalformedCertificate):
        load_bci(b"\x30\x03\x02\x01\x00")
    assert load_bci(to_pem(h.brand.bci)).dump() == h.brand.bci.dump()


def test_cert_cache_and_thumbs():
    w = world()
    h = w.h
    cache = CertCache([*h.mca.chain, *h.crls(), h.brand.bci])
    leaf = w.certs["merchant"][0]
    t = cache.add_certificate(to_der(leaf))
    assert t == thumbprint(leaf) == thumbprint(to_der(leaf)) and len(t) == 32
    assert cache.certificate(t) == leaf and t in cache
    assert cache.crl(thumbprint(h.cca.crl)) == h.cca.crl
    assert cache.bci(thumbprint(h.brand.bci)).dump() == h.brand.bci.dump()
    thumbs = cache.thumbs()
    assert set(thumbs["cert_thumbs"].native) == {thumbprint(c) for c in cache.certificates()}
    assert len(thumbs["crl_thumbs"]) == len(h.cas) and len(thumbs["brl_thumbs"]) == 1
    assert peer_lacks([leaf, h.pca.certificate], thumbs) == [h.pca.certificate]
    assert peer_lacks([leaf], None) == [leaf]
    with pytest.raises(MissingCertificate):
        cache.certificate(b"\0" * 32)
    with pytest.raises(MalformedCertificate):
        cache.add_certificate(b"not a certificate")
