"""decode_wrapper on hostile input: only MalformedMessage (or success), never another exception,
never a hang; oversize input is refused before any parsing.  ContentInfo layers are opaque to
decode (D-126): what it accepts re-encodes identically outside them, and a flipped byte inside a
real SignedData is refused by decode_wrapper or, when the layer is opened, by verify_S."""
from __future__ import annotations

import time
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asn1crypto import cms, core, parser

from setmail.asn1 import (MAX_MESSAGE_SIZE, MESSAGE_TYPES, decode, decode_wrapper, gateway,
                          message_body, purchase)
from setmail.asn1.base import MessageHeader
from setmail.asn1.wrapper import make_wrapper
from setmail.crypto import operators as op
from setmail.crypto.suite import get_suite
from setmail.errors import MalformedMessage, MessageTooLarge, SetmailError
from setmail.pki import validate_path
from setmail.vectors.build import NOW, Parties

from tests.asn1_samples import (MESSAGE_SAMPLES, MESSAGE_VARIANTS, auth_req_data, header,
                                p_init_res_data, wrapper_for)

SAMPLES = [wrapper_for(n, MESSAGE_SAMPLES[n]()).dump() for n in MESSAGE_TYPES] + [
    wrapper_for(n, build()).dump() for n, build in MESSAGE_VARIANTS.values()]

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def reencoded_outside_opaque(value) -> bytes:
    """asn1crypto's own full re-encoding of ``value``, except that every ContentInfo keeps the
    bytes it arrived with (opaque to decode, D-126): an oracle independent of base._reencode."""
    as_received = cms.ContentInfo.dump
    with mock.patch.object(cms.ContentInfo, "dump", lambda self, force=False: as_received(self)):
        return value.dump(force=True)


def decode_or_refuse(data: bytes) -> None:
    try:
        wrapper = decode_wrapper(data)
    except MalformedMessage:
        return
    assert reencoded_outside_opaque(wrapper) == data  # what is accepted is canonical DER


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


# --- opaque ContentInfo layers (D-126) -----------------------------------------------------------
def tlv(class_: int, tag: int, *parts: bytes, constructed: bool = True) -> bytes:
    return parser.emit(class_, int(constructed), tag, b"".join(parts))


OID_DATA = bytes.fromhex("06092a864886f70d010701")
OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
EMPTY_SEQ = b"\x30\x00"
HEADER = MessageHeader(header()).dump()


def p_init_res_wrapper(message: bytes) -> bytes:
    """A MessageWrapper whose Message is ``[1] EXPLICIT`` (PInitRes) around ``message``."""
    return tlv(0, 16, HEADER, tlv(2, 0, tlv(2, 1, message)))


def test_opaque_layer_is_not_parsed_by_decode():
    """Any value in [0] passes decode; the crypto layer refuses it when the role opens it."""
    ci = tlv(0, 16, OID_SIGNED_DATA, tlv(2, 0, EMPTY_SEQ))
    wrapper = decode_wrapper(p_init_res_wrapper(ci))
    assert message_body(wrapper).dump() == ci
    with pytest.raises(MalformedMessage):
        op.verify_S(ci, "PInitResData")


@pytest.mark.parametrize("body", [
    OID_DATA,                                                  # no content
    OID_DATA + tlv(2, 0),                                      # empty [0]
    OID_DATA + tlv(2, 0, EMPTY_SEQ, EMPTY_SEQ),                # two values in [0]
    OID_DATA + tlv(2, 0, EMPTY_SEQ) + b"\x05\x00",             # a third element
    b"\x04\x00" + tlv(2, 0, EMPTY_SEQ),                        # contentType not an OID
    OID_DATA + tlv(2, 0, EMPTY_SEQ, constructed=False),        # [0] primitive
    OID_DATA + tlv(2, 1, EMPTY_SEQ),                           # [1] instead of [0]
    tlv(2, 0, EMPTY_SEQ),                                      # no contentType
], ids=["no-content", "empty-0", "two-values", "third-element", "not-oid", "primitive-0",
        "tag-1", "no-content-type"])
