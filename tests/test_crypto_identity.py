"""The CMS fast paths build the same bytes as the operators before them (tests/crypto_reference).

Every builder runs twice on the same inputs, new and frozen, with ``os.urandom`` seeded the same
and RSA made repeatable (tests/repeatable_rsa.py), and the two outputs must be equal; the outputs
must also open with the normal suite.  The DER encoder is compared value by value across every
length form.
"""
from __future__ import annotations

import os

import pytest

from setmail.asn1.oids import CONTENT_TYPES
from setmail.crypto import cms, der, dual, operators as op
from setmail.crypto.suite import DEFAULT_SUITE
from tests.crypto_reference import der as ref_der, dual as ref_dual, operators as ref_op
from tests.repeatable_rsa import REPEATABLE, seeded_urandom

R = REPEATABLE
SIZES = [0, 1, 5, 127, 128, 200, 255, 256, 300, 4000, 65535, 65536, 70000]


def _blob(n: int) -> bytes:
    return der.octets(bytes(i % 251 for i in range(n)))


T, P, B = _blob(40), _blob(64), _blob(25)
KD = bytes(range(32))


def _same(monkeypatch, new, old, seed: int = 7) -> bytes:
    """Run both with the same randomness; they must agree.  Returns the bytes."""
    outs = []
    for build in (new, old):
        monkeypatch.setattr(os, "urandom", seeded_urandom(seed))
        outs.append(build())
    assert outs[0] == outs[1]
    return outs[0]


