"""Statements (D-173): the issuer's ``statement`` command signs and mails one to the cardholder's
directory address; the wallet's ``Statements`` sub-role keeps it only when the issuer's pinned
certificate signed it for this cardholder.  Then the CLI on a world on disk: ``setmail ledger``,
``ledger --check``, ``statement`` (text, JSON, ``--mail``, ``--received``)."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest

from setmail.agent.statement import statement_report
from setmail.asn1.codec.fastder import encode
from setmail.asn1.statement import StatementData
from setmail.crypto.operators import S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.roles.base import Command, Inbound
from setmail.roles.statements import Statements, StatementsConfig, statement_fields
from setmail.roles.wire import unwrap, wrap
from setmail.vectors.build import NOW, PAN, Parties
from tests.gateway_cast import BANK
from tests.gateway_cast import issuer as bank_role
from tests.test_ledger import lifecycle, write
from tests.test_roles_issuer_lifecycle import Books

ALICE = "alice@cardholder.example"


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def doc(**changes) -> dict:
    """A statement's JSON form as ``statement_report`` makes it."""
    card = {"pan_last4": "1111", "currency": 978, "amt_exp10": -2, "limit": 500000, "held": 0,
            "posted_pending": 1200, "posted_settled": 0, "credited_pending": 0,
            "credited_settled": 0, "balance": 1200, "available": 498800,
            "entries": [{"xid": fresh(32).hex(), "kind": "post", "amount": 1200,
                         "at": NOW.isoformat(), "merchant_id": "SHOP-0001"}]}
    return {"issuer": "whoever", "holder": "alice", "issued": NOW.isoformat(),
            "period_from": None, "period_to": None, "cards": [card], **changes}


def bank_with_holders(p):
    role = bank_role(p)
    role.config = replace(role.config, holders={"alice": ALICE})
    return role


def keeper(p, holder="alice"):
    return Statements(StatementsConfig(holder=holder, issuers={BANK: p.issuer_sig.cert}))


def mail(p, role, **args):
    command = Command("statement", {"statement_id": fresh(16).hex(), "holder": "alice",
                                    "statement": doc(), **args})
    key = role.transaction_key(command)
    return key, role.step(None, command, NOW, {})


def take(role, der, state=None, now=NOW):
    event = Inbound("Statement", der, "forged@evil.example")
    return role.step(state, event, now, {})


def test_the_issuer_mails_a_signed_statement_to_the_directory_address(p):
    key, out = mail(p, bank_with_holders(p), to="evil@evil.example")
    (send,) = out.sends
    assert send.to == ALICE and send.message_type == "Statement" and out.refused is None
    assert key.startswith("stmt/") and out.state["state"] == "SENT" and out.state["to"] == ALICE
    parsed = unwrap(Inbound("Statement", send.wrapper_der, BANK), NOW)
    signed = verify_S(parsed.body, "StatementData")
    assert signed.signer == p.issuer_sig.cert
    kept = take(keeper(p), send.wrapper_der)
    assert kept.refused is None and kept.sends == () and kept.peer == BANK
    body = kept.state["statement"]
    assert (kept.state["state"], body["issuer"], body["holder"]) == ("KEPT", BANK, "alice")
    assert body["statement_id"] == key[5:]
    assert body["cards"][0]["balance"] == 1200 and body["cards"][0]["entries"][0]["kind"] == "post"
    again = take(keeper(p), send.wrapper_der, kept.state)       # kept already: no change
    assert again.state == kept.state and again.sends == ()


@pytest.mark.parametrize("args, why", [
    ({"holder": "mallory"}, "no cardholder"),
    ({"statement_id": ""}, "no statement id"),
    ({"statement": {"cards": "nonsense", "issued": NOW.isoformat()}}, "does not encode")])
def test_a_statement_command_it_cannot_honour_is_refused(p, args, why):
    _, out = mail(p, bank_with_holders(p), **args)
    assert out.sends == () and out.state is None and why in out.refused


def test_a_statement_is_sent_once(p):
    role = bank_with_holders(p)
    command = Command("statement", {"statement_id": "ab" * 16, "holder": "alice",
                                    "statement": doc()})
    first = role.step(None, command, NOW, {})
    again = role.step(first.state, command, NOW, {})
    assert again.sends == () and again.refused and again.state == first.state


def forged(p, signer, **changes) -> bytes:
    fields = statement_fields({**doc(), "issuer": BANK, **changes}, fresh(16))
    body = S(signer, "StatementData", encode(StatementData, fields), certs=(signer.cert,))
    return wrap("Statement", body, now=NOW)


@pytest.mark.parametrize("who", ["gateway", "merchant", "another issuer key"])
def test_the_wallet_refuses_a_statement_signed_by_anyone_but_its_issuer(p, who):
    from setmail.crypto.cms import Identity
    from setmail.pki.pinned import pinned_certificate
    signer = {"gateway": p.gateway_sig, "merchant": p.merchant_sig}.get(who)
    if signer is None:  # a look-alike: same name, its own key
        key = DEFAULT_SUITE.generate_key()
        signer = Identity(key, pinned_certificate(key, "Issuer Bank", NOW))
    out = take(keeper(p), forged(p, signer))
    assert out.state is None and out.sends == () and "refused" in out.refused


