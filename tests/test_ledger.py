"""The issuer's ledger on a real Store: the rows every lifecycle effect writes, the report, the
invariant checker (it holds after a whole lifecycle, and catches violations built by hand), the
statement, and the CLI (``setmail ledger [--check]``, ``setmail statement``) on a world on disk."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from setmail.agent.effects import EffectContext, stage
from setmail.agent.ledger import ledger_report, ledger_rows
from setmail.agent.ledger_check import check_ledger
from setmail.agent.statement import statement_report
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.money import currency_code
from setmail.roles.issuer_books import PENDING, cards
from setmail.roles.network_msgs import stan
from setmail.store import Store
from setmail.vectors.build import NOW, PAN, Parties
from setmail.world.create import ACCOUNTS_DDL
from tests.gateway_cast import MER_ID
from tests.ledger_check import assert_ledger_holds, ledger_violations
from tests.test_roles_issuer import LIMIT
from tests.test_roles_issuer_lifecycle import Books, approved

BOB = "4012888888881881"


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def lifecycle(bank):
    """Every kind of row: holds, a decline, partial and whole releases, postings, credits, a
    credit reversal, a capture reversal, a partial reversal, settlement; returns the XIDs."""
    a, ra = approved(bank, 10000)
    bank.cap(a, 4000, ra, remaining=6000)                     # partial_release + post
    bank.cap(a, 5000, ra, seq=1)                              # release + post
    bank.cred(a, 1500, ra)                                    # credit
    bank.cred(a, 500, ra, seq=1)
    bank.advice("IssCredRevReq", a, 500, ra, stan(a, "IssCredReq", 1))
    b, rb = approved(bank, 3000)
    bank.cap(b, 3000, rb)
    bank.advice("IssCapRevReq", b, 3000, rb, stan(b, "IssCapReq"))   # posting undone, hold back
    bank.rev(b, 3000, rb, replacement=1000)                   # partial reversal
    c, _ = bank.auth(amount=LIMIT * 3)                        # declined
    bank.clear(1, [(a, "capture", stan(a, "IssCapReq"), 4000),
                   (a, "capture", stan(a, "IssCapReq", 1), 5000),
                   (a, "credit", stan(a, "IssCredReq"), 1500)])
    return a, b, c


def write(bank, path: Path) -> Store:
    """The bank's effects, states and shared totals in a Store, one commit per effect."""
    store = Store(path)
    with store.transaction(now=NOW.timestamp()) as tx:
        for statement in ACCOUNTS_DDL:
            tx.execute(statement)
        for pan, a in bank.role.config.accounts.items():
            tx.execute("INSERT OR REPLACE INTO issuer_accounts VALUES (?, ?, ?, ?, ?, 0, ?)",
                       (pan, a.expiry, a.holder or "alice", a.limit, currency_code(a.currency),
                        a.status))
    for n, effect in enumerate(bank.effects):
        with store.transaction(now=NOW.timestamp() + n) as tx:
            stage(EffectContext("bank", path.parent), tx, [effect])
    with store.transaction(now=NOW.timestamp()) as tx:
        for key, state in bank.states.items():
            tx.put_state("tx/" + key, state)
        tx.put_state("shared/ledger", bank.shared)
    return store


@pytest.fixture
def books(p, tmp_path):
    bank = Books(p)
    xids = lifecycle(bank)
    store = write(bank, tmp_path / "bank.db")
    yield bank, store, xids
    store.close()


def test_rows_of_a_whole_lifecycle_add_up_and_the_invariant_holds(books):
    bank, store, (a, b, c) = books
    rows = ledger_rows(store)
    assert [r["kind"] for r in rows if r["xid"] == a.hex()] == [
        "hold", "partial_release", "post", "release", "post", "credit", "credit",
        "credit_reversal", "settle", "settle", "settle"]
    assert [r["kind"] for r in rows if r["xid"] == b.hex()] == [
        "hold", "release", "post", "capture_reversal", "hold", "partial_release"]
    assert [r["kind"] for r in rows if r["xid"] == c.hex()] == ["decline"]
    assert {r["purchase"] for r in rows if r["xid"] == a.hex()} == {
        k for k in bank.states if k.startswith(a.hex())}
    settle = [r for r in rows if r["kind"] == "settle"]
    assert [(r["item"], r["batch_id"], r["stan"]) for r in settle] == [
        ("capture", 1, stan(a, "IssCapReq")), ("capture", 1, stan(a, "IssCapReq", 1)),
        ("credit", 1, stan(a, "IssCredReq"))]
    (alice,) = [r for r in ledger_report(store) if r["pan_last4"] == PAN[-4:]]
    assert {k: alice[k] for k in ("held", "posted", "credited")} == bank.totals() == {
        "held": 1000, "posted": 9000, "credited": 1500}
    assert alice["available"] == LIMIT - 1000 - 9000 + 1500
    assert check_ledger(store) == []
    assert_ledger_holds(store)
    assert PENDING not in bank.shared  # settled, reversed or undone: nothing pending
    assert set(cards(bank.shared)) == {PAN}


