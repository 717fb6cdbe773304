"""Thumbprints and the certificate cache behind SET's Thumbs.

A SET request lists (in ``Thumbs``) what its sender already holds, so the responder can leave those
certificates, CRLs and BrandCRLIdentifiers out of the PKCS#7 ``certificates``/``crls`` fields; the
receiver then finds them by thumbprint here.  Thumbprint = SHA-256 of the DER (D-2).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography import x509

from setmail.asn1.base import Thumbs
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.errors import MissingCertificate
from setmail.pki.parse import load_bci, load_certificate, load_crl, to_der


def thumbprint(obj) -> bytes:
    """SHA-256 of the DER of a certificate, CRL, BrandCRLIdentifier, or of raw DER bytes."""
    if isinstance(obj, (x509.Certificate, x509.CertificateRevocationList)):
        known = _THUMBS.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        thumb = hashlib.sha256(to_der(obj)).digest()
        if len(_THUMBS) >= _THUMBS_MAX:
            _THUMBS.clear()  # atomic, unlike evicting one entry while another thread inserts
        _THUMBS[id(obj)] = (obj, thumb)
        return thumb
    der = bytes(obj) if isinstance(obj, (bytes, bytearray, memoryview)) else to_der(obj)
    return hashlib.sha256(der).digest()


#: id(certificate or CRL) -> (it, its thumbprint), as crypto.cms caches per-certificate facts:
#: both are immutable, path building and every validation's cache key ask for the same ones all
#: the time, CRLs are not hashable and hashing a certificate hashes its whole DER.  An entry holds
#: its object, so the id cannot be reused while it is here.
_THUMBS: dict[int, tuple[object, bytes]] = {}
_THUMBS_MAX = 4096


class CertCache:
    """Certificates, CRLs and BCIs by thumbprint; anything added is parsed (and so well-formed)."""

    def __init__(self, items: Iterable = ()):
        self._certs: dict[bytes, x509.Certificate] = {}
        self._crls: dict[bytes, x509.CertificateRevocationList] = {}
        self._bcis: dict[bytes, BrandCRLIdentifier] = {}
        for item in items:
            self.add(item)

    # -- adding ---------------------------------------------------------------------------------
    def add_certificate(self, cert) -> bytes:
        cert = load_certificate(cert)
        thumb = thumbprint(cert)
        self._certs[thumb] = cert
        return thumb

    def add_crl(self, crl) -> bytes:
        crl = load_crl(crl)
        thumb = thumbprint(crl)
        self._crls[thumb] = crl
        return thumb

    def add_bci(self, bci) -> bytes:
        bci = load_bci(bci)
        thumb = thumbprint(bci)
        self._bcis[thumb] = bci
        return thumb

    def add(self, item) -> bytes:
        """Add a loaded certificate, CRL or BCI object (bytes: use the typed add_* methods)."""
        if isinstance(item, x509.CertificateRevocationList):
            return self.add_crl(item)
        if isinstance(item, BrandCRLIdentifier):
            return self.add_bci(item)
        return self.add_certificate(item)

    # -- lookup ---------------------------------------------------------------------------------
    def certificate(self, thumb: bytes) -> x509.Certificate:
        return self._get(self._certs, thumb, "certificate")

    def crl(self, thumb: bytes) -> x509.CertificateRevocationList:
        return self._get(self._crls, thumb, "CRL")

    def bci(self, thumb: bytes) -> BrandCRLIdentifier:
        return self._get(self._bcis, thumb, "BrandCRLIdentifier")

    @staticmethod
    def _get(table, thumb, what):
        try:
            return table[bytes(thumb)]
        except KeyError:
            raise MissingCertificate(f"{what} with thumbprint {bytes(thumb).hex()[:16]}... "
                                     "is neither in the message nor in the cache") from None

    def __contains__(self, thumb: bytes) -> bool:
        thumb = bytes(thumb)
        return thumb in self._certs or thumb in self._crls or thumb in self._bcis

    def certificates(self) -> list[x509.Certificate]:
        return list(self._certs.values())

    def crls(self) -> list[x509.CertificateRevocationList]:
        return list(self._crls.values())

    def bcis(self) -> list[BrandCRLIdentifier]:
        return list(self._bcis.values())

    # -- Thumbs -----------------------------------------------------------------------------------
    def thumbs(self) -> Thumbs:
        """The ``Thumbs`` structure announcing everything held here."""
        return Thumbs({
            "digest_algorithm": {"algorithm": "sha256"},
            "cert_thumbs": list(self._certs), "crl_thumbs": list(self._crls),
            "brl_thumbs": list(self._bcis),
        })

    def absorb(self, certificates=(), crls=(), bcis=()) -> None:
        """Add what a message carried (DER bytes or objects)."""
        for c in certificates:
            self.add_certificate(c)
        for c in crls:
            self.add_crl(c)
        for b in bcis:
            self.add_bci(b)


def peer_lacks(held: Iterable, peer_thumbs: Thumbs | None) -> list:
    """Of the objects ``held``, those the peer's Thumbs does not list (so they must be sent)."""
    known: set[bytes] = set()
    if peer_thumbs is not None:
        for field in ("cert_thumbs", "crl_thumbs", "brl_thumbs"):
            if peer_thumbs[field].native:
                known.update(peer_thumbs[field].native)
    return [obj for obj in held if thumbprint(obj) not in known]
