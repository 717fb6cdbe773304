"""Thumbprints and the certificate cache behind SET's Thumbs.

A SET request lists (in ``Thumbs``) what its sender already holds, so the responder can leave those
certificates, CRLs and BrandCRLIdentifiers out of the PKCS#7 ``certificates``/``crls`` fields; the
receiver then finds them by thumbprint here.  Thumbprint = SHA-256 of the DER (D-2).
"""
from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterable

from cryptography import x509

from setmail.asn1.base import Thumbs
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.errors import MissingCertificate
from setmail.pki.parse import load_bci, load_certificate, load_crl, to_der


def thumbprint(obj) -> bytes:
    """SHA-256 of the DER of a certificate, CRL, BrandCRLIdentifier, or of raw DER bytes."""
    if isinstance(obj, x509.Certificate):
        return _certificate_thumbprint(obj)
    if isinstance(obj, x509.CertificateRevocationList):
        return _crl_thumbprint(obj)
    der = bytes(obj) if isinstance(obj, (bytes, bytearray, memoryview)) else to_der(obj)
    return hashlib.sha256(der).digest()


#: id(crl) -> (crl, thumbprint); the CRL is kept so its id cannot be reused while cached.
#: CRL objects are not hashable, yet every path validation keys its cache by the thumbprints of
#: the agent's CRLs: exporting and hashing them each time was ~2 % of the gateway's CPU.
_CRL_THUMBS: dict[int, tuple[x509.CertificateRevocationList, bytes]] = {}
_CRL_LOCK = threading.Lock()


def _crl_thumbprint(crl: x509.CertificateRevocationList) -> bytes:
    known = _CRL_THUMBS.get(id(crl))
    if known is not None and known[0] is crl:
        return known[1]
    thumb = hashlib.sha256(to_der(crl)).digest()
    with _CRL_LOCK:
        if len(_CRL_THUMBS) >= 256:
            _CRL_THUMBS.pop(next(iter(_CRL_THUMBS)))
        _CRL_THUMBS[id(crl)] = (crl, thumb)
    return thumb


@functools.lru_cache(maxsize=4096)
def _certificate_thumbprint(cert: x509.Certificate) -> bytes:
    """Certificates are immutable; path building and Thumbs ask for the same ones all the time."""
    return hashlib.sha256(to_der(cert)).digest()


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
