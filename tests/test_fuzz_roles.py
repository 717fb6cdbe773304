"""Fuzzing at the role level (issue 17, item 2; scripts/fuzz does it over SMTP): the structure-
aware mutants of ``setmail.bench.mutants``, made from every genuine mail of a refunded and a
voided purchase, go through the agent's decode path (``parse_mail``, ``decode_wrapper``,
``received``, ``wire``) and the roles (tests/adversary/roles_world.py keeps the agent's rules:
a SetmailError is a quarantined mail, anything else propagates).  Only SetmailError may come out,
and no transaction's state, nothing at the gateway or the issuer, and no ledger row changes."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from setmail.asn1.wrapper import MIME_TYPES, decode_wrapper
from setmail.bench.mutants import der_mutant, mail_mutant, nodes, splice
from setmail.errors import SetmailError
from setmail.mail.mime import build_mail, parse_mail
from setmail.roles.wire import received, wire
from tests.adversary.roles_world import RoleWorld, buy

MAX_SIZE = 1 << 20
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A refunded purchase (alice at shop) and a voided one (bob at shop2): the seeds are every
    mail delivered, registration-free (RoleWorld certifies by hand)."""
    rw = RoleWorld(tmp_path_factory.mktemp("fuzz") / "world")
    net = rw.net()
    paid, _ = buy(rw, net, "alice", "shop", 1234)
    voided, _ = buy(rw, net, "bob", "shop2", 555)
    net.run()
    net.command(rw.address("shop"), "refund", {"xid": paid})
    net.command(rw.address("shop2"), "void", {"xid": voided})
    net.run()
    assert net.state_of(rw.address("shop"), paid)["state"] == "REFUNDED"
    assert net.state_of(rw.address("shop2"), voided)["state"] == "VOIDED"
    seeds = [(to, ev.sender, ev.wrapper_der) for to, ev in net.seen]
    return rw, net, seeds


def _books(rw, net) -> tuple:
    money = {rw.address(n) for n in ("gateway", "gateway2", "bank")}
    return ({k: s.get("state") for k, s in net.states.items()},
            sum(1 for _, e in net.effects if e.kind.startswith("ledger.")),
            {a: s for a, s in net.shared.items() if a in money}, money)


def _decoded(der: bytes, sender: str):
    """The agent's decode path (agent/runtime.py process_mail): the Inbound, or SetmailError."""
    event = received(der, sender, "fuzz", decode_wrapper(der, max_size=MAX_SIZE))
    wire(event)
    return event


def _unchanged(rw, net, before) -> None:
    states, ledger, shared, money = before
    now = _books(rw, net)
    for key, state in states.items():
        assert now[0].get(key) == state, (key, state, now[0].get(key))
    added = [k for k in now[0] if k not in states]
    assert not [k for k in added if k[0] in money], added
    assert now[1] == ledger and now[2] == shared


@FUZZ
@given(data=st.data())
def test_der_mutants_change_nothing(world, data):
    rw, net, seeds = world
    to, sender, der = data.draw(st.sampled_from(seeds), label="seed")
    kind, mutant = der_mutant(der, data.draw(st.randoms(use_true_random=False)))
    target = data.draw(st.sampled_from([to, to, *sorted(rw.roles)]), label="to")
    before = _books(rw, net)
    try:
        event = _decoded(mutant, sender)
    except SetmailError:
        return
    net.deliver(target, event)   # a role's SetmailError: quarantined; anything else: a bug
    net.run()
    _unchanged(rw, net, before)


@FUZZ
@given(data=st.data())
def test_mail_mutants_are_refused_or_decoded(world, data):
    """Whole-mail mutants: ``parse_mail`` and the decoder refuse with SetmailError, or give a
    mail whose SET content goes on as above."""
    rw, net, seeds = world
    to, sender, der = data.draw(st.sampled_from(seeds), label="seed")
    raw = build_mail(der, content_type=MIME_TYPES[wire(_decoded(der, sender)).type],
                     sender=sender, recipient=to, message_id="seed@fuzz.example",
                     subject="SET fuzz")
    kind, mutant = mail_mutant(raw, data.draw(st.randoms(use_true_random=False)))
    before = _books(rw, net)
    try:
        mail = parse_mail(mutant, max_size=MAX_SIZE)
        event = _decoded(mail.der, mail.sender)
    except SetmailError:
        return
    net.deliver(to, event)
    net.run()
    _unchanged(rw, net, before)


def test_mutants_reach_every_cms_layer(world):
    """The walk goes into the DER inside OCTET STRINGs (SignedData's eContent, ...), and a
    splice there keeps every outer length right: the wrapper still decodes."""
    _, _, seeds = world
    layered = [(der, n) for _, _, der in seeds for n in nodes(der) if n.layer >= 2]
    assert layered
    der, node = layered[0]
    same = splice(der, node, node.start, node.end, der[node.start:node.end])
    assert same == der
    grown = splice(der, node, node.end, node.end, b"\x05\x00")
    assert len(grown) > len(der)
    kinds = {der_mutant(der, random.Random(i))[0] for i in range(200)}
    assert {"flip", "truncate", "nest", "blow_length", "trailing"} <= kinds