def test_the_wallet_refuses_another_holders_statement_a_stale_one_and_garbage(p):
    out = take(keeper(p), forged(p, p.issuer_sig, holder="bob"))
    assert out.state is None and "bob" in out.refused
    late = NOW + dt.timedelta(days=4000)                        # stale: too old, cert expired
    assert take(keeper(p), forged(p, p.issuer_sig), now=late).state is None
    der = bytearray(forged(p, p.issuer_sig))
    der[-40] ^= 1
    out = take(keeper(p), bytes(der))
    assert out.state is None and out.refused and out.sends == ()
    assert take(keeper(p, "bob"), forged(p, p.issuer_sig)).state is None  # not bob's


# --- the CLI on a world on disk -------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(p, tmp_path_factory):
    """The demo world with the issuer's books of a whole lifecycle on alice's card."""
    from setmail.world.create import create_world
    home = tmp_path_factory.mktemp("w") / "world"
    world = create_world(home, now=NOW)
    bank = Books(p)
    lifecycle(bank)
    write(bank, world.store_path("bank")).close()
    return world


def cli(world, *args):
    from tests.e2e_world import run_cli
    return run_cli(*args, "--home", str(world.home))


def test_ledger_and_its_check(world):
    code, out, _ = cli(world, "ledger")
    assert code == 0 and "alice" in out and "credited" in out and "settle" in out
    code, out, _ = cli(world, "ledger", "--json")
    (alice,) = [c for c in json.loads(out) if c["holder"] == "alice"]
    assert alice["held"] == {"amount": "10.00", "currency": alice["held"]["currency"],
                             "minor": 1000}
    alice = {k: v["minor"] if isinstance(v, dict) and "minor" in v else v
             for k, v in alice.items()}
    assert (alice["held"], alice["posted"], alice["credited"]) == (1000, 9000, 1500)
    code, out, _ = cli(world, "ledger", "--check")
    assert code == 0 and "the invariant holds" in out
    assert cli(world, "ledger", "--issuer", "alice")[0] == 2


def test_statement_text_json_and_period(world):
    code, out, _ = cli(world, "statement", "alice")
    assert code == 0 and "statement of alice" in out and "…1111" in out and PAN not in out
    code, out, _ = cli(world, "statement", "alice", "--json", "--from", "2099-01-01")
    body = json.loads(out)
    assert body["cards"][0]["balance"]["minor"] == 7500 and body["cards"][0]["entries"] == []
    assert body["period_from"].startswith("2099-01-01")
    assert cli(world, "statement", "shop")[0] == 2
    assert cli(world, "statement", "alice", "--from", "yesterday")[0] == 2


def test_statement_mailed_by_the_issuer_and_kept_by_the_wallet(world):
    from setmail.agent import commands as cmdq
    from setmail.agent.factories.issuer import issuer, statement_keeper
    from setmail.store import Store
    code, out, _ = cli(world, "statement", "alice", "--mail")
    assert code == 0 and "queued" in out
    store = cmdq.open_store(world.store_path("bank"))
    try:
        (row,) = [r for r in cmdq.pending(store) if r.name == "statement"]
        expected = statement_report(store, "alice", issuer=world.agent("bank").address,
                                    now=NOW)
    finally:
        store.close()
    role = issuer(world, world.agent("bank"))
    command = Command(row.name, row.args)
    out = role.step(None, command, NOW, {})
    (send,) = out.sends
    assert send.to == world.agent("alice").address
    wallet = statement_keeper(world, world.agent("alice"))
    kept = wallet.step(None, Inbound("Statement", send.wrapper_der, "x@y"), NOW, {})
    assert kept.state["state"] == "KEPT"
    assert kept.state["statement"]["cards"][0]["balance"] == expected["cards"][0]["balance"]
    assert statement_keeper(world, world.agent("bob")).step(
        None, Inbound("Statement", send.wrapper_der, "x@y"), NOW, {}).state is None
    alice = Store(world.store_path("alice"))
    try:
        with alice.transaction(now=NOW.timestamp()) as tx:
            tx.put_state("tx/" + wallet.transaction_key(
                Inbound("Statement", send.wrapper_der, "x@y")), kept.state)
    finally:
        alice.close()
    code, out, _ = cli(world, "statement", "alice", "--received")
    assert code == 0 and f"from {world.agent('bank').address}" in out and "balance" in out
    code, out, _ = cli(world, "statement", "alice", "--received", "--json")
    assert json.loads(out)[0]["statement"]["holder"] == "alice"
    assert "no statement" in cli(world, "statement", "bob", "--received")[1]


def test_ledger_check_fails_with_the_entries_involved(world):
    from setmail.store import Store
    store = Store(world.store_path("bank"))
    try:
        with store.transaction(now=NOW.timestamp()) as tx:
            tx.execute("INSERT INTO issuer_ledger (xid, kind, pan, pan_last4, amount, currency, "
                       "code, at, purchase) SELECT xid, 'release', pan, pan_last4, 99, currency, "
                       "code, at, purchase FROM issuer_ledger WHERE kind = 'hold' LIMIT 1")
    finally:
        store.close()
    code, out, _ = cli(world, "ledger", "--check")
    assert code == 1 and "bank:" in out and "release" in out and PAN not in out
    code, out, _ = cli(world, "ledger", "--check", "--json")
    assert code == 1 and json.loads(out)["bank"]
