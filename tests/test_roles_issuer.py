"""The issuer against docs/purchase.md: every response code in the contract's order, holds and
postings in the shared totals, repeat answers, who may ask; and the ledger effects on a real Store
whose rows always add up to the role's shared totals."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest

from setmail.agent.effects import EffectContext, stage
from setmail.agent.ledger import ledger_report
from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.roles.base import Inbound
from setmail.roles.issuer_books import cards
from setmail.roles.network_msgs import leg_ids, open_network, rrn, seal, stan
from setmail.roles.wire import unwrap
from setmail.store import Store
from setmail.vectors.build import EXPIRY, NOW, PAN, Parties
from setmail.world.create import ACCOUNTS_DDL
from tests.gateway_cast import BANK, EUR, GW, MER_ID, accounts, issuer

LIMIT = 500000


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def money(amount, currency=EUR, exp10=-2):
    return {"currency": currency, "amount": amount, "amt_exp10": exp10}


class Bank:
    """The issuer role with its transaction states, shared totals and effects, as an agent keeps
    them; requests are built as the gateway builds them."""

    def __init__(self, p, accts=None, signer=None):
        self.p, self.role = p, issuer(p, accts)
        self.signer = signer or p.gateway_sig
        self.states, self.shared, self.effects, self.timers = {}, {}, [], []
        self.address = GW  # where the answers must go: the signing gateway's configured address

    def state(self, xid, mer_id=MER_ID):
        """The issuer's state of ``xid`` for merchant ``mer_id`` (keyed by gateway, merchant,
        XID), or None."""
        found = [s for k, s in self.states.items() if k.startswith(xid.hex() + ".")
                 and s.get("merchant_id") == mer_id]
        assert len(found) <= 1
        return found[0] if found else None

    def ask(self, kind, xid, fields, *, now=NOW, recipient=None, header_xid=None):
        rrpid = fresh()
        fields = {"merchant_id": MER_ID, **fields}
        der = seal(kind, {**fields, "transmitted": now, "xid": xid}, self.signer,
                   recipient or self.p.issuer_kex.cert, now=now, rrpid=rrpid,
                   ids=leg_ids(header_xid or xid, fields["merchant_id"]))
        self.last_request = der
        event = Inbound(kind, der, "forged@evil.example")  # From is never where answers go
        key = self.role.transaction_key(event)
        out = self.role.step(self.states.get(key), event, now, self.shared)
        if out.state is None:
            self.states.pop(key, None)
        else:
            self.states[key] = dict(out.state)
        if out.shared is not None:
            self.shared = dict(out.shared)
        self.effects.extend(out.effects)
        self.timers.extend(out.timers)
        if not out.sends:
            return None, None
        (send,) = out.sends
        assert send.to == self.address and out.peer in (self.address, None)
        if send.message_type == "Error":
            return send, None
        answer = unwrap(Inbound(send.message_type, send.wrapper_der, BANK), now)
        assert answer.rrpid == rrpid
        data, signed = open_network(answer, self.p.gateway_kex, [self.p.issuer_sig.cert], now)
        assert signed.signer == self.p.issuer_sig.cert
        return send, data

    def authorise(self, xid=None, amount=1234, *, pan=PAN, expiry=EXPIRY, currency=EUR, now=NOW,
                  mer_id=MER_ID):
        xid = xid or fresh(20)
        _, data = self.ask("IssAuthReq", xid, {
            "stan": stan(xid), "rrn": rrn(xid), "processing_code": "000000", "pan": pan,
            "card_expiry": expiry, "amount": money(amount, currency), "acquirer_id": "41111111",
            "merchant_id": mer_id}, now=now)
        assert isinstance(data, dict) and data["mti"] == "0110"
        assert (data["stan"], data["rrn"], data["xid"], data["merchant_id"]) == (
            stan(xid), rrn(xid), xid, mer_id)
        return xid, data

    def capture(self, xid, amount, approval, *, pan=PAN):
        _, data = self.ask("IssCapReq", xid, {
            "stan": stan(xid, "IssCapReq"), "rrn": rrn(xid), "pan": pan, "amount": money(amount),
            "approval_code": approval, "merchant_id": MER_ID})
        assert isinstance(data, dict) and data["stan"] == stan(xid, "IssCapReq")
        return data["response_code"], data["amount"]["amount"]

    def reverse(self, xid, amount, approval, *, currency=EUR):
        _, data = self.ask("IssRevReq", xid, {
            "stan": stan(xid, "IssRevReq"), "rrn": rrn(xid), "amount": money(amount, currency),
            "approval_code": approval, "reason_code": "68", "original_mti": "0100",
            "original_stan": stan(xid), "merchant_id": MER_ID})
        assert isinstance(data, dict) and (data["mti"], data["stan"]) == (
            "0410", stan(xid, "IssRevReq"))
        return data["response_code"], data["amount"]["amount"]

    def totals(self, pan=PAN):
        found = self.shared.get(pan, {})
        return {k: found.get(k, 0) for k in ("held", "posted", "credited")}


# --- authorisation decisions, in the contract's order ---------------------------------------------
DECISIONS = [
    ("00", {}, {}),
    ("14", {"pan": "4000000000000002"}, {}),
    ("05", {}, {"status": "blocked"}),
    ("54", {"expiry": "203001"}, {}),                      # not the account's expiry
    ("54", {"expiry": "202510"}, {"expiry": "202510"}),    # the account's, but over
    ("05", {"currency": 840}, {}),                          # not the account's currency
    ("13", {"amount": 0}, {}),
    ("51", {"amount": LIMIT + 1}, {}),
    ("05", {"expiry": "203001"}, {"status": "blocked"}),    # blocked decides before expiry
    ("14", {"pan": "4000000000000002", "amount": LIMIT + 1}, {}),
]


@pytest.mark.parametrize("iso, request_changes, account_changes", DECISIONS,
                         ids=[f"{d[0]}-{i}" for i, d in enumerate(DECISIONS)])
def test_decision(p, iso, request_changes, account_changes):
    bank = Bank(p, {PAN: replace(accounts()[PAN], **account_changes)})
    xid, data = bank.authorise(**request_changes)
    state = bank.state(xid)
    assert data["response_code"] == iso == state["response_code"]
    (effect,) = bank.effects
    if iso == "00":
        assert state["state"] == "HELD" and data["amount"]["amount"] == 1234
        assert data["approval_code"] == state["approval_code"]
        assert len(state["approval_code"]) == 6
        assert effect.kind == "ledger.hold" and effect.data["amount"] == 1234
        assert bank.totals() == {"held": 1234, "posted": 0, "credited": 0}
    else:
        assert state["state"] == "DECLINED" and data["amount"]["amount"] == 0
        assert data["approval_code"] is None and effect.kind == "ledger.decline"
        assert effect.data["code"] == iso and bank.shared == {}
    pan = request_changes.get("pan", PAN)
    assert effect.data["pan_last4"] == pan[-4:] and effect.data["secret"] == {"pan": pan}
    assert pan not in json.dumps({k: v for k, v in state.items() if k != "secret"})


def test_available_credit_counts_holds_and_postings(p):
    bank = Bank(p)
    first, auth = bank.authorise(amount=300000)
    assert bank.capture(first, 250000, auth["approval_code"]) == ("00", 250000)
    assert bank.totals() == {"held": 0, "posted": 250000, "credited": 0}
    _, held = bank.authorise(amount=200000)
    assert held["response_code"] == "00" and bank.totals()["held"] == 200000
    _, over = bank.authorise(amount=50001)      # 500000 - 250000 - 200000 = 50000 left
    assert over["response_code"] == "51"
    _, exact = bank.authorise(amount=50000)
    assert exact["response_code"] == "00"
    assert bank.totals() == {"held": 250000, "posted": 250000, "credited": 0}


def test_the_same_request_gets_the_same_answer_and_no_second_hold(p):
    """A re-delivery (same payload, another header: a fresh RRPID here) is answered with the
    decision made; another request under the same (gateway, merchant, XID) gets 94 and changes
    nothing: one card's decision is never handed to another card or amount."""
    bank = Bank(p)
    xid, first = bank.authorise(amount=1000)
    effects, shared, state = len(bank.effects), dict(bank.shared), dict(bank.state(xid))
    _, again = bank.authorise(xid, amount=1000)
    assert again["response_code"] == "00" and again["amount"]["amount"] == 1000
    assert again["approval_code"] == first["approval_code"]
    for other in ({"amount": 9999}, {"amount": 1000, "pan": "4012888888881881"},
                  {"amount": 1000, "expiry": "203001"}):
        _, answer = bank.authorise(xid, **other)
        assert (answer["response_code"], answer["amount"]["amount"]) == ("94", 0)
        assert answer["approval_code"] is None
    assert len(bank.effects) == effects and bank.shared == shared and bank.state(xid) == state
    declined, _ = bank.authorise(amount=LIMIT * 2)
    _, repeat = bank.authorise(declined, amount=LIMIT * 2)
    assert repeat["response_code"] == "51" and len(bank.effects) == effects + 1
    assert bank.authorise(declined, amount=1)[1]["response_code"] == "94"
    assert bank.state(declined)["state"] == "DECLINED"


