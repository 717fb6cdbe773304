"""The gateway and issuer against the mail attacker of issue 12 (docs/threat-model.md): forged
From addresses, replays with a changed clear header, and a second certified merchant (shop2) that
uses shop's XID, PI, CapToken or issuer answers.  Each test asserts what was sent, to whom, and
that nothing else changed.  Real crypto, the real gateway and issuer roles (tests/roles_net.py)."""
from __future__ import annotations

import datetime as dt

import pytest

from setmail.crypto.cms import Identity
from setmail.crypto.operators import DD
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.pki.setext import read_merchant_data
from setmail.roles.base import Inbound
from setmail.roles.directory import Directory
from setmail.roles.gateway import purchase_key
from setmail.roles.wire import wire, wrap
from setmail.vectors.build import NOW, Parties
from tests.gateway_cast import (BANK, GW, SHOP, SHOP2, Purchase, Shop, approved, auth, auth_res,
                                cap_code, capture, card, directory, error_of, fire_retry,
                                gw_state, issuer, keyed, kept, network, shop, shop2)

EVIL = "attacker@evil.example"


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def rewrap(der: bytes, *, date=NOW + dt.timedelta(seconds=7), rrpid=None, **ids) -> bytes:
    """The same SET message under another clear MessageHeader (no signature covers it)."""
    parts = wire(Inbound("?", der, EVIL))
    header = parts.header
    kept = {k: v for k, v in (header["message_ids"] or {}).items() if v is not None}
    return wrap(parts.type, parts.body, now=date, rrpid=rrpid or header["rrpid"],
                **{**kept, **ids})


def quiet(net) -> tuple:
    """Everything a replay must leave as it was: states (but for a note of a refusal), shared
    state, timers, effects."""
    states = {k: {f: v for f, v in s.items() if f != "refused"} for k, s in net.states.items()}
    return (states, dict(net.shared), dict(net.timers), list(net.effects))


# --- where answers go ----------------------------------------------------------------------------
def test_auth_res_goes_to_the_directory_address_whatever_from_says(p):
    net = network(p)
    pur = Purchase(p)
    done = auth(net, pur.auth_req(), sender=EVIL)
    assert auth_res(p, done)[0] == "approved"  # to SHOP, the directory's address of shop-0001
    assert not [s for _, out in done for s in out.sends if s.to == EVIL]
    assert done[0][1].peer == SHOP and gw_state(net, pur)["merchant"] == SHOP
    assert [(frm, to, t) for frm, to, t in net.log] == [
        (GW, BANK, "IssAuthReq"), (BANK, GW, "IssAuthRes"), (GW, SHOP, "AuthRes")]


def revoked_shop(p) -> Shop:
    """shop's merID on a certificate the MCA revoked (a stolen old key, say)."""
    key, kex_key = DEFAULT_SUITE.generate_key(), DEFAULT_SUITE.generate_key()
    info = read_merchant_data(p.merchant_sig.cert)
    sig, kex = p.tree.issue_merchant(key.public_key(), kex_key.public_key(), info, NOW)
    p.tree.mca.revoke(sig, NOW)
    chain = p.merchant_sig.chain
    return Shop(Identity(key, sig, chain), Identity(kex_key, kex, chain), Parties.MER_ID, SHOP)


def test_an_unauthenticated_request_is_refused_only_to_the_claimed_merchants_address(p):
    bad = revoked_shop(p)
    net = network(p, crls=tuple(p.tree.crls()))
    der = Purchase(p, merchant=bad).auth_req()
    out = net.step(GW, Inbound("AuthReq", der, EVIL), NOW)
    (send,) = out.sends
    assert send.to == SHOP and out.peer is None and "revoked" in out.refused
    assert error_of(p, send) == ("revokedCertificate", Inbound("AuthReq", der, EVIL).digest)
    assert not net.states
    # the genuine merchant, same gateway: fine
    assert auth_res(p, auth(net, Purchase(p).auth_req()))[0] == "approved"


def test_a_merchant_outside_the_directory_gets_nothing(p):
    net = network(p, directory=Directory([q for q in directory(p).parties if q.address != SHOP2]))
    der = Purchase(p, merchant=shop2(p)).auth_req()
    out = net.step(GW, Inbound("AuthReq", der, SHOP2), NOW)
    assert out.sends == () and out.state is None and "not in the directory" in out.refused
    assert not net.states


