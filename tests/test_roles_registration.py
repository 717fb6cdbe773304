"""Registration round trips between in-memory roles (cardholder, merchant, gateway <-> CA), and
what each side refuses: reused keys, replayed CertReqs, tampered messages, lost mail; and the
mail attacker's moves: forged Errors, forged From, another holder's card, forged or old BCIs,
registrations left open at the CA."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from setmail.asn1 import certmsgs as cm
from setmail.asn1.base import decode
from setmail.asn1.error import Error, ErrorTBS
from setmail.asn1.wrapper import decode_wrapper, make_wrapper, message_body
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import ProtocolError
from setmail.pki import (cardholder_common_name, certified_cardholder_id, create_hierarchy,
                         validate_path, verify_cardholder_id)
from setmail.pki.setext import read_merchant_data
from setmail.roles.base import Command, Inbound, Send, SetTimer, TimerFired
from setmail.roles.ca import MAX_CHALLENGES, CAConfig, CARole
from setmail.roles.ca_issue import code_digest
from setmail.roles.cardholder_reg import CardholderRegConfig, CardholderRegistration
from setmail.roles.certs import spki
from setmail.roles.directory import Directory, Party
from setmail.roles.dispatch import UNCLAIMED, Dispatch
from setmail.roles.ee_reg import EERegConfig, EERegistration
from setmail.roles.refusal import error_wrapper
from tests.roles_net import Net

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
PAN, EXPIRY = "4111111111111111", "202912"
ALICE_2ND_PAN = "5500000000000004"
BOB_PAN, BOB_EXPIRY = "4012888888881881", "202806"
CA, ALICE, BOB, SHOP = ("cca@visa.example", "alice@wallet.example", "bob@wallet.example",
                        "shop@merchant.example")
MALLORY = "mallory@evil.example"
FIELDS = {"CardholderName": "Alice Example", "PostalCode": "75001"}
CODE = "correct horse battery staple"
#: GatewayName: a PCA certifies a gateway under the name agreed with it, its world name (D-181)
MERCHANT_FIELDS = {"MerchantName": "Example Shop", "City": "Paris", "CountryName": "France",
                   "CountryCode": "250", "GatewayName": "shop", "RegistrationCode": CODE}
DIRECTORY = Directory([Party("alice", "cardholder", ALICE), Party("bob", "cardholder", BOB),
                       Party("shop", "merchant", SHOP, mer_id="MER-0001")])
CARDS = {ALICE: frozenset({PAN, ALICE_2ND_PAN}), BOB: frozenset({BOB_PAN})}


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


def cca(hier, **kw):
    return CARole(CAConfig(hier.cca, "cca", CA, hier.trust_store(), directory=DIRECTORY,
                           cards=CARDS, **kw))


def cardholder(net, hier, address=ALICE, **kw):
    return CardholderRegistration(CardholderRegConfig(
        address, hier.trust_store(), key_lookup=lambda key_id: keys_from(net, address).get(key_id),
        **kw))


def cardholder_net(hier, *, pend=False, suite=DEFAULT_SUITE, max_retries=2):
    net = Net({})
    net.roles[CA] = cca(hier, pend_first_request=pend)
    net.roles[ALICE] = cardholder(net, hier, suite=suite, max_retries=max_retries)
    return net


def read_error_send(send: Send):
    """(code, signed?, refusedHash) of an Error we sent."""
    assert send.message_type == "Error"
    error = decode(Error, message_body(decode_wrapper(send.wrapper_der)).dump())
    if error.name == "unsigned_error":
        tbs = error.chosen
    else:
        from setmail.crypto.operators import verify_S
        tbs = decode(ErrorTBS, verify_S(error.chosen.untag().dump(), "ErrorTBS").content)
    return tbs["error_code"].native, error.name == "signed_error", tbs["refused_hash"].native


def error_code_of(send: Send) -> str:
    return read_error_send(send)[0]


def poll(net, address):
    (_, _, name), timer = next((k, t) for k, t in net.timers.items()
                                   if k[0] == address and k[2] == "poll")
    return net.run(address, TimerFired(name, timer.payload), NOW)


def holding(net, message_type):
    """Hold back every ``message_type`` in flight; returns the list they are kept in."""
    held = []
    net.tamper = lambda to, send: held.append(send) if send.message_type == message_type else send
    return held


def deliver(net, frm, send, sender=None):
    return net.run(send.to, Inbound(send.message_type, send.wrapper_der, sender or frm), NOW)


# --- round trips ----------------------------------------------------------------------------------
def test_cardholder_registration_issues_a_certificate_for_this_card_and_key(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args()), NOW)
    assert [t for _, _, t in net.log] == ["CardCInitReq", "CardCInitRes", "RegFormReq", "RegFormRes",
                                          "CertReq", "CertRes"]
    assert all(to in (ALICE, CA) for _, to, _ in net.log)
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
    # nothing secret survives in either side's persisted state; the CA pinned, nothing outstanding
    for state in net.states.values():
        assert PAN not in json.dumps(state) and pan_secret.hex() not in json.dumps(state)
    alice = net.state(ALICE)
    assert "secret" not in alice and "out" not in alice and alice["ca_pin"]["thumb"]
    assert "challenges" not in net.state(CA) and "challenges" not in net.shared[CA]


def test_transaction_keys_are_fresh_unless_named(hier):
    role = cardholder(Net({}), hier)
    event = Command("register", register_args())
    assert role.transaction_key(event) == role.transaction_key(event)  # one draw per command
    assert role.transaction_key(Command("register", register_args())) != role.transaction_key(event)
    assert len(role.transaction_key(event)) == 32
    assert role.transaction_key(Command("register", register_args(lid="0a"))) == "0a"


def test_ca_refuses_a_key_it_already_certified(hier, fixed_key):
    suite = FixedKeySuite("rsa2048", 2048, key=fixed_key)
    net = cardholder_net(hier, suite=suite)
    net.run(ALICE, Command("register", register_args(lid="01")), NOW)
    assert net.states[(ALICE, "01")]["state"] == "DONE"
    net.run(ALICE, Command("register", register_args(lid="02", pan=ALICE_2ND_PAN)), NOW)
    second = net.states[(ALICE, "02")]
    assert second["state"] == "FAILED" and second["error_code"] == "rejectByCA"
    assert "already certified" in second["reason"]


def test_replayed_cert_req_is_refused_with_challenge_mismatch(hier):
    net = cardholder_net(hier)
    captured = []
    net.tamper = lambda frm, send: captured.append(send) or send
    net.run(ALICE, Command("register", register_args()), NOW)
    cert_req = next(s for s in captured if s.message_type == "CertReq")
    out = net.step(CA, Inbound("CertReq", cert_req.wrapper_der, ALICE), NOW)
    (error,) = out.sends
    assert error.to == ALICE and read_error_send(error)[:2] == ("challengeMismatch", True)
    assert net.state(CA)["state"] == "ISSUED"
    net.step(ALICE, Inbound("Error", error.wrapper_der, CA), NOW)  # nothing outstanding: absorbed
    assert net.state(ALICE)["state"] == "DONE"


def test_pending_then_cert_inq_req_then_issued(hier):
    net = cardholder_net(hier, pend=True)
    net.run(ALICE, Command("register", register_args()), NOW)
    assert net.state(ALICE)["state"] == "PENDING" and net.state(CA)["state"] == "PENDING"
    poll(net, ALICE)
    assert [t for _, _, t in net.log][-2:] == ["CertInqReq", "CertInqRes"]
    assert net.state(ALICE)["state"] == "DONE" and net.state(CA)["state"] == "ISSUED"
    assert "secret" not in net.state(CA) and "back_key" not in json.dumps(net.state(CA))
    cert = x509.load_pem_x509_certificate(
        net.effect(ALICE, "wallet.certificate").data["certificate_pem"].encode())
    (key,) = keys_from(net, ALICE).values()
    assert spki(cert.public_key()) == spki(key.public_key())


def test_expired_card_is_refused_by_the_ca(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args(expiry="202501")), NOW)
    state = net.state(ALICE)
    assert state["state"] == "FAILED" and state["error_code"] == "rejectByIssuer"
    assert "secret" not in state


def test_missing_form_field_fails_locally(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args(fields={"CardholderName": "A"})), NOW)
    assert net.state(ALICE)["state"] == "FAILED" and "PostalCode" in net.state(ALICE)["reason"]
    assert [t for _, _, t in net.log][-1] == "RegFormRes" and "secret" not in net.state(ALICE)


# --- tampering ------------------------------------------------------------------------------------
def _flip_in_body(send: Send, back: int) -> Send:
    der = bytearray(send.wrapper_der)
    body = message_body(decode_wrapper(bytes(der))).dump()
    at = bytes(der).find(body) + len(body) - back
    der[at] ^= 0x01
    return Send(send.to, send.message_type, bytes(der), send.in_reply_to)


@pytest.mark.parametrize("message,code", [("CardCInitRes", "signatureFailure"),
                                          ("RegFormRes", "signatureFailure"),
                                          ("CertRes", "unspecifiedFailure")])
def test_a_tampered_answer_is_refused_silently_and_the_requester_keeps_waiting(hier, message,
                                                                                 code):
    net = cardholder_net(hier)
    net.tamper = lambda frm, send: _flip_in_body(send, 3) if send.message_type == message else send
    done = net.run(ALICE, Command("register", register_args()), NOW)
    assert not [s for a, o in done if a == ALICE for s in o.sends if s.message_type == "Error"]
    alice = net.state(ALICE)
    assert alice["state"] != "FAILED" and alice["refused"]["code"] == code
    assert (ALICE, alice["lid"], "retry") in net.timers


@pytest.mark.parametrize("message", ["RegFormReq", "CertReq"])
def test_a_tampered_request_gets_a_signed_error_naming_other_bytes_which_ends_nothing(hier, message):
    net = cardholder_net(hier)
    net.tamper = lambda frm, send: _flip_in_body(send, 3) if send.message_type == message else send
    done = net.run(ALICE, Command("register", register_args()), NOW)
    (error,) = [s for a, o in done if a == CA for s in o.sends if s.message_type == "Error"]
    assert error.to == ALICE and read_error_send(error)[:2] == ("unspecifiedFailure", True)
    alice = net.state(ALICE)  # signed by the pinned CA, but about the tampered bytes: a NUDGE
    assert alice["state"] != "FAILED" and alice["nudged_by"]["code"] == "unspecifiedFailure"
    retry = net.timers[(ALICE, alice["lid"], "retry")]
    assert retry.due == NOW + dt.timedelta(seconds=60)
    net.tamper = None  # the re-send brought forward is the genuine bytes: the registration ends well
    net.run(ALICE, TimerFired("retry", retry.payload), NOW)
    assert net.state(ALICE)["state"] == "DONE"


def test_tampered_header_is_refused_as_bad_message_header(hier):
    net = cardholder_net(hier)

    def swap_rrpid(frm, send):
        if send.message_type != "CardCInitRes":
            return send
        wrapper = decode_wrapper(send.wrapper_der)
        header = wrapper["message_header"].native
        header["rrpid"] = bytes(32)
        der = make_wrapper(header, "CardCInitRes", message_body(wrapper),
                           wrapper["mw_extensions"].native).dump()
        return Send(send.to, send.message_type, der)
    net.tamper = swap_rrpid
    done = net.run(ALICE, Command("register", register_args()), NOW)
    assert [a for a, _ in done] == [ALICE, CA, ALICE] and done[-1][1].sends == ()  # not answered
    assert net.state(ALICE)["refused"]["code"] == "badMessageHeader"


def test_garbage_is_refused_not_raised(hier):
    net = cardholder_net(hier)
    net.roles.pop(CA)
    net.run(ALICE, Command("register", register_args()), NOW)
    # garbage cannot name its transaction, so hand it to the waiting one directly
    waiting = net.state(ALICE)
    out = net.roles[ALICE].step(waiting, Inbound("CardCInitRes", b"\x30\x03\x02\x01\x01", CA), NOW)
    assert out.refused and out.sends == () and out.state["refused"]["code"] == "decodingFailure"
    assert out.state["state"] == waiting["state"] == "CINIT_SENT"
    ca = cca(hier)
    out = ca.step(None, Inbound("CardCInitReq", b"junk", ALICE), NOW, {})
    assert error_code_of(out.sends[0]) == "decodingFailure" and out.state is None
    assert out.sends[0].to == ALICE
    # an Error is never answered with an Error
    assert ca.step(None, Inbound("Error", out.sends[0].wrapper_der, ALICE), NOW, {}).sends == ()


# --- retry ----------------------------------------------------------------------------------------
def test_retry_resends_identical_bytes_then_fails_and_drops_the_secrets(hier):
    net = cardholder_net(hier, max_retries=2)
    net.roles.pop(CA)  # the CA never answers
    first = net.run(ALICE, Command("register", register_args()), NOW)[0][1].sends[0]
    key = next(k for a, k in net.states)
    assert net.state(ALICE)["secret"]["pan"] == PAN
    sent = []
    for _ in range(2):
        out = net.step(ALICE, TimerFired("retry", {"transaction": key}), NOW)
        sent.extend(out.sends)
    assert [s.wrapper_der for s in sent] == [first.wrapper_der] * 2
    out = net.step(ALICE, TimerFired("retry", {"transaction": key}), NOW)
    alice = net.state(ALICE)
    assert out.sends == () and alice["state"] == "FAILED" and "CardCInitReq" in alice["reason"]
    assert "secret" not in alice and "out" not in alice and PAN not in json.dumps(alice)


# --- Errors: only the pinned CA naming our exact bytes ends a request ------------------------------
def test_errors_from_others_or_about_other_bytes_do_not_end_a_registration(hier):
    net = cardholder_net(hier)
    held = holding(net, "RegFormReq")
    net.run(ALICE, Command("register", register_args()), NOW)
    (reg_form_req,) = held
    key = net.state(ALICE)["lid"]
    ours = reg_form_req.wrapper_der

    def error(der=ours, signer=None):
        return Inbound("Error", error_wrapper("unspecifiedFailure", der, now=NOW, signer=signer),
                       CA)
    mca_signer = CAConfig(hier.mca, "mca", CA, hier.trust_store()).signature
    other_bytes = _flip_in_body(reg_form_req, 3).wrapper_der  # same clear header, other bytes
    for forged in (error(), error(signer=mca_signer),
                   error(other_bytes, signer=net.roles[CA].config.signature)):
        out = net.step(ALICE, forged, NOW)
        assert out.refused and out.sends == () and net.state(ALICE)["state"] == "FORM_REQ_SENT"
    # the first NUDGE brought the re-send forward; the next ones (same attempt) did not again
    retry = net.timers[(ALICE, key, "retry")]
    assert retry.due == NOW + dt.timedelta(seconds=60)
    assert net.state(ALICE)["out"]["nudged"] == 0
    # an Error about another request of someone else's changes nothing at all
    unrelated = net.step(ALICE, Inbound("Error", error_wrapper(
        "unspecifiedFailure", b"\x30\x00", now=NOW), CA), NOW)
    assert unrelated.refused and "FORM_REQ_SENT" == net.state(ALICE)["state"]
    # signed by the CA that answered, naming exactly our bytes: the request ends
    net.step(ALICE, error(signer=net.roles[CA].config.signature), NOW)
    alice = net.state(ALICE)
    assert alice["state"] == "FAILED" and alice["error_code"] == "unspecifiedFailure"
    assert "secret" not in alice


def test_dispatch_absorbs_an_error_that_names_nobody(hier):
    net = cardholder_net(hier)
    agent = Dispatch([net.roles[ALICE]], name="cardholder")
    nobody = Inbound("Error", error_wrapper("unspecifiedFailure", b"junk", now=NOW), MALLORY)
    assert agent.route(nobody) is None and agent.transaction_key(nobody) == UNCLAIMED
    out = agent.step(None, nobody, NOW)
    assert out.refused and out.state is None and out.sends == ()
    register = agent.step(None, Command("register", register_args()), NOW)
    named = Inbound("Error", error_wrapper("unspecifiedFailure", register.sends[0].wrapper_der,
                                           now=NOW), MALLORY)
    assert agent.transaction_key(named) == register.transaction
    out = agent.step(None, named, NOW)  # names a registration this agent does not have
    assert out.refused and out.state is None and out.sends == ()
    timer = next(t for t in register.timers if isinstance(t, SetTimer))
    assert timer.payload == {"transaction": register.transaction, "role": "cardholder-registration"}


# --- the CA answers members only, at their directory address -----------------------------------------
def test_the_ca_ignores_strangers_and_answers_members_at_their_directory_address(hier):
    ca = cca(hier)
    init = cardholder(Net({}), hier).step(None, Command("register", register_args()), NOW).sends[0]
    for stranger in (MALLORY, SHOP):  # nobody, and a member of a kind the CCA does not certify
        out = ca.step(None, Inbound("CardCInitReq", init.wrapper_der, stranger), NOW, {})
        assert out.sends == () and out.state is None and "not answered" in out.refused
    # a forged From naming a member: the answer goes to the member's address, not to the forger
    out = ca.step(None, Inbound("CardCInitReq", init.wrapper_der, ALICE.upper()), NOW, {})
    assert [s.to for s in out.sends] == [ALICE] and out.state["state"] == "INIT_SENT"
    assert out.transaction.startswith(ALICE + "|") and out.peer is None
    # a request for a registration that does not exist is not answered either
    out = ca.step(None, Inbound("CertReq", init.wrapper_der, ALICE), NOW, {})
    assert out.sends == () and out.refused


def test_a_forged_cert_req_cannot_spend_the_members_challenge(hier):
    """Mallory, reading the wire, copies alice's clear header ids and the Chall-CA of the signed
    RegFormRes into a CertReq of her own (her key, bob's card) and sends it with From: alice."""
    net = cardholder_net(hier)
    held = holding(net, "RegFormRes")
    net.run(ALICE, Command("register", register_args()), NOW)
    (reg_form_res,) = held
    alice = net.state(ALICE)
    mallory = cardholder(net, hier, address=MALLORY)
    copied = {**alice, "secret": {"pan": BOB_PAN, "expiry": BOB_EXPIRY, "fields": FIELDS}}
    forged = mallory.step(copied, Inbound("RegFormRes", reg_form_res.wrapper_der, CA), NOW, {})
    (cert_req,) = forged.sends
    out = net.step(CA, Inbound("CertReq", cert_req.wrapper_der, ALICE), NOW)
    assert [s.to for s in out.sends] == [ALICE] and out.refused.startswith("rejectByIssuer")
    ca_state = net.state(CA)
    assert ca_state["state"] == "FORM_SENT" and not any(
        c["used"] for c in ca_state["challenges"].values())
    net.tamper = None  # alice's agent expects no CertRes yet; then her own CertReq goes through
    with pytest.raises(ProtocolError):
        net.step(ALICE, Inbound("CertRes", out.sends[0].wrapper_der, CA), NOW)
    assert net.state(ALICE)["state"] == "FORM_REQ_SENT"
    deliver(net, CA, reg_form_res)
    assert net.state(ALICE)["state"] == "DONE" and net.state(CA)["state"] == "ISSUED"


def test_alice_cannot_certify_bobs_card(hier):
    # asked outright: the CCA refers her away at RegFormReq and issues no challenge
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args(pan=BOB_PAN, expiry=BOB_EXPIRY)), NOW)
    alice, ca_state = net.state(ALICE), net.state(CA)
    assert alice["state"] == "FAILED" and alice["error_code"] == "referral"
    assert ca_state["state"] == "INIT_SENT" and not ca_state.get("challenges")
    # her own card at RegFormReq, bob's in the CertReq (a wallet that skips every local check)
    net = cardholder_net(hier)
    held = holding(net, "RegFormRes")
    net.run(ALICE, Command("register", register_args()), NOW)
    key = net.state(ALICE)["lid"]
    net.states[(ALICE, key)]["secret"].update(pan=BOB_PAN, expiry=BOB_EXPIRY)
    net.tamper = None
    deliver(net, CA, held[0])
    alice = net.state(ALICE)
    assert alice["state"] == "FAILED" and alice["error_code"] == "rejectByIssuer"
    assert "not held by alice" in alice["reason"]
    assert net.state(CA)["state"] == "FORM_SENT" and not net.shared.get(CA, {}).get("certified")
    assert not [e for a, e in net.effects if e.kind == "wallet.certificate"]


