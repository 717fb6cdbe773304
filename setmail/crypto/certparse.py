"""Untrusted bytes -> a fully parsed ``x509.Certificate``; every failure is MalformedCertificate.

Why in crypto and not in pki: the CMS reader (``cms.load_cert``) parses the certificates embedded
in every message, and pki builds on crypto.  Parsing here lets imports point downwards only
(docs/architecture.md); ``pki.parse`` re-exports these and adds the SET extensions, CRLs and
BrandCRLIdentifiers on top.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from setmail.asn1.base import MAX_MESSAGE_SIZE
from setmail.errors import MalformedCertificate


def checked_bytes(data, what: str) -> bytes:
    """``data`` as bytes within the message size limit, or MalformedCertificate naming ``what``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedCertificate(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_SIZE:
        raise MalformedCertificate(f"{what}: {len(data)} bytes is over the size limit")
    return bytes(data)


def load_der_certificate(data: bytes) -> x509.Certificate:
    """A DER certificate with every X.509 part parsed (cached by its bytes: the same ones arrive in
    message after message).  SET extensions are left to their readers, which raise
    MalformedCertificate themselves: decoding them all costs 20x the parse, and a path check
    reads the ones it needs anyway."""
    return _load_der(checked_bytes(data, "certificate"))


def load_pem_certificate(raw: bytes) -> x509.Certificate:
    """A PEM certificate with every X.509 part parsed (not cached)."""
    return _forced(x509.load_pem_x509_certificate, raw)


@lru_cache(maxsize=2048)
def _load_der(raw: bytes) -> x509.Certificate:
    return _forced(x509.load_der_x509_certificate, raw)


def _forced(loader, raw: bytes) -> x509.Certificate:
    try:
        with warnings.catch_warnings():
            # a non-positive serial (RFC 5280 forbids it) only warns in cryptography: refuse it
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            cert = loader(raw)
            # parsing is lazy: force every part validation reads, so faults surface here
            cert.extensions, cert.subject, cert.issuer, cert.serial_number  # noqa: B018
            cert.public_key(), cert.signature_algorithm_oid, cert.signature  # noqa: B018
            cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
    except Exception as exc:  # cryptography raises ValueError, UnsupportedAlgorithm, ...
        raise MalformedCertificate(f"certificate does not parse: {exc}") from exc
    return cert
