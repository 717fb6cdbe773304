"""Checking CA signatures on certificates and CRLs, and CRL-issuer linkage.

Only RSASSA-PSS with SHA-256 (the suite's padding, salt 32) is accepted: a certificate signed any
other way was not made by a setmail CA, and accepting weaker schemes would reopen downgrades.
"""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import SignatureAlgorithmOID

from setmail.crypto.suite import CryptoSuite
from setmail.errors import BadChain, BadSignature, CryptoError, WrongKeyUsage


def _extension(obj, cls):
    try:
        return obj.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    ski = _extension(cert, x509.SubjectKeyIdentifier)
    return None if ski is None else ski.digest


def authority_key_id(obj) -> bytes | None:
    """The keyIdentifier of a certificate's or CRL's authorityKeyIdentifier, if any."""
    aki = _extension(obj, x509.AuthorityKeyIdentifier)
    return None if aki is None else aki.key_identifier


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    return _extension(cert, x509.KeyUsage)


def basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    return _extension(cert, x509.BasicConstraints)


def _verify(obj, public_key, suite: CryptoSuite, what: str) -> None:
    try:
        hash_algorithm = obj.signature_hash_algorithm
    except Exception as exc:  # UnsupportedAlgorithm, ValueError for odd parameters
        raise BadSignature(f"{what} has an unsupported signature algorithm") from exc
    if (obj.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS
            or not isinstance(hash_algorithm, hashes.SHA256)):
        raise BadSignature(f"{what} is not signed with RSASSA-PSS SHA-256")
    tbs = (obj.tbs_certificate_bytes if isinstance(obj, x509.Certificate)
           else obj.tbs_certlist_bytes)
    try:
        suite.verify(public_key, obj.signature, tbs)
    except CryptoError as exc:  # SignatureInvalid, or BadKey for an unusable issuer key
        raise BadSignature(f"{what} signature does not verify: {exc}") from exc


def check_certificate_signature(cert: x509.Certificate, issuer: x509.Certificate,
                                suite: CryptoSuite) -> None:
    _verify(cert, issuer.public_key(), suite, f"certificate {cert.subject.rfc4514_string()}")


def key_ids_match(obj, issuer: x509.Certificate) -> bool:
    """False only when both key identifiers are present and differ."""
    aki, ski = authority_key_id(obj), subject_key_id(issuer)
    return aki is None or ski is None or aki == ski


def check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate,
              suite: CryptoSuite) -> None:
    """Refuse a CRL that ``issuer`` did not sign (BadChain for wrong names/key ids)."""
    if crl.issuer != issuer.subject or not key_ids_match(crl, issuer):
        raise BadChain(f"CRL from {crl.issuer.rfc4514_string()} was not issued by "
                       f"{issuer.subject.rfc4514_string()}")
    ku = key_usage(issuer)
    if ku is None or not ku.crl_sign:
        raise WrongKeyUsage(f"{issuer.subject.rfc4514_string()} may not sign CRLs")
    _verify(crl, issuer.public_key(), suite, f"CRL of {crl.issuer.rfc4514_string()}")