# --- BrandCRLIdentifier -------------------------------------------------------------------------
def test_a_ca_answer_with_a_rolled_back_or_foreign_bci_is_refused(hier):
    bci = hier.brand.bci["tbs"]
    net = cardholder_net(hier)
    net.shared[ALICE] = {bci["brand_id"].native: bci["sequence_num"].native + 1}
    net.run(ALICE, Command("register", register_args()), NOW)
    alice = net.state(ALICE)
    assert alice["state"] == "CINIT_SENT" and "older" in alice["refused"]["reason"]
    # a BCI of another brand under the same root, signed by that brand's own CA
    other = create_hierarchy(DEFAULT_SUITE, NOW - dt.timedelta(days=1), "MasterCard",
                             root=hier.root)

    @dataclass(frozen=True)
    class ForeignBCI(CAConfig):
        @property
        def bci(self):
            return other.brand.bci
    net = cardholder_net(hier)
    net.roles[CA] = CARole(ForeignBCI(hier.cca, "cca", CA, hier.trust_store(),
                                      directory=DIRECTORY, cards=CARDS))
    net.run(ALICE, Command("register", register_args()), NOW)
    alice = net.state(ALICE)
    assert alice["state"] == "CINIT_SENT" and alice["refused"]["type"] == "CardCInitRes"
    assert ALICE not in net.shared