# --- completion -----------------------------------------------------------------------------------
def test_capture_posts_the_amount_and_releases_the_whole_hold(p):
    bank = Bank(p)
    xid, auth = bank.authorise(amount=5000)
    approval = auth["approval_code"]
    assert bank.capture(xid, 5001, approval) == ("13", 0)          # more than the hold
    assert bank.state(xid)["state"] == "HELD"
    assert bank.capture(xid, 4000, "ZZZZZZ") == ("12", 0)          # not the approval code
    assert bank.capture(xid, 4000, approval, pan="4012888888881881") == ("12", 0)
    assert bank.capture(xid, 4000, approval) == ("00", 4000)
    assert bank.totals() == {"held": 0, "posted": 4000, "credited": 0}
    state = bank.state(xid)
    assert state["state"] == "POSTED" and state["posted"] == 4000 and state["held"] == 0
    post = bank.effects[-1]
    assert post.kind == "ledger.post"
    assert (post.data["amount"], post.data["released"]) == (4000, 5000)
    assert bank.capture(xid, 4000, approval) == ("00", 4000)       # a repeat: the same answer
    assert bank.capture(xid, 3000, approval) == ("94", 0)          # another under its STAN
    assert len([e for e in bank.effects if e.kind == "ledger.post"]) == 1
    assert bank.totals() == {"held": 0, "posted": 4000, "credited": 0}
    _, repeat = bank.authorise(xid, amount=5000)                    # still the same decision
    assert repeat["response_code"] == "00" and repeat["amount"]["amount"] == 5000


