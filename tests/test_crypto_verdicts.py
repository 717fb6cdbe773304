"""The CMS fast paths judge every input as the operators before them did (tests/crypto_reference).

Each opener runs new and frozen on the same bytes: valid messages, every flipped byte of the
framing (a sample of the ciphertext), truncations, trailing data and random bytes.  The verdicts
must be equal: the same result, or the same exception type with the same message.  The OAEP block
reader is the one deliberate change: asn1crypto no longer parses it, and it refuses what the old
one let through (a field after the extra data, extra data missing or unexpected for the block's
contents byte), so there only the exception type is compared, and "stricter" is allowed.
"""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from setmail.crypto import der, dual, operators as op
from setmail.crypto.reader import split_pair
from setmail.errors import DecryptionFailed, MalformedMessage, SetmailError
from tests.crypto_reference import dual as ref_dual, operators as ref_op
from tests.crypto_reference.reader import split_pair as ref_split_pair

T, P, B = der.octets(b"t" * 40), der.octets(b"P" * 64), der.octets(b"b" * 25)
KD = bytes(range(32))


def _plain(value):
    """A result as comparable plain data (the two sides have their own result classes)."""
    if dataclasses.is_dataclass(value):
        return tuple(_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _verdict(fn, data):
    try:
        return "ok", _plain(fn(data))
    except SetmailError as exc:
        return type(exc).__name__, str(exc)
    except Exception as exc:  # noqa: BLE001 - an escape must show up as a difference
        return "escaped", repr(exc)


def _openers(pki):
    """name -> (message, opener(module) -> callable(bytes))."""
    ch, ms, gk, mk = (pki.parties[n] for n in ("cardholder", "merchant-sig", "gateway-kex", "merchant-kex"))
    known = [ch.cert, ms.cert]
    ds = dual.dual_sign(ch, gk.cert, T, B, P, certs=())
    return {
        "S": (op.S(ms, "PInitResData", T), lambda o: lambda d: o.verify_S(d, "PInitResData")),
        "SO": (op.SO(ch, "PI-TBS", T, certs=()),
               lambda o: lambda d: o.verify_SO(d, "PI-TBS", T, certs=known)),
        "Enc": (op.Enc(ms, gk.cert, "AuthReqTBS", T, "AuthReqTBE", certs=()),
                lambda o: lambda d: o.open_Enc(d, gk, "AuthReqTBE", "AuthReqTBS", certs=known)),
        "EncK": (op.EncK(KD, ms, "CertResData", T, "CertResTBE", certs=()),
                 lambda o: lambda d: o.open_EncK(d, KD, "CertResTBE", "CertResData", certs=known)),
        "EncX": (op.EncX(ch, gk.cert, "CertReqTBS", T, "PANData", P, "CertReqTBEX", certs=()),
                 lambda o: lambda d: o.open_EncX(d, gk, "CertReqTBEX", "CertReqTBS", "PANData", certs=known)),
        "EH": (op.EH(gk.cert, "RegFormReqTBE", T), lambda o: lambda d: o.open_EH(d, gk, "RegFormReqTBE")),
        "EXH": (op.EXH(gk.cert, "PIUnsignedTBE", T, "PANToken", P),
                lambda o: lambda d: o.open_EXH(d, gk, "PIUnsignedTBE", "PANToken")),
        "EncBX": (op.EncBX(ms, mk.cert, "AuthResTBS", T, "AuthResBaggage", B, "PANToken", P, "AuthResTBEX",
                           certs=()),
                  lambda o: lambda d: o.open_EncBX(d, mk, "AuthResTBEX", "AuthResTBS", "AuthResBaggage",
                                                   "PANToken", certs=known)),
        "gateway": (ds.pi_dual_signed, lambda o: lambda d: _dual(o).gateway_verify(d, gk, certs=known)),
        "merchant": (ds.oi_dual_signed, lambda o: lambda d: _dual(o).merchant_verify(
            ds.pi_dual_signed, d, certs=known)),
    }


def _dual(module):
    return dual if module is op else ref_dual


@pytest.fixture(scope="module")
def openers(minipki):
    return _openers(minipki)


def _positions(n: int, whole: bool):
    """Every offset of a small or plain message; for envelopes the framing at both ends (headers,
    recipient, algorithm, tag) and a sample of the ciphertext between, where every flip is alike."""
    if whole:
        return range(n)
    return sorted({*range(min(n, 190)), *range(max(0, n - 40), n), *range(190, n, 23)})


@pytest.mark.parametrize("name", ["S", "SO", "Enc", "EncK", "EncX", "EH", "EXH", "EncBX", "gateway",
                                  "merchant"])
def test_same_verdict_for_every_flip_and_cut(openers, name):
    data, opener = openers[name]
    new, old = opener(op), opener(ref_op)
    assert _verdict(new, data) == _verdict(old, data)
    assert _verdict(new, data)[0] == "ok"
    cases = [data[:cut] for cut in (0, 1, 2, 3, 4, 5, 20, len(data) // 2, len(data) - 1)]
    cases += [data + b"\x00", b"\x30" + data[1:] + b"\x00", data + data]
    for i in _positions(len(data), whole=name in ("S", "SO", "merchant")):
        bad = bytearray(data)
        bad[i] ^= (0x01, 0x80, 0xFF, 0x20)[i % 4]
        cases.append(bytes(bad))
    for case in cases:
        assert _verdict(new, case) == _verdict(old, case), case


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_same_verdict_for_spliced_messages(openers, data):
    """Random cuts, insertions and replacements anywhere (lengths that no longer add up)."""
    name = data.draw(st.sampled_from(["S", "SO", "Enc", "EncBX", "gateway"]))
    message, opener = openers[name]
    start = data.draw(st.integers(0, len(message)))
    stop = data.draw(st.integers(start, min(len(message), start + 8)))
    bad = message[:start] + data.draw(st.binary(max_size=6)) + message[stop:]
    assert _verdict(opener(op), bad) == _verdict(opener(ref_op), bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_same_verdict_for_random_pairs(raw):
    for data in (raw, der.seq(raw), der.seq(raw, raw)):
        assert _verdict(lambda d: split_pair(d, "pair"), data) == \
            _verdict(lambda d: ref_split_pair(d, "pair"), data)


# --- the OAEP block -----------------------------------------------------------------------
KEY = bytes(range(32))
H32 = bytes(32)


def _blocks():
    """Valid blocks for each contents byte, as the builders make them."""
    return {1: op._block(1, KEY, H32), 2: op._block(2, KEY, extra=P), 3: op._block(3, KEY, H32, P)}


def _block_verdicts(block: bytes, contents: int):
    return _verdict(lambda b: op._read_block(b, contents), block), \
        _verdict(lambda b: ref_op._read_block(b, contents), block)


def test_block_reader_agrees_or_is_stricter():
    for contents, block in _blocks().items():
        cases = [block[:cut] for cut in range(len(block))] + [block + b"\x00"]
        for i in range(len(block)):
            for mask in (0x01, 0x80, 0xFF, 0x20, 0x0F):
                bad = bytearray(block)
                bad[i] ^= mask
                cases.append(bytes(bad))
        for expected in (1, 2, 3):
            for case in [block, *cases]:
                new, old = _block_verdicts(case, expected)
                if old[0] == "ok" or new[0] == "ok":
                    assert new == old or new[0] == "MalformedMessage", (case, new, old)
                else:
                    assert new[0] == old[0], (case, new, old)


@pytest.mark.parametrize("contents, fields", [
    (2, [der.integer(2), der.octets(KEY)]),                                      # extra missing
    (3, [der.integer(3), der.octets(KEY), der.implicit_primitive(0, H32)]),      # extra missing
    (1, [der.integer(1), der.octets(KEY), der.implicit_primitive(0, H32), der.explicit(1, P)]),
    (2, [der.integer(2), der.octets(KEY), der.explicit(1, P), der.octets(b"more")]),
    (2, [der.integer(2), der.octets(KEY), der.explicit(1, P + P)]),
])
def test_block_reader_refuses_what_slipped_through(contents, fields):
    """Blocks the old reader accepted (or, without extra data, let fail as TypeError later)."""
    with pytest.raises(MalformedMessage):
        op._read_block(der.seq(*fields), contents)


def test_block_without_extra_is_malformed_not_a_type_error(minipki):
    """An EX envelope whose block omits the extra data: once a TypeError from hashing None."""
    from setmail.crypto import cms
    gk = minipki.parties["gateway-kex"]
    cek = bytes(32)
    block = der.seq(der.integer(2), der.octets(cek))
    env = cms.build_enveloped(op.DEFAULT_SUITE, cms.ktri(op.DEFAULT_SUITE, gk.cert, block, set_block=True),
                              op._oid("PIDualSignedTBE"), cek, op.L(T, "PANData", P))
    with pytest.raises(MalformedMessage):
        op.open_EX(env, gk, "PIDualSignedTBE", "PANData")
    with pytest.raises(TypeError):
        ref_op.open_EX(env, gk, "PIDualSignedTBE", "PANData")
    with pytest.raises(DecryptionFailed):
        op.open_EXH(env, gk, "PIDualSignedTBE", "PANData")