def test_content_info_must_be_oid_and_one_explicit_value(body):
    with pytest.raises(MalformedMessage):
        decode_wrapper(p_init_res_wrapper(tlv(0, 16, body)))


class Holder(core.Sequence):
    """A SEQUENCE above opaque layers with the field kinds base._reencode handles itself."""

    _fields = [
        ("flag", core.Boolean, {"default": False}),
        ("ci", cms.ContentInfo, {"explicit": 1}),
        ("tokens", gateway.CapTokenSeq, {"optional": True}),
        ("n", core.Integer, {"implicit": 2, "optional": True}),
    ]


CI = tlv(0, 16, OID_DATA, tlv(2, 0, EMPTY_SEQ))


@pytest.mark.parametrize("der", [
    tlv(0, 16, tlv(2, 1, CI)),
    tlv(0, 16, b"\x01\x01\xff", tlv(2, 1, CI), tlv(0, 16, CI, CI), b"\x82\x01\x05"),
])
def test_canonical_values_above_opaque_layers_decode(der):
    assert reencoded_outside_opaque(decode(Holder, der)) == der


@pytest.mark.parametrize("der", [
    tlv(0, 16, b"\x01\x01\x00", tlv(2, 1, CI)),                  # DEFAULT FALSE encoded
    tlv(0, 16, tlv(2, 1, CI), b"\x05\x00"),                       # undeclared trailing field
    tlv(0, 16, tlv(2, 1, CI, b"\x05\x00")),                       # junk after CI in [1] EXPLICIT
    tlv(0, 16, tlv(2, 1, CI), b"\x82\x02\x00\x05"),               # non-minimal [2] IMPLICIT INTEGER
    tlv(0, 16, tlv(2, 1, CI), tlv(0, 16, CI, EMPTY_SEQ)),         # a SEQUENCE OF element not a CI
    tlv(0, 16, tlv(2, 1, CI), tlv(0, 16, tlv(0, 16, OID_DATA))),  # a CI in SEQUENCE OF without [0]
    tlv(0, 16, tlv(2, 1, CI), tlv(0, 16, CI, constructed=False)),  # primitive SEQUENCE OF
])
def test_non_canonical_forms_above_opaque_layers_are_malformed(der):
    with pytest.raises(MalformedMessage):
        decode(Holder, der)


@pytest.mark.parametrize("date", [b"202611271200Z", b"20261127120000.50Z", b"20261127120000+0100",
                                  b"20261127120000"])
def test_non_canonical_header_date_is_malformed(date):
    """The clear header sits beside the opaque layer: still parsed and re-encoded whole."""
    good = MessageHeader(header()).dump()
    cls_, method, tag, _, contents, _ = parser.parse(good)
    start = contents.index(b"\x18\x0f")
    bad = parser.emit(cls_, method, tag, contents[:start] + tlv(0, 24, date, constructed=False)
                      + contents[start + 17:])
    ci = MESSAGE_SAMPLES["PInitRes"]().dump()
    decode_wrapper(tlv(0, 16, good, tlv(2, 0, tlv(2, 1, ci))))
    with pytest.raises(MalformedMessage):
        decode_wrapper(tlv(0, 16, bad, tlv(2, 0, tlv(2, 1, ci))))



