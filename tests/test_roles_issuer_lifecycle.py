"""The issuer's lifecycle decisions (issue 13) at role level: incremental authorisations, partial
completions (remaining_hold), partial reversals (replacement_amount), credits, credit and capture
reversals, clearing; each refusal with its code and nothing moved, repeats answered the same, and
the books (shared totals, pending entries, ledger effects) after every step."""
from __future__ import annotations

from dataclasses import replace

import pytest

from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.roles.base import Inbound
from setmail.roles.issuer_books import PENDING, cards
from setmail.roles.network_msgs import batch_xid, clear_totals, rrn, stan
from setmail.roles.refusal import read_error
from setmail.roles.wire import unwrap
from setmail.vectors.build import EXPIRY, NOW, PAN, Parties
from tests.gateway_cast import BANK, GW, MER_ID, accounts
from tests.test_roles_issuer import LIMIT, Bank, money, other_gateway

BOB = "4012888888881881"


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


class Books(Bank):
    """``Bank`` with the lifecycle requests, built as the gateway builds them."""

    def auth(self, xid=None, amount=1000, seq=0, **kw):
        xid = xid or fresh(20)
        fields = {"stan": stan(xid, "IssAuthReq", seq), "rrn": rrn(xid),
                  "processing_code": "000000", "pan": kw.get("pan", PAN),
                  "card_expiry": kw.get("expiry", EXPIRY), "amount": money(amount),
                  "acquirer_id": "41111111"}
        _, data = self.ask("IssAuthReq", xid, fields)
        return xid, data

    def _moved(self, kind, xid, fields, seq=0):
        _, data = self.ask(kind, xid, {"stan": stan(xid, kind, seq), "rrn": rrn(xid), **fields})
        assert data["stan"] == stan(xid, kind, seq) and data["merchant_id"] == MER_ID
        return data["response_code"], data["amount"]["amount"]

    def cap(self, xid, amount, approval, seq=0, remaining=None, pan=PAN):
        extra = {} if remaining is None else {"remaining_hold": money(remaining)}
        return self._moved("IssCapReq", xid, {"pan": pan, "amount": money(amount),
                                              "approval_code": approval, **extra}, seq)

    def rev(self, xid, amount, approval, seq=0, replacement=None):
        extra = {} if replacement is None else {"replacement_amount": money(replacement)}
        return self._moved("IssRevReq", xid, {
            "amount": money(amount), "approval_code": approval, "reason_code": "17",
            "original_mti": "0100", "original_stan": stan(xid), **extra}, seq)

    def cred(self, xid, amount, approval, seq=0, code="200000"):
        return self._moved("IssCredReq", xid, {"processing_code": code, "amount": money(amount),
                                               "approval_code": approval}, seq)

    def advice(self, kind, xid, amount, approval, original, seq=0):
        return self._moved(kind, xid, {
            "amount": money(amount), "approval_code": approval, "reason_code": "17",
            "original_mti": "0220", "original_stan": original}, seq)

    def clear(self, batch, items, totals=None, seq=0):
        xid = batch_xid(MER_ID, batch)
        items = [{"xid": x, "kind": k, "stan": s, "amount": money(a)} for x, k, s, a in items]
        send, data = self.ask("IssClearReq", xid, {
            "stan": stan(xid, "IssClearReq", seq), "rrn": rrn(xid), "batch_id": batch,
            "items": items, "totals": clear_totals(items) if totals is None else totals})
        return send, data

    def kinds(self, start=0):
        return [e.kind for e in self.effects[start:]]


def approved(bank, amount=10000, **kw):
    xid, data = bank.auth(amount=amount, **kw)
    assert data["response_code"] == "00"
    return xid, data["approval_code"]


