"""decode_wrapper on hostile input: only MalformedMessage (or success), never another exception,
never a hang; oversize input is refused before any parsing."""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asn1crypto import core, parser

from setmail.asn1 import MAX_MESSAGE_SIZE, MESSAGE_TYPES, decode, decode_wrapper, gateway
from setmail.errors import MalformedMessage, MessageTooLarge

from tests.asn1_samples import MESSAGE_SAMPLES, MESSAGE_VARIANTS, auth_req_data, wrapper_for

SAMPLES = [wrapper_for(n, MESSAGE_SAMPLES[n]()).dump() for n in MESSAGE_TYPES] + [
    wrapper_for(n, build()).dump() for n, build in MESSAGE_VARIANTS.values()]

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decode_or_refuse(data: bytes) -> None:
    try:
        wrapper = decode_wrapper(data)
    except MalformedMessage:
        return
    assert wrapper.dump(force=True) == data  # what is accepted is canonical DER


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF]))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + draw(st.integers(1, 16))]
        if not data:
            break
    return bytes(data)


@pytest.mark.timeout(60)
@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    decode_or_refuse(data)


@pytest.mark.timeout(60)
@FUZZ
@given(st.binary(max_size=64).map(lambda tail: b"\x30\x82\x01\x00" + tail))
def test_random_bytes_behind_a_sequence_header(data):
    decode_or_refuse(data)


@pytest.mark.timeout(60)
@FUZZ
@given(mutated())
def test_mutated_wrappers(data):
    decode_or_refuse(data)


@pytest.mark.parametrize("sample", SAMPLES[:3])
def test_every_truncation_is_malformed(sample):
    for end in range(0, len(sample), max(1, len(sample) // 200)):
        with pytest.raises(MalformedMessage):
            decode_wrapper(sample[:end])


@pytest.mark.parametrize("data", [
    b"\x30" * (MAX_MESSAGE_SIZE + 1),
    b"\x30\x84\x7f\xff\xff\xff" + bytes(MAX_MESSAGE_SIZE),
    SAMPLES[0] + bytes(MAX_MESSAGE_SIZE),
])
def test_oversize_is_refused_before_parsing(data):
    start = time.perf_counter()
    with pytest.raises(MessageTooLarge):
        decode_wrapper(data)
    assert time.perf_counter() - start < 0.05


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def test_deep_nesting_is_malformed_not_a_crash():
    deep = b""
    for _ in range(5000):
        deep = b"\x30" + _der_length(len(deep)) + deep
    with pytest.raises(MalformedMessage):
        decode_wrapper(deep)
    with pytest.raises(MalformedMessage):
        decode_wrapper(b"\x30\x80" * 50000)  # indefinite lengths are BER, not DER


# --- regressions: forms asn1crypto accepts but DER forbids (D-126) -------------------------------
def test_undeclared_trailing_field_is_malformed():
    cls, method, tag, _, contents, _ = parser.parse(SAMPLES[0])
    with pytest.raises(MalformedMessage, match="canonical"):
        decode_wrapper(parser.emit(cls, method, tag, contents + b"\x85\x01\x00"))


def test_encoded_default_value_is_malformed():
    der = auth_req_data().dump()  # capture_now TRUE; FALSE is the DEFAULT and must be omitted
    decode(gateway.AuthReqData, der)
    cls, method, tag, _, contents, _ = parser.parse(der)
    # the first TRUE after auth_req_item (m_thumbs holds none) is capture_now
    position = contents.index(b"\x01\x01\xff", parser.peek(contents))
    flipped = contents[:position] + b"\x01\x01\x00" + contents[position + 3:]
    with pytest.raises(MalformedMessage):
        decode(gateway.AuthReqData, parser.emit(cls, method, tag, flipped))


@pytest.mark.parametrize("der", ["06032a8003", "0603802a03", "06022a83", "0600"])
def test_non_minimal_object_identifier_is_malformed(der):
    with pytest.raises(MalformedMessage):
        decode(core.ObjectIdentifier, bytes.fromhex(der))
