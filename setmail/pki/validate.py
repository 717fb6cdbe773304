"""validate_path: the one certificate check every SET role runs for every signed message.

Why one function: each party (cardholder, merchant, gateway, CA) must refuse the same things in
the same order, and the error it raises maps to one SET ErrorCode.  Chains may arrive in any
order and with extra certificates (SET messages carry whatever the sender thought the receiver
lacked), so the path is *built* from issuer names and key identifiers, then checked:

1. path building: MissingCertificate, BadChain (key-id mismatch, loop), ChainTooLong, BadSignature
2. the top: pinned root, or a rollover root via hashedRootKey: UntrustedRoot
3. validity periods at ``now``: Expired, NotYetValid
4. CA constraints (CA flag, keyCertSign, pathLenConstraint): WrongKeyUsage, ChainTooLong
5. SET hierarchy order by certificateType: BadChain; the leaf's type: WrongCertificateType
6. the leaf's keyUsage: WrongKeyUsage
7. CRLs (if given), issuer-checked: BadChain, BadSignature, Revoked
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from setmail.asn1.certext import CERT_TYPE_BITS
from setmail.errors import (BadChain, BadSignature, ChainTooLong, Expired, MissingCertificate, NotYetValid,
                            Revoked, WrongCertificateType, WrongKeyUsage)
from setmail.pki import setext
from setmail.pki.parse import load_certificate, load_crl
from setmail.pki.profiles import KEY_USAGES, MAX_PATH_LENGTH, SUBORDINATE_TYPES
from setmail.pki.signatures import (basic_constraints, check_certificate_signature, check_crl,
                                    key_ids_match, key_usage)
from setmail.pki.thumbs import thumbprint
from setmail.pki.timeutil import utc
from setmail.pki.trust import TrustStore


@dataclass(frozen=True)
class ValidatedPath:
    """A path that passed every check at some ``now``: leaf first, root last."""

    path: tuple[x509.Certificate, ...]
    certificate_types: frozenset[str]
    valid_until: datetime
    thumbprints: tuple[bytes, ...] = field(repr=False)

    @property
    def leaf(self) -> x509.Certificate:
        return self.path[0]

    @property
    def root(self) -> x509.Certificate:
        return self.path[-1]

    @property
    def public_key(self):
        return self.leaf.public_key()

    @property
    def merchant_data(self) -> setext.MerchantInfo | None:
        return setext.read_merchant_data(self.leaf)


def _names(value: str | Iterable[str], allowed: Iterable[str], what: str) -> frozenset[str]:
    names = frozenset([value] if isinstance(value, str) else value)
    unknown = names - frozenset(allowed)
    if not names or unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown) or 'none given'}")
    return names


def validate_path(leaf, chain: Iterable, trust: TrustStore, *, now: datetime,
                  expected_type: str | Iterable[str], key_usage: str | Iterable[str],
                  crls: Iterable | None = None) -> ValidatedPath:
    """Validate ``leaf`` (certificate or bytes) up to a trusted root; see the module docstring.

    ``expected_type``: certificateType bit(s) the role needs, e.g. "card", "mer", "pgwy", "cca".
    ``key_usage``: "digital_signature" to check a signature, "key_encipherment" to encrypt to it.
    ``crls``: CRLs to apply (None: no revocation check); irrelevant ones are ignored.
    """
    expected = _names(expected_type, CERT_TYPE_BITS, "certificate type")
    usages = _names(key_usage, KEY_USAGES, "key usage")
    now = utc(now)
    leaf = load_certificate(leaf)
    chain = [load_certificate(c) for c in chain]
    crl_list = [load_crl(c) for c in crls or ()]
    key = (thumbprint(leaf), frozenset(map(thumbprint, chain)),
           None if crls is None else frozenset(map(thumbprint, crl_list)), expected, usages)
    cached = trust.cache.get(key, now)
    if cached is not None:
        return cached

    path = _build_path(leaf, chain, trust)
    trust.accept_root(path[-1])
    _check_validity(path, now)
    _check_ca_constraints(path)
    types = _check_types(path, expected)
    _check_key_usage(leaf, usages)
    valid_until = min(c.not_valid_after_utc for c in path)
    if crls is not None:
        valid_until = min(valid_until, _check_revocation(path, crl_list, now, trust))
    result = ValidatedPath(tuple(path), types, valid_until, tuple(map(thumbprint, path)))
    trust.cache.put(key, result, max(c.not_valid_before_utc for c in path), valid_until)
    return result


def _build_path(leaf, chain, trust: TrustStore) -> list[x509.Certificate]:
    pool = {thumbprint(c): c for c in (*chain, *trust.roots)}
    path, seen = [leaf], {thumbprint(leaf)}
    current = leaf
    while current.subject != current.issuer:
        if len(path) >= MAX_PATH_LENGTH:
            raise ChainTooLong(f"path exceeds {MAX_PATH_LENGTH} certificates "
                               "(root, brand, geo, CA, end entity)")
        named = [c for c in pool.values() if c.subject == current.issuer]
        if not named:
            raise MissingCertificate(f"no certificate for issuer {current.issuer.rfc4514_string()}")
        keyed = [c for c in named if key_ids_match(current, c)]
        if not keyed:
            raise BadChain(f"{current.issuer.rfc4514_string()} is present but with another key "
                           "than the one that signed " + current.subject.rfc4514_string())
        issuer = _first_that_signed(current, keyed, trust)
        if thumbprint(issuer) in seen:
            raise BadChain("certificate chain loops")
        seen.add(thumbprint(issuer))
        path.append(issuer)
        current = issuer
    return path


def _first_that_signed(cert, candidates, trust):
    error = None
    for candidate in candidates:
        try:
            check_certificate_signature(cert, candidate, trust.suite)
            return candidate
        except BadSignature as exc:  # keep trying the other same-named candidates
            error = exc
    raise error


def _check_validity(path, now: datetime) -> None:
    for cert in path:
        if now < cert.not_valid_before_utc:
            raise NotYetValid(f"{cert.subject.rfc4514_string()} is valid from "
                              f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}")
        if now > cert.not_valid_after_utc:
            raise Expired(f"{cert.subject.rfc4514_string()} expired at "
                          f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}")


def _check_ca_constraints(path) -> None:
    for depth, issuer in enumerate(path[1:], start=1):
        bc, ku = basic_constraints(issuer), key_usage(issuer)
        name = issuer.subject.rfc4514_string()
        if bc is None or not bc.ca or ku is None or not ku.key_cert_sign:
            raise WrongKeyUsage(f"{name} is not a CA certificate allowed to sign certificates")
        if bc.path_length is not None and depth - 1 > bc.path_length:
            raise ChainTooLong(f"{name} allows {bc.path_length} CA certificate(s) below it, "
                               f"the path has {depth - 1}")


def _ca_type(types: frozenset[str], cert) -> str:
    ca_bits = types & SUBORDINATE_TYPES.keys()
    if len(ca_bits) != 1:
        raise BadChain(f"{cert.subject.rfc4514_string()} is not exactly one SET CA type")
    return next(iter(ca_bits))


def _check_types(path, expected: frozenset[str]) -> frozenset[str]:
    types = [setext.read_certificate_type(c) for c in path]
    for cert, t in zip(path, types):
        if not t:
            raise WrongCertificateType(f"{cert.subject.rfc4514_string()} has no SET "
                                       "certificateType")
    if _ca_type(types[-1], path[-1]) != "rca":
        raise BadChain("the path does not end in a SET Root (rca)")
    for i in range(len(path) - 1):
        allowed = SUBORDINATE_TYPES[_ca_type(types[i + 1], path[i + 1])]
        if not types[i] <= allowed:
            raise BadChain(f"hierarchy out of order: {sorted(types[i + 1])} may not certify "
                           f"{sorted(types[i])}")
    if not types[0] & expected:
        raise WrongCertificateType(f"certificate of type {sorted(types[0])} presented where "
                                   f"{sorted(expected)} is required")
    return types[0]


def _check_key_usage(leaf, usages: frozenset[str]) -> None:
    ku = key_usage(leaf)
    missing = [u for u in sorted(usages) if ku is None or not getattr(ku, u)]
    if missing:
        raise WrongKeyUsage(f"keyUsage of {leaf.subject.rfc4514_string()} does not allow "
                            f"{', '.join(missing)}")


def _check_revocation(path, crls, now: datetime, trust: TrustStore) -> datetime:
    """Raise Revoked for a certificate revoked by ``now``; return the next future revocation."""
    until = max(c.not_valid_after_utc for c in path)
    for cert, issuer in zip(path, path[1:]):
        for crl in crls:
            if crl.issuer != issuer.subject:
                continue  # another CA's CRL: irrelevant to this link
            check_crl(crl, issuer, trust.suite)
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is None:
                continue
            if entry.revocation_date_utc <= now:
                raise Revoked(f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) "
                              f"revoked at {entry.revocation_date_utc:%Y-%m-%d %H:%M:%SZ}")
            until = min(until, entry.revocation_date_utc)
    return until