# --- incremental authorisation (split shipment, recurring) ---------------------------------------
def test_incremental_authorisation_adds_a_hold_under_its_own_stan(p):
    bank = Books(p)
    xid, first = approved(bank, 6000)
    assert bank.cap(xid, 6000, first) == ("00", 6000)
    _, more = bank.auth(xid, 4000, seq=1)
    assert more["response_code"] == "00" and more["approval_code"] != first
    state = bank.state(xid)
    assert (state["state"], state["held"], state["authorized"], state["posted"]) == (
        "HELD", 4000, 10000, 6000)
    assert bank.totals() == {"held": 4000, "posted": 6000, "credited": 0}
    assert bank.cap(xid, 4000, more["approval_code"], seq=1) == ("00", 4000)
    assert bank.state(xid)["state"] == "POSTED" and bank.totals()["posted"] == 10000
    assert bank.kinds() == ["ledger.hold", "ledger.post", "ledger.hold", "ledger.post"]


def test_incremental_authorisation_refusals_change_nothing(p):
    bank = Books(p, {**accounts(), BOB: replace(accounts()[PAN], holder="bob")})
    xid, _ = approved(bank, 6000)
    before, effects = dict(bank.state(xid)), len(bank.effects)
    assert bank.auth(xid, 100, seq=1, pan=BOB)[1]["response_code"] == "94"      # another card
    assert bank.auth(xid, 100, seq=1, expiry="203001")[1]["response_code"] == "94"
    assert bank.state(xid) == before and len(bank.effects) == effects
    _, over = bank.auth(xid, LIMIT, seq=1)                                      # 51, recorded
    assert over["response_code"] == "51" and bank.kinds(effects) == ["ledger.decline"]
    _, again = bank.auth(xid, LIMIT, seq=1)
    assert again["response_code"] == "51" and len(bank.effects) == effects + 1  # not twice
    assert bank.state(xid)["held"] == 6000 and bank.totals()["held"] == 6000
    reversed_, approval = approved(bank, 500)
    assert bank.rev(reversed_, 500, approval) == ("00", 500)
    assert bank.auth(reversed_, 100, seq=1)[1]["response_code"] == "94"     # reversed: nothing


# --- partial completions ------------------------------------------------------------------------
def test_partial_completions_keep_the_remaining_hold(p):
    bank = Books(p)
    xid, approval = approved(bank, 10000)
    assert bank.cap(xid, 3000, approval, remaining=7001) == ("13", 0)   # 3000 + 7001 > 10000
    assert bank.cap(xid, 3000, approval, remaining=7000) == ("00", 3000)
    state = bank.state(xid)
    assert (state["state"], state["held"], state["posted"]) == ("HELD", 7000, 3000)
    post = bank.effects[-1]
    assert (post.kind, post.data["released"], post.data["remaining"]) == ("ledger.post", 3000,
                                                                          7000)
    assert bank.cap(xid, 3000, approval, remaining=7000) == ("00", 3000)  # a repeat
    assert bank.cap(xid, 5000, approval, seq=1) == ("00", 5000)          # the rest released
    state = bank.state(xid)
    assert (state["state"], state["held"], state["posted"]) == ("POSTED", 0, 8000)
    assert bank.totals() == {"held": 0, "posted": 8000, "credited": 0}
    assert bank.effects[-1].data["released"] == 7000
    assert bank.cap(xid, 1, approval, seq=2) == ("12", 0)                # nothing held


# --- partial reversal -------------------------------------------------------------------------
def test_partial_reversal_reduces_the_hold_to_the_replacement_amount(p):
    bank = Books(p)
    xid, approval = approved(bank, 10000)
    assert bank.rev(xid, 10000, approval, replacement=10000) == ("13", 0)  # not a reduction
    assert bank.rev(xid, 9000, approval, replacement=5000) == ("13", 0)    # not the authorised
    assert bank.rev(xid, 10000, approval, replacement=6000) == ("00", 4000)
    state = bank.state(xid)
    assert (state["state"], state["held"], state["authorized"]) == ("HELD", 6000, 6000)
    assert bank.effects[-1].kind == "ledger.partial_release"
    assert bank.rev(xid, 10000, approval, replacement=6000) == ("00", 4000)  # a repeat
    assert bank.totals()["held"] == 6000
    assert bank.rev(xid, 6000, approval, seq=1) == ("00", 6000)              # then all of it
    assert bank.state(xid)["state"] == "REVERSED" and bank.totals()["held"] == 0


