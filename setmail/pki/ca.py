"""A SET certification authority: its keys and certificates, what it issued, its CRL, its BCI.

One object per CA in the tree (Root, Brand, Geo, CCA, MCA, PCA).  Everything is in memory and
takes ``now``: persistence and clocks belong to the layers above (sans-I/O).  Revoking is one call
that re-signs the CA's CRL, and every Brand CA whose tree depends on that CRL re-issues its
BrandCRLIdentifier at once, so BCIs never lag behind CRLs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from setmail.asn1.certext import BrandCRLIdentifier
from setmail.crypto.suite import CryptoSuite, fresh
from setmail.errors import (BadSignature, KeyAlreadyCertified, MissingCertificate,
                            WrongCertificateType)
from setmail.pki import profiles, setext
from setmail.pki.bci import build_bci
from setmail.pki.cardholder import cardholder_common_name, pan_secret
from setmail.pki.profiles import Profile
from setmail.pki.signatures import check_certificate_signature
from setmail.pki.timeutil import utc

#: how long a CRL or BCI stays current; e-mail is slow, so a week rather than hours (D-209)
CRL_PERIOD = timedelta(days=7)


def key_identifier(public_key) -> bytes:
    """RFC 7093 method 1: leftmost 160 bits of SHA-256 over the subjectPublicKey bits (D-206)."""
    bits = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return hashlib.sha256(bits).digest()[:20]


def set_name(common_name: str, *, organization: str | None = None, unit: str | None = None,
             country: str | None = None) -> x509.Name:
    """A SET distinguished name: C, O (brand or SETCo), OU (role), CN."""
    attrs = [(NameOID.COUNTRY_NAME, country), (NameOID.ORGANIZATION_NAME, organization),
             (NameOID.ORGANIZATIONAL_UNIT_NAME, unit), (NameOID.COMMON_NAME, common_name)]
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in attrs if v])


@dataclass(frozen=True)
class CardholderCertificate:
    """What the CCA returns in CertRes: the certificate and NonceCCA (PANSecret stays derivable)."""

    certificate: x509.Certificate
    nonce_cca: bytes
    pan_secret: bytes


class CertificateAuthority:
    """A CA node.  Build with ``create_root`` and ``create_subordinate`` (or ``create_hierarchy``)."""

    def __init__(self, *, suite: CryptoSuite, profile: Profile, key, certificate: x509.Certificate,
                 brand: str | None, parent: CertificateAuthority | None = None,
                 next_root_key=None):
        self.suite = suite
        self.profile = profile
        self.key = key
        self.certificate = certificate
        self.brand = brand
        self.parent = parent
        self.next_root_key = next_root_key  # root only: the key hashedRootKey commits to
        self.key_exchange_key = None
        self.key_exchange_certificate: x509.Certificate | None = None
        self.children: list[CertificateAuthority] = []
        self.issued: dict[int, x509.Certificate] = {}
        self._certified: set[bytes] = set()
        self._revoked: dict[int, tuple[datetime, x509.ReasonFlags]] = {}
        self._crl_number = 0
        self.crl: x509.CertificateRevocationList | None = None
        self.bci: BrandCRLIdentifier | None = None
        self._bci_sequence = 0

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create_root(cls, suite: CryptoSuite, now: datetime, *, name: x509.Name | None = None,
                    key=None, next_root_key=None) -> CertificateAuthority:
        """A self-signed SET Root whose hashedRootKey commits to ``next_root_key``."""
        key = key or suite.generate_key()
        next_root_key = next_root_key or suite.generate_key()
        name = name or set_name("SET Root CA", organization="SETCo", unit="rca")
        root = cls(suite=suite, profile=profiles.ROOT, key=key, certificate=None, brand=None,
                   next_root_key=next_root_key)
        root.certificate = root._sign_certificate(
            profiles.ROOT, name, key.public_key(), utc(now), issuer_name=name,
            extensions=[setext.hashed_root_key(next_root_key.public_key(), suite)])
        root.issue_crl(now)
        return root

    def rollover(self, now: datetime) -> CertificateAuthority:
        """The next Root: the committed key, self-signed, committing in turn to a fresh key."""
        self._require("rca", "only a Root rolls over")
        return CertificateAuthority.create_root(self.suite, now, name=self.certificate.subject,
                                                key=self.next_root_key)

    def create_subordinate(self, profile: Profile, subject: x509.Name | str, now: datetime, *,
                           key=None, key_exchange_key=None,
                           brand: str | None = None) -> CertificateAuthority:
        """Certify a child CA; a CCA/MCA/PCA also gets a key-exchange certificate from us."""
        if not profile.is_ca:
            raise WrongCertificateType(f"{profile.name} is not a CA profile")
        key = key or self.suite.generate_key()
        child = CertificateAuthority(
            suite=self.suite, profile=profile, key=key, brand=brand or self.brand, parent=self,
            certificate=self.issue(profile, subject, key.public_key(), now))
        kex_profile = profiles.CA_KEY_EXCHANGE_PROFILES.get(profile.cert_type)
        if kex_profile is not None:
            child.key_exchange_key = key_exchange_key or self.suite.generate_key()
            child.key_exchange_certificate = self.issue(
                kex_profile, child.certificate.subject, child.key_exchange_key.public_key(), now)
        self.children.append(child)
        child.issue_crl(now)
        return child

    # -- issuing --------------------------------------------------------------------------------
    def issue(self, profile: Profile, subject: x509.Name | str, public_key, now: datetime, *,
              extensions=(), not_after: datetime | None = None) -> x509.Certificate:
        """Certify ``public_key`` under ``profile``; refuses a key this CA already certified."""
        if self.profile.cert_type not in profile.issuers or profile is profiles.ROOT:
            raise WrongCertificateType(
                f"a {self.profile.cert_type} CA may not issue {profile.name} certificates")
        self.suite.check_public_key(public_key)
        if isinstance(subject, str):
            subject = set_name(subject, organization=self.brand, unit=profile.cert_type)
        return self._sign_certificate(profile, subject, public_key, utc(now),
                                      issuer_name=self.certificate.subject,
                                      extensions=extensions, not_after=not_after)

    def issue_cardholder(self, public_key, *, pan: str, expiry: str, card_secret: bytes,
                         now: datetime, nonce_cca: bytes | None = None) -> CardholderCertificate:
        """A cardholder signature certificate naming HMAC(PANSecret, PAN||expiry), never the PAN."""
        self._require("cca", "only a Cardholder CA certifies cardholders")
        nonce_cca = nonce_cca or fresh()
        secret = pan_secret(card_secret, nonce_cca)
        subject = set_name(cardholder_common_name(secret, pan, expiry, self.suite),
                           organization=self.brand, unit="card")
        cert = self.issue(profiles.CARDHOLDER_SIGNATURE, subject, public_key, now)
        return CardholderCertificate(cert, nonce_cca, secret)

    def issue_merchant(self, signature_key, key_exchange_key, merchant: setext.MerchantInfo,
                       now: datetime, *, name: str | None = None
                       ) -> tuple[x509.Certificate, x509.Certificate]:
        """(signature, key-exchange) certificates, both carrying merchantData."""
        self._require("mca", "only a Merchant CA certifies merchants")
        extra = [setext.merchant_data(merchant)]
        subject = name or merchant.names[0].name
        return (self.issue(profiles.MERCHANT_SIGNATURE, subject, signature_key, now,
                           extensions=extra),
                self.issue(profiles.MERCHANT_KEY_EXCHANGE, subject, key_exchange_key, now,
                           extensions=extra))

    def issue_gateway(self, signature_key, key_exchange_key, now: datetime, *, name: str,
                      card_cert_required: bool = False,
                      tunnel_alg_ids=(setext.AES256_GCM,)
                      ) -> tuple[x509.Certificate, x509.Certificate]:
        """(signature, key-exchange) certificates with cardCertRequired and tunneling."""
        self._require("pca", "only a Payment Gateway CA certifies gateways")
        extra = [setext.card_cert_required(card_cert_required),
                 setext.tunneling(tunnel_alg_ids, enabled=bool(tunnel_alg_ids))]
        return (self.issue(profiles.GATEWAY_SIGNATURE, name, signature_key, now, extensions=extra),
                self.issue(profiles.GATEWAY_KEY_EXCHANGE, name, key_exchange_key, now,
                           extensions=extra))

    def _sign_certificate(self, profile, subject, public_key, now, *, issuer_name, extensions=(),
                          not_after=None) -> x509.Certificate:
        spki_hash = self.suite.digest(setext.spki_der(public_key))
        if spki_hash in self._certified:
            raise KeyAlreadyCertified(f"this {self.profile.cert_type} CA already certified "
                                      "this public key")
        end = now + profile.validity
        if not_after is not None:
            end = min(end, utc(not_after))
        if self.certificate is not None:  # a child never outlives its issuer
            end = min(end, self.certificate.not_valid_after_utc)
        issuer_key = self.key.public_key()
        ku = {u: u in profile.key_usage for u in (
            "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign")}
        builder = (x509.CertificateBuilder()
                   .subject_name(subject).issuer_name(issuer_name).public_key(public_key)
                   .serial_number(int.from_bytes(fresh(16), "big") >> 1 or 1)
                   .not_valid_before(now).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(profile.is_ca, profile.path_length), True)
                   .add_extension(x509.KeyUsage(**ku, encipher_only=False, decipher_only=False),
                                  True)
                   .add_extension(x509.SubjectKeyIdentifier(key_identifier(public_key)), False)
                   .add_extension(x509.AuthorityKeyIdentifier(key_identifier(issuer_key), None,
                                                              None), False))
        for ext, critical in [setext.certificate_type(profile.cert_type), setext.set_policy(),
                              setext.set_qualifier(), *extensions]:
            builder = builder.add_extension(ext, critical)
        cert = builder.sign(self.key, self.suite.hash_algorithm,
                            rsa_padding=self.suite.pss_padding)
        self._certified.add(spki_hash)
        self.issued[cert.serial_number] = cert
        return cert

    # -- revocation -----------------------------------------------------------------------------
    def revoke(self, certificate: x509.Certificate | int, now: datetime,
               reason: x509.ReasonFlags = x509.ReasonFlags.unspecified
               ) -> x509.CertificateRevocationList:
        """Put a certificate this CA issued on its CRL; returns the new, signed CRL."""
        serial = certificate if isinstance(certificate, int) else certificate.serial_number
        if serial not in self.issued and not (
                not isinstance(certificate, int) and self._signed_by_us(certificate)):
            raise MissingCertificate(f"this CA issued no certificate with serial {serial:x}")
        self._revoked.setdefault(serial, (utc(now), reason))
        return self.issue_crl(now)

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revoked

    def _signed_by_us(self, certificate: x509.Certificate) -> bool:
        """A certificate this CA issued but no longer has in ``issued`` (a CA rebuilt from its
        files after a restart keeps no issuance index; its signature is the proof)."""
        if certificate.issuer != self.certificate.subject:
            return False
        try:
            check_certificate_signature(certificate, self.certificate, self.suite)
        except BadSignature:
            return False
        return True

    def restore(self, crl: x509.CertificateRevocationList | None,
                bci: BrandCRLIdentifier | None = None) -> None:
        """Take up the revocation state saved with the CA (its last CRL and, for a Brand CA, its
        last BCI): revoked serials, CRL number and BCI sequence continue where they stopped, so
        a revocation survives a restart and numbers never repeat."""
        self.crl = crl
        if crl is not None:
            self._revoked = {r.serial_number: (r.revocation_date_utc, _reason(r)) for r in crl}
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            self._crl_number = max(self._crl_number, number)
        if bci is not None:
            self.bci = bci
            self._bci_sequence = max(self._bci_sequence, int(bci["tbs"]["sequence_num"].native))

    def issue_crl(self, now: datetime) -> x509.CertificateRevocationList:
        """Sign a fresh CRL (next number) and have the Brand CA(s) re-issue their BCI."""
        now = utc(now)
        self._crl_number += 1
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.certificate.subject)
                   .last_update(now).next_update(now + CRL_PERIOD)
                   .add_extension(x509.CRLNumber(self._crl_number), False)
                   .add_extension(x509.AuthorityKeyIdentifier(
                       key_identifier(self.key.public_key()), None, None), False))
        for serial, (when, reason) in sorted(self._revoked.items()):
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if reason != x509.ReasonFlags.unspecified:  # RFC 5280: omit rather than unspecified
                entry = entry.add_extension(x509.CRLReason(reason), False)
            builder = builder.add_revoked_certificate(entry.build())
        self.crl = builder.sign(self.key, self.suite.hash_algorithm,
                                rsa_padding=self.suite.pss_padding)
        for brand in self._dependent_brands():
            brand.issue_bci(now)
        return self.crl

    # -- BrandCRLIdentifier ----------------------------------------------------------------------
    def issue_bci(self, now: datetime) -> BrandCRLIdentifier:
        """Brand CA only: sign a BCI listing the current CRL of every CA on its paths."""
        self._require("bca", "only a Brand CA issues BrandCRLIdentifiers")
        self._bci_sequence += 1
        crls = [ca.crl for ca in (*self.ancestors(), *self.subtree()) if ca.crl is not None]
        self.bci = build_bci(suite=self.suite, brand_key=self.key, brand_cert=self.certificate,
                             brand_id=self.brand, sequence_num=self._bci_sequence, crls=crls,
                             now=now, not_after=utc(now) + CRL_PERIOD)
        return self.bci

    def _dependent_brands(self):
        if self.profile.cert_type == "rca":
            return [c for c in self.children if c.profile.cert_type == "bca"]
        return [ca for ca in (self, *self.ancestors()) if ca.profile.cert_type == "bca"]

    # -- navigation -------------------------------------------------------------------------------
    def ancestors(self):
        ca = self.parent
        while ca is not None:
            yield ca
            ca = ca.parent

    def subtree(self):
        yield self
        for child in self.children:
            yield from child.subtree()

    @property
    def chain(self) -> list[x509.Certificate]:
        """This CA's certificate and those above it, up to and including the Root."""
        return [self.certificate, *(ca.certificate for ca in self.ancestors())]

    def _require(self, cert_type: str, why: str) -> None:
        if self.profile.cert_type != cert_type:
            raise WrongCertificateType(why)


def _reason(entry) -> x509.ReasonFlags:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified
