"""The attacker at role level (tests/adversary/roles_world.py): the property that no mix of
attacker mail changes a genuine purchase's outcome, the AcqCardMsg pin, and expiry (time moves
only here).
"""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from setmail.asn1 import purchase as pu
from setmail.crypto.operators import S, verify_S
from setmail.errors import SetmailError
from tests.adversary.harness import OUTSIDER
from tests.adversary.roles_world import RoleWorld, buy, completed, send_to
from tests.adversary.wire import flip_body, rewrap, split, wrap

ATTACKS = ("replay", "replay_elsewhere", "unsigned_error", "flip", "forged_from", "rewrap",
           "signed_error")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return RoleWorld(tmp_path_factory.mktemp("roles") / "world")


def _attack(world, net, data, kind: str) -> None:
    """One attacker mail, built from what the attacker saw on the wire (``net.seen``)."""
    to_seen, event = net.seen[data.draw(st.integers(0, len(net.seen) - 1), label="seen mail")]
    parties = sorted(world.roles)
    target = data.draw(st.sampled_from(parties), label="to")
    sender = data.draw(st.sampled_from([*parties, OUTSIDER]), label="from")
    forge, der = world.forge, event.wrapper_der
    if kind == "replay":
        send_to(net, to_seen, der, event.sender)
    elif kind == "replay_elsewhere":
        send_to(net, target, der, sender)
    elif kind in ("unsigned_error", "signed_error"):
        # signed by certified parties that are no counterpart of the genuine purchases (their
        # own merchant may refuse them: that is no attack)
        signer = None if kind == "unsigned_error" else {
            "gateway2": forge.party("gateway2"), "evilshop": forge.evilshop,
            "evilgw": forge.evilgw}[data.draw(st.sampled_from(["gateway2", "evilshop",
                                                               "evilgw"]))].sig
        try:
            error = forge.error(about=der, signer=signer)
        except SetmailError:
            error = forge.error(bad_wrapper=der[:64], signer=signer)
        back = event.sender if event.sender in world.roles else to_seen
        send_to(net, data.draw(st.sampled_from([to_seen, back]), label="error to"), error, sender)
    elif kind == "flip":
        at = data.draw(st.integers(1, 200), label="flip at")
        try:
            der = flip_body(der, at) if at < len(split(der).body) else der
        except SetmailError:
            pass  # already damaged: sent again as it is
        send_to(net, to_seen, der, sender)
    elif kind == "forged_from":
        send_to(net, to_seen, der, sender)
    else:
        try:
            der = rewrap(der, rrpid=os.urandom(20))
        except SetmailError:
            pass
        send_to(net, to_seen, der, event.sender)