def test_reversal_after_a_partial_capture_releases_only_the_rest(p):
    bank = Books(p)
    xid, approval = approved(bank, 10000)
    assert bank.cap(xid, 4000, approval, remaining=6000) == ("00", 4000)
    assert bank.rev(xid, 10000, approval, replacement=3000) == ("13", 0)     # below the captured
    assert bank.rev(xid, 10000, approval, replacement=7000) == ("00", 3000)
    assert bank.state(xid)["held"] == 3000
    assert bank.rev(xid, 7000, approval, seq=1) == ("00", 3000)
    state = bank.state(xid)
    assert (state["state"], state["held"], state["posted"]) == ("POSTED", 0, 4000)
    assert bank.totals() == {"held": 0, "posted": 4000, "credited": 0}


# --- credits ----------------------------------------------------------------------------------
def test_credits_up_to_what_was_captured(p):
    bank = Books(p)
    xid, approval = approved(bank, 5000)
    assert bank.cred(xid, 100, approval) == ("12", 0)                      # nothing captured
    assert bank.cap(xid, 5000, approval) == ("00", 5000)
    assert bank.cred(xid, 100, "ZZZZZZ") == ("12", 0)                      # not its approval
    assert bank.cred(xid, 0, approval) == ("13", 0)
    assert bank.cred(xid, 5001, approval) == ("13", 0)
    assert bank.cred(xid, 2000, approval) == ("00", 2000)
    assert bank.cred(xid, 2000, approval) == ("00", 2000)                  # a repeat: once
    assert bank.cred(xid, 1500, approval) == ("94", 0)                     # another, same STAN
    assert bank.cred(xid, 3001, approval, seq=1) == ("13", 0)              # above 5000 - 2000
    assert bank.cred(xid, 3000, approval, seq=1) == ("00", 3000)
    assert bank.cred(xid, 1, approval, seq=2) == ("13", 0)                 # nothing left
    state = bank.state(xid)
    assert (state["state"], state["posted"], state["credited"]) == ("POSTED", 5000, 5000)
    assert bank.totals() == {"held": 0, "posted": 5000, "credited": 5000}
    assert bank.kinds(2) == ["ledger.credit", "ledger.credit"]
    assert sorted(e["kind"] for e in bank.shared[PENDING].values()) == [
        "capture", "credit", "credit"]


def test_a_credit_is_not_a_purchase_request_and_another_gateway_finds_nothing(p):
    bank = Books(p)
    xid, approval = approved(bank, 5000)
    bank.cap(xid, 5000, approval)
    send, data = bank.ask("IssCredReq", xid, {
        "stan": stan(xid, "IssCredReq"), "rrn": rrn(xid), "processing_code": "000000",
        "amount": money(100), "approval_code": approval})
    err = read_error(unwrap(Inbound("Error", send.wrapper_der, BANK), NOW))
    assert data is None and send.to == GW and err.code == "messageNotSupported"
    bank.signer = other_gateway(p, bank)
    assert bank.cred(xid, 100, approval) == ("12", 0)
    assert bank.totals()["credited"] == 0


def test_credit_reversal(p):
    bank = Books(p)
    xid, approval = approved(bank, 5000)
    bank.cap(xid, 5000, approval)
    bank.cred(xid, 2000, approval)
    credit_stan = stan(xid, "IssCredReq")
    rev = "IssCredRevReq"
    assert bank.advice(rev, xid, 2000, approval, credit_stan + 1) == ("25", 0)
    assert bank.advice(rev, xid, 1999, approval, credit_stan) == ("13", 0)
    assert bank.advice(rev, xid, 2000, approval, credit_stan) == ("00", 2000)
    assert bank.advice(rev, xid, 2000, approval, credit_stan) == ("00", 2000)   # a repeat
    assert bank.advice(rev, xid, 2000, approval, credit_stan, seq=1) == ("12", 0)  # reversed
    assert bank.totals() == {"held": 0, "posted": 5000, "credited": 0}
    assert bank.state(xid)["credits"][str(credit_stan)]["reversed"] is True
    assert bank.kinds().count("ledger.credit_reversal") == 1
    assert all(e["kind"] == "capture" for e in bank.shared[PENDING].values())