def test_the_bci_sequence_is_kept_in_shared_state(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args()), NOW)
    bci = hier.brand.bci["tbs"]
    assert net.shared[ALICE] == {bci["brand_id"].native: bci["sequence_num"].native}
    assert net.state(ALICE)["bci_sequence"] == bci["sequence_num"].native


def test_a_revoked_cas_answers_are_refused_when_the_crls_are_configured():
    tree = create_hierarchy(DEFAULT_SUITE, NOW - dt.timedelta(days=1))
    tree.brand.revoke(tree.cca.certificate, NOW - dt.timedelta(hours=1))
    net = Net({})
    net.roles[CA] = cca(tree)
    net.roles[ALICE] = CardholderRegistration(CardholderRegConfig(
        ALICE, tree.trust_store(), crls=tuple(tree.crls())))
    net.run(ALICE, Command("register", register_args()), NOW)
    alice = net.state(ALICE)
    assert alice["state"] == "CINIT_SENT" and alice["refused"]["code"] == "revokedCertificate"


# --- expiry at the CA ----------------------------------------------------------------------------
def _expire(net, address=CA):
    (_, _, name), timer = next((k, t) for k, t in net.timers.items()
                                   if k[0] == address and k[2] == "expire")
    return net.step(address, TimerFired(name, timer.payload), timer.due)