def test_capture_without_an_approved_hold_is_12(p):
    bank = Bank(p)
    assert bank.capture(fresh(20), 100, "ABCDEF") == ("12", 0)
    assert bank.states == {}
    declined, _ = bank.authorise(amount=LIMIT * 2)
    assert bank.capture(declined, 100, "ABCDEF") == ("12", 0)
    assert bank.shared == {}


def test_capture_by_another_pinned_gateway_is_12(p):
    """Another gateway's (gateway, merchant, XID) is another purchase: nothing held there."""
    bank = Bank(p)
    xid, auth = bank.authorise()
    bank.signer = other_gateway(p, bank)
    assert bank.capture(xid, 1234, auth["approval_code"]) == ("12", 0)
    assert bank.state(xid)["state"] == "HELD" and bank.totals()["held"] == 1234


# --- reversal -------------------------------------------------------------------------------------
def test_reversal_releases_the_hold_once(p):
    bank = Bank(p)
    xid, auth = bank.authorise(amount=5000)
    approval = auth["approval_code"]
    assert bank.reverse(xid, 5000, "ZZZZZZ") == ("12", 0)          # not the approval code
    assert bank.reverse(xid, 4000, approval) == ("13", 0)          # not the approved amount
    assert bank.reverse(xid, 5000, approval, currency=840) == ("13", 0)
    assert bank.totals() == {"held": 5000, "posted": 0, "credited": 0} and len(bank.effects) == 1
    assert bank.reverse(xid, 5000, approval) == ("00", 5000)
    assert bank.totals() == {"held": 0, "posted": 0, "credited": 0}
    state = bank.state(xid)
    assert (state["state"], state["held"], state["authorized"]) == ("REVERSED", 0, 5000)
    assert state["reversed_at"] == NOW.isoformat()
    reverse = bank.effects[-1]
    assert (reverse.kind, reverse.data["amount"], reverse.data["code"]) == (
        "ledger.reverse", 5000, "00")
    assert reverse.data["secret"] == {"pan": PAN} and reverse.data["pan_last4"] == PAN[-4:]
    effects = len(bank.effects)
    assert bank.reverse(xid, 5000, approval) == ("00", 5000)      # a repeat: the same answer
    assert bank.totals() == {"held": 0, "posted": 0, "credited": 0} and len(bank.effects) == effects
    assert bank.capture(xid, 5000, approval) == ("12", 0)         # nothing left to capture
    _, repeat = bank.authorise(xid, amount=5000)                   # the decision stands, no hold
    assert repeat["response_code"] == "00" and bank.totals()["held"] == 0
    assert len(bank.effects) == effects