# --- capture reversal ---------------------------------------------------------------------------
def test_capture_reversal_undoes_the_posting_and_reinstates_the_hold(p):
    bank = Books(p)
    xid, approval = approved(bank, 5000)
    assert bank.cap(xid, 4000, approval) == ("00", 4000)                  # releases all 5000
    cap_stan, rev = stan(xid, "IssCapReq"), "IssCapRevReq"
    assert bank.advice(rev, xid, 4000, approval, cap_stan + 8) == ("25", 0)
    assert bank.advice(rev, xid, 3000, approval, cap_stan) == ("13", 0)
    assert bank.advice(rev, xid, 4000, "ZZZZZZ", cap_stan) == ("12", 0)
    assert bank.advice(rev, xid, 4000, approval, cap_stan) == ("00", 4000)
    state = bank.state(xid)
    assert (state["state"], state["held"], state["posted"]) == ("HELD", 5000, 0)
    assert bank.totals() == {"held": 5000, "posted": 0, "credited": 0}
    effect = bank.effects[-1]
    assert (effect.kind, effect.data["amount"], effect.data["reinstated"]) == (
        "ledger.capture_reversal", 4000, 5000)
    assert PENDING not in bank.shared
    assert bank.advice(rev, xid, 4000, approval, cap_stan, seq=1) == ("12", 0)  # reversed
    assert bank.cap(xid, 5000, approval, seq=1) == ("00", 5000)           # capture again
    assert bank.state(xid)["state"] == "POSTED"


def test_no_capture_reversal_once_credited_or_unknown(p):
    bank = Books(p)
    xid, approval = approved(bank, 5000)
    assert bank.advice("IssCapRevReq", xid, 5000, approval, stan(xid, "IssCapReq")) == ("25", 0)
    bank.cap(xid, 5000, approval)
    bank.cred(xid, 100, approval)
    assert bank.advice("IssCapRevReq", xid, 5000, approval, stan(xid, "IssCapReq")) == ("12", 0)
    assert bank.totals() == {"held": 0, "posted": 5000, "credited": 100}


# --- clearing ---------------------------------------------------------------------------------
def _batch(bank):
    """Two captured purchases, one credited: the items of their batch."""
    a, ra = approved(bank, 5000)
    b, rb = approved(bank, 3000)
    bank.cap(a, 5000, ra)
    bank.cap(b, 2500, rb)
    bank.cred(a, 1000, ra)
    return a, ra, b, rb, [(a, "capture", stan(a, "IssCapReq"), 5000),
                          (b, "capture", stan(b, "IssCapReq"), 2500),
                          (a, "credit", stan(a, "IssCredReq"), 1000)]


def test_clearing_settles_every_item_once(p):
    bank = Books(p)
    a, ra, b, rb, items = _batch(bank)
    effects = len(bank.effects)
    send, data = bank.clear(1, items)
    assert (data["mti"], data["response_code"], data["batch_id"]) == ("0510", "00", 1)
    assert data["totals"] == [{"currency": 978, "amt_exp10": -2, "capture_count": 2,
                               "capture_amount": 7500, "credit_count": 1, "credit_amount": 1000}]
    assert PENDING not in bank.shared
    (settle,) = bank.effects[effects:]
    assert settle.kind == "ledger.settle" and [i["kind"] for i in settle.data["items"]] == [
        "capture", "capture", "credit"]
    assert settle.data["secret"]["pans"] == [PAN] * 3
    assert bank.clear(1, items)[1]["response_code"] == "00"                 # the same: again
    assert bank.clear(1, items[:1], seq=1)[1]["response_code"] == "94"      # another: 94
    assert len(bank.effects) == effects + 1
    # settled: no capture or credit reversal any more
    assert bank.advice("IssCapRevReq", b, 2500, rb, stan(b, "IssCapReq")) == ("12", 0)
    assert bank.advice("IssCredRevReq", a, 1000, ra, stan(a, "IssCredReq")) == ("12", 0)
    assert bank.totals() == {"held": 0, "posted": 7500, "credited": 1000}