@pytest.mark.parametrize("stop_at", ["RegFormReq", "CertReq", "pended"])
def test_registrations_left_open_expire_at_the_ca(hier, stop_at):
    net = cardholder_net(hier, pend=stop_at == "pended")
    held = holding(net, "CertInqReq" if stop_at == "pended" else stop_at)
    net.run(ALICE, Command("register", register_args()), NOW)
    ca_state = net.state(CA)
    assert net.timers[(CA, next(k for a, k in net.states if a == CA), "expire")].due == \
        NOW + dt.timedelta(days=1)
    out = _expire(net)
    expired = net.state(CA)
    assert expired["state"] == "EXPIRED" and "1 day" in expired["expired"]["reason"]
    assert "challenges" not in expired and "result" not in expired and "secret" not in expired
    if stop_at == "pended":
        assert ca_state["secret"]["back_key"]
    assert ca_state["lid"] == expired["lid"] and out.sends == ()
    assert "challenges" not in net.shared.get(CA, {})
    if stop_at != "pended":  # the late request is not answered
        net.tamper = None
        late = net.step(CA, Inbound(held[0].message_type, held[0].wrapper_der, ALICE), NOW)
        assert late.sends == () and "expired" in late.refused


def test_a_decided_registration_does_not_expire(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args()), NOW)
    key = next(k for a, k in net.states if a == CA)
    assert (CA, key, "expire") not in net.timers  # cancelled when issued
    net.step(CA, TimerFired("expire", {"transaction": key}), NOW + dt.timedelta(days=2))
    assert net.state(CA)["state"] == "ISSUED"