@pytest.mark.parametrize("break_it, problem", [
    ("release twice", "more than held"),
    ("totals", "the issuer decided with"),
    ("credit above capture", "more than captured"),
    ("settle twice", "settled twice"),
    ("reverse a credit twice", "twice"),
])
def test_the_checker_catches_a_violation_and_names_its_entries(books, break_it, problem):
    bank, store, (a, b, c) = books
    row = next(r for r in ledger_rows(store) if r["xid"] == a.hex() and r["kind"] == "hold")
    with store.transaction(now=NOW.timestamp() + 100) as tx:
        def add(kind, amount, **extra):
            columns = {**{k: row[k] for k in ("xid", "pan", "pan_last4", "currency", "code",
                                             "purchase", "merchant_id")},
                       "kind": kind, "amount": amount, "at": NOW.timestamp() + 100, **extra}
            tx.execute(f"INSERT INTO issuer_ledger ({', '.join(columns)}) VALUES "
                       f"({', '.join('?' * len(columns))})", tuple(columns.values()))
        if break_it == "release twice":
            add("release", 6000)
        elif break_it == "totals":
            tx.put_state("shared/ledger", {**bank.shared, PAN: {**bank.shared[PAN], "held": 1}})
        elif break_it == "credit above capture":
            add("credit", 9000, stan=1)
        elif break_it == "settle twice":
            add("settle", 4000, stan=stan(a, "IssCapReq"), item="capture", batch_id=2)
        else:
            add("credit_reversal", 500, original_stan=stan(a, "IssCredReq", 1))
    found = check_ledger(store)
    assert found and any(problem in v["problem"] for v in found), found
    hit = next(v for v in found if problem in v["problem"])
    assert hit["entries"] and all("xid" in e and "pan" not in e for e in hit["entries"])
    assert PAN not in json.dumps(found)
    with pytest.raises(AssertionError, match="invariant fails"):
        assert_ledger_holds(store)


def test_a_role_level_net_is_checked_from_its_effects(p):
    from tests.gateway_cast import issuer as bank_role
    from tests.roles_net import Net
    bank = Books(p)
    lifecycle(bank)
    net = Net({"bank@issuer.example": bank_role(p)})
    net.effects = [("bank@issuer.example", e) for e in bank.effects]
    net.states = {("bank@issuer.example", k): s for k, s in bank.states.items()}
    net.shared = {"bank@issuer.example": bank.shared}
    assert ledger_violations(net) == []
    net.shared["bank@issuer.example"] = {**bank.shared, PAN: {"held": 0, "posted": 0,
                                                              "credited": 0}}
    assert ledger_violations(net)


def test_statement_of_a_card(books):
    bank, store, (a, b, c) = books
    doc = statement_report(store, "alice", issuer="bank@issuer.example", now=NOW)
    (card,) = doc["cards"]
    assert (doc["holder"], doc["issuer"], card["pan_last4"], card["currency"]) == (
        "alice", "bank@issuer.example", PAN[-4:], 978)
    assert {k: card[k] for k in ("held", "posted_pending", "posted_settled", "credited_pending",
                                 "credited_settled", "balance", "available")} == {
        "held": 1000, "posted_pending": 0, "posted_settled": 9000, "credited_pending": 0,
        "credited_settled": 1500, "balance": 7500, "available": LIMIT - 1000 - 9000 + 1500}
    assert len(card["entries"]) == len(ledger_rows(store))
    assert all(e["merchant_id"] == MER_ID for e in card["entries"])
    later = statement_report(store, "alice", issuer="bank", now=NOW,
                             start=NOW + dt.timedelta(seconds=10))
    assert later["cards"][0]["balance"] == 7500                     # totals are as of now
    assert 0 < len(later["cards"][0]["entries"]) < len(card["entries"])
    assert statement_report(store, "nobody", issuer="bank", now=NOW)["cards"] == []