@pytest.mark.parametrize("n", SIZES + [2 ** 24 - 1, 2 ** 24])
def test_der_length_forms(n):
    assert der.length(n) == ref_der.length(n)
    assert der.header(0x30, n) == ref_der.tlv(0x30, b"")[:1] + ref_der.length(n)
    if n <= 70000:
        content = bytes(n)
        for tag in (0x04, 0x30, 0x31, 0xA0, 0x80):
            assert der.tlv(tag, content) == ref_der.tlv(tag, content)
        assert der.seq(content[:n // 2], content[n // 2:]) == ref_der.seq(content[:n // 2], content[n // 2:])


def test_der_integers_and_oids():
    values = [*range(-300, 300), 2 ** 31, -2 ** 31, 2 ** 64 + 5, -(2 ** 70), 2 ** 159 - 1]
    for v in values:
        assert der.integer(v) == ref_der.integer(v)
    for dotted in ("1.2.840.113549.1.9.3", "2.23.42.0.16", "2.16.840.1.101.3.4.1.46", "1.3.6.1.4.1.99999.7"):
        assert der.oid(dotted) == ref_der.oid(dotted)
    assert der.set_of(b"\x04\x01b", b"\x04\x01a") == ref_der.set_of(b"\x04\x01b", b"\x04\x01a")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("detached", [False, True])
def test_signed_data_of_every_size(minipki, monkeypatch, size, detached):
    ms = minipki.parties["merchant-sig"]
    t = _blob(size)
    new_op, old_op = (op.SO, ref_op.SO) if detached else (op.S, ref_op.S)
    data = _same(monkeypatch, lambda: new_op(ms, "PResData", t, certs=(), suite=R),
                 lambda: old_op(ms, "PResData", t, certs=(), suite=R))
    if detached:
        assert op.verify_SO(data, "PResData", t, certs=[ms.cert]).content == t
    else:
        assert op.verify_S(data, "PResData", certs=[ms.cert]).content == t


def test_signed_data_certificate_sets(minipki, monkeypatch):
    """Default (signer and chain), none, and a list with repeats in any order: one DER SET OF."""
    ch, ms, gk = (minipki.parties[n] for n in ("cardholder", "merchant-sig", "gateway-kex"))
    for certs in (None, (), [ms.cert], [minipki.ca, ms.cert, minipki.ca, gk.cert, minipki.root],
                  (gk.cert, ch.cert, ms.cert)):
        data = _same(monkeypatch, lambda: op.S(ch, "PResData", T, certs=certs, suite=R),
                     lambda: ref_op.S(ch, "PResData", T, certs=certs, suite=R))
        if certs is None:
            assert op.verify_S(data, "PResData").signer == ch.cert


@pytest.mark.parametrize("content_type", ["PI-TBS", "PInitResData", "AuthReqTBS", "CapTokenData",
                                          "CertReqTBS", "BatchAdminReqData", "CRLNotificationTBS"])
def test_signed_attributes_same_bytes(minipki, monkeypatch, content_type):
    ms = minipki.parties["merchant-sig"]
    _same(monkeypatch, lambda: op.S(ms, content_type, T, certs=(), suite=R),
          lambda: ref_op.S(ms, content_type, T, certs=(), suite=R))


def test_signed_attribute_frames():
    """The frame is cached per content type: both SET OF orders, any digest, must come out right."""
    oids = [der.oid(dotted) for dotted in CONTENT_TYPES.values()]
    oids += [der.oid("1.2.3"), der.oid("1.2.840.113549.1.9.3"), der.oid("1.2.840.113549.1.9.4"),
             der.oid("2.999." + "1" * 200), der.tlv(0x06, b"\x2a" * 120)]
    for ct_oid in oids:
        for digest in (bytes(32), b"\xff" * 32, bytes(20), b"\x80" * 64):
            assert cms._signed_attrs(ct_oid, digest) == cms._signed_attrs_generic(ct_oid, digest)


def _envelope_cases(pki):
    ch, ms, gk, mk = (pki.parties[n] for n in ("cardholder", "merchant-sig", "gateway-kex", "merchant-kex"))
    return {
        "Enc": lambda o: o.Enc(ms, gk.cert, "AuthReqTBS", T, "AuthReqTBE", certs=(), suite=R),
        "Enc+certs": lambda o: o.Enc(ms, gk.cert, "AuthReqTBS", _blob(3000), "AuthReqTBE", suite=R),
        "EncK": lambda o: o.EncK(KD, ms, "CertResData", T, "CertResTBE", certs=(), suite=R),
        "EncX": lambda o: o.EncX(ch, gk.cert, "CertReqTBS", T, "PANData", P, "CertReqTBEX", suite=R),
        "EH": lambda o: o.EH(gk.cert, "RegFormReqTBE", _blob(300), suite=R),
        "EX": lambda o: o.EX(gk.cert, "PIDualSignedTBE", T, "PANData", P, suite=R),
        "EXH": lambda o: o.EXH(gk.cert, "PIUnsignedTBE", T, "PANToken", P, suite=R),
        "EncB": lambda o: o.EncB(ms, gk.cert, "AuthReqTBS", T, "PI", _blob(1000), "AuthReqTBE",
                                 certs=(), suite=R),
        "EncBX": lambda o: o.EncBX(ms, mk.cert, "AuthResTBS", T, "AuthResBaggage", B, "PANToken", P,
                                   "AuthResTBEX", certs=(), suite=R),
        "DD/L": lambda o: o.L(T, "PANData", P, R) + o.DD("OIData", _blob(5000), R) + o.H(T, R),
    }


@pytest.mark.parametrize("name", ["Enc", "Enc+certs", "EncK", "EncX", "EH", "EX", "EXH", "EncB",
                                  "EncBX", "DD/L"])
def test_every_operator_same_bytes(minipki, monkeypatch, name):
    build = _envelope_cases(minipki)[name]
    _same(monkeypatch, lambda: build(op), lambda: build(ref_op), seed=hash(name) & 0xFFFF)


def test_repeatable_envelopes_open_with_the_normal_suite(minipki, monkeypatch):
    gk, ms = minipki.parties["gateway-kex"], minipki.parties["merchant-sig"]
    data = _same(monkeypatch, lambda: _envelope_cases(minipki)["EncB"](op),
                 lambda: _envelope_cases(minipki)["EncB"](ref_op))
    opened = op.open_EncB(data, gk, "AuthReqTBE", "AuthReqTBS", "PI", certs=[ms.cert],
                          suite=DEFAULT_SUITE)
    assert (opened.content, opened.baggage) == (T, _blob(1000))


def test_dual_signature_same_bytes(minipki, monkeypatch):
    ch, gk = minipki.parties["cardholder"], minipki.parties["gateway-kex"]
    head, oi, pan = _blob(300), _blob(350), _blob(120)
    pi, oi_signed = _same(monkeypatch, lambda: _pair(dual.dual_sign(ch, gk.cert, head, oi, pan, suite=R)),
                          lambda: _pair(ref_dual.dual_sign(ch, gk.cert, head, oi, pan, suite=R)))
    assert dual.gateway_verify(pi, gk).pan_data == pan
    assert dual.merchant_verify(pi, oi_signed).oi_data == oi
    token = _blob(60)
    unsigned = _same(monkeypatch, lambda: _pair(dual.unsigned_purchase(gk.cert, head, oi, token, suite=R)),
                     lambda: _pair(ref_dual.unsigned_purchase(gk.cert, head, oi, token, suite=R)))
    assert dual.gateway_open_unsigned(unsigned[0], gk).pan_data == token


def _pair(signed) -> tuple[bytes, bytes]:
    return signed.pi_dual_signed, signed.oi_dual_signed


def test_certificate_facts_match_the_certificates(minipki, monkeypatch):
    """Per-certificate caching by identity: right for every object, and after the cache empties."""
    from cryptography.hazmat.primitives.serialization import Encoding
    certs = [minipki.root, minipki.ca, *(i.cert for i in minipki.parties.values())]
    monkeypatch.setattr(cms, "_FACTS_MAX", 3)
    for _ in range(3):
        for cert in certs:
            assert cms.cert_der(cert) == cert.public_bytes(Encoding.DER)
            assert cms.issuer_and_serial(cert) == ref_der.seq(cert.issuer.public_bytes(),
                                                             ref_der.integer(cert.serial_number))
    assert len(cms._FACTS) <= 3