def test_challenges_per_registration_are_bounded_and_replays_reuse_theirs(hier):
    ca = CARole(CAConfig(hier.mca, "mca", CA, hier.trust_store(), directory=DIRECTORY))
    reg = EERegistration(EERegConfig(SHOP, hier.trust_store(), kind="merchant"))
    first = reg.step(None, Command("register", {"ca": CA, "bin": "41111111",
                                                "merchant_id": "MER-0001", "lid": "0b"}), NOW)
    state = ca.step(None, Inbound("Me-AqCInitReq", first.sends[0].wrapper_der, SHOP), NOW,
                    {}).state
    again = ca.step(state, Inbound("Me-AqCInitReq", first.sends[0].wrapper_der, SHOP), NOW, {})
    assert again.state["challenges"] == state["challenges"]  # the same request: the same Chall-CA
    for _ in range(MAX_CHALLENGES - 1):
        other = reg.step(None, Command("register", {"ca": CA, "bin": "41111111",
                                                    "merchant_id": "MER-0001", "lid": "0b"}), NOW)
        state = ca.step(state, Inbound("Me-AqCInitReq", other.sends[0].wrapper_der, SHOP), NOW,
                        {}).state
    assert len(state["challenges"]) == MAX_CHALLENGES
    other = reg.step(None, Command("register", {"ca": CA, "bin": "41111111",
                                                "merchant_id": "MER-0001", "lid": "0b"}), NOW)
    out = ca.step(state, Inbound("Me-AqCInitReq", other.sends[0].wrapper_der, SHOP), NOW, {})
    assert out.refused and out.sends == () and out.state == state  # ignored, nothing evicted
    replay = ca.step(state, Inbound("Me-AqCInitReq", first.sends[0].wrapper_der, SHOP), NOW, {})
    assert replay.state["challenges"] == state["challenges"] and len(replay.sends) == 1