@settings(max_examples=25, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_attacker_mail_never_changes_a_genuine_purchase(world, data):
    """Two purchases (alice at shop, captured; bob at shop2, authorised); before each genuine
    mail is delivered, the attacker may send up to three mails of any kind.  When the mail in
    flight runs out, both purchases ended as they end without the attacker."""
    net = world.net()
    genuine = [(*buy(world, net, "alice", "shop", 1234), "alice", "shop", 1234),
               (*buy(world, net, "bob", "shop2", 2500), "bob", "shop2", 2500)]
    steps = 0
    while net.pending:
        steps += 1
        assert steps < 400, f"mail loop: {net.log[-20:]}"
        if net.seen:
            for kind in data.draw(st.lists(st.sampled_from(ATTACKS), max_size=3), label="attacks"):
                _attack(world, net, data, kind)
        index = data.draw(st.integers(0, len(net.pending) - 1), label="reorder")
        net.pending.rotate(-index)
        to, event = net.pending.popleft()
        net.pending.rotate(index)
        net.deliver(to, event)
    for xid, pan, holder, merchant, minor in genuine:
        problems = completed(world, net, xid, holder, merchant, pan, minor)
        assert not problems, f"{holder}@{merchant}: {problems}\nattacks: {net.attacks}"


def test_acq_card_msg_signed_by_another_gateway_is_refused(world):
    """The merchant relays an AcqCardMsg it cannot read: one under the cardholder's back key but
    signed by gateway2 (not the gateway PInitRes named) must not reach the cardholder's record."""
    net = world.net()
    alice, shop = world.address("alice"), world.address("shop")
    xid, _ = buy(world, net, "alice", "shop", 1234)
    held = net.run(hold=lambda to, ev: to == alice and ev.message_type == "PRes")
    assert len(held) == 1, net.log
    back_key = bytes.fromhex(net.state_of(alice, xid)["secret"]["back_key"])
    _, pres = held[0]
    signed = verify_S(split(pres.wrapper_der).body, "PResData")
    data = pu.PResData.load(signed.content)
    forged = world.forge.acq_card_msg(world.forge.party("gateway2"), back_key, "05 do not honour")
    data["p_res_payload_seq"][0]["results"]["acq_card_msg"] = pu.AcqCardMsg.load(forged)
    body = S(world.forge.party("shop").sig, "PResData", data.dump(force=True),
             certs=list(signed.certificates))
    p = split(pres.wrapper_der)
    tampered = wrap("PRes", body, like=pres.wrapper_der, rrpid=p.rrpid, **p.ids)
    send_to(net, alice, tampered, shop)
    assert net.state_of(alice, xid).get("iso_code") != "05"
    net.deliver(alice, pres)
    net.run()
    state = net.state_of(alice, xid)
    assert state["state"] in ("APPROVED", "CAPTURED") and state.get("iso_code") != "05", state


def test_authorisation_expiry_reverses_the_hold_and_wipes_the_pan(world):
    """An authorisation nobody captures (shop2 captures on command): after the gateway's
    auth_expiry_days (default 7) the gateway reverses the hold at the issuer and forgets PAN and
    expiry, the merchant marks the purchase EXPIRED, and a late capture posts nothing."""
    net = world.net()
    xid, pan = buy(world, net, "bob", "shop2", 2500)
    net.run()
    assert not completed(world, net, xid, "bob", "shop2", pan, 2500)
    gateway = world.address("gateway")
    assert pan in json.dumps(net.state_of(gateway, xid))  # kept for the capture, until expiry
    net.advance(dt.timedelta(days=8))
    gw = net.state_of(gateway, xid)
    assert pan not in json.dumps(gw) and "secret" not in gw, gw
    assert gw.get("expired"), f"gateway state says nothing of the expiry: {gw}"
    assert [r[0] for r in net.ledger(xid)] == ["hold", "reverse"], net.ledger(xid)
    assert net.state_of(world.address("shop2"), xid).get("state") == "EXPIRED"
    try:
        net.command(world.address("shop2"), "capture", {"xid": xid})
    except SetmailError:
        pass  # refused locally: fine
    net.run()
    assert "post" not in [r[0] for r in net.ledger(xid)]


def test_abandoned_transactions_expire_at_every_role(world):
    """A PInitReq parked for an order that never comes, an order whose PInitReq never comes, a
    purchase whose merchant never answers (mail to it is lost), a registration abandoned after
    CardCInitRes: after a month each says why it ended, and no secret is left in any state."""
    net = world.net()
    shop, cca = world.address("shop"), world.address("cca")
    alice, bob = world.address("alice"), world.address("bob")
    parked = split(world.forge.pinit_req()).xid.hex()
    send_to(net, shop, world.forge.pinit_req(xid=bytes.fromhex(parked)), alice)
    ordered = "ab" * 20
    net.command(shop, "order", {"xid": ordered, "description": "never paid", "amount": 100,
                                "currency": 978, "cardholder": alice})
    lost, card = "cd" * 20, world.world.cards_of("bob")[0]
    net.command(bob, "buy", {"xid": lost, "merchant": "gone@merchant.example", "pan": card.pan,
                             "expiry": card.expiry, "description": "into the void",
                             "amount": 300, "currency": 978, "brand": world.world.brand})
    card = world.world.cards_of("alice")[0]
    net.command(alice, "register", {"pan": card.pan, "expiry": card.expiry, "ca": cca,
                                    "brand": world.world.brand,
                                    "fields": {"CardholderName": "Alice", "PostalCode": "1"}})
    net.run(hold=lambda to, ev: ev.message_type == "RegFormReq")
    net.advance(dt.timedelta(days=31))
    for address, xid, what in ((shop, parked, "parked PInitReq"), (shop, ordered, "order"),
                               (bob, lost, "wallet purchase")):
        state = net.state_of(address, xid)
        assert not state or state.get("expired") or state.get("state") in ("EXPIRED", "FAILED"), \
            f"{what}: {state}"
        assert "secret" not in state, f"{what} keeps a secret: {state}"
    ca_states = [s for (a, _), s in net.states.items() if a == cca]
    assert all(s.get("expired") or s.get("state") in ("EXPIRED", "ISSUED") for s in ca_states), \
        ca_states
    assert all("secret" not in s for (a, _), s in net.states.items()
               if a in (alice, bob)), "a wallet keeps a secret after a month"
