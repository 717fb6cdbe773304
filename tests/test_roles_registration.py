"""Registration round trips between in-memory roles (cardholder, merchant, gateway <-> CA), and
what each side refuses: reused keys, replayed CertReqs, tampered messages, lost mail."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from setmail.asn1 import certmsgs as cm
from setmail.asn1.base import decode
from setmail.asn1.error import Error, ErrorTBS
from setmail.asn1.wrapper import decode_wrapper, message_body
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import ProtocolError
from setmail.pki import (cardholder_common_name, certified_cardholder_id, create_hierarchy,
                         validate_path, verify_cardholder_id)
from setmail.pki.setext import read_merchant_data
from setmail.roles.base import Command, Inbound, Send, TimerFired
from setmail.roles.ca import CAConfig, CARole
from setmail.roles.cardholder_reg import CardholderRegConfig, CardholderRegistration
from setmail.roles.certs import spki
from setmail.roles.ee_reg import EERegConfig, EERegistration
from tests.roles_net import Net

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
PAN, EXPIRY = "4111111111111111", "202912"
CA, ALICE, SHOP = "cca@visa.example", "alice@wallet.example", "shop@merchant.example"
FIELDS = {"CardholderName": "Alice Example", "PostalCode": "75001"}
MERCHANT_FIELDS = {"MerchantName": "Example Shop", "City": "Paris", "CountryName": "France",
                   "CountryCode": "250", "GatewayName": "Example Gateway"}


@pytest.fixture(scope="module")
def hier():
    return create_hierarchy(DEFAULT_SUITE, NOW - dt.timedelta(days=1))


@pytest.fixture(scope="module")
def fixed_key():
    return DEFAULT_SUITE.generate_key()


@dataclass(frozen=True)
class FixedKeySuite(CryptoSuite):
    """A suite whose 'fresh' key pair is always the same: to ask a CA twice for one key."""

    key: object = None

    def generate_key(self):
        return self.key


def register_args(**kw):
    return {"pan": PAN, "expiry": EXPIRY, "ca": CA, "brand": "Visa", "fields": FIELDS, **kw}


def keys_from(net, address):
    """The private keys the roles handed to their agent (wallet.key / ee.key effects)."""
    return {e.data["key_id"]: load_pem_private_key(e.data["secret"]["private_key_pem"].encode(), None)
            for a, e in net.effects if a == address and e.kind in ("wallet.key", "ee.key")}


def cardholder_net(hier, *, pend=False, suite=DEFAULT_SUITE, max_retries=2):
    net = Net({})
    net.roles[CA] = CARole(CAConfig(hier.cca, "cca", CA, hier.trust_store(), pend_first_request=pend))
    net.roles[ALICE] = CardholderRegistration(CardholderRegConfig(
        ALICE, hier.trust_store(), suite=suite, max_retries=max_retries,
        key_lookup=lambda key_id: keys_from(net, ALICE).get(key_id)))
    return net


def error_code_of(send: Send) -> str:
    assert send.message_type == "Error"
    error = decode(Error, message_body(decode_wrapper(send.wrapper_der)).dump())
    if error.name == "unsigned_error":
        return error.chosen["error_code"].native
    from setmail.crypto.operators import verify_S
    signed = verify_S(error.chosen.untag().dump(), "ErrorTBS")
    return decode(ErrorTBS, signed.content)["error_code"].native


def poll(net, address):
    (addr, tx, name), timer = next((k, t) for k, t in net.timers.items()
                                   if k[0] == address and k[2] == "poll")
    return net.run(address, TimerFired(name, timer.payload), NOW)


# --- round trips ----------------------------------------------------------------------------------
def test_cardholder_registration_issues_a_certificate_for_this_card_and_key(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args()), NOW)
    assert [t for _, _, t in net.log] == ["CardCInitReq", "CardCInitRes", "RegFormReq", "RegFormRes",
                                          "CertReq", "CertRes"]
    assert net.state(ALICE)["state"] == "DONE" and net.state(CA)["state"] == "ISSUED"
    got = net.effect(ALICE, "wallet.certificate").data
    cert = x509.load_pem_x509_certificate(got["certificate_pem"].encode())
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in got["chain_pem"]]
    path = validate_path(cert, chain, hier.trust_store(), now=NOW, expected_type="card",
                         key_usage="digital_signature")
    assert path.certificate_types == {"card"}
    (key,) = keys_from(net, ALICE).values()
    assert spki(cert.public_key()) == spki(key.public_key())
    der = cert.public_bytes(Encoding.DER)
    assert PAN.encode() not in der and PAN[-10:].encode() not in der and PAN not in str(cert.subject)
    pan_secret = bytes.fromhex(got["secret"]["pan_secret"])
    verify_cardholder_id(cert, pan_secret, PAN, EXPIRY)
    assert certified_cardholder_id(cert) == cardholder_common_name(pan_secret, PAN, EXPIRY)
    # nothing secret survives in either side's persisted state
    for state in net.states.values():
        assert PAN not in json.dumps(state) and pan_secret.hex() not in json.dumps(state)
    assert "secret" not in net.state(ALICE)


def test_ca_refuses_a_key_it_already_certified(hier, fixed_key):
    suite = FixedKeySuite("rsa2048", 2048, key=fixed_key)
    net = cardholder_net(hier, suite=suite)
    net.run(ALICE, Command("register", register_args(lid="01")), NOW)
    assert net.states[(ALICE, "01")]["state"] == "DONE"
    net.run(ALICE, Command("register", register_args(lid="02", pan="5500000000000004")), NOW)
    second = net.states[(ALICE, "02")]
    assert second["state"] == "FAILED" and second["error_code"] == "rejectByCA"
    assert "already certified" in second["reason"]


def test_replayed_cert_req_is_refused_with_challenge_mismatch(hier):
    net = cardholder_net(hier)
    captured = []
    net.tamper = lambda frm, send: captured.append(send) or send
    net.run(ALICE, Command("register", register_args()), NOW)
    cert_req = next(s for s in captured if s.message_type == "CertReq")
    ca_state = dict(net.state(CA))
    out = net.step(CA, Inbound("CertReq", cert_req.wrapper_der, ALICE), NOW)
    assert error_code_of(out.sends[0]) == "challengeMismatch"
    assert net.state(CA)["state"] == ca_state["state"] == "ISSUED"


def test_pending_then_cert_inq_req_then_issued(hier):
    net = cardholder_net(hier, pend=True)
    net.run(ALICE, Command("register", register_args()), NOW)
    assert net.state(ALICE)["state"] == "PENDING" and net.state(CA)["state"] == "PENDING"
    poll(net, ALICE)
    assert [t for _, _, t in net.log][-2:] == ["CertInqReq", "CertInqRes"]
    assert net.state(ALICE)["state"] == "DONE" and net.state(CA)["state"] == "ISSUED"
    cert = x509.load_pem_x509_certificate(
        net.effect(ALICE, "wallet.certificate").data["certificate_pem"].encode())
    (key,) = keys_from(net, ALICE).values()
    assert spki(cert.public_key()) == spki(key.public_key())


def test_expired_card_is_refused_by_the_ca(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args(expiry="202501")), NOW)
    state = net.state(ALICE)
    assert state["state"] == "FAILED" and state["error_code"] == "rejectByIssuer"


def test_missing_form_field_fails_locally(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args(fields={"CardholderName": "A"})), NOW)
    assert net.state(ALICE)["state"] == "FAILED" and "PostalCode" in net.state(ALICE)["reason"]
    assert [t for _, _, t in net.log][-1] == "RegFormRes"


# --- tampering ------------------------------------------------------------------------------------
def _flip_in_body(send: Send, back: int) -> Send:
    der = bytearray(send.wrapper_der)
    body = message_body(decode_wrapper(bytes(der))).dump()
    at = bytes(der).find(body) + len(body) - back
    der[at] ^= 0x01
    return Send(send.to, send.message_type, bytes(der), send.in_reply_to)


# (message tampered, receiver, error code the receiver answers with)
TAMPER = [
    ("CardCInitRes", ALICE, "signatureFailure"),
    ("RegFormReq", CA, "unspecifiedFailure"),     # AES-GCM tag fails: DecryptionFailed
    ("RegFormRes", ALICE, "signatureFailure"),
    ("CertReq", CA, "unspecifiedFailure"),
    ("CertRes", ALICE, "unspecifiedFailure"),
]


@pytest.mark.parametrize("message,receiver,code", TAMPER, ids=[t[0] for t in TAMPER])
def test_tampered_message_is_refused_with_an_error(hier, message, receiver, code):
    net = cardholder_net(hier)
    net.tamper = lambda frm, send: _flip_in_body(send, 3) if send.message_type == message else send
    done = net.run(ALICE, Command("register", register_args()), NOW)
    errors = [s for addr, out in done if addr == receiver for s in out.sends if s.message_type == "Error"]
    assert len(errors) == 1 and error_code_of(errors[0]) == code
    alice = net.state(ALICE)
    if receiver == CA:   # the CA's Error reaches Alice, whose request it names: FAILED
        assert alice["state"] == "FAILED" and alice["error_code"] == code
    else:                # Alice refuses the forgery and keeps waiting for the genuine answer
        assert alice["state"] != "FAILED" and alice["refused"]["code"] == code
        assert (ALICE, next(k for a, k in net.states if a == ALICE), "retry") in net.timers


def test_tampered_header_is_refused_as_bad_message_header(hier):
    net = cardholder_net(hier)

    def swap_rrpid(frm, send):
        if send.message_type != "CardCInitRes":
            return send
        wrapper = decode_wrapper(send.wrapper_der)
        header = wrapper["message_header"].native
        header["rrpid"] = bytes(32)
        from setmail.asn1.wrapper import make_wrapper
        der = make_wrapper(header, "CardCInitRes", message_body(wrapper),
                           wrapper["mw_extensions"].native).dump()
        return Send(send.to, send.message_type, der)
    net.tamper = swap_rrpid
    done = net.run(ALICE, Command("register", register_args()), NOW)
    (err,) = [s for a, o in done if a == ALICE for s in o.sends if s.message_type == "Error"]
    assert error_code_of(err) == "badMessageHeader"


def test_garbage_is_answered_not_raised(hier):
    net = cardholder_net(hier)
    net.roles.pop(CA)
    net.run(ALICE, Command("register", register_args()), NOW)
    # garbage cannot name its transaction, so hand it to the waiting one directly
    waiting = net.state(ALICE)
    out = net.roles[ALICE].step(waiting, Inbound("CardCInitRes", b"\x30\x03\x02\x01\x01", CA), NOW)
    assert error_code_of(out.sends[0]) == "decodingFailure"
    assert out.state["state"] == waiting["state"] == "CINIT_SENT"
    ca = CARole(CAConfig(hier.cca, "cca", CA, hier.trust_store()))
    out = ca.step(None, Inbound("CardCInitReq", b"junk", ALICE), NOW, {})
    assert error_code_of(out.sends[0]) == "decodingFailure" and out.state is None
    # an Error is never answered with an Error
    assert ca.step(None, Inbound("Error", out.sends[0].wrapper_der, ALICE), NOW, {}).sends == ()


# --- retry ----------------------------------------------------------------------------------------
def test_retry_resends_identical_bytes_then_fails(hier):
    net = cardholder_net(hier, max_retries=2)
    net.roles.pop(CA)  # the CA never answers
    first = net.run(ALICE, Command("register", register_args()), NOW)[0][1].sends[0]
    key = next(k for a, k in net.states)
    sent = []
    for _ in range(2):
        out = net.step(ALICE, TimerFired("retry", {"transaction": key}), NOW)
        sent.extend(out.sends)
    assert [s.wrapper_der for s in sent] == [first.wrapper_der] * 2
    out = net.step(ALICE, TimerFired("retry", {"transaction": key}), NOW)
    assert out.sends == () and net.state(ALICE)["state"] == "FAILED"
    assert "CardCInitReq" in net.state(ALICE)["reason"]


# --- transition tables ----------------------------------------------------------------------------
def _roles(hier):
    trust = hier.trust_store()
    return [CardholderRegistration(CardholderRegConfig(ALICE, trust)),
            EERegistration(EERegConfig(SHOP, trust, kind="merchant")),
            CARole(CAConfig(hier.cca, "cca", CA, trust)), CARole(CAConfig(hier.mca, "mca", CA, trust))]


def test_every_listed_transition_has_a_handler_and_unlisted_events_are_refused(hier):
    for role in _roles(hier):
        for state, events in role.TRANSITIONS.items():
            for event in events:
                name = "on_" + "".join(c if c.isalnum() else "_" for c in event)
                assert callable(getattr(role, name, None)), (role.name, state, event)
            for stray in (Inbound("PRes", b"", CA), Command("buy"), TimerFired("nope")):
                if stray.event not in events:
                    with pytest.raises(ProtocolError):
                        role.step({"state": state}, stray, NOW, {})


# --- merchant and gateway -------------------------------------------------------------------------
@pytest.mark.parametrize("kind,ca_kind,cert_type,pend", [("merchant", "mca", "mer", False),
                                                          ("gateway", "pca", "pgwy", True)])
def test_merchant_and_gateway_registration(hier, kind, ca_kind, cert_type, pend):
    net = Net({})
    ca = getattr(hier, ca_kind)
    net.roles[CA] = CARole(CAConfig(ca, ca_kind, CA, hier.trust_store(), pend_first_request=pend))
    net.roles[SHOP] = EERegistration(EERegConfig(
        SHOP, hier.trust_store(), kind=kind, key_lookup=lambda k: keys_from(net, SHOP).get(k)))
    net.run(SHOP, Command("register", {"ca": CA, "bin": "41111111", "merchant_id": "MER-0001",
                                       "fields": MERCHANT_FIELDS}), NOW)
    if pend:
        assert net.state(SHOP)["state"] == "PENDING"
        poll(net, SHOP)
    assert net.state(SHOP)["state"] == "DONE"
    got = net.effect(SHOP, "ee.certificate").data
    keys = {e.data["usage"]: keys_from(net, SHOP)[e.data["key_id"]]
            for a, e in net.effects if e.kind == "ee.key"}
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in got["chain_pem"]]
    for usage, key_usage in (("signature", "digital_signature"), ("key_exchange", "key_encipherment")):
        cert = x509.load_pem_x509_certificate(got[usage]["certificate_pem"].encode())
        validate_path(cert, chain, hier.trust_store(), now=NOW, expected_type=cert_type,
                      key_usage=key_usage)
        assert spki(cert.public_key()) == spki(keys[usage].public_key())
        if kind == "merchant":
            assert read_merchant_data(cert).mer_id == "MER-0001"


def test_ca_responses_carry_the_bci_and_omit_what_the_requester_holds(hier):
    from setmail.crypto.operators import verify_S
    from setmail.pki.thumbs import thumbprint
    sent = []
    net = cardholder_net(hier)
    net.tamper = lambda to, send: sent.append(send) or send
    net.run(ALICE, Command("register", register_args()), NOW)
    init_res = next(s for s in sent if s.message_type == "CardCInitRes")
    body = message_body(decode_wrapper(init_res.wrapper_der)).dump()
    signed = verify_S(body, "CardCInitResTBS")
    held = {thumbprint(c) for c in signed.certificates}
    assert thumbprint(hier.root.certificate) not in held  # alice listed the root in her Thumbs
    assert thumbprint(hier.brand.certificate) in held
    tbs = decode(cm.CardCInitResTBS, signed.content)
    assert tbs["brand_crl_identifier"].untag().dump() == hier.brand.bci.dump()
    state = next(s for (a, _), s in net.states.items() if a == ALICE)
    assert state["state"] == "DONE" and state["bci_sequence"] == hier.brand.bci["tbs"]["sequence_num"].native