# --- transition tables ----------------------------------------------------------------------------
def _roles(hier):
    trust = hier.trust_store()
    return [CardholderRegistration(CardholderRegConfig(ALICE, trust)),
            EERegistration(EERegConfig(SHOP, trust, kind="merchant")),
            cca(hier), CARole(CAConfig(hier.mca, "mca", CA, trust))]


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
def ee_net(hier, kind, ca_kind, *, pend=False, codes=None, directory=None):
    net = Net({})
    gateway_dir = Directory([Party("shop", "gateway", SHOP)])
    net.roles[CA] = CARole(CAConfig(
        getattr(hier, ca_kind), ca_kind, CA, hier.trust_store(), pend_first_request=pend,
        directory=directory or (DIRECTORY if kind == "merchant" else gateway_dir),
        codes={SHOP: code_digest(CODE)} if codes is None else codes))
    net.roles[SHOP] = EERegistration(EERegConfig(
        SHOP, hier.trust_store(), kind=kind, key_lookup=lambda k: keys_from(net, SHOP).get(k)))
    return net


def ee_register(net, **fields):
    net.run(SHOP, Command("register", {"ca": CA, "bin": "41111111", "merchant_id": "MER-0001",
                                       "fields": {**MERCHANT_FIELDS, **fields}}), NOW)


@pytest.mark.parametrize("kind,ca_kind,cert_type,pend", [("merchant", "mca", "mer", False),
                                                          ("gateway", "pca", "pgwy", True)])
def test_merchant_and_gateway_registration(hier, kind, ca_kind, cert_type, pend):
    net = ee_net(hier, kind, ca_kind, pend=pend)
    ee_register(net)
    if pend:
        assert net.state(SHOP)["state"] == "PENDING"
        poll(net, SHOP)
    assert net.state(SHOP)["state"] == "DONE" and "secret" not in net.state(SHOP)
    assert CODE not in json.dumps(list(net.states.values()))
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


@pytest.mark.parametrize("case,expect", [
    ("wrong code", "registration code does not match"),
    ("no code agreed", "no registration code agreed with shop"),
    ("another merID", "is not the one agreed with shop")])
def test_a_merchant_is_certified_only_with_its_code_and_merid(hier, case, expect):
    directory = (Directory([Party("shop", "merchant", SHOP, mer_id="MER-0002")])
                 if case == "another merID" else None)
    net = ee_net(hier, "merchant", "mca", codes={} if case == "no code agreed" else None,
                 directory=directory)
    ee_register(net, **({"RegistrationCode": "guess"} if case == "wrong code" else {}))
    shop, ca_state = net.state(SHOP), net.state(CA)
    assert shop["state"] == "FAILED" and shop["error_code"] == "rejectByCA"
    assert expect in shop["reason"]
    assert ca_state["state"] == "FORM_SENT" and not any(
        c["used"] for c in ca_state["challenges"].values())  # a forger cannot spend it either


