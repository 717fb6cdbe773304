"""Certificates embedded in CMS SignedData (D-126): parsed in full when taken from a message, their
unsigned parts (outer signatureAlgorithm, BIT STRING padding) bound to the signed ones, and the
certificates SET in DER order.  Each fault below is one cryptography itself lets through."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from setmail.crypto import der
from setmail.crypto import operators as op
from setmail.crypto.cms import ALG_PSS, cert_der, load_cert
from setmail.crypto.reader import Reader
from setmail.crypto.suite import get_suite
from setmail.errors import BadSignature, MalformedCertificate, MalformedMessage
from setmail.pki import check_crl, load_certificate, load_crl, to_der, validate_path
from setmail.vectors.build import NOW, Parties

SUITE = get_suite("rsa2048")
T = b"\x04\x0bhello world"
RSA_ENCRYPTION = der.oid("1.2.840.113549.1.1.1")
KEY_USAGE, SUBJECT_KEY_ID = der.oid("2.5.29.15"), der.oid("2.5.29.14")
COMMON_NAME = der.oid("2.5.4.3")


@pytest.fixture(scope="module")
def parties():
    return Parties(SUITE)


def _validate(parties, leaf, chain):
    return validate_path(leaf, chain, parties.tree.trust_store(), now=NOW, expected_type="mer",
                         key_usage="digital_signature")


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1 and len(old) == len(new)
    return data.replace(old, new)


# --- 1. load_cert parses everything now --------------------------------------------------------
def _lazy_faults(cert: bytes) -> dict[str, bytes]:
    """Same-length corruptions that x509.load_der_x509_certificate accepts (it parses lazily)."""
    name_at = cert.index(COMMON_NAME, cert.index(COMMON_NAME) + 1)  # the subject's CN
    utf8 = name_at + len(COMMON_NAME)
    assert cert[utf8] == 0x0C
    return {
        "key type": _replace_once(cert, RSA_ENCRYPTION, RSA_ENCRYPTION[:-1] + b"\x00"),
        "duplicate extension": _replace_once(cert, KEY_USAGE, SUBJECT_KEY_ID),
        "subject value type": cert[:utf8] + b"\x03" + cert[utf8 + 1:],  # UTF8String -> BIT STRING
    }


@pytest.mark.parametrize("fault", ["key type", "duplicate extension", "subject value type"])
def test_load_cert_refuses_what_cryptography_loads_lazily(parties, fault):
    bad = _lazy_faults(cert_der(parties.merchant_sig.cert))[fault]
    x509.load_der_x509_certificate(bad)  # no error yet: the fault would surface mid-validation
    with pytest.raises(MalformedMessage, match="embedded certificate"):
        load_cert(bad)
    with pytest.raises(MalformedCertificate):
        load_certificate(bad)


def test_a_lazily_malformed_ca_certificate_in_a_signed_data_is_malformed_message(parties):
    """Not the signer's: before, it reached validate_path and escaped as a library exception."""
    signer = parties.merchant_sig
    ca = cert_der(signer.chain[0])
    signed = op.S(signer, "PInitResData", T, certs=None, suite=SUITE)
    for fault, bad in _lazy_faults(ca).items():
        with pytest.raises(MalformedMessage, match="embedded certificate"):
            op.verify_S(_replace_once(signed, ca, bad), "PInitResData", suite=SUITE,
                        validate=lambda leaf, chain: _validate(parties, leaf, chain))


def test_load_cert_is_cached_by_the_der(parties):
    data = cert_der(parties.merchant_sig.cert)
    first = load_cert(data)
    assert load_cert(bytes(bytearray(data))) is first and first == parties.merchant_sig.cert


# --- 2. the parts of a certificate or CRL its signature does not cover -------------------------
def _split(signed: bytes) -> tuple[bytes, bytes, bytes]:
    """(tbs TLV, signatureAlgorithm TLV, BIT STRING content) of a certificate or CRL."""
    outer = Reader(signed, "test").enter(0x30)
    return outer.raw(0x30), outer.raw(0x30), outer.value(0x03)


def _resigned_fields(obj, alg: bytes | None = None, bits: bytes | None = None) -> bytes:
    tbs, old_alg, old_bits = _split(to_der(obj))
    return der.seq(tbs, old_alg if alg is None else alg,
                   der.tlv(0x03, old_bits if bits is None else bits))


def _salt(alg: bytes, salt: int) -> bytes:
    return alg[:-1] + bytes([salt])  # [2] EXPLICIT INTEGER saltLength is the last octet


def _outer_faults(obj) -> dict[str, bytes]:
    _, alg, bits = _split(to_der(obj))
    assert alg.endswith(b"\xa2\x03\x02\x01\x20")  # salt 32, with NULL hash parameters
    return {
        "salt length": _resigned_fields(obj, alg=_salt(alg, 33)),
        "other encoding than the signed one": _resigned_fields(obj, alg=ALG_PSS),
        "unused bits": _resigned_fields(obj, bits=b"\x01" + bits[1:-1] + bytes([bits[-1] & 0xFE])),
    }


