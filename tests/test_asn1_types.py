"""The SET ASN.1 catalogue: every message and plaintext type round-trips byte-identically through
DER, the registries are complete and consistent, and openssl agrees the DER is well formed."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from asn1crypto import parser

import setmail.errors as errors
from setmail.asn1 import (
    MESSAGE_TYPES, MIME_PAYMENT, MIME_REGISTRATION, MIME_TYPES, PLAINTEXT_TYPES, decode,
    decode_wrapper, message_body, message_type, oids,
)
from setmail.asn1 import codes, gateway, purchase
from setmail.asn1.wrapper import Message
from setmail.errors import MalformedMessage

from tests.asn1_samples import (
    MESSAGE_SAMPLES, MESSAGE_VARIANTS, NOW, auth_res_data, pi_head, plaintext_sample, wrapper_for,
)

#: set-protocol.md §4.1 recall order (D-100)
MESSAGE_ORDER = [
    "PInitReq", "PInitRes", "PReq", "PRes", "InqReq", "InqRes", "AuthReq", "AuthRes",
    "AuthRevReq", "AuthRevRes", "CapReq", "CapRes", "CapRevReq", "CapRevRes", "CredReq",
    "CredRes", "CredRevReq", "CredRevRes", "PCertReq", "PCertRes", "BatchAdminReq",
    "BatchAdminRes", "CardCInitReq", "CardCInitRes", "Me-AqCInitReq", "Me-AqCInitRes",
    "RegFormReq", "RegFormRes", "CertReq", "CertRes", "CertInqReq", "CertInqRes", "Error",
    "IssAuthReq", "IssAuthRes", "IssCapReq", "IssCapRes", "IssRevReq", "IssRevRes",
    "IssCredReq", "IssCredRes", "IssCredRevReq", "IssCredRevRes", "IssCapRevReq", "IssCapRevRes",
    "IssClearReq", "IssClearRes", "Statement",
]
SET_COUNT = 33  # SET's own types incl. Error; setmail's issuer leg follows (D-130)

ALL_MESSAGES = [(n, n, MESSAGE_SAMPLES[n]) for n in MESSAGE_TYPES] + [
    (label, n, build) for label, (n, build) in MESSAGE_VARIANTS.items()]


def assert_round_trip(cls, value) -> bytes:
    assert type(value) is cls
    der = value.dump()
    again = decode(cls, der)
    assert again.dump(force=True) == der
    return der


# --- registries ------------------------------------------------------------------------------
def test_message_types_order_and_tags():
    assert list(MESSAGE_TYPES) == MESSAGE_ORDER
    tags = [(name, params["explicit"]) for name, _, params in Message._alternatives]
    assert [t for _, t in tags] == list(range(SET_COUNT - 1)) + [999, *range(900, 915)]
    assert len({name for name, _ in tags}) == len(tags)


def test_mime_types():
    assert list(MIME_TYPES) == MESSAGE_ORDER
    registration = {n for n, t in MIME_TYPES.items() if t == MIME_REGISTRATION}
    assert registration == set(MESSAGE_ORDER[22:32])
    assert MIME_TYPES["Error"] == MIME_TYPES["PInitReq"] == MIME_PAYMENT
    assert set(MIME_TYPES.values()) == {MIME_PAYMENT, MIME_REGISTRATION}


def test_plaintext_types_cover_the_content_types():
    assert set(PLAINTEXT_TYPES) <= set(oids.CONTENT_TYPES)
    missing = set(oids.CONTENT_TYPES) - set(PLAINTEXT_TYPES)
    assert missing == {"CRLNotificationTBS", "CRLNotificationResTBS", "BCIDistributionTBS"}
    assert oids.ct("InqReqData").startswith(oids.SETMAIL_ARC)
    assert oids.CONTENT_TYPE_NAMES[oids.ct("InqReqData")] == "InqReqData"


def test_error_codes_numbered_1_to_20_and_cover_setmail_errors():
    assert sorted(codes.ErrorCode._map) == list(range(1, 21))
    assert codes.ErrorCode._map[1] == "unspecifiedFailure"
    assert codes.ErrorCode._map[20] == "challengeMismatch"
    used = {cls.set_error_code for cls in vars(errors).values()
            if isinstance(cls, type) and issubclass(cls, errors.SetmailError)}
    assert used <= set(codes.ErrorCode._map.values())


def test_status_codes_named_in_the_spec_exist():
    assert {"approved", "declined", "callIssuer", "amountError", "expiredCard",
            "invalidTransaction", "systemError"} <= set(codes.AuthCode._map.values())
    assert codes.CapCode._map[0] == "success"
    assert {"authorizationPerformed", "capturePerformed", "meaninglessRatio", "orderReceived",
            "orderNotReceived", "authorizationDeclined"} <= set(codes.CompletionCode._map.values())
    assert {2, 3, 11, 12}.isdisjoint(codes.RequestType._map)


# --- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("label,name,build", ALL_MESSAGES, ids=[m[0] for m in ALL_MESSAGES])
def test_message_round_trip(label, name, build):
    message = build()
    assert_round_trip(MESSAGE_TYPES[name], message)
    der = wrapper_for(name, message).dump()
    wrapper = decode_wrapper(der)
    assert wrapper.dump(force=True) == der
    assert message_type(wrapper) == name
    body = message_body(wrapper)
    assert type(body) is MESSAGE_TYPES[name] and body.dump() == message.dump()
    assert wrapper["message_header"]["date"].native == NOW


@pytest.mark.parametrize("name", list(PLAINTEXT_TYPES))
def test_plaintext_round_trip(name):
    assert_round_trip(PLAINTEXT_TYPES[name], plaintext_sample(name))


def test_error_is_tagged_999():
    der = wrapper_for("Error", MESSAGE_SAMPLES["Error"]()).dump()
    assert bytes.fromhex("bf8767") in der  # [999] constructed, high-tag-number form


# --- hardening fields and exact shapes -------------------------------------------------------
def _without_context_tag(der: bytes, number: int) -> bytes:
    """``der`` (a SEQUENCE) with its [number] child removed."""
    cls, method, tag, _, contents, _ = parser.parse(der)
    kept, pos = b"", 0
    while pos < len(contents):
        size = parser.peek(contents[pos:])
        child, pos = contents[pos:pos + size], pos + size
        child_class, _, child_tag, *_ = parser.parse(child)
        if (child_class, child_tag) != (2, number):
            kept += child
    return parser.emit(cls, method, tag, kept)


@pytest.mark.parametrize("value,field,tag", [(pi_head, "pe_thumb", 3),
                                             (auth_res_data, "mer_thumb", 2)])
def test_hardening_thumbprints_are_required(value, field, tag):
    sample = value()
    assert len(sample[field].native) == 32
    der = _without_context_tag(sample.dump(), tag)
    assert len(der) == len(sample.dump()) - 34
    with pytest.raises(MalformedMessage):
        decode(type(sample), der)


def test_dual_signature_field_order():
    def names(cls):
        return [n for n, *_ in cls._fields]
    assert names(purchase.PIData) == ["pi_head", "pan_data"]
    assert names(purchase.PIDataUnsigned) == ["pi_head", "pan_token"]
    assert names(purchase.PI_TBS) == ["h_pi_data", "h_oi_data"]
    assert names(purchase.PI_OILink) == ["pi_head", "h_oi_data"]
    assert names(purchase.PIDualSignedTBE) == ["pi_oi_link", "h_pan_data"]
    assert names(purchase.PIDualSigned) == ["pi_signature", "ex_pi_data"]
    assert names(purchase.OIDualSigned) == ["oi_data", "h_pi_data"]
    assert names(purchase.PReqDualSigned) == ["pi_dual_signed", "oi_dual_signed"]
    assert names(purchase.PReqUnsigned) == ["pi_unsigned", "oi_unsigned"]
    assert names(purchase.OIUnsigned) == ["oi_data", "h_pi_data_unsigned"]
    assert [n for n, *_ in purchase.PReq._alternatives] == ["p_req_dual_signed", "p_req_unsigned"]
    assert [n for n, *_ in purchase.PI._alternatives] == [
        "pi_unsigned", "pi_dual_signed", "auth_token"]
    assert names(purchase.PANData) == ["pan", "card_expiry", "pan_secret", "ex_nonce"]
    assert names(purchase.PANToken) == ["pan", "card_expiry", "ex_nonce"]
    assert names(gateway.CapTokenData) == ["auth_rrpid", "auth_amt", "token_opaque"]
    assert names(gateway.AuthReq) == ["auth_req_enc", "pi"]


def test_wrong_message_inside_wrapper_is_malformed():
    with pytest.raises(MalformedMessage):
        decode_wrapper(MESSAGE_SAMPLES["PInitReq"]().dump())
    with pytest.raises(MalformedMessage):
        decode_wrapper(wrapper_for("PInitReq", MESSAGE_SAMPLES["PInitReq"]()).dump() + b"\x00")


def test_asn1_imports_nothing_else_from_setmail():
    code = ("import sys, setmail.asn1; print(sorted(m for m in sys.modules "
            "if m.startswith('setmail') and not m.startswith('setmail.asn1')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['setmail', 'setmail.errors']"


# --- an independent parser ---------------------------------------------------------------------
@pytest.mark.openssl
@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
@pytest.mark.parametrize("label,name,build", ALL_MESSAGES, ids=[m[0] for m in ALL_MESSAGES])
def test_openssl_parses_every_wrapper(label, name, build, tmp_path):
    path = tmp_path / "wrapper.der"
    path.write_bytes(wrapper_for(name, build()).dump())
    out = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Error in encoding" not in out.stdout + out.stderr


def test_wrapper_der_is_make_wrapper_without_reserialising():
    from setmail.asn1.base import MessageHeader, MsgExtensions
    from setmail.asn1.wrapper import make_wrapper, wrapper_der
    from tests.asn1_samples import extensions, header as header_sample
    header, exts = MessageHeader(header_sample()), extensions()
    for name in MESSAGE_TYPES:
        message = MESSAGE_SAMPLES[name]()
        expected = make_wrapper(header, name, message, mw_extensions=exts).dump()
        got = wrapper_der(header, name, message.dump(), MsgExtensions(exts, implicit=1).dump())
        assert got == expected, name
        assert decode_wrapper(got).dump(force=True) == got


def test_header_der_is_the_message_header_encoding():
    import datetime as dt
    import itertools
    from setmail.asn1.base import MessageHeader
    from setmail.asn1.wrapper import header_der
    when = dt.datetime(2026, 11, 27, 9, 5, 7, tzinfo=dt.timezone.utc)
    values = {"lid_c": b"c" * 16, "lid_m": b"m" * 20, "xid": b"x" * 20, "rrpid": b"r" * 200}
    for present in itertools.product((False, True), repeat=4):
        chosen = {k: v for (k, v), p in zip(values.items(), present) if p}
        expected = {"version": 1, "date": when, "sw_ident": "setmail/0.1"}
        ids = {k: chosen[k] for k in ("lid_c", "lid_m", "xid") if k in chosen}
        if ids:
            expected["message_ids"] = ids
        if "rrpid" in chosen:
            expected["rrpid"] = chosen["rrpid"]
        assert header_der(date=when, sw_ident="setmail/0.1", **chosen) == \
            MessageHeader(expected).dump(), present
    with pytest.raises(ValueError):
        header_der(date=when.replace(microsecond=5), sw_ident="x")
