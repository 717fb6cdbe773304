"""Pinned (bilateral) certificates for the gateway <-> issuer leg, which SET leaves to the card
network (D-130).

No SET CA certifies an issuer: the acquirer and the issuer exchange certificates out of band,
like a card network's key ceremony, and each trusts exactly the certificates it pinned by
thumbprint.  ``pinned_certificate`` makes such a self-signed certificate (signature or
key-exchange usage); ``pinned_check`` is a ``validate=`` hook for the crypto operators that
accepts a signer only if it is one of the pinned certificates and is valid at ``now``.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import Expired, NotYetValid, UntrustedRoot
from setmail.pki.thumbs import thumbprint

VALIDITY = dt.timedelta(days=2 * 365)


def pinned_certificate(key, common_name: str, now: dt.datetime, *, key_exchange: bool = False,
                       suite: CryptoSuite = DEFAULT_SUITE,
                       validity: dt.timedelta = VALIDITY) -> x509.Certificate:
    """A self-signed certificate for ``key``: digitalSignature, or keyEncipherment if
    ``key_exchange`` (the two keys of a party are kept apart as SET keeps them)."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "setmail card network"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = now.astimezone(dt.timezone.utc).replace(microsecond=0)
    usage = x509.KeyUsage(digital_signature=not key_exchange, content_commitment=False,
                          key_encipherment=key_exchange, data_encipherment=False,
                          key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(int.from_bytes(fresh(16), "big") >> 1 or 1)
            .not_valid_before(start - dt.timedelta(hours=1)).not_valid_after(start + validity)
            .add_extension(usage, critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, suite.hash_algorithm, rsa_padding=suite.pss_padding))


def pinned_check(pinned: Iterable[x509.Certificate | bytes], now: dt.datetime):
    """``validate(signer, included)`` hook: the signer must be a pinned certificate (by
    thumbprint), inside its validity period."""
    thumbs = {p if isinstance(p, bytes) else thumbprint(p) for p in pinned}

    def validate(signer: x509.Certificate, included) -> None:
        if thumbprint(signer) not in thumbs:
            raise UntrustedRoot("the signer is not a pinned card-network certificate")
        if now < signer.not_valid_before_utc:
            raise NotYetValid("pinned certificate is not valid yet")
        if now > signer.not_valid_after_utc:
            raise Expired("pinned certificate has expired")
    return validate