def test_reversal_of_a_captured_authorisation_is_12_and_changes_nothing(p):
    bank = Bank(p)
    xid, auth = bank.authorise(amount=5000)
    assert bank.capture(xid, 4000, auth["approval_code"]) == ("00", 4000)
    state, effects = dict(bank.state(xid)), len(bank.effects)
    assert bank.reverse(xid, 5000, auth["approval_code"]) == ("12", 0)
    assert bank.state(xid) == state and len(bank.effects) == effects
    assert bank.totals() == {"held": 0, "posted": 4000, "credited": 0}


def test_reversal_without_an_approved_authorisation_is_25(p):
    bank = Bank(p)
    assert bank.reverse(fresh(20), 100, "ABCDEF") == ("25", 0)
    assert bank.states == {}
    declined, _ = bank.authorise(amount=LIMIT * 2)
    assert bank.reverse(declined, LIMIT * 2, "ABCDEF") == ("25", 0)
    assert bank.state(declined)["state"] == "DECLINED" and bank.shared == {}


def other_gateway(p, bank):
    """A second pinned gateway (its own signature key) that now signs the bank's requests."""
    from setmail.crypto.cms import Identity
    from setmail.pki.pinned import pinned_certificate
    key = DEFAULT_SUITE.generate_key()
    other = Identity(key, pinned_certificate(key, "Gateway 2", NOW))
    bank.role.config = replace(bank.role.config, gateways={
        **bank.role.config.gateways, "gw2@gateway.example": (other.cert, p.gateway_kex.cert)})
    bank.address = "gw2@gateway.example"
    return other


def test_reversal_by_another_pinned_gateway_finds_nothing(p):
    bank = Bank(p)
    xid, auth = bank.authorise()
    bank.signer = other_gateway(p, bank)
    assert bank.reverse(xid, 1234, auth["approval_code"]) == ("25", 0)  # not its purchase
    assert bank.state(xid)["state"] == "HELD" and bank.totals()["held"] == 1234
    assert [e.kind for e in bank.effects] == ["ledger.hold"]


# --- who may ask ----------------------------------------------------------------------------------
def auth_fields(xid, **changes) -> dict:
    return {"stan": stan(xid), "rrn": rrn(xid), "processing_code": "000000", "pan": PAN,
            "card_expiry": EXPIRY, "amount": money(100), "acquirer_id": "41111111", **changes}


