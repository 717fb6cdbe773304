"""The crypto suite: which modern primitive stands in for each SET 1.0 primitive.

SET 1.0 used SHA-1, RSA PKCS#1 v1.5 signatures, DES-CBC and a 1997 OAEP framing.  A suite keeps
SET's structure and swaps the primitives (set-protocol.md §11):

=============  ===========================  ======================================
SET 1.0        suite "rsa2048" (default)     note
=============  ===========================  ======================================
SHA-1          SHA-256                      H, DD, thumbprints, TransStain
HMAC-SHA1      HMAC-SHA256                  hashed PAN in cardholder certificates
RSA v1.5 sig   RSASSA-PSS, SHA-256, salt 32  S, SO, dual signature, certificates, CRLs
OAEP (1997)    RSAES-OAEP SHA-256/MGF1-256   key transport, with SET's extra data (EX)
DES-CBC        AES-256-GCM                  CMS AuthEnvelopedData (RFC 5083/5084)
1024-bit RSA   2048-bit (3072 selectable)   "rsa3072" suite
=============  ===========================  ======================================

Everything here is a thin, safe recipe over pyca/cryptography hazmat; failures become setmail
exceptions (never cryptography's ``InvalidSignature``/``InvalidTag``/``ValueError``).
"""
from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from dataclasses import dataclass
from functools import cached_property

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from setmail.errors import BadKey, DecryptionFailed, SignatureInvalid

#: bytes of every fresh nonce, challenge, secret, RRPID and XID
NONCE_SIZE = 32
#: AES-256 content-encryption key size
CEK_SIZE = 32
#: AES-GCM nonce size (RFC 5084 recommends 12)
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
PSS_SALT_LENGTH = 32


#: concrete classes already found to be RSA public keys (an ABC registration is never undone)
_RSA_PUBLIC_TYPES: set[type] = set()


def fresh(n: int = NONCE_SIZE) -> bytes:
    """n random octets from the OS CSPRNG (nonces, challenges, keys, RRPIDs, XIDs)."""
    return os.urandom(n)


@dataclass(frozen=True)
class CryptoSuite:
    """One consistent set of algorithms; immutable and shared by every party of a world."""

    name: str
    rsa_bits: int

    # -- hashing -------------------------------------------------------------------------------
    hash_name = "sha256"
    digest_size = 32

    @cached_property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA256()

    def digest(self, data: bytes) -> bytes:
        """H(t) over bytes (callers pass DER)."""
        return hashlib.sha256(data).digest()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return _hmac.new(key, data, hashlib.sha256).digest()

    # -- keys ----------------------------------------------------------------------------------
    def generate_key(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=self.rsa_bits)

    def check_public_key(self, public_key) -> rsa.RSAPublicKey:
        """Refuse keys this suite does not use (non-RSA, or shorter than the suite's size)."""
        if type(public_key) not in _RSA_PUBLIC_TYPES:  # isinstance on the ABC costs ~1 us
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise BadKey(f"suite {self.name} needs an RSA key, got {type(public_key).__name__}")
            _RSA_PUBLIC_TYPES.add(type(public_key))
        if public_key.key_size < 2048:
            raise BadKey(f"RSA key of {public_key.key_size} bits is below the 2048-bit minimum")
        return public_key

    # -- signatures (RSASSA-PSS) ---------------------------------------------------------------
    @cached_property
    def pss_padding(self) -> padding.PSS:
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)

    def sign(self, key: rsa.RSAPrivateKey, data: bytes) -> bytes:
        return key.sign(data, self.pss_padding, self.hash_algorithm)

    def verify(self, public_key, signature: bytes, data: bytes) -> None:
        """Raise SignatureInvalid unless ``signature`` is a valid PSS signature of ``data``."""
        key = self.check_public_key(public_key)
        try:
            key.verify(signature, data, self.pss_padding, self.hash_algorithm)
        except (InvalidSignature, ValueError) as exc:
            raise SignatureInvalid("RSASSA-PSS signature does not verify") from exc

    # -- key transport (RSAES-OAEP) -------------------------------------------------------------
    @cached_property
    def oaep_padding(self) -> padding.OAEP:
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

    def oaep_capacity(self, public_key) -> int:
        """Largest plaintext one OAEP block carries for this key (190 B at 2048, 318 B at 3072)."""
        return public_key.key_size // 8 - 2 * self.digest_size - 2

    def oaep_encrypt(self, public_key, plaintext: bytes) -> bytes:
        key = self.check_public_key(public_key)
        if len(plaintext) > self.oaep_capacity(key):
            raise BadKey(f"{len(plaintext)} bytes do not fit the OAEP block of a "
                         f"{key.key_size}-bit key (max {self.oaep_capacity(key)})")
        return key.encrypt(plaintext, self.oaep_padding)

    def oaep_decrypt(self, key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
        try:
            return key.decrypt(ciphertext, self.oaep_padding)
        except ValueError as exc:
            raise DecryptionFailed("OAEP block does not decrypt with this key") from exc

    # -- content encryption (AES-256-GCM) -------------------------------------------------------
    def aead_encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes | None = None
                     ) -> tuple[bytes, bytes]:
        """Return (ciphertext, tag) separately, as CMS AuthEnvelopedData stores them."""
        out = AESGCM(key).encrypt(nonce, plaintext, aad)
        return out[:-GCM_TAG_SIZE], out[-GCM_TAG_SIZE:]

    def aead_decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, tag: bytes,
                     aad: bytes | None = None) -> bytes:
        if len(key) != CEK_SIZE or len(tag) != GCM_TAG_SIZE or not 1 <= len(nonce) <= 64:
            raise DecryptionFailed("content-encryption key, nonce or tag has the wrong size")
        try:
            return AESGCM(key).decrypt(nonce, ciphertext + tag, aad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed("AES-GCM authentication failed: wrong key or tampered data") from exc


SUITES: dict[str, CryptoSuite] = {
    "rsa2048": CryptoSuite("rsa2048", 2048),
    "rsa3072": CryptoSuite("rsa3072", 3072),
}
DEFAULT_SUITE = SUITES["rsa2048"]


def get_suite(name: str) -> CryptoSuite:
    try:
        return SUITES[name]
    except KeyError:
        raise BadKey(f"unknown crypto suite {name!r}; choose one of {', '.join(SUITES)}") from None