def _beside_opaque(case: str) -> tuple[bytes, bytes]:
    """(good, bad) wrappers: one fault in a field next to (or above) an opaque layer."""
    if case == "unknown-alternative":  # PI [1] -> [3] inside AuthReq, beside auth_req_enc
        message = MESSAGE_SAMPLES["AuthReq"]()
        pi = message["pi"].dump()
        good = wrapper_for("AuthReq", message).dump()
        return good, good.replace(pi, b"\xa3" + pi[1:])
    if case == "bad-enumerated":  # ErrorCode 99 in an unsigned Error (the CHOICE also holds S())
        message = MESSAGE_SAMPLES["Error"]()
        tbs = message.chosen.dump()
        code = message.chosen["error_code"].dump()
        good = wrapper_for("Error", message).dump()
        return good, good.replace(tbs, tbs.replace(code, code[:2] + b"\x63", 1))
    ci = MESSAGE_SAMPLES["PInitRes"]().dump()
    good = p_init_res_wrapper(ci)
    if case == "wrong-type":  # MessageHeader version as OCTET STRING
        return good, good.replace(HEADER, HEADER.replace(b"\x02\x01\x01", b"\x04\x01\x01", 1))
    fields, pos = [], 2 if HEADER[1] < 0x80 else 2 + (HEADER[1] & 0x7F)
    while pos < len(HEADER):
        size = parser.peek(HEADER[pos:])
        fields.append(HEADER[pos:pos + size])
        pos += size
    assert case == "missing-field" and fields[-1].startswith(b"\x1a")  # sw_ident
    return good, tlv(0, 16, tlv(0, 16, *fields[:-1]), tlv(2, 0, tlv(2, 1, ci)))


@pytest.mark.parametrize("case", ["wrong-type", "missing-field", "unknown-alternative",
                                  "bad-enumerated"])
def test_fields_beside_opaque_layers_are_parsed_strictly(case):
    good, bad = _beside_opaque(case)
    assert reencoded_outside_opaque(decode_wrapper(good)) == good and bad != good
    with pytest.raises(MalformedMessage):
        decode_wrapper(bad)

# --- flipped bytes inside a real SignedData: decode may pass them, verify_S refuses -------------
@pytest.fixture(scope="module")
def merchant():
    suite, parties = get_suite("rsa2048"), Parties(get_suite("rsa2048"))
    signer, trust = parties.merchant_sig, parties.tree.trust_store()

    def validate(leaf, included):  # the chain the message carries, else the one the peer holds
        validate_path(leaf, included or signer.chain, trust, now=NOW, expected_type="mer",
                      key_usage="digital_signature")
    return suite, signer, validate


def _flips_not_refused(suite, signer, validate, *, with_certs: bool) -> list[tuple[int, str]]:
    """(offset, outcome) of every one-bit flip inside S(M, PInitResData) that is not refused."""
    signed = op.S(signer, "PInitResData", p_init_res_data().dump(),
                  certs=None if with_certs else (), suite=suite)
    known = () if with_certs else (signer.cert, *signer.chain)  # the Thumbs case: peer holds them
    der = make_wrapper(header(), "PInitRes", purchase.PInitRes.load(signed)).dump()
    start = der.index(signed)
    assert op.verify_S(message_body(decode_wrapper(der)).dump(), "PInitResData", certs=known,
                       validate=validate, suite=suite).content == p_init_res_data().dump()
    missed = []
    for offset in range(len(signed)):
        flipped = bytearray(der)
        flipped[start + offset] ^= 0x01
        try:
            opened = message_body(decode_wrapper(bytes(flipped))).dump()
            op.verify_S(opened, "PInitResData", certs=known, validate=validate, suite=suite)
            missed.append((offset, "accepted"))
        except SetmailError:
            continue
        except Exception as exc:  # noqa: BLE001 - the point is to list them
            missed.append((offset, f"{type(exc).__name__}: {exc}"[:80]))
    return missed


@pytest.mark.timeout(60)
def test_every_flip_in_a_signed_data_is_refused(merchant):
    """Signatures without embedded certificates (the peer holds them): nothing gets through."""
    assert _flips_not_refused(*merchant, with_certs=False) == []


@pytest.mark.timeout(60)
def test_every_flip_in_a_signed_data_with_certificates_is_refused(merchant):
    """Certificates parsed in full and their unsigned algorithm fields bound: nothing gets through."""
    assert _flips_not_refused(*merchant, with_certs=True) == []
