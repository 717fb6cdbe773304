"""The unique cardholder identifier that stands in for the PAN in cardholder certificates.

SET never puts the PAN in a certificate (set-protocol.md §2.4).  It certifies a keyed hash of the
account under PANSecret = CardSecret XOR NonceCCA, a secret shared by cardholder, CCA and (through
PANData in the PI) the gateway only; without it the small PAN space cannot be searched.  Here the
hash is HMAC-SHA256(PANSecret, PAN || expiry) (D-208), carried as lowercase hex in the subject CN.
"""
from __future__ import annotations

import hmac as _hmac

from cryptography import x509
from cryptography.x509.oid import NameOID

from setmail.crypto.suite import DEFAULT_SUITE, NONCE_SIZE, CryptoSuite
from setmail.errors import BadKey, CardholderMismatch, MalformedMessage


def pan_secret(card_secret: bytes, nonce_cca: bytes) -> bytes:
    """PANSecret = CardSecret XOR NonceCCA, 32 octets each (D-2)."""
    if len(card_secret) != NONCE_SIZE or len(nonce_cca) != NONCE_SIZE:
        raise BadKey(f"CardSecret and NonceCCA must be {NONCE_SIZE} octets each")
    return bytes(a ^ b for a, b in zip(card_secret, nonce_cca))


def _check_account(pan: str, expiry: str) -> bytes:
    if not (isinstance(pan, str) and pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
        raise MalformedMessage("PAN must be 12..19 decimal digits")
    if not (isinstance(expiry, str) and len(expiry) == 6 and expiry.isascii() and expiry.isdigit()
            and 1 <= int(expiry[4:]) <= 12):
        raise MalformedMessage("card expiry must be YYYYMM")
    # expiry has a fixed length, so PAN || expiry is unambiguous without a separator
    return (pan + expiry).encode("ascii")


def cardholder_id(pan_secret: bytes, pan: str, expiry: str,
                  suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """HMAC-SHA256(PANSecret, PAN || expiry); refuses an all-zero PANSecret (no-certificate form)."""
    if len(pan_secret) != NONCE_SIZE or not any(pan_secret):
        raise BadKey("PANSecret must be 32 octets and not all zero to certify a cardholder")
    return suite.hmac(pan_secret, _check_account(pan, expiry))


def cardholder_common_name(pan_secret: bytes, pan: str, expiry: str,
                           suite: CryptoSuite = DEFAULT_SUITE) -> str:
    """What the CCA writes into the certificate subject CN."""
    return cardholder_id(pan_secret, pan, expiry, suite).hex()


def certified_cardholder_id(cert: x509.Certificate) -> str:
    """The identifier a cardholder certificate carries (its subject CN)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise CardholderMismatch("cardholder certificate has no single subject CN")
    return str(cns[0].value)


def verify_cardholder_id(cert: x509.Certificate, pan_secret: bytes, pan: str, expiry: str,
                         suite: CryptoSuite = DEFAULT_SUITE) -> None:
    """The gateway's check that the certificate that signed a PI belongs to the card in PANData."""
    expected = cardholder_common_name(pan_secret, pan, expiry, suite)
    if not _hmac.compare_digest(expected.encode(), certified_cardholder_id(cert).encode()):
        raise CardholderMismatch("cardholder certificate was not issued for this account")
