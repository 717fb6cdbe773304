"""A deliberately tiny X.509 hierarchy for testing the crypto operators on their own.

The operators must not depend on setmail.pki (they sit below it), so their tests build plain
certificates here: root -> intermediate -> leaves, RSASSA-PSS signed, keyUsage set as SET assigns.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from setmail.crypto.cms import Identity
from setmail.crypto.suite import DEFAULT_SUITE

NOW = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "setmail test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer_name, issuer_key, public_key, *, ca: bool, sign: bool, serial: int):
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(public_key).serial_number(serial)
         .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=sign and not ca, content_commitment=False,
                                      key_encipherment=not sign and not ca, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    return b.sign(issuer_key, hashes.SHA256(), rsa_padding=DEFAULT_SUITE.pss_padding)


@dataclass
class MiniPKI:
    root: x509.Certificate
    root_key: object
    ca: x509.Certificate
    parties: dict[str, Identity]

    def pem(self, cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def key_pem(identity: Identity) -> bytes:
        return identity.key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())


def build(names=("cardholder", "merchant-sig", "merchant-kex", "gateway-sig", "gateway-kex")) -> MiniPKI:
    suite = DEFAULT_SUITE
    root_key = suite.generate_key()
    root = _cert("Test Root", _name("Test Root"), root_key, root_key.public_key(), ca=True, sign=True, serial=1)
    ca_key = suite.generate_key()
    ca = _cert("Test CA", root.subject, root_key, ca_key.public_key(), ca=True, sign=True, serial=2)
    parties = {}
    for serial, name in enumerate(names, start=10):
        key = suite.generate_key()
        cert = _cert(name, ca.subject, ca_key, key.public_key(), ca=False,
                     sign=not name.endswith("kex"), serial=serial)
        parties[name] = Identity(key, cert, (ca,))
    return MiniPKI(root, root_key, ca, parties)