def test_ca_responses_carry_the_bci_and_omit_what_the_requester_holds(hier):
    from setmail.crypto.operators import verify_S
    from setmail.pki.thumbs import thumbprint
    sent = []
    net = cardholder_net(hier)
    net.tamper = lambda to, send: sent.append(send) or send
    net.run(ALICE, Command("register", register_args()), NOW)
    for message, tbs_type in (("CardCInitRes", "CardCInitResTBS"), ("RegFormRes", "RegFormResTBS")):
        res = next(s for s in sent if s.message_type == message)
        signed = verify_S(message_body(decode_wrapper(res.wrapper_der)).dump(), tbs_type)
        held = {thumbprint(c) for c in signed.certificates}
        assert thumbprint(hier.root.certificate) not in held  # alice holds the root
        assert thumbprint(hier.brand.certificate) in held
    tbs = decode(cm.CardCInitResTBS, verify_S(message_body(decode_wrapper(next(
        s for s in sent if s.message_type == "CardCInitRes").wrapper_der)).dump(),
        "CardCInitResTBS").content)
    assert tbs["brand_crl_identifier"].untag().dump() == hier.brand.bci.dump()


# --- the CA factory: what a world's CA knows of its members -----------------------------------
def test_the_ca_factory_gives_each_ca_its_members_and_the_cards_they_hold(tmp_path):
    from setmail.agent.factory import ROLE_FACTORIES, ca_members
    from setmail.world.create import create_world
    world = create_world(tmp_path / "w", smtp_port=2598)
    alice, bob = world.agent("alice").address, world.agent("bob").address
    role = ROLE_FACTORIES["ca"](world, world.agent("cca"))
    config = role.config
    assert {p.name for p in config.directory.parties} == {"alice", "bob"}
    assert config.cards == {alice.lower(): frozenset(c.pan for c in world.cards_of("alice")),
                            bob.lower(): frozenset(c.pan for c in world.cards_of("bob"))}
    assert config.member(world.agent("shop").address) is None
    assert config.expire_after == dt.timedelta(days=1)
    directory, cards, codes = ca_members(world, "mca")
    (shop,) = directory.parties
    # by mail (init's default), the MCA knows the code init agreed with shop: its SHA-256
    code = world.agent("shop").options["registration_code"]
    assert (shop.name, shop.mer_id, cards) == ("shop", "SHOP-0001", {})
    assert codes == {world.agent("shop").address.lower(): code_digest(code)}
    assert ca_members(world, "pca")[2] == {world.agent("gateway").address.lower(): code_digest(
        world.agent("gateway").options["registration_code"])}


# --- renewal (cardRenewalSig, merRenewalBoth, pgwyRenewalBoth) -----------------------------------
def _current(net, address, effect_kind):
    """The signature identity a registration gave ``address`` (what the agent's files hold)."""
    from setmail.crypto.cms import Identity
    got = net.effect(address, effect_kind).data
    sig = got.get("signature") or got
    cert = x509.load_pem_x509_certificate(sig["certificate_pem"].encode())
    chain = tuple(c for c in (x509.load_pem_x509_certificate(p.encode())
                              for p in got["chain_pem"]) if c.subject != c.issuer)
    return Identity(keys_from(net, address)[sig["key_id"]], cert, chain)


def ee_renewal_net(hier, kind="merchant", ca_kind="mca", *, crls=None):
    net = ee_net(hier, kind, ca_kind)
    ee_register(net)
    current = _current(net, SHOP, "ee.certificate")
    ca = net.roles[CA]
    net.roles[CA] = CARole(dataclasses.replace(ca.config, crls=crls))
    net.roles[SHOP] = EERegistration(dataclasses.replace(net.roles[SHOP].config,
                                                         current=lambda: current))
    return net, current


def ee_renew(net, **args):
    fields = {k: v for k, v in MERCHANT_FIELDS.items() if k != "RegistrationCode"}
    net.run(SHOP, Command("renew", {"ca": CA, "bin": "41111111", "merchant_id": "MER-0001",
                                    "fields": fields, **args}), NOW)
    return [s for (a, _), s in net.states.items() if a == SHOP][-1]


@pytest.mark.parametrize("kind,ca_kind,request_type", [("merchant", "mca", "merRenewalBoth"),
                                                        ("gateway", "pca", "pgwyRenewalBoth")])