# --- another merchant and this merchant's XID ----------------------------------------------------
def test_another_merchant_cannot_burn_the_xid(p):
    """shop2 sends shop's PI for shop's XID (refused: the PI names shop) and then a purchase of its
    own under the same XID (approved): shop's genuine AuthReq is still authorised."""
    net = network(p)
    pur = Purchase(p)
    stolen = Purchase(p, xid=pur.xid, lid_c=pur.lid_c, merchant=shop2(p))
    der = stolen.auth_req(pi=pur.pi, h_oi=DD("OIData", pur.oi), hod2=pur.hod,
                          trans_ids=pur.trans_ids)
    assert auth_res(p, auth(net, der, sender=SHOP), shop2(p))[0] == "piAuthMismatch"
    assert not net.states  # nothing spent, nothing asked
    own = Purchase(p, xid=pur.xid, merchant=shop2(p))
    assert auth_res(p, auth(net, own.auth_req()), shop2(p))[0] == "approved"
    assert auth_res(p, auth(net, pur.auth_req()))[0] == "approved"
    assert gw_state(net, pur)["mer_id"] == Parties.MER_ID
    assert gw_state(net, own)["mer_id"] == "shop-0002"


def test_two_merchants_one_xid_are_two_purchases_at_gateway_and_issuer(p):
    net, pur, token = approved(p)
    net, other, other_token = approved(p, net, Purchase(p, xid=pur.xid, merchant=shop2(p),
                                                        amount=500))
    assert purchase_key(pur.xid, "shop-0001") != purchase_key(pur.xid, "shop-0002")
    ours, theirs = keyed(net, BANK, pur), keyed(net, BANK, other)
    assert (ours["state"], ours["held"], theirs["state"], theirs["held"]) == (
        "HELD", 1234, "HELD", 500)
    assert ours["approval_code"] != theirs["approval_code"]
    assert card(net) == {"held": 1734, "posted": 0}
    assert [e.kind for a, e in net.effects if a == BANK] == ["ledger.hold", "ledger.hold"]
    assert cap_code(p, capture(net, other.cap_req(other_token)), shop2(p)) == ("success", 500)
    assert (keyed(net, BANK, other)["state"], keyed(net, BANK, pur)["state"]) == ("POSTED", "HELD")
    assert cap_code(p, capture(net, pur.cap_req(token))) == ("success", 1234)
    assert card(net) == {"held": 0, "posted": 1734}


def test_an_issuer_answer_cannot_be_steered_to_another_merchants_purchase(p):
    """Same XID at shop and shop2, both waiting on the issuer; shop's (approving) IssAuthRes under
    shop2's header (tag and RRPID copied from shop2's IssAuthReq) is refused: it names shop (DE 42)."""
    net = network(p, with_issuer=False)
    pur = Purchase(p)
    other = Purchase(p, xid=pur.xid, merchant=shop2(p))
    ours = net.step(GW, Inbound("AuthReq", pur.auth_req(), SHOP), NOW).sends[0]
    theirs = net.step(GW, Inbound("AuthReq", other.auth_req(), SHOP2), NOW).sends[0]
    answer = issuer(p).step(None, Inbound("IssAuthReq", ours.wrapper_der, GW), NOW, {}).sends[0]
    head = wire(Inbound("IssAuthReq", theirs.wrapper_der, GW)).header
    steered = rewrap(answer.wrapper_der, rrpid=head["rrpid"], lid_m=head["message_ids"]["lid_m"])
    before = quiet(net)
    out = net.step(GW, Inbound("IssAuthRes", steered, BANK), NOW)
    assert out.sends == () and "another merchant" in out.refused
    assert out.transaction == purchase_key(pur.xid, "shop-0002")
    assert quiet(net)[:3] == before[:3] and gw_state(net, other)["state"] == "ISSUER_AUTH"
    # the genuine answer, to the genuine purchase
    net.run(GW, Inbound("IssAuthRes", answer.wrapper_der, BANK), NOW)
    assert (gw_state(net, pur)["state"], gw_state(net, other)["state"]) == (
        "AUTHORIZED", "ISSUER_AUTH")