def test_unpinned_signer_gets_nothing_and_changes_nothing(p):
    """Nobody we can trust to answer: no Error (and never to From)."""
    bank = Bank(p, signer=p.merchant_sig)
    xid = fresh(20)
    assert bank.ask("IssAuthReq", xid, auth_fields(xid)) == (None, None)
    assert bank.states == {} and bank.shared == {} and bank.effects == []


def test_request_for_another_key_gets_nothing(p):
    bank = Bank(p)
    xid = fresh(20)
    assert bank.ask("IssAuthReq", xid, auth_fields(xid), recipient=p.gateway_kex.cert) == (
        None, None)
    assert bank.states == {}


@pytest.mark.parametrize("fields, header, code", [
    ({"processing_code": "200000"}, False, "messageNotSupported"),
    ({}, True, "badMessageHeader")], ids=["not a purchase", "header names another XID"])
def test_pinned_gateways_bad_request_gets_a_signed_error_naming_it(p, fields, header, code):
    from setmail.roles.refusal import read_error
    bank = Bank(p)
    xid = fresh(20)
    send, data = bank.ask("IssAuthReq", xid, auth_fields(xid, **fields),
                          header_xid=fresh(20) if header else None)
    assert data is None and send.to == GW  # the pinned gateway's configured address
    err = read_error(unwrap(Inbound("Error", send.wrapper_der, BANK), NOW))
    assert (err.code, err.signer) == (code, p.issuer_sig.cert)
    assert err.refused_hash == Inbound("IssAuthReq", bank.last_request, GW).digest
    assert bank.states == {} and bank.effects == []


# --- the ledger on a real store -------------------------------------------------------------------
def test_ledger_rows_add_up_to_the_shared_totals(p, tmp_path):
    bank = Bank(p, {**accounts(), "4012888888881881": replace(
        accounts()[PAN], expiry="202806", limit=150000, holder="bob")})
    a1, r1 = bank.authorise(amount=10000)
    a2, _ = bank.authorise(amount=20000)
    a3, r3 = bank.authorise(amount=7000)
    bank.authorise(amount=LIMIT)                                       # 51
    bank.authorise(pan="4000000000000002")                             # 14
    b1, rb = bank.authorise(amount=150000, pan="4012888888881881", expiry="202806")
    bank.capture(a1, 9000, r1["approval_code"])
    bank.capture(b1, 150000, rb["approval_code"], pan="4012888888881881")
    bank.capture(b1, 150000, rb["approval_code"], pan="4012888888881881")  # a repeat: no effect
    bank.reverse(a3, 7000, r3["approval_code"])
    bank.reverse(a3, 7000, r3["approval_code"])                       # a repeat: no effect
    store = Store(tmp_path / "bank.db")
    try:
        with store.transaction(now=NOW.timestamp()) as tx:
            for statement in ACCOUNTS_DDL:
                tx.execute(statement)
            tx.execute("INSERT INTO issuer_accounts VALUES (?, ?, 'alice', ?, 'EUR', 0, 'active')",
                       (PAN, EXPIRY, LIMIT))
            tx.execute("INSERT INTO issuer_accounts VALUES (?, '202806', 'bob', 150000, 'EUR', 0, "
                       "'active')", ("4012888888881881",))
        for effect in bank.effects:  # one agent commit per step, as the runtime does
            with store.transaction(now=NOW.timestamp()) as tx:
                stage(EffectContext(BANK, tmp_path), tx, [effect])
        report = {r["holder"]: r for r in ledger_report(store)}
    finally:
        store.close()
    alice, bob, unknown = report["alice"], report["bob"], report["(unknown)"]
    assert (alice["held"], alice["posted"]) == (20000, 9000) == (
        bank.totals()["held"], bank.totals()["posted"])
    assert alice["available"] == LIMIT - 29000 and alice["limit"] == LIMIT
    assert (alice["currency"], alice["currency_number"], alice["amt_exp10"]) == ("EUR", 978, -2)
    assert [e["kind"] for e in alice["entries"]] == [
        "hold", "hold", "hold", "decline", "release", "post", "reversal"]
    assert [e["xid"] for e in alice["entries"]][:3] == [a1.hex(), a2.hex(), a3.hex()]
    assert alice["entries"][-1]["xid"] == a3.hex() and alice["entries"][-1]["amount"] == 7000
    assert alice["entries"][3]["code"] == "51" and alice["entries"][0]["at"] == NOW.isoformat()
    assert (bob["held"], bob["posted"], bob["available"]) == (0, 150000, 0)
    assert bank.totals("4012888888881881") == {"held": 0, "posted": 150000, "credited": 0}
    assert unknown["pan_last4"] == "0002" and [e["code"] for e in unknown["entries"]] == ["14"]
    for pan, totals in cards(bank.shared).items():  # the invariant, card by card
        assert totals["held"] + totals["posted"] <= bank.role.config.accounts[pan].limit


