"""Build a whole SET tree for one brand: Root -> Brand -> (Geo) -> CCA, MCA, PCA.

Used by tests, the demo and anyone standing up a world; end entities are then certified through
the helpers here or directly through the CA objects (``hierarchy.cca.issue_cardholder(...)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from setmail.asn1 import oids
from setmail.crypto.suite import CryptoSuite
from setmail.errors import UnsupportedMessage
from setmail.pki import profiles
from setmail.pki.ca import CardholderCertificate, CertificateAuthority, set_name
from setmail.pki.setext import MerchantInfo
from setmail.pki.trust import TrustStore


@dataclass
class Hierarchy:
    suite: CryptoSuite
    brand_id: str
    root: CertificateAuthority
    brand: CertificateAuthority
    geo: CertificateAuthority | None
    cca: CertificateAuthority
    mca: CertificateAuthority
    pca: CertificateAuthority

    @property
    def cas(self) -> list[CertificateAuthority]:
        return list(self.root.subtree())

    def trust_store(self) -> TrustStore:
        """A fresh TrustStore pinning this tree's Root."""
        return TrustStore([self.root.certificate], suite=self.suite)

    def crls(self) -> list[x509.CertificateRevocationList]:
        """The current CRL of every CA in the tree."""
        return [ca.crl for ca in self.cas]

    def issue_cardholder(self, public_key, *, pan: str, expiry: str, card_secret: bytes,
                         now: datetime) -> CardholderCertificate:
        return self.cca.issue_cardholder(public_key, pan=pan, expiry=expiry,
                                         card_secret=card_secret, now=now)

    def issue_merchant(self, signature_key, key_exchange_key, merchant: MerchantInfo,
                       now: datetime) -> tuple[x509.Certificate, x509.Certificate]:
        return self.mca.issue_merchant(signature_key, key_exchange_key, merchant, now)

    def issue_gateway(self, signature_key, key_exchange_key, now: datetime, *, name: str,
                      card_cert_required: bool = False
                      ) -> tuple[x509.Certificate, x509.Certificate]:
        return self.pca.issue_gateway(signature_key, key_exchange_key, now, name=name,
                                      card_cert_required=card_cert_required)


def create_hierarchy(suite: CryptoSuite, now: datetime, brand: str = "Visa", geo: bool = False,
                     *, country: str = "US", root: CertificateAuthority | None = None
                     ) -> Hierarchy:
    """Root (or the given one) -> Brand -> optional Geo-political CA -> CCA, MCA, PCA.

    Generates 2 keys for the Root (its own and the committed next one), 1 per Brand/Geo CA and 2
    per xCA (signature, key-exchange): 10 RSA keys, 11 with ``geo``.
    """
    if brand not in oids.BRANDS:
        raise UnsupportedMessage(f"unknown brand {brand!r}; SET brands: {', '.join(oids.BRANDS)}")
    root = root or CertificateAuthority.create_root(suite, now)
    brand_ca = root.create_subordinate(
        profiles.BRAND, set_name(f"{brand} Brand CA", organization=brand, unit="bca"), now,
        brand=brand)
    parent, geo_ca = brand_ca, None
    if geo:
        geo_ca = brand_ca.create_subordinate(
            profiles.GEO, set_name(f"{brand} {country} Geo-political CA", organization=brand,
                                   unit="gca", country=country), now)
        parent = geo_ca

    def xca(profile, title):
        return parent.create_subordinate(
            profile, set_name(f"{brand} {title} CA", organization=brand,
                              unit=profile.cert_type, country=country), now)

    return Hierarchy(suite, brand, root, brand_ca, geo_ca, xca(profiles.CCA, "Cardholder"),
                     xca(profiles.MCA, "Merchant"), xca(profiles.PCA, "Payment Gateway"))
