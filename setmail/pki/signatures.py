"""Checking CA signatures on certificates and CRLs, and CRL-issuer linkage.

Only RSASSA-PSS with SHA-256 (the suite's padding, salt 32) is accepted: a certificate signed any
other way was not made by a setmail CA, and accepting weaker schemes would reopen downgrades.
The outer signatureAlgorithm and the signature BIT STRING's unused-bits octet are not covered by
the CA's signature, so they are compared byte for byte: the outer algorithm must equal the signed
(TBS) one and be exactly the suite's, and the BIT STRING must have no unused bits (D-126).
"""
from __future__ import annotations

from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from setmail.crypto import der
from setmail.crypto.cms import ALG_PSS, OID_MGF1, OID_RSASSA_PSS, OID_SHA256
from setmail.crypto.reader import Reader
from setmail.crypto.suite import CryptoSuite
from setmail.errors import BadChain, BadSignature, CryptoError, MalformedMessage, WrongKeyUsage

_SHA256_NULL = der.seq(der.oid(OID_SHA256), b"\x05\x00")
#: the suite's RSASSA-PSS AlgorithmIdentifier (SHA-256, MGF1-SHA-256, salt 32, trailer 1), with the
#: hash parameters absent (RFC 4055, as the CMS layer writes it) or NULL (as cryptography and
#: OpenSSL write it in certificates and CRLs)
PSS_ALGORITHMS = frozenset({ALG_PSS, der.seq(
    der.oid(OID_RSASSA_PSS), der.seq(der.explicit(0, _SHA256_NULL),
                                     der.explicit(1, der.seq(der.oid(OID_MGF1), _SHA256_NULL)),
                                     der.explicit(2, der.integer(32))))})


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


def _fields(signed: bytes, is_cert: bool) -> tuple[bytes, bytes, bytes, bytes]:
    """(TBS, its signature field, outer signatureAlgorithm, BIT STRING content) of the DER."""
    top = Reader(signed, "certificate" if is_cert else "CRL")
    outer = top.enter(0x30)
    top.done()
    tbs = outer.raw(0x30)
    fields = Reader(tbs, top.what).enter(0x30)
    if fields.peek() == (0xA0 if is_cert else 0x02):  # version (OPTIONAL in a CRL)
        fields.any()
    if is_cert:
        fields.raw(0x02)  # serialNumber
    inner, outer_alg, bits = fields.raw(0x30), outer.raw(0x30), outer.value(0x03)
    outer.done()
    return tbs, inner, outer_alg, bits


@lru_cache(maxsize=2048)
def _certificate_fields(cert: x509.Certificate) -> tuple[bytes, bytes, bytes, bytes]:
    """Cached: the same CA certificates are checked again whenever a new path goes through them."""
    return _fields(cert.public_bytes(Encoding.DER), True)


def _signed_parts(obj, what: str) -> tuple[bytes, bytes]:
    """(TBS, signature) of a certificate or CRL whose algorithm fields are exactly the suite's."""
    try:
        tbs, inner, outer_alg, bits = (_certificate_fields(obj) if isinstance(obj, x509.Certificate)
                                       else _fields(obj.public_bytes(Encoding.DER), False))
    except MalformedMessage as exc:  # cryptography parsed it, so this is not expected
        raise BadSignature(f"{what} signature fields do not parse: {exc}") from exc
    if outer_alg != inner:
        raise BadSignature(f"{what}: outer signatureAlgorithm differs from the signed one")
    if outer_alg not in PSS_ALGORITHMS:
        raise BadSignature(f"{what} is not signed with the suite's RSASSA-PSS (SHA-256, "
                           "MGF1-SHA-256, salt 32)")
    if bits[:1] != b"\x00":
        raise BadSignature(f"{what} signature BIT STRING has unused bits")
    return tbs, bits[1:]


def _verify(obj, public_key, suite: CryptoSuite, what: str) -> None:
    tbs, signature = _signed_parts(obj, what)
    try:
        suite.verify(public_key, signature, tbs)
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