def test_ledger_report_of_an_empty_store(tmp_path):
    store = Store(tmp_path / "empty.db")
    try:
        assert ledger_report(store) == []
    finally:
        store.close()


def test_expiry_is_checked_against_now(p):
    bank = Bank(p, {PAN: replace(accounts()[PAN], expiry="202611")})
    _, data = bank.authorise(expiry="202611")                            # NOW is 2026-11-27
    assert data["response_code"] == "00"
    _, data = bank.authorise(expiry="202611", now=NOW + dt.timedelta(days=5))
    assert data["response_code"] == "54"


# --- the factories: both roles built from a world on disk talk to each other ---------------------
def test_world_factories_wire_gateway_and_issuer(tmp_path):
    from setmail.agent.factories.gateway import gateway as gateway_factory
    from setmail.agent.factories.issuer import issuer as issuer_factory
    from setmail.agent.effects import HANDLERS
    from setmail.world.create import create_world
    world = create_world(tmp_path / "w", now=NOW, certificates="direct")
    gw_role = gateway_factory(world, world.agent("gateway"))
    bank_role = issuer_factory(world, world.agent("bank"))
    assert {"ledger.hold", "ledger.post", "ledger.decline", "ledger.reverse"} <= set(HANDLERS)
    cfg, bank_cfg = gw_role.config, bank_role.config
    assert cfg.issuer == world.agent("bank").address and cfg.bci is not None and cfg.crls
    assert cfg.issuer_kex == bank_cfg.key_exchange.cert
    assert cfg.issuer_sig == bank_cfg.signature.cert
    assert all(c.subject != c.issuer for c in cfg.signature.chain)  # no root in what we send
    assert set(bank_cfg.gateways) == {world.agent("gateway").address}
    alice = bank_cfg.accounts["4111111111111111"]
    assert (alice.holder, alice.limit, alice.currency, alice.amt_exp10, alice.status) == (
        "alice", 500000, 978, -2, "active")
    xid = fresh(20)
    der = seal("IssAuthReq", {
        "stan": stan(xid), "rrn": rrn(xid), "processing_code": "000000", "pan": PAN,
        "card_expiry": EXPIRY, "amount": money(2500), "transmitted": NOW,
        "acquirer_id": cfg.acquirer_id, "merchant_id": "SHOP-0001", "xid": xid},
        cfg.signature, cfg.issuer_kex, now=NOW, rrpid=fresh(), ids={"xid": xid})
    out = bank_role.step(None, Inbound("IssAuthReq", der, cfg.name), NOW, {})
    answer = unwrap(Inbound("IssAuthRes", out.sends[0].wrapper_der, bank_cfg.name), NOW)
    data, _ = open_network(answer, cfg.key_exchange, cfg.issuer_pinned, NOW)
    assert data["response_code"] == "00" and out.shared == {PAN: {"held": 2500, "posted": 0}}
