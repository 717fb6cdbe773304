"""Untrusted bytes -> certificate, CRL or BrandCRLIdentifier objects, and back to DER/PEM.

Every failure is MalformedCertificate, never a library exception: certificates arrive inside
messages from anyone.  cryptography parses extensions lazily, so loading also forces them (and the
SET extensions and public key) here, where a fault can still be reported as malformed input.  The
X.509 part is ``crypto.certparse``'s (the CMS reader needs it, and crypto is below pki), used and
re-exported here.
"""
from __future__ import annotations

from asn1crypto import pem as _pem
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from setmail.asn1.base import decode
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.crypto.certparse import checked_bytes as _bytes
from setmail.crypto.certparse import load_der_certificate, load_pem_certificate
from setmail.crypto.cms import cert_der
from setmail.errors import MalformedCertificate, MalformedMessage
from setmail.pki import setext

#: PEM label for a BrandCRLIdentifier (ours: SET defined no PEM form)
BCI_PEM_LABEL = "SET BRAND CRL IDENTIFIER"

_SET_EXT_READERS = (setext.read_certificate_type, setext.read_hashed_root_key,
                    setext.read_merchant_data, setext.read_card_cert_required,
                    setext.read_tunneling)


def load_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from DER or PEM bytes (an already loaded one passes through)."""
    if isinstance(data, x509.Certificate):
        return data
    raw = _bytes(data, "certificate")
    cert = (load_pem_certificate(raw) if raw.lstrip().startswith(b"-----")
            else load_der_certificate(raw))
    for read in _SET_EXT_READERS:  # surface malformed SET extensions now, not mid-validation
        read(cert)
    return cert


def load_crl(data: bytes | x509.CertificateRevocationList) -> x509.CertificateRevocationList:
    if isinstance(data, x509.CertificateRevocationList):
        return data
    raw = _bytes(data, "CRL")
    try:
        crl = (x509.load_pem_x509_crl(raw) if raw.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(raw))
        crl.extensions, crl.issuer, crl.signature_algorithm_oid, crl.signature  # noqa: B018
        for entry in crl:
            entry.serial_number, entry.revocation_date_utc, entry.extensions  # noqa: B018
        crl.last_update_utc, crl.next_update_utc  # noqa: B018
    except Exception as exc:
        raise MalformedCertificate(f"CRL does not parse: {exc}") from exc
    return crl


def load_bci(data: bytes | BrandCRLIdentifier) -> BrandCRLIdentifier:
    if isinstance(data, BrandCRLIdentifier):
        return data
    raw = _bytes(data, "BrandCRLIdentifier")
    try:
        if raw.lstrip().startswith(b"-----"):
            label, _, raw = _pem.unarmor(raw)
            if label != BCI_PEM_LABEL:
                raise MalformedMessage(f"PEM label {label!r} is not {BCI_PEM_LABEL!r}")
        return decode(BrandCRLIdentifier, raw)
    except Exception as exc:
        raise MalformedCertificate(f"BrandCRLIdentifier does not parse: {exc}") from exc


def to_der(obj) -> bytes:
    """DER of a certificate, CRL or BrandCRLIdentifier."""
    if isinstance(obj, BrandCRLIdentifier):
        return obj.dump()
    if isinstance(obj, x509.Certificate):
        return cert_der(obj)  # the crypto layer's per-certificate cache: one export per object
    return obj.public_bytes(Encoding.DER)


def to_pem(obj) -> bytes:
    """PEM of a certificate, CRL or BrandCRLIdentifier (what `openssl` reads)."""
    if isinstance(obj, BrandCRLIdentifier):
        return _pem.armor(BCI_PEM_LABEL, obj.dump())
    return obj.public_bytes(Encoding.PEM)
