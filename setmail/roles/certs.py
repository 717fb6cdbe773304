"""The roles' glue to ``setmail.pki``: path checks for the crypto operators' ``validate=`` hook,
certificates named by thumbprint, proof of possession for keys without a certificate (D-302), and
the PEM/hex forms certificates and keys take in state and effects.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from setmail.crypto.cms import Identity, cert_der, load_cert
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError, SignatureInvalid
from setmail.pki.setext import spki_der
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.pki.validate import validate_path

def path_check(trust: TrustStore, now: dt.datetime, expected_type, key_usage: str = "digital_signature",
               crls=None) -> Callable:
    """A ``validate=`` callable for verify_*/open_*: the signer's path must reach a pinned root."""
    def validate(signer, included):
        validate_path(signer, included, trust, now=now, expected_type=expected_type,
                      key_usage=key_usage, crls=crls)
    return validate


def find_certificate(certs, thumb: bytes) -> x509.Certificate:
    for c in certs:
        if thumbprint(c) == thumb:
            return c
    raise ProtocolError("a certificate named by thumbprint is missing", "missingCertificate")


def spki(public_key) -> bytes:
    return spki_der(public_key)


def pop_identity(key, now: dt.datetime, suite: CryptoSuite = DEFAULT_SUITE) -> Identity:
    """Proof of possession (D-302): a key without a certificate signs through a self-signed carrier
    certificate that names it; the CA verifies the signature, then compares the carrier's key with
    the key the request asks it to certify.  The carrier is no SET certificate (no certificateType),
    so ``validate_path`` never accepts it anywhere else."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "setmail proof of possession")])
    start = now.astimezone(dt.timezone.utc).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(int.from_bytes(fresh(16), "big") >> 1 or 1)
            .not_valid_before(start - dt.timedelta(hours=1)).not_valid_after(start + dt.timedelta(days=30))
            .sign(key, suite.hash_algorithm, rsa_padding=suite.pss_padding))
    return Identity(key, cert, ())


def check_pop(signer: x509.Certificate, requested_spki: bytes) -> None:
    """The request was signed by the key it asks to certify."""
    if spki(signer.public_key()) != requested_spki:
        raise SignatureInvalid("CertReq is not signed by the key it asks to certify")


def private_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_cert_hex(value: str) -> x509.Certificate:
    return load_cert(bytes.fromhex(value))


def cert_hex(cert: x509.Certificate) -> str:
    return cert_der(cert).hex()


def public_key_info(spki_der: bytes):
    """asn1crypto PublicKeyInfo for CertReqData.publicKeySorE."""
    from asn1crypto import keys
    return keys.PublicKeyInfo.load(spki_der)
