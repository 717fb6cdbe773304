"""FROZEN copy of setmail/crypto/dual.py at 6a2db0d, before the CMS fast paths: the oracle of
tests/test_crypto_identity.py (same bytes out, same verdicts).  Do not edit or import outside tests.

The dual signature (set-protocol.md §3.3): one cardholder signature over order and payment.

The merchant must see the order information (OIData) but never the card (PANData); the gateway
must see the card but never the order.  Both must be able to check one signature.  So the
cardholder signs PI-TBS = { DD(PIData), DD(OIData) }: each verifier holds one half in clear and
only the digest of the other.

    PIData          = { PIHead, PANData }
    PI-TBS          = { DD(PIData), DD(OIData) }              signed: SO(C, PI-TBS)
    PI-OILink       = L(PIHead, OIData)
    PIDualSigned    = { SO(C, PI-TBS), EX(P, PI-OILink, PANData) }   -> merchant forwards unchanged
    OIDualSigned    = L(OIData, PIData)                               -> merchant reads

Unsigned purchases (no cardholder certificate) use EXH(P, PI-OILink, PANToken) instead; they carry
no cardholder authentication at all.
"""
from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from tests.crypto_reference import der
from tests.crypto_reference.cms import Identity, Signed
from tests.crypto_reference.operators import DD, EX, EXH, SO, open_EX, open_EXH, verify_SO
from tests.crypto_reference.reader import split_pair
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import DigestMismatch


@dataclass(frozen=True)
class DualSigned:
    """The cardholder's output: PIDualSigned (for the gateway) and OIDualSigned (for the merchant)."""

    pi_dual_signed: bytes
    oi_dual_signed: bytes

    @property
    def p_req_dual_signed(self) -> bytes:
        return der.seq(self.pi_dual_signed, self.oi_dual_signed)


@dataclass(frozen=True)
class MerchantView:
    """All the merchant can learn: the order, the digest of the payment, who signed."""

    oi_data: bytes
    h_pi_data: bytes
    signed: Signed


@dataclass(frozen=True)
class GatewayView:
    """All the gateway can learn: the PIHead, the card data, the digest of the order, who signed."""

    pi_head: bytes
    pan_data: bytes
    h_oi_data: bytes
    signed: Signed | None


def pi_tbs(h_pi_data: bytes, h_oi_data: bytes) -> bytes:
    return der.seq(h_pi_data, h_oi_data)


def dual_sign(cardholder: Identity, gateway: x509.Certificate, pi_head: bytes, oi_data: bytes,
              pan_data: bytes, *, certs=None, suite: CryptoSuite = DEFAULT_SUITE) -> DualSigned:
    """Build PIDualSigned and OIDualSigned (cardholder side of PReq)."""
    h_pi = DD("PIData", der.seq(pi_head, pan_data), suite)
    h_oi = DD("OIData", oi_data, suite)
    signature = SO(cardholder, "PI-TBS", pi_tbs(h_pi, h_oi), certs=certs, suite=suite)
    ex_pi_data = EX(gateway, "PIDualSignedTBE", der.seq(pi_head, h_oi), "PANData", pan_data, suite=suite)
    return DualSigned(der.seq(signature, ex_pi_data), der.seq(oi_data, h_pi))


def split_pi_dual_signed(pi_dual_signed: bytes) -> tuple[bytes, bytes]:
    """(piSignature, exPIData) of a PIDualSigned."""
    return split_pair(pi_dual_signed, "PIDualSigned")


def merchant_verify(pi_dual_signed: bytes, oi_dual_signed: bytes, *, certs=(), validate=None,
                    suite: CryptoSuite = DEFAULT_SUITE) -> MerchantView:
    """Verify the dual signature from the order side; the PAN stays sealed for the gateway."""
    signature, _ = split_pi_dual_signed(pi_dual_signed)
    oi_data, h_pi = split_pair(oi_dual_signed, "OIDualSigned")
    tbs = pi_tbs(h_pi, DD("OIData", oi_data, suite))
    signed = verify_SO(signature, "PI-TBS", tbs, certs=certs, validate=validate, suite=suite)
    return MerchantView(oi_data, h_pi, signed)


def gateway_verify(pi_dual_signed: bytes, gateway: Identity, *, h_oi_data: bytes | None = None,
                   certs=(), validate=None, suite: CryptoSuite = DEFAULT_SUITE) -> GatewayView:
    """Open the PI and verify the dual signature from the payment side.

    ``h_oi_data`` is the merchant's own DD(OIData) (AuthReq CheckDigests.HOIData): if given, it
    must equal the cardholder's, which is how an order taken from another purchase is caught.
    """
    signature, ex_pi_data = split_pi_dual_signed(pi_dual_signed)
    opened = open_EX(ex_pi_data, gateway, "PIDualSignedTBE", "PANData", suite=suite)
    pi_head, h_oi = split_pair(opened.content, "PI-OILink")
    if h_oi_data is not None and h_oi_data != h_oi:
        raise DigestMismatch("merchant's DD(OIData) differs from the cardholder's")
    h_pi = DD("PIData", der.seq(pi_head, opened.extra), suite)
    signed = verify_SO(signature, "PI-TBS", pi_tbs(h_pi, h_oi), certs=certs, validate=validate,
                       suite=suite)
    return GatewayView(pi_head, opened.extra, h_oi, signed)


def unsigned_purchase(gateway: x509.Certificate, pi_head: bytes, oi_data: bytes, pan_token: bytes,
                      *, suite: CryptoSuite = DEFAULT_SUITE) -> DualSigned:
    """PIUnsigned = EXH(P, PI-OILink, PANToken) and OIUnsigned = L(OIData, PIDataUnsigned)."""
    h_oi = DD("OIData", oi_data, suite)
    pi = EXH(gateway, "PIUnsignedTBE", der.seq(pi_head, h_oi), "PANToken", pan_token, suite=suite)
    h_pi = DD("PIDataUnsigned", der.seq(pi_head, pan_token), suite)
    return DualSigned(pi, der.seq(oi_data, h_pi))


def gateway_open_unsigned(pi_unsigned: bytes, gateway: Identity, *, h_oi_data: bytes | None = None,
                          suite: CryptoSuite = DEFAULT_SUITE) -> GatewayView:
    opened = open_EXH(pi_unsigned, gateway, "PIUnsignedTBE", "PANToken", suite=suite)
    pi_head, h_oi = split_pair(opened.content, "PI-OILink")
    if h_oi_data is not None and h_oi_data != h_oi:
        raise DigestMismatch("merchant's DD(OIData) differs from the cardholder's")
    return GatewayView(pi_head, opened.extra, h_oi, None)


def merchant_check_unsigned(oi_unsigned: bytes, *, suite: CryptoSuite = DEFAULT_SUITE) -> MerchantView:
    """Unsigned purchases give the merchant no signature to check: only the structure."""
    oi_data, h_pi = split_pair(oi_unsigned, "OIUnsigned")
    return MerchantView(oi_data, h_pi, None)  # type: ignore[arg-type]
