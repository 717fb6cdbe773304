"""SET PKI: certificate profiles, CAs, CRLs and BrandCRLIdentifiers, and path validation.

Sans-I/O: no files, sockets or clocks; every time-dependent function takes ``now``.  Objects are
cryptography certificates/CRLs and asn1crypto BrandCRLIdentifiers; ``to_der``/``to_pem`` and the
``load_*`` functions convert to and from bytes.  See docs/pki.md.
"""
from setmail.pki.bci import listed_crl_thumbs, missing_crls, verify_bci
from setmail.pki.ca import CardholderCertificate, CertificateAuthority, key_identifier, set_name
from setmail.pki.cardholder import (cardholder_common_name, cardholder_id,
                                    certified_cardholder_id, pan_secret, verify_cardholder_id)
from setmail.pki.hierarchy import Hierarchy, create_hierarchy
from setmail.pki.parse import load_bci, load_certificate, load_crl, to_der, to_pem
from setmail.pki.profiles import PROFILES, Profile
from setmail.pki.setext import MerchantInfo, MerName
from setmail.pki.signatures import check_crl
from setmail.pki.thumbs import CertCache, peer_lacks, thumbprint
from setmail.pki.trust import TrustStore
from setmail.pki.validate import ValidatedPath, validate_path

__all__ = [
    "CardholderCertificate", "CertCache", "CertificateAuthority", "Hierarchy", "MerName",
    "MerchantInfo", "PROFILES", "Profile", "TrustStore", "ValidatedPath", "cardholder_common_name",
    "cardholder_id", "certified_cardholder_id", "check_crl", "create_hierarchy", "key_identifier",
    "listed_crl_thumbs", "load_bci", "load_certificate", "load_crl", "missing_crls", "pan_secret",
    "peer_lacks", "set_name", "thumbprint", "to_der", "to_pem", "validate_path",
    "verify_bci", "verify_cardholder_id",
]
