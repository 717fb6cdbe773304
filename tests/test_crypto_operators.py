"""Every SET operator: round trip, and a flipped byte anywhere gives a specific setmail error."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from setmail.crypto import operators as op
from setmail.crypto.suite import fresh
from setmail.errors import (DecryptionFailed, DigestMismatch, MalformedMessage, MissingCertificate,
                            SetmailError, SignatureInvalid, WrongContentType)

T = b"\x04\x0bhello world"          # any DER value will do for t
P = b"\x04\x10" + b"P" * 16          # extra data (PANData stand-in)
B = b"\x04\x07baggage"               # baggage
KD = bytes(range(32))                # a provided symmetric key (EncK)

SPECIFIC = (MalformedMessage, SignatureInvalid, DecryptionFailed, DigestMismatch,
            WrongContentType, MissingCertificate)


def _cases(pki):
    ch, ms = pki.parties["cardholder"], pki.parties["merchant-sig"]
    gk, mk = pki.parties["gateway-kex"], pki.parties["merchant-kex"]
    known = [ch.cert, ms.cert]
    return {
        "S": (lambda: op.S(ms, "PInitResData", T, certs=()),
              lambda d: op.verify_S(d, "PInitResData", certs=known).content),
        "SO": (lambda: op.SO(ch, "PI-TBS", T, certs=()),
               lambda d: op.verify_SO(d, "PI-TBS", T, certs=known).content),
        "Enc": (lambda: op.Enc(ms, gk.cert, "AuthReqTBS", T, "AuthReqTBE", certs=()),
                lambda d: op.open_Enc(d, gk, "AuthReqTBE", "AuthReqTBS", certs=known).content),
        "EncK": (lambda: op.EncK(KD, ms, "CertResData", T, "CertResTBE", certs=()),
                 lambda d: op.open_EncK(d, KD, "CertResTBE", "CertResData", certs=known).content),
        "EncX": (lambda: op.EncX(ch, gk.cert, "CertReqTBS", T, "PANData", P, "CertReqTBEX", certs=()),
                 lambda d: (lambda o: (o.content, o.extra))(
                     op.open_EncX(d, gk, "CertReqTBEX", "CertReqTBS", "PANData", certs=known))),
        "EH": (lambda: op.EH(gk.cert, "RegFormReqTBE", T),
               lambda d: op.open_EH(d, gk, "RegFormReqTBE").content),
        "EX": (lambda: op.EX(gk.cert, "PIDualSignedTBE", T, "PANData", P),
               lambda d: (lambda o: (o.content, o.extra))(op.open_EX(d, gk, "PIDualSignedTBE", "PANData"))),
        "EXH": (lambda: op.EXH(gk.cert, "PIUnsignedTBE", T, "PANToken", P),
                lambda d: (lambda o: (o.content, o.extra))(op.open_EXH(d, gk, "PIUnsignedTBE", "PANToken"))),
        "EncB": (lambda: op.EncB(ms, gk.cert, "AuthReqTBS", T, "PI", B, "AuthReqTBE", certs=()),
                 lambda d: (lambda o: (o.content, o.baggage))(
                     op.open_EncB(d, gk, "AuthReqTBE", "AuthReqTBS", "PI", certs=known))),
        "EncBX": (lambda: op.EncBX(ms, mk.cert, "AuthResTBS", T, "AuthResBaggage", B, "PANToken", P,
                                   "AuthResTBEX", certs=()),
                  lambda d: (lambda o: (o.content, o.baggage, o.extra))(
                      op.open_EncBX(d, mk, "AuthResTBEX", "AuthResTBS", "AuthResBaggage", "PANToken",
                                    certs=known))),
    }


OPERATORS = ["S", "SO", "Enc", "EncK", "EncX", "EH", "EX", "EXH", "EncB", "EncBX"]
EXPECTED = {"S": T, "SO": T, "Enc": T, "EncK": T, "EncX": (T, P), "EH": T, "EX": (T, P),
            "EXH": (T, P), "EncB": (T, B), "EncBX": (T, B, P)}


@pytest.mark.parametrize("name", OPERATORS)
def test_round_trip(minipki, name):
    build, open_ = _cases(minipki)[name]
    assert open_(build()) == EXPECTED[name]


@pytest.mark.parametrize("name", OPERATORS)
def test_every_flipped_byte_is_a_specific_error(minipki, name):
    build, open_ = _cases(minipki)[name]
    data = build()
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(SPECIFIC):
                open_(bytes(bad))


@pytest.mark.parametrize("name", OPERATORS)
def test_truncation_and_trailing_data(minipki, name):
    build, open_ = _cases(minipki)[name]
    data = build()
    for cut in (0, 1, 2, len(data) // 2, len(data) - 1):
        with pytest.raises(SPECIFIC):
            open_(data[:cut])
    with pytest.raises(SPECIFIC):
        open_(data + b"\x00")


def test_wrong_recipient_is_decryption_failed(minipki):
    gk, mk = minipki.parties["gateway-kex"], minipki.parties["merchant-kex"]
    env = op.EX(gk.cert, "PIDualSignedTBE", T, "PANData", P)
    with pytest.raises(DecryptionFailed):
        op.open_EX(env, mk, "PIDualSignedTBE", "PANData")
    with pytest.raises(DecryptionFailed):
        op.open_EncK(op.EncK(KD, minipki.parties["merchant-sig"], "CertResData", T, "CertResTBE"),
                     fresh(32), "CertResTBE", "CertResData")


def test_wrong_content_type_is_refused(minipki):
    ms = minipki.parties["merchant-sig"]
    with pytest.raises(WrongContentType):
        op.verify_S(op.S(ms, "PInitResData", T), "PResData")


def test_signature_by_unknown_signer_is_missing_certificate(minipki):
    ms = minipki.parties["merchant-sig"]
    with pytest.raises(MissingCertificate):
        op.verify_S(op.S(ms, "PResData", T, certs=()), "PResData")


def test_plain_X_and_H_blocks_are_not_interchangeable(minipki):
    """An EX envelope must not open as EXH (the OAEP block says what it carries)."""
    gk = minipki.parties["gateway-kex"]
    env = op.EX(gk.cert, "PIUnsignedTBE", T, "PANToken", P)
    with pytest.raises((DecryptionFailed, MalformedMessage)):
        op.open_EXH(env, gk, "PIUnsignedTBE", "PANToken")


def test_encb_baggage_swap_is_digest_mismatch(minipki):
    ms, gk = minipki.parties["merchant-sig"], minipki.parties["gateway-kex"]
    one = op.EncB(ms, gk.cert, "AuthReqTBS", T, "PI", B, "AuthReqTBE")
    other = b"\x04\x07BAGGAGE"
    tampered = one[: len(one) - len(B)] + other
    with pytest.raises(DigestMismatch):
        op.open_EncB(tampered, gk, "AuthReqTBE", "AuthReqTBS", "PI")


def test_dd_and_l(minipki):
    dd = op.DD("OIData", T)
    op.check_DD(dd, "OIData", T)
    with pytest.raises(DigestMismatch):
        op.check_DD(dd, "OIData", T + b"x")
    with pytest.raises(DigestMismatch):
        op.check_DD(dd, "PIData", T)
    assert op.open_L(op.L(T, "PANData", P), "PANData", P) == T
    with pytest.raises(DigestMismatch):
        op.open_L(op.L(T, "PANData", P), "PANData", P + b"x")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000))
def test_random_bytes_never_escape_as_library_errors(minipki, data):
    gk = minipki.parties["gateway-kex"]
    for fn in (lambda d: op.verify_S(d, "PResData"), lambda d: op.open_EX(d, gk, "PIDualSignedTBE", "PANData"),
               lambda d: op.open_EncB(d, gk, "AuthReqTBE", "AuthReqTBS", "PI"),
               lambda d: op.open_EncK(d, KD, "CertResTBE", "CertResData")):
        try:
            fn(data)
        except SetmailError:
            pass
