"""The dual signature: who can see what, and what each verifier catches."""
from __future__ import annotations

import pytest

from setmail.crypto import dual
from setmail.crypto.operators import DD
from setmail.errors import (DecryptionFailed, DigestMismatch, MalformedMessage, SignatureInvalid,
                            MissingCertificate, WrongContentType)

PAN = b"4111111111111111"
ORDER = b"one blue teapot, gift-wrapped"
PI_HEAD = b"\x30\x0a\x04\x08pi-head1"
OI = b"\x30" + bytes([len(ORDER) + 2]) + b"\x04" + bytes([len(ORDER)]) + ORDER
PAN_DATA = b"\x30\x12\x12\x10" + PAN  # NumericString PAN inside a SEQUENCE


@pytest.fixture(scope="module")
def purchase(minipki):
    ch, gk = minipki.parties["cardholder"], minipki.parties["gateway-kex"]
    return dual.dual_sign(ch, gk.cert, PI_HEAD, OI, PAN_DATA, certs=())


def test_merchant_sees_order_not_card(minipki, purchase):
    view = dual.merchant_verify(purchase.pi_dual_signed, purchase.oi_dual_signed,
                                certs=[minipki.parties["cardholder"].cert])
    assert view.oi_data == OI
    assert view.signed.signer == minipki.parties["cardholder"].cert
    # nothing the merchant receives contains the PAN in clear
    assert PAN not in purchase.p_req_dual_signed
    # and the merchant's key cannot open the PI
    with pytest.raises(DecryptionFailed):
        dual.gateway_verify(purchase.pi_dual_signed, minipki.parties["merchant-kex"])


def test_gateway_sees_card_not_order(minipki, purchase):
    view = dual.gateway_verify(purchase.pi_dual_signed, minipki.parties["gateway-kex"],
                               h_oi_data=DD("OIData", OI), certs=[minipki.parties["cardholder"].cert])
    assert view.pan_data == PAN_DATA and view.pi_head == PI_HEAD
    assert ORDER not in purchase.pi_dual_signed
    assert ORDER not in view.pi_head + view.pan_data + view.h_oi_data


def test_oi_from_another_purchase_is_caught_by_both(minipki, purchase):
    ch, gk = minipki.parties["cardholder"], minipki.parties["gateway-kex"]
    other_oi = OI.replace(b"blue", b"gold")
    other = dual.dual_sign(ch, gk.cert, PI_HEAD, other_oi, PAN_DATA)
    with pytest.raises(SignatureInvalid):  # merchant: PI of one purchase, OI of the other
        dual.merchant_verify(purchase.pi_dual_signed, other.oi_dual_signed, certs=[ch.cert])
    with pytest.raises(DigestMismatch):  # gateway: merchant's HOIData comes from the other OI
        dual.gateway_verify(purchase.pi_dual_signed, gk, h_oi_data=DD("OIData", other_oi), certs=[ch.cert])


def test_pi_from_another_purchase_fails_the_signature(minipki, purchase):
    ch, gk = minipki.parties["cardholder"], minipki.parties["gateway-kex"]
    other = dual.dual_sign(ch, gk.cert, PI_HEAD, OI, PAN_DATA.replace(b"4111", b"5500"))
    sig, _ = dual.split_pi_dual_signed(purchase.pi_dual_signed)
    _, ex = dual.split_pi_dual_signed(other.pi_dual_signed)
    from setmail.crypto import der
    with pytest.raises(SignatureInvalid):
        dual.gateway_verify(der.seq(sig, ex), gk, certs=[ch.cert])


def test_flipped_bytes_in_either_half(minipki, purchase):
    ch, gk = minipki.parties["cardholder"], minipki.parties["gateway-kex"]
    for blob, check in ((purchase.oi_dual_signed,
                         lambda b: dual.merchant_verify(purchase.pi_dual_signed, b, certs=[ch.cert])),
                        (purchase.pi_dual_signed, lambda b: dual.gateway_verify(b, gk, certs=[ch.cert]))):
        for i in range(0, len(blob)):
            bad = bytearray(blob)
            bad[i] ^= 0x04
            with pytest.raises((MalformedMessage, SignatureInvalid, DecryptionFailed, DigestMismatch,
                                WrongContentType, MissingCertificate)):
                check(bytes(bad))


def test_unsigned_purchase(minipki):
    gk = minipki.parties["gateway-kex"]
    token = b"\x30\x12\x12\x10" + PAN
    u = dual.unsigned_purchase(gk.cert, PI_HEAD, OI, token)
    view = dual.gateway_open_unsigned(u.pi_dual_signed, gk, h_oi_data=DD("OIData", OI))
    assert view.pan_data == token and view.signed is None
    assert dual.merchant_check_unsigned(u.oi_dual_signed).oi_data == OI
    with pytest.raises(DigestMismatch):
        dual.gateway_open_unsigned(u.pi_dual_signed, gk, h_oi_data=DD("OIData", OI + b"x"))


def test_tampered_embedded_certificate_is_caught_by_the_path_check(minipki):
    """Certificates travel in SignedData; the operator hands them to ``validate`` (the PKI's job)."""
    from setmail.errors import BadSignature
    ch, gk = minipki.parties["cardholder"], minipki.parties["gateway-kex"]
    signed = dual.dual_sign(ch, gk.cert, PI_HEAD, OI, PAN_DATA)  # embeds cardholder cert + CA

    def validate(signer, included):
        try:
            minipki.ca.public_key().verify(signer.signature, signer.tbs_certificate_bytes,
                                           signer.signature_algorithm_parameters, signer.signature_hash_algorithm)
        except Exception as exc:
            raise BadSignature("certificate signature does not verify") from exc

    from setmail.crypto.cms import cert_der
    cert = cert_der(ch.cert)
    start = signed.pi_dual_signed.index(cert)
    for i in range(start + 200, start + 260):  # inside the subject / validity of the signer cert
        bad = bytearray(signed.pi_dual_signed)
        bad[i] ^= 0x01
        with pytest.raises((BadSignature, MalformedMessage, SignatureInvalid)):
            dual.merchant_verify(bytes(bad), signed.oi_dual_signed, validate=validate)