# --- repeats with a changed clear header ---------------------------------------------------------
def test_a_replayed_auth_req_with_another_header_changes_nothing_and_sends_nothing(p):
    net = network(p, with_issuer=False)
    pur = Purchase(p)
    der = pur.auth_req()
    net.step(GW, Inbound("AuthReq", der, SHOP), NOW)  # waiting on the issuer
    for state in ("ISSUER_AUTH", "AUTHORIZED"):
        before = quiet(net)
        out = net.step(GW, Inbound("AuthReq", rewrap(der), EVIL), NOW)
        assert (out.sends, out.refused, out.peer) == ((), None, SHOP)
        assert quiet(net) == before and gw_state(net, pur)["state"] == state
        net.roles[BANK] = issuer(p)
        if state == "ISSUER_AUTH":
            fire_retry(net)  # the IssAuthReq re-sent, answered this time
    assert [t for _, _, t in net.log].count("AuthRes") == 1
    # a header naming another request is no repeat: refused with a signed Error to shop
    before = gw_state(net, pur)
    out = net.step(GW, Inbound("AuthReq", rewrap(der, rrpid=bytes(16)), EVIL), NOW)
    (send,) = out.sends
    assert send.to == SHOP and error_of(p, send)[0] == "badMessageHeader"
    assert {k: v for k, v in gw_state(net, pur).items() if k != "refused"} == before


def test_a_replayed_cap_req_with_another_header_changes_nothing_and_sends_nothing(p):
    net, pur, token = approved(p)
    bank = net.roles.pop(BANK)
    der = pur.cap_req(token)
    capture(net, der)
    for state in ("ISSUER_CAP", "CAPTURED"):
        before = quiet(net)
        out = net.step(GW, Inbound("CapReq", rewrap(der), EVIL), NOW)
        assert (out.sends, out.refused, out.peer) == ((), None, SHOP)
        assert quiet(net) == before and gw_state(net, pur)["state"] == state
        net.roles[BANK] = bank
        if state == "ISSUER_CAP":
            fire_retry(net)  # the re-sent IssCapReq, answered this time
    assert cap_code(p, capture(net, pur.cap_req(token))) == ("duplicateRequest", 0)  # new RRPID


# --- the CapToken ---------------------------------------------------------------------------------
def test_a_cap_token_used_by_another_merchant_is_refused(p):
    net, pur, token = approved(p)
    thief = Purchase(p, xid=pur.xid, merchant=shop2(p))
    thief.auth_rrpid = pur.auth_rrpid
    # shop2 has no purchase under this XID: unknown, and nothing is created
    assert cap_code(p, capture(net, thief.cap_req(token), sender=SHOP), shop2(p)) == (
        "unknownXID", 0)
    assert gw_state(net, thief) is None
    # shop2 with its own authorisation of the same XID: shop's token is not its token
    net, thief, _ = approved(p, net, Purchase(p, xid=pur.xid, merchant=shop2(p)))
    before = dict(gw_state(net, thief))
    assert cap_code(p, capture(net, thief.cap_req(token, auth_rrpid=pur.auth_rrpid)),
                    shop2(p)) == ("invalidCapToken", 0)
    assert kept(gw_state(net, thief)) == kept(before)
    assert gw_state(net, pur)["state"] == "AUTHORIZED"
    assert cap_code(p, capture(net, pur.cap_req(token))) == ("success", 1234)


def test_a_cap_req_signed_by_another_merchant_for_this_purchase_is_refused(p):
    """shop2 signs a CapReq naming shop's purchase and token: it lands on shop2's own key, so it
    can never touch shop's (check_capture's merID check stays as a second lock)."""
    net, pur, token = approved(p)
    der = pur.cap_req(token, merchant=shop2(p))
    assert cap_code(p, capture(net, der, sender=SHOP), shop2(p)) == ("unknownXID", 0)
    assert gw_state(net, pur)["state"] == "AUTHORIZED"
    assert gw_state(net, Purchase(p, xid=pur.xid, merchant=shop2(p))) is None
    assert shop(p).mer_id == Parties.MER_ID