def test_a_merchant_or_gateway_renews_by_the_certificate_it_holds(hier, kind, ca_kind,
                                                                  request_type):
    net, old = ee_renewal_net(hier, kind, ca_kind)
    sent = []
    net.tamper = lambda to, send: sent.append(send) or send
    net.effects.clear()
    state = ee_renew(net)  # no registration code: the certificate authenticates the request
    assert state["state"] == "DONE" and state["request_type"] == request_type
    got = net.effect(SHOP, "ee.certificate").data
    new = x509.load_pem_x509_certificate(got["signature"]["certificate_pem"].encode())
    assert new.serial_number != old.cert.serial_number and new.subject == old.cert.subject
    assert net.effect(SHOP, "role.reload")
    ca_state = [s for (a, _), s in net.states.items() if a == CA][-1]
    assert ca_state["state"] == "ISSUED" and ca_state["renewal"] is True
    # the CertReq: Enc(old certificate, CA, S(new key, CertReqData)) naming the old one
    from setmail.crypto.operators import open_Enc, verify_S
    from setmail.pki.thumbs import thumbprint
    req = next(s for s in sent if s.message_type == "CertReq")
    opened = open_Enc(message_body(decode_wrapper(req.wrapper_der)).dump(),
                      net.roles[CA].config.key_exchange, "CertReqTBE", "CertReqData")
    assert opened.signed.signer == old.cert
    inner = verify_S(opened.content, "CertReqData")
    data = decode(cm.CertReqData, inner.content)
    assert data["request_type"].native == request_type
    assert data["ee_thumb"].native == thumbprint(old.cert)
    assert spki(inner.signer.public_key()) == spki(new.public_key())  # proof of possession


def test_a_revoked_certificate_is_not_renewed_and_the_ca_says_why():
    hier = create_hierarchy(DEFAULT_SUITE, NOW - dt.timedelta(days=1))
    net, old = ee_renewal_net(hier)
    hier.mca.revoke(old.cert, NOW - dt.timedelta(minutes=5))
    net.roles[CA] = CARole(dataclasses.replace(net.roles[CA].config, crls=tuple(hier.crls())))
    state = ee_renew(net)
    assert state["state"] == "FAILED" and state["error_code"] == "rejectByCA"
    assert f"certificate {old.cert.serial_number:x} is revoked" in state["reason"]
    assert "cannot be renewed" in state["reason"]
    ca_state = [s for (a, _), s in net.states.items() if a == CA][-1]
    assert ca_state["state"] == "FORM_SENT"  # nothing issued, the challenge unspent


def test_a_renewal_needs_a_valid_certificate_of_the_member_itself(hier):
    net, old = ee_renewal_net(hier)
    net.roles[SHOP] = EERegistration(dataclasses.replace(net.roles[SHOP].config,
                                                         current=lambda: None))
    state = ee_renew(net)
    assert state["state"] == "FAILED" and state["reason"] == "no certificate to renew"
    # another merchant's certificate: refused by the MCA (merID), nothing issued
    other = ee_net(hier, "merchant", "mca",
                   directory=Directory([Party("shop", "merchant", SHOP, mer_id="MER-0002")]))
    other.roles[SHOP] = EERegistration(dataclasses.replace(other.roles[SHOP].config,
                                                           current=lambda: old))
    state = ee_renew(other, merchant_id="MER-0002")
    assert state["state"] == "FAILED" and f"{old.cert.serial_number:x} is not shop's" in \
        state["reason"]


def test_a_renewal_not_signed_by_a_certificate_is_refused(hier):
    """A renewal's form has no RegistrationCode; one whose CertReq only the new key signed (no
    certificate being renewed) is refused, not taken for a registration."""
    net, old = ee_renewal_net(hier)
    net.effects.clear()
    held = holding(net, "Me-AqCInitRes")
    ee_renew(net)
    key, state = next((k, s) for k, s in net.states.items() if k[0] == SHOP
                      and s["state"] == "INIT_SENT")
    net.states[key] = {**state, "renewing": None}  # the requester forgets what it renews
    net.tamper = None
    deliver(net, CA, held[0])
    state = net.states[key]
    assert state["state"] == "FAILED" and state["error_code"] == "messageNotSupported"
    assert not [e for a, e in net.effects if a == SHOP and e.kind == "ee.certificate"]


def test_a_cardholder_renews_with_its_card_certificate(hier):
    net = cardholder_net(hier)
    net.run(ALICE, Command("register", register_args()), NOW)
    old = _current(net, ALICE, "wallet.certificate")
    net.roles[ALICE] = CardholderRegistration(dataclasses.replace(
        net.roles[ALICE].config, current=lambda last4, brand: old if last4 == PAN[-4:] else None))
    net.effects.clear()
    net.run(ALICE, Command("renew", register_args()), NOW)
    alice = [s for (a, _), s in net.states.items() if a == ALICE][-1]
    assert alice["state"] == "DONE" and alice["request_type"] == "cardRenewalSig"
    got = net.effect(ALICE, "wallet.certificate").data
    new = x509.load_pem_x509_certificate(got["certificate_pem"].encode())
    assert new.serial_number != old.cert.serial_number
    verify_cardholder_id(new, bytes.fromhex(got["secret"]["pan_secret"]), PAN, EXPIRY)
    # and a card without a certificate has nothing to renew
    net.run(ALICE, Command("renew", register_args(pan=ALICE_2ND_PAN)), NOW)
    assert [s for (a, _), s in net.states.items() if a == ALICE][-1]["reason"] == \
        "no certificate to renew"
