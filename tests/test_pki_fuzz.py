"""Random and mutated certificate/CRL/BCI bytes: only MalformedCertificate or a path error."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from setmail.errors import CertificateError, MalformedCertificate
from setmail.pki import load_bci, load_certificate, load_crl, to_der, validate_path
from tests.test_pki_world import NOW, world

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
LOADERS = (load_certificate, load_crl, load_bci)


def _mutate(der: bytes, data) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
    i = data.draw(st.integers(0, len(der) - 1))
    if kind == "flip":
        return der[:i] + bytes([der[i] ^ data.draw(st.integers(1, 255))]) + der[i + 1:]
    if kind == "truncate":
        return der[:i]
    if kind == "insert":
        return der[:i] + data.draw(st.binary(min_size=1, max_size=8)) + der[i:]
    if kind == "delete":
        return der[:i] + der[i + data.draw(st.integers(1, 8)):]
    return der[:i] + bytes([data.draw(st.sampled_from([0x00, 0x7f, 0x80, 0x81, 0x82, 0xff]))]) \
        + der[i + 1:]


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_are_malformed(blob):
    for load in LOADERS:
        try:
            load(blob)
        except MalformedCertificate:
            pass


@FUZZ
@given(st.data())
def test_mutated_certificates_give_certificate_errors(data):
    w = world()
    which = data.draw(st.sampled_from(["merchant", "gateway", "cardholder"]))
    leaf = w.certs[which][0] if which != "cardholder" else w.certs[which].certificate
    ca = {"merchant": w.h.mca, "gateway": w.h.pca, "cardholder": w.h.cca}[which]
    target = data.draw(st.sampled_from(["leaf", "issuer", "crl"]))
    chain = [to_der(c) for c in ca.chain]
    crls = [to_der(c) for c in w.h.crls()]
    leaf_der = to_der(leaf)
    if target == "leaf":
        leaf_der = _mutate(leaf_der, data)
    elif target == "issuer":
        chain[0] = _mutate(chain[0], data)
    else:
        crls = [_mutate(crl, data) if crl == to_der(ca.crl) else crl for crl in crls]
    try:
        validate_path(leaf_der, chain, w.h.trust_store(), now=NOW,
                      expected_type=["card", "mer", "pgwy"], key_usage="digital_signature",
                      crls=crls)
    except CertificateError:
        pass


@FUZZ
@given(st.data())
def test_mutated_bci_and_crl_bytes(data):
    h = world().h
    for obj, load in ((h.brand.bci, load_bci), (h.mca.crl, load_crl)):
        try:
            load(_mutate(to_der(obj), data))
        except MalformedCertificate:
            pass
