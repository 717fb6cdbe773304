"""Build and read the SET private extensions on cryptography certificates.

cryptography sees them as ``UnrecognizedExtension`` (raw DER); the bodies are the asn1crypto
classes of ``setmail.asn1.certext``.  Readers turn every decoding fault into MalformedCertificate.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from setmail.asn1 import certext, oids
from setmail.asn1.base import decode
from setmail.errors import MalformedCertificate, MalformedMessage

#: AES-256-GCM (RFC 5084), the one cipher our gateways tunnel with (D-1)
AES256_GCM = "2.16.840.1.101.3.4.1.46"

#: SET marks these critical; we keep that (D-200), so OpenSSL needs -ignore_critical
CRITICAL = frozenset({oids.CERTIFICATE_TYPE, oids.HASHED_ROOT_KEY})

DEFAULT_TERSE_STATEMENT = "SET 1.0 certificate, setmail modern algorithm profile"


@dataclass(frozen=True)
class MerName:
    language: str
    name: str
    city: str
    country_name: str
    state_province: str | None = None
    postal_code: str | None = None


@dataclass(frozen=True)
class MerchantInfo:
    """The merchantData extension: merID, the acquirer's 8-digit BIN, names, ISO 3166 country."""

    mer_id: str
    acquirer_bin: str
    names: tuple[MerName, ...]
    country: int
    auth_flag: bool = True


def spki_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _ext(oid: str, value) -> tuple[x509.ExtensionType, bool]:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value.dump()), oid in CRITICAL


# --- builders: each returns (extension, critical) for CertificateBuilder.add_extension ----------
def certificate_type(*bits: str):
    return _ext(oids.CERTIFICATE_TYPE, certext.CertificateType(set(bits)))


def hashed_root_key(next_root_public_key, suite):
    digest = suite.digest(spki_der(next_root_public_key))
    return _ext(oids.HASHED_ROOT_KEY, certext.HashedRootKey({"root_key_thumbprint": {
        "version": "v0",
        "digest_algorithm": {"algorithm": suite.hash_name},
        "encap_content_info": {"content_type": oids.ROOT_KEY_THUMB},
        "digest": digest,
    }}))


def merchant_data(info: MerchantInfo):
    if not (len(info.acquirer_bin) == 8 and info.acquirer_bin.isdigit()):
        raise MalformedMessage(f"merAcquirerBIN must be 8 digits (D-2), got {info.acquirer_bin!r}")
    if not 1 <= info.country <= 999 or not info.names or not 1 <= len(info.mer_id) <= 30:
        raise MalformedMessage("merchantData needs merID 1..30, country 1..999, at least one name")
    names = [{k: v for k, v in {
        "language": n.language, "name": n.name, "city": n.city,
        "state_province": n.state_province, "postal_code": n.postal_code,
        "country_name": n.country_name}.items() if v is not None} for n in info.names]
    return _ext(oids.MERCHANT_DATA, certext.MerchantData({
        "mer_id": info.mer_id, "mer_acquirer_bin": info.acquirer_bin, "mer_name_seq": names,
        "mer_country": info.country, "mer_auth_flag": info.auth_flag}))


def card_cert_required(required: bool):
    return _ext(oids.CARD_CERT_REQUIRED, certext.CardCertRequired(required))


def tunneling(alg_ids=(AES256_GCM,), enabled: bool = True):
    return _ext(oids.TUNNELING, certext.Tunneling({"tunneling": enabled,
                                                   "tunnel_alg_ids": list(alg_ids)}))


def set_extensions(ext_oids):
    return _ext(oids.SET_EXTENSIONS, certext.SetExtensions(list(ext_oids)))


def set_qualifier(terse_statement: str = DEFAULT_TERSE_STATEMENT, policy_url: str | None = None):
    body = {"terse_statement": terse_statement}
    if policy_url:
        body["policy_url"] = policy_url
    return _ext(oids.SET_QUALIFIER, certext.SetQualifier(body))


def set_policy():
    """certificatePolicies naming set-policy-root; its qualifier travels in 2.23.42.7.6 (D-205)."""
    return x509.CertificatePolicies([
        x509.PolicyInformation(x509.ObjectIdentifier(oids.POLICY_ROOT), None)]), False


# --- readers -------------------------------------------------------------------------------------
# The public readers return immutable values and are cached per certificate (certificates are
# immutable and hashable): every signed message asks for its signer's certificateType and
# merchantData again, and decoding them each time was ~5 % of the wallet's CPU.  Failures are
# not cached; they raise again on every call.
_cached = lru_cache(maxsize=1024)


def raw_extension(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise MalformedCertificate(f"certificate extensions do not parse: {exc}") from exc
    return ext.value.value


def _read(cert, oid, cls, what):
    raw = raw_extension(cert, oid)
    if raw is None:
        return None
    try:
        return decode(cls, raw, what=what)
    except MalformedMessage as exc:
        raise MalformedCertificate(str(exc)) from exc


@_cached
def read_certificate_type(cert: x509.Certificate) -> frozenset[str]:
    """The certificateType bits set; empty when the extension is absent (not a SET cert)."""
    value = _read(cert, oids.CERTIFICATE_TYPE, certext.CertificateType, "certificateType")
    return frozenset() if value is None else frozenset(b for b in value.native
                                                       if isinstance(b, str))


@_cached
def read_hashed_root_key(cert: x509.Certificate) -> bytes | None:
    """The committed next-root key digest, after checking the DigestedData's shape."""
    value = _read(cert, oids.HASHED_ROOT_KEY, certext.HashedRootKey, "hashedRootKey")
    if value is None:
        return None
    dd = value["root_key_thumbprint"]
    if (dd["encap_content_info"]["content_type"].dotted != oids.ROOT_KEY_THUMB
            or dd["digest_algorithm"]["algorithm"].native != "sha256"):
        raise MalformedCertificate("hashedRootKey is not a SHA-256 set-rootKeyThumb digest")
    return dd["digest"].native


@_cached
def read_merchant_data(cert: x509.Certificate) -> MerchantInfo | None:
    value = _read(cert, oids.MERCHANT_DATA, certext.MerchantData, "merchantData")
    if value is None:
        return None
    v = value.native
    names = tuple(MerName(n["language"], n["name"], n["city"], n["country_name"],
                          n.get("state_province"), n.get("postal_code"))
                  for n in v["mer_name_seq"])
    return MerchantInfo(v["mer_id"], v["mer_acquirer_bin"], names, v["mer_country"],
                        v["mer_auth_flag"])


@_cached
def read_card_cert_required(cert: x509.Certificate) -> bool | None:
    value = _read(cert, oids.CARD_CERT_REQUIRED, certext.CardCertRequired, "cardCertRequired")
    return None if value is None else value.native


@_cached
def read_tunneling(cert: x509.Certificate) -> tuple[str, ...] | None:
    """The tunnel cipher OIDs when tunneling is enabled, () when disabled, None when absent."""
    value = _read(cert, oids.TUNNELING, certext.Tunneling, "tunneling")
    if value is None:
        return None
    return tuple(value["tunnel_alg_ids"].native) if value["tunneling"].native else ()
