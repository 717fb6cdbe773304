"""One certificate profile per SET certificate type (set-protocol.md §2.1-§2.3, docs/pki.md).

A profile fixes what SET ties to a certificate type: the certificateType bit, keyUsage (SET splits
signature keys from key-exchange keys; D-201), basicConstraints and the path length below it, the
validity period, and which CA types may issue it.  ``SUBORDINATE_TYPES`` is derived from the
profiles and is what path validation uses to refuse a hierarchy in the wrong order.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

SIGNATURE = frozenset({"digital_signature"})
KEY_EXCHANGE = frozenset({"key_encipherment"})
CA_ONLY = frozenset({"key_cert_sign", "crl_sign"})
#: CCA/MCA/PCA also sign registration responses (CardCInitRes, RegFormRes, CertRes): D-201
CA_AND_MESSAGES = CA_ONLY | SIGNATURE

#: key-usage names accepted by validate_path (cryptography's KeyUsage attribute names)
KEY_USAGES = frozenset({"digital_signature", "key_encipherment", "key_cert_sign", "crl_sign"})

_YEAR = timedelta(days=365)


@dataclass(frozen=True)
class Profile:
    name: str
    cert_type: str  # the one certificateType bit this profile sets
    key_usage: frozenset[str]
    is_ca: bool
    path_length: int | None  # basicConstraints pathLenConstraint for CA profiles
    validity: timedelta
    issuers: frozenset[str]  # certificateType bits of the CAs allowed to issue it

    @property
    def is_key_exchange(self) -> bool:
        return self.key_usage == KEY_EXCHANGE


def _p(name, cert_type, usage, validity_years, issuers, path_length=None):
    return Profile(name, cert_type, usage, path_length is not None, path_length,
                   validity_years * _YEAR, frozenset(issuers))


_BRAND_OR_GEO = ("bca", "gca")

# CA signature certificates.  Path lengths count the CA certificates that may still follow:
# Root -> Brand -> Geo -> xCA -> end entity.
ROOT = _p("root", "rca", CA_ONLY, 10, ("rca",), path_length=3)
BRAND = _p("brand", "bca", CA_ONLY, 7, ("rca",), path_length=2)
GEO = _p("geo", "gca", CA_ONLY, 6, ("bca",), path_length=1)
CCA = _p("cca", "cca", CA_AND_MESSAGES, 5, _BRAND_OR_GEO, path_length=0)
MCA = _p("mca", "mca", CA_AND_MESSAGES, 5, _BRAND_OR_GEO, path_length=0)
PCA = _p("pca", "pca", CA_AND_MESSAGES, 5, _BRAND_OR_GEO, path_length=0)

# CA key-exchange certificates: end entities envelope registration data to the CA (issued by the
# CA's parent, like its signature certificate).
CCA_KEY_EXCHANGE = _p("cca-key-exchange", "cca", KEY_EXCHANGE, 2, _BRAND_OR_GEO)
MCA_KEY_EXCHANGE = _p("mca-key-exchange", "mca", KEY_EXCHANGE, 2, _BRAND_OR_GEO)
PCA_KEY_EXCHANGE = _p("pca-key-exchange", "pca", KEY_EXCHANGE, 2, _BRAND_OR_GEO)

# End entities.  Cardholders hold a signature certificate only (SET 1.0 reserves the others).
CARDHOLDER_SIGNATURE = _p("cardholder-signature", "card", SIGNATURE, 3, ("cca",))
MERCHANT_SIGNATURE = _p("merchant-signature", "mer", SIGNATURE, 2, ("mca",))
MERCHANT_KEY_EXCHANGE = _p("merchant-key-exchange", "mer", KEY_EXCHANGE, 1, ("mca",))
GATEWAY_SIGNATURE = _p("gateway-signature", "pgwy", SIGNATURE, 2, ("pca",))
GATEWAY_KEY_EXCHANGE = _p("gateway-key-exchange", "pgwy", KEY_EXCHANGE, 1, ("pca",))

PROFILES: dict[str, Profile] = {p.name: p for p in (
    ROOT, BRAND, GEO, CCA, MCA, PCA, CCA_KEY_EXCHANGE, MCA_KEY_EXCHANGE, PCA_KEY_EXCHANGE,
    CARDHOLDER_SIGNATURE, MERCHANT_SIGNATURE, MERCHANT_KEY_EXCHANGE, GATEWAY_SIGNATURE,
    GATEWAY_KEY_EXCHANGE)}

#: CA signature profile per CA type, and the key-exchange profile that goes with it
CA_PROFILES = {p.cert_type: p for p in (ROOT, BRAND, GEO, CCA, MCA, PCA)}
CA_KEY_EXCHANGE_PROFILES = {p.cert_type: p for p in (CCA_KEY_EXCHANGE, MCA_KEY_EXCHANGE,
                                                     PCA_KEY_EXCHANGE)}

#: issuer certificateType -> the certificateTypes it may certify (self-issue of roots excluded)
SUBORDINATE_TYPES: dict[str, frozenset[str]] = {
    issuer: frozenset(p.cert_type for p in PROFILES.values()
                      if issuer in p.issuers and p is not ROOT)
    for issuer in CA_PROFILES
}

#: longest path SET allows, in certificates: root, brand, geo, xCA, end entity
MAX_PATH_LENGTH = 5