@pytest.mark.parametrize("change", ["unknown item", "wrong amount", "twice", "totals",
                                    "another merchant's"])
def test_a_clearing_that_does_not_reconcile_is_95_and_moves_nothing(p, change):
    bank = Books(p)
    a, ra, b, rb, items = _batch(bank)
    totals = None
    if change == "unknown item":
        items = [*items, (fresh(20), "capture", 1, 10)]
    elif change == "wrong amount":
        items = [(a, "capture", items[0][2], 4999), *items[1:]]
    elif change == "twice":
        items = [*items, items[1]]
    elif change == "totals":
        totals = [{"currency": 978, "amt_exp10": -2, "capture_count": 2,
                   "capture_amount": 7501, "credit_count": 1, "credit_amount": 1000}]
    pending, effects = dict(bank.shared[PENDING]), len(bank.effects)
    if change == "another merchant's":  # the same items, named for another merchant
        xid = batch_xid("shop-0002", 1)
        rows = [{"xid": x, "kind": k, "stan": s, "amount": money(v)} for x, k, s, v in items]
        _, data = bank.ask("IssClearReq", xid, {
            "stan": stan(xid, "IssClearReq"), "rrn": rrn(xid), "batch_id": 1, "items": rows,
            "totals": clear_totals(rows), "merchant_id": "shop-0002"})
    else:
        _, data = bank.clear(1, items, totals)
    assert data["response_code"] == "95"
    assert bank.shared[PENDING] == pending and len(bank.effects) == effects
    if change in ("unknown item", "twice", "totals"):  # the issuer's own totals: all it has
        assert data["totals"][0]["capture_amount"] == 7500
    _, fixed = bank.clear(1, _batch_items(items, change))
    assert fixed["response_code"] == "00" and PENDING not in bank.shared


def _batch_items(items, change):
    """The batch's genuine items again (after a 95 a correct request settles it)."""
    if change == "unknown item":
        return items[:-1]
    if change == "twice":
        return items[:-1]
    if change == "wrong amount":
        return [(items[0][0], "capture", items[0][2], 5000), *items[1:]]
    return items


def test_a_clearing_must_name_its_batch_xid(p):
    bank = Books(p)
    xid = fresh(32)
    send, data = bank.ask("IssClearReq", xid, {
        "stan": stan(xid, "IssClearReq"), "rrn": rrn(xid), "batch_id": 1, "items": [],
        "totals": []})
    err = read_error(unwrap(Inbound("Error", send.wrapper_der, BANK), NOW))
    assert data is None and err.code == "unknownXID" and bank.states == {}


def test_an_empty_batch_clears(p):
    bank = Books(p)
    _, data = bank.clear(7, [])
    assert (data["response_code"], data["totals"]) == ("00", [])


def test_the_shared_cards_never_hold_the_pending_entries(p):
    bank = Books(p)
    _batch(bank)
    assert set(cards(bank.shared)) == {PAN}


def test_the_hold_left_by_a_partial_completion_expires_and_the_posting_stays(p):
    from setmail.roles.base import TimerFired
    bank = Books(p)
    xid, approval = approved(bank, 10000)
    bank.cap(xid, 3000, approval, remaining=7000)
    (key,) = bank.states
    timer = TimerFired("hold_expiry", {"transaction": key})
    out = bank.role.step(bank.states[key], timer, NOW, bank.shared)
    assert (out.state["state"], out.state["held"], out.state["posted"]) == ("POSTED", 0, 3000)
    assert out.shared[PAN] == {"held": 0, "posted": 3000}
    (effect,) = out.effects
    assert (effect.kind, effect.data["amount"]) == ("ledger.expire", 7000)
    again = bank.role.step(out.state, timer, NOW, out.shared)   # stale: nothing more
    assert again.effects == () and again.state == out.state