OUTER_FAULTS = ["salt length", "other encoding than the signed one", "unused bits"]
WHY = {"salt length": "differs from the signed one",
       "other encoding than the signed one": "differs from the signed one",
       "unused bits": "unused bits"}


@pytest.mark.parametrize("fault", OUTER_FAULTS)
def test_certificate_signature_fields_are_bound(parties, fault):
    signer = parties.merchant_sig
    ca = signer.chain[0]
    bad = load_certificate(_outer_faults(signer.cert)[fault])
    if fault == "other encoding than the signed one":  # the CA's signature still verifies
        ca.public_key().verify(bad.signature, bad.tbs_certificate_bytes,
                               padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    assert _validate(parties, signer.cert, signer.chain).leaf == signer.cert
    with pytest.raises(BadSignature, match=WHY[fault]):
        _validate(parties, bad, signer.chain)


@pytest.mark.parametrize("salt, hash_", [(64, hashes.SHA256()), (32, hashes.SHA384())])
def test_a_ca_signature_with_other_pss_parameters_is_refused(parties, salt, hash_):
    """Signed consistently (inner = outer) by the right CA key, but not with the suite's PSS."""
    signer, mca = parties.merchant_sig, parties.tree.mca
    cert = signer.cert
    builder = x509.CertificateBuilder(cert.issuer, cert.subject, cert.public_key(),
                                      cert.serial_number, cert.not_valid_before_utc,
                                      cert.not_valid_after_utc, list(cert.extensions))
    def resigned(salt, hash_):
        signed = builder.sign(mca.key, hash_, rsa_padding=padding.PSS(padding.MGF1(hash_), salt))
        return load_certificate(to_der(signed))
    assert _validate(parties, resigned(32, hashes.SHA256()), signer.chain)  # the control
    with pytest.raises(BadSignature, match="RSASSA-PSS"):
        _validate(parties, resigned(salt, hash_), signer.chain)


@pytest.mark.parametrize("fault", OUTER_FAULTS)
def test_a_ca_certificate_in_a_signed_data_with_a_loose_field_is_refused(parties, fault):
    signer = parties.merchant_sig
    bad = load_cert(_outer_faults(signer.chain[0])[fault])
    signed = op.S(signer, "PInitResData", T, certs=(signer.cert, bad, *signer.chain[1:]),
                  suite=SUITE)
    with pytest.raises(BadSignature, match=WHY[fault]):
        op.verify_S(signed, "PInitResData", suite=SUITE,
                    validate=lambda leaf, chain: _validate(parties, leaf, chain))


def test_crl_signature_fields_are_bound(parties):
    """cryptography itself refuses a CRL whose outer algorithm differs from the inner one (not a
    certificate); the BIT STRING padding is ours to check."""
    mca = parties.tree.mca
    crl = mca.issue_crl(NOW)
    check_crl(crl, mca.certificate, SUITE)
    faults = _outer_faults(crl)
    with pytest.raises(BadSignature, match="unused bits"):
        check_crl(load_crl(faults.pop("unused bits")), mca.certificate, SUITE)
    for bad in faults.values():
        with pytest.raises(MalformedCertificate, match="Inner and outer"):
            load_crl(bad)


# --- 3. the certificates SET OF is in DER order -----------------------------------------------
def _pool(signed: bytes) -> list[bytes]:
    """The certificate TLVs of S(...)'s [0] IMPLICIT SET OF, as sent."""
    sd = Reader(signed, "test").enter(0x30)
    sd.raw(0x06)
    body = sd.enter(0xA0).enter(0x30)
    body.raw(0x02), body.raw(0x31), body.raw(0x30)
    pool, certs = body.enter(0xA0), []
    while pool.peek() is not None:
        certs.append(pool.any())
    return certs


def test_build_signed_sorts_and_deduplicates_certificates(parties):
    signer = parties.merchant_sig
    given = (*reversed(signer.chain), signer.cert, signer.cert)
    certs = _pool(op.S(signer, "PInitResData", T, certs=given, suite=SUITE))
    assert certs == sorted({cert_der(c) for c in given}) and len(certs) == 1 + len(signer.chain)


def test_certificates_out_of_der_order_are_refused(parties):
    signer = parties.merchant_sig
    signed = op.S(signer, "PInitResData", T, certs=None, suite=SUITE)
    certs = _pool(signed)
    assert len(certs) >= 2
    assert op.verify_S(signed, "PInitResData", suite=SUITE).content == T
    swapped = _replace_once(signed, certs[0] + certs[1], certs[1] + certs[0])
    with pytest.raises(MalformedMessage, match="DER SET OF order"):
        op.verify_S(swapped, "PInitResData", suite=SUITE)
