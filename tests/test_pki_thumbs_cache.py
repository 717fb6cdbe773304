"""Thumbprints of CRLs are cached per object and equal SHA-256 of the CRL's DER."""
import hashlib

from cryptography.hazmat.primitives.serialization import Encoding

from setmail.pki.parse import load_crl
from setmail.pki.thumbs import thumbprint


def test_crl_thumbprint_is_sha256_of_der_and_stable(tmp_path):
    from setmail.world import load_world
    from setmail.world.create import create_world
    from setmail.world.trees import crls as world_crls
    create_world(tmp_path / "w", smtp_port=2599)
    crls = world_crls(load_world(tmp_path / "w"))
    assert len(crls) >= 2, "a world has a CRL per CA"
    for crl in crls:
        expected = hashlib.sha256(crl.public_bytes(Encoding.DER)).digest()
        assert thumbprint(crl) == expected == thumbprint(crl)
    # another object with the same DER gets the same thumbprint; other CRLs other ones
    again = load_crl(crls[0].public_bytes(Encoding.DER))
    assert thumbprint(again) == thumbprint(crls[0])
    assert len({thumbprint(c) for c in crls}) == len({c.public_bytes(Encoding.DER) for c in crls})


def test_certificate_thumbprint_is_sha256_of_der_per_object_and_per_content(tmp_path):
    from cryptography import x509

    from setmail.world import load_world
    from setmail.world.create import create_world
    from setmail.world.trees import trust_store
    create_world(tmp_path / "w", smtp_port=2599)
    roots = trust_store(load_world(tmp_path / "w")).roots
    assert roots
    for cert in roots:
        der = cert.public_bytes(Encoding.DER)
        assert thumbprint(cert) == hashlib.sha256(der).digest() == thumbprint(cert)
        assert thumbprint(x509.load_der_x509_certificate(der)) == thumbprint(cert)
