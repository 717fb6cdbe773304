"""SET private certificate extensions (arc 2.23.42.7) and the BrandCRLIdentifier.

Shapes follow set-protocol.md §2.3/§2.5 (cryptlib's ``ext_def.c`` for the extension bodies); the
details SET 1.0 left unknown to us are choices recorded in docs/deviations.md (D-200 ...).  These
classes only describe DER; building and checking them is ``setmail.pki``'s job.
"""
from __future__ import annotations

from asn1crypto import algos, cms, core, x509

from setmail.asn1.base import BIN, BrandID, DetachedDigest, SETString

# --- hashedRootKey (2.23.42.7.0) -----------------------------------------------------------------
class HashedRootKey(core.Sequence):
    """Root certificate only: commits to the *next* root key so a rollover root can be trusted.

    ``root_key_thumbprint`` is a DigestedData, content type set-rootKeyThumb (2.23.42.3.0.0), no
    content, digest = SHA-256 of the next root's SubjectPublicKeyInfo DER (D-202).
    """

    _fields = [("root_key_thumbprint", cms.DigestedData)]


# --- certificateType (2.23.42.7.1) ---------------------------------------------------------------
#: bit names in the order SET assigns them (set-protocol.md §2.2)
CERT_TYPE_BITS = ("card", "mer", "pgwy", "cca", "mca", "pca", "gca", "bca", "rca", "acq")


class CertificateType(core.BitString):
    """Which SET role(s) the certified key may play."""

    _map = dict(enumerate(CERT_TYPE_BITS))


# --- merchantData (2.23.42.7.2) ------------------------------------------------------------------
class MerNames(core.Sequence):
    """One language's rendering of the merchant's name and address (tags EXPLICIT, D-203)."""

    _fields = [
        ("language", core.VisibleString, {"explicit": 0}),
        ("name", SETString, {"explicit": 1}),
        ("city", SETString, {"explicit": 2}),
        ("state_province", SETString, {"explicit": 3, "optional": True}),
        ("postal_code", SETString, {"explicit": 4, "optional": True}),
        ("country_name", SETString, {"explicit": 5}),
    ]


class MerNameSeq(core.SequenceOf):
    _child_spec = MerNames


class MerchantData(core.Sequence):
    """Merchant certificates: merID (what cardholders copy into PIHead.MerchantID) and acquirer."""

    _fields = [
        ("mer_id", SETString),
        ("mer_acquirer_bin", BIN),
        ("mer_name_seq", MerNameSeq),
        ("mer_country", core.Integer),
        ("mer_auth_flag", core.Boolean, {"default": True}),
    ]


# --- gateway extensions (2.23.42.7.3, .4) --------------------------------------------------------
class CardCertRequired(core.Boolean):
    """Gateway certificates: TRUE when unsigned purchase requests (no cardholder cert) are refused."""


class TunnelAlgIDs(core.SequenceOf):
    _child_spec = core.ObjectIdentifier


class Tunneling(core.Sequence):
    """Gateway certificates: the gateway can tunnel data to the cardholder, with these ciphers."""

    _fields = [
        ("tunneling", core.Boolean, {"default": True}),
        ("tunnel_alg_ids", TunnelAlgIDs),
    ]


# --- setExtensions (2.23.42.7.5), setQualifier (2.23.42.7.6) -------------------------------------
class SetExtensions(core.SequenceOf):
    """SET message extensions the certificate holder supports."""

    _child_spec = core.ObjectIdentifier


class SetQualifier(core.Sequence):
    """SET's policy qualifier: a digest of the policy text, a terse statement, where to read more.

    Carried as its own non-critical extension 2.23.42.7.6 beside certificatePolicies (D-205).
    """

    _fields = [
        ("policy_digest", DetachedDigest, {"optional": True}),
        ("terse_statement", SETString, {"optional": True}),
        ("policy_url", core.IA5String, {"implicit": 0, "optional": True}),
        ("policy_email", core.IA5String, {"implicit": 1, "optional": True}),
    ]


# --- BrandCRLIdentifier ----------------------------------------------------------------------------
class CRLIdentifier(core.Sequence):
    """One CRL in force: whose, which number, and its thumbprint (SHA-256 of the CRL DER)."""

    _fields = [
        ("issuer", x509.Name),
        ("crl_number", core.Integer),
        ("crl_thumb", core.OctetString),
    ]


class CRLIdentifierSeq(core.SequenceOf):
    _child_spec = CRLIdentifier


class BrandCRLIdentifierTBS(core.Sequence):
    """What the Brand CA signs; ``extensions`` carries its authorityKeyIdentifier (D-207)."""

    _fields = [
        ("version", core.Integer),  # 0
        ("sequence_num", core.Integer),
        ("brand_id", BrandID),
        ("not_before", core.GeneralizedTime),
        ("not_after", core.GeneralizedTime),
        ("crl_identifier_seq", CRLIdentifierSeq),
        ("extensions", x509.Extensions, {"explicit": 0, "optional": True}),
    ]


class BrandCRLIdentifier(core.Sequence):
    """SIGNED{BrandCRLIdentifierTBS}: the X.509 signed-object shape (tbs, algorithm, signature)."""

    _fields = [
        ("tbs", BrandCRLIdentifierTBS),
        ("signature_algorithm", algos.SignedDigestAlgorithm),
        ("signature", core.OctetBitString),
    ]
