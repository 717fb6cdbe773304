"""BrandCRLIdentifier: the Brand CA's signed list of the CRLs in force in its tree (§2.5).

A peer that holds a current BCI knows exactly which CRLs it must have (by issuer, number and
thumbprint), so it can tell a missing CRL from "no revocations" even when working offline.
"""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from asn1crypto import algos
from asn1crypto import x509 as ax509
from cryptography import x509

from setmail.asn1.certext import BrandCRLIdentifier
from setmail.crypto.suite import PSS_SALT_LENGTH, CryptoSuite
from setmail.errors import (BadChain, BadSignature, CryptoError, Expired, MalformedCertificate,
                            NotYetValid, WrongCertificateType, WrongKeyUsage)
from setmail.pki import setext
from setmail.pki.parse import load_bci, load_certificate, to_der
from setmail.pki.signatures import key_usage, subject_key_id
from setmail.pki.thumbs import thumbprint
from setmail.pki.timeutil import utc

BCI_VERSION = 0


def pss_algorithm(suite: CryptoSuite) -> dict:
    """The RSASSA-PSS AlgorithmIdentifier (SHA-256, MGF1-SHA-256, salt 32) as asn1crypto input."""
    return {"algorithm": "rsassa_pss", "parameters": {
        "hash_algorithm": {"algorithm": suite.hash_name},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": suite.hash_name}},
        "salt_length": PSS_SALT_LENGTH, "trailer_field": "trailer_field_bc"}}


def build_bci(*, suite: CryptoSuite, brand_key, brand_cert: x509.Certificate, brand_id: str,
              sequence_num: int, crls, now: datetime, not_after: datetime) -> BrandCRLIdentifier:
    ski = brand_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    tbs = {
        "version": BCI_VERSION, "sequence_num": sequence_num, "brand_id": brand_id,
        "not_before": utc(now), "not_after": utc(not_after),
        "crl_identifier_seq": [{
            "issuer": ax509.Name.load(crl.issuer.public_bytes()),
            "crl_number": crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number,
            "crl_thumb": thumbprint(crl)} for crl in crls],
        "extensions": [{"extn_id": "authority_key_identifier", "critical": False,
                        "extn_value": {"key_identifier": ski}}],
    }
    bci = BrandCRLIdentifier({"tbs": tbs, "signature_algorithm": pss_algorithm(suite),
                              "signature": b""})
    bci["signature"] = suite.sign(brand_key, bci["tbs"].dump())
    return BrandCRLIdentifier.load(bci.dump())


def verify_bci(bci, brand_cert: x509.Certificate, *, now: datetime,
               suite: CryptoSuite) -> BrandCRLIdentifier:
    """Check a BCI's signature under the Brand CA certificate and its validity at ``now``.

    The brand certificate itself must have been validated (validate_path, expected_type="bca").
    Everything but the time check is remembered per (BCI, brand certificate): every response of a
    world carries the same BCI until the brand issues the next one.
    """
    bci_der = bytes(bci) if isinstance(bci, (bytes, bytearray, memoryview)) else to_der(bci)
    brand_der = to_der(load_certificate(brand_cert))
    bci, not_before, not_after = _verified(bci_der, brand_der, suite)
    now = utc(now)
    if now < not_before:
        raise NotYetValid(f"BrandCRLIdentifier valid from {not_before}")
    if now > not_after:
        raise Expired(f"BrandCRLIdentifier expired at {not_after}")
    return bci


def verify_bci_on_path(bci, path, *, now: datetime, suite: CryptoSuite) -> BrandCRLIdentifier:
    """``verify_bci`` under the Brand CA certificate of ``path`` (a ``ValidatedPath`` of the
    message's signer), never under a brand certificate that merely travels with the message: a
    foreign brand's BCI, signed by its own Brand CA, must not pass for ours."""
    brand = [c for c in path.path if "bca" in setext.read_certificate_type(c)]
    if not brand:
        raise BadChain("the signer's certificate path has no Brand CA for its BrandCRLIdentifier")
    return verify_bci(bci, brand[0], now=now, suite=suite)


@lru_cache(maxsize=64)
def _verified(bci_der: bytes, brand_der: bytes, suite: CryptoSuite):
    bci = load_bci(bci_der)
    brand_cert = load_certificate(brand_der)
    if "bca" not in setext.read_certificate_type(brand_cert):
        raise WrongCertificateType("a BrandCRLIdentifier must be signed by a Brand CA")
    ku = key_usage(brand_cert)
    if ku is None or not ku.crl_sign:
        raise WrongKeyUsage("Brand CA certificate does not allow cRLSign")
    try:
        tbs = bci["tbs"]
        if tbs["version"].native != BCI_VERSION:
            raise MalformedCertificate(f"BrandCRLIdentifier version {tbs['version'].native}")
        if bci["signature_algorithm"].dump() != algos.SignedDigestAlgorithm(
                pss_algorithm(suite)).dump():
            raise BadSignature("BrandCRLIdentifier is not signed with RSASSA-PSS SHA-256, salt 32")
        aki = [e["extn_value"].parsed["key_identifier"].native for e in tbs["extensions"]
               if e["extn_id"].native == "authority_key_identifier"] if tbs["extensions"] else []
        not_before, not_after = tbs["not_before"].native, tbs["not_after"].native
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedCertificate(f"BrandCRLIdentifier content: {exc}") from exc
    ski = subject_key_id(brand_cert)
    if aki and ski is not None and aki[0] != ski:
        raise BadChain("BrandCRLIdentifier names another signer than this Brand CA")
    try:
        suite.verify(brand_cert.public_key(), bci["signature"].native, tbs.dump())
    except CryptoError as exc:
        raise BadSignature("BrandCRLIdentifier signature does not verify") from exc
    return bci, not_before, not_after


def listed_crl_thumbs(bci: BrandCRLIdentifier) -> set[bytes]:
    """Thumbprints of every CRL the BCI says is in force."""
    return {c["crl_thumb"].native for c in bci["tbs"]["crl_identifier_seq"]}


def missing_crls(bci: BrandCRLIdentifier, held_crls) -> set[bytes]:
    """Thumbprints the BCI lists that are not among ``held_crls`` (fetch these before trusting)."""
    return listed_crl_thumbs(bci) - {thumbprint(c) for c in held_crls}
