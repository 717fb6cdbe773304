"""The merchant's lifecycle against the real Gateway and Issuer roles (tests/roles_net.py): every
request the merchant builds is what the gateway takes, every answer the gateway builds is what the
merchant accepts, and the merchant's states, batch records and reconciliation follow the gateway's
decisions (SET's codes reaching the merchant) while the issuer's ledger keeps its invariant.  The
cardholder's side is played by the real dual signature of tests/test_roles_merchant.Purchase;
amounts in EUR, the issuer's card currency."""
from __future__ import annotations

import datetime as dt

import pytest

from setmail.crypto.suite import DEFAULT_SUITE
from setmail.roles.base import Command, Inbound, TimerFired
from setmail.roles.purchase_msgs import Order
from setmail.vectors.build import Parties
from tests.gateway_cast import BANK, GW, SHOP, book, network
from tests.ledger_check import assert_ledger_holds
from tests.test_roles_merchant import ORDER, T, Purchase, merchant_of

EUR = 978
AMOUNT = ORDER.amount


@pytest.fixture(scope="module")
def parties():
    return Parties(DEFAULT_SUITE)


class Flow(Purchase):
    """A purchase whose merchant talks to the real gateway (and it to the real issuer) on a
    ``Net``: each step at the merchant is delivered on until the network is quiet."""

    net = None

    def step(self, event, now=T):
        done = self.net.run(SHOP, event, now, max_hops=40)
        for address, out in done:
            if address == SHOP:
                self.sent.extend(out.sends)
        self.state = self.net.states.get((SHOP, self.key))
        self.shared = self.net.shared.get(SHOP, {})
        return done[0][1]

    def command(self, name: str, **args):
        return self.step(Command(name, {"xid": self.key, **args}))

    def batch(self, operation: str, batch_id: int | None = None, now=T):
        self.net.run(SHOP, Command("batch", {"operation": operation, "batch_id": batch_id,
                                            "ref": operation}), now, max_hops=40)
        self.shared = self.net.shared.get(SHOP, {})
        return self.net.states[(SHOP, "batches")]["requests"][-1]

    @property
    def gw(self) -> dict:
        (state,) = [s for (a, k), s in self.net.states.items() if a == GW and
                    k.startswith(self.key)]
        return state

    @property
    def bank(self) -> dict:
        (state,) = [s for (a, k), s in self.net.states.items() if a == BANK and
                    k.startswith(self.key)]
        return state


def flow(p, *, terms=None, net=None, **merchant) -> tuple[Flow, object]:
    """Ordered and authorised through the real gateway and issuer (``order_args`` e.g. ship_now)."""
    net = net or network(p)
    order_args = merchant.pop("order_args", {})
    net.roles[SHOP] = merchant_of(p, **merchant)
    buy = Flow(p, net.roles[SHOP])
    buy.net = net
    buy.order(currency=EUR, **order_args)
    buy.pinit_req()
    buy.preq(order=Order(ORDER.description, AMOUNT, EUR, terms=terms))
    return buy, net


def captured(p, **kw) -> Flow:
    buy, _ = flow(p, **kw)
    assert buy.state["state"] == "AUTHORIZED", buy.state
    buy.command("capture")
    assert buy.state["state"] == "CAPTURED", buy.state
    return buy


# --- void -----------------------------------------------------------------------------------------
def test_void_full_and_partial(parties):
    buy, net = flow(parties)
    buy.command("void", amount=1000)
    s = buy.state
    assert (s["state"], s["auth_amt"], s["result"]["code"]) == ("AUTHORIZED", 1000, "approved")
    assert buy.gw["auth_amt"] == 1000 and buy.bank["held"] == 1000
    buy.command("capture")  # the new CapToken captures the new amount
    assert (buy.state["state"], buy.state["captured"]) == ("CAPTURED", 1000)
    assert_ledger_holds(net)
    other, net = flow(parties)
    other.command("void")
    assert other.state["state"] == "VOIDED" and other.gw["state"] == "VOIDED"
    assert "secret" not in other.gw and other.bank["held"] == 0
    assert_ledger_holds(net)


def test_void_after_capture_is_already_captured(parties):
    buy = captured(parties)
    buy.command("void")
    s = buy.state
    assert s["state"] == "CAPTURED" and s["result"]["code"] == "alreadyCaptured"
    assert "refund" in s["advice"]
    assert_ledger_holds(buy.net)


# --- captures, refunds, reversals, batches ----------------------------------------------------------
def test_a_single_shipment_is_captured_once(parties):
    buy = captured(parties, order_args={})
    buy.command("capture", amount=1)
    assert buy.state["result"]["code"] == "duplicateRequest" and buy.bank["held"] == 0


def test_the_whole_book_of_one_purchase_balances_at_the_close(parties):
    buy, net = flow(parties, order_args={"ship_now": 500})
    buy.command("authorize")  # the rest: several captures keep the hold of what is left
    buy.command("capture", amount=500)
    assert buy.bank["held"] == AMOUNT - 500
    buy.command("capture", amount=AMOUNT)  # above the authorised total: the gateway's code
    assert buy.state["result"]["code"] == "amountTooLarge" and buy.state["captured"] == 500
    buy.command("capture")
    assert (buy.state["state"], buy.state["captured"]) == ("CAPTURED", AMOUNT)
    buy.command("refund", amount=200)
    buy.command("refund", amount=300)
    assert (buy.state["state"], buy.state["credited"]) == ("PARTLY_REFUNDED", 500)
    buy.command("refund_reverse")
    assert (buy.state["state"], buy.state["credited"]) == ("PARTLY_REFUNDED", 200)
    buy.command("refund", amount=AMOUNT)  # more than is left: the gateway refuses
    assert buy.state["result"]["code"] == "amountTooLarge" and buy.state["credited"] == 200
    mine = buy.shared["batches"]
    (batch_id,) = mine
    theirs = book(net)["live"][batch_id]["items"]
    assert [[i["seq"], i["kind"], i["amount"]] for i in theirs] == [
        [i[0], i[1], i[3]] for i in mine[batch_id]["items"]]
    result = buy.batch("close")
    assert result["result"]["code"] == "success"
    assert result["result"]["reconciliation"] == "BALANCED"
    record = buy.shared["batches"][batch_id]
    assert record["status"] == "closed" and record["reconciliation"]["ours"] == {
        "credit_count": 1, "credit_total": 200, "debit_count": 2, "debit_total": AMOUNT,
        "net": AMOUNT - 200}
    again = buy.batch("close", int(batch_id))  # a batch closed twice
    assert again["result"]["code"] == "batchIDUnavailable"
    buy.command("refund_reverse")  # the credit is settled now
    assert buy.state["result"]["code"] == "originalProcessed" and "no longer" in \
        buy.state["advice"]
    assert_ledger_holds(net)


def test_capture_reversal_before_and_after_settlement(parties):
    buy = captured(parties)
    buy.command("capture_reverse")
    s = buy.state
    assert (s["state"], s["captured"]) == ("AUTHORIZED", 0) and buy.gw["state"] == "AUTHORIZED"
    assert buy.bank["held"] == AMOUNT
    (batch_id,) = buy.shared["batches"]
    assert buy.shared["batches"][batch_id]["items"] == []
    buy.command("capture")
    assert buy.state["state"] == "CAPTURED"
    assert buy.batch("close")["result"]["reconciliation"] == "BALANCED"
    buy.command("capture_reverse")
    s = buy.state
    assert s["state"] == "CAPTURED" and s["result"]["code"] == "originalProcessed"
    assert "refund" in s["advice"]
    buy.command("refund")  # what the advice says: a credit instead
    assert buy.state["state"] == "REFUNDED"
    assert_ledger_holds(buy.net)


def test_an_out_of_balance_close_is_reported(parties):
    buy = captured(parties)
    (batch_id,) = buy.shared["batches"]
    # the merchant lost track of an item (its record was damaged): the close shows it
    records = dict(buy.net.shared[SHOP]["batches"])
    records[batch_id] = {**records[batch_id], "items": []}
    buy.net.shared[SHOP] = {**buy.net.shared[SHOP], "batches": records}
    result = buy.batch("close")
    assert result["result"]["reconciliation"] == "OUT_OF_BALANCE"
    rec = buy.shared["batches"][batch_id]["reconciliation"]
    assert rec["ours"]["debit_total"] == 0 and rec["gateway"]["debit_total"] == AMOUNT
    assert rec["differences"] == [{"seq": 1, "ours": None, "gateway": [buy.key, AMOUNT]}]


# --- split shipment, instalments, recurring, sale -------------------------------------------------
def test_split_shipment(parties):
    buy, net = flow(parties, order_args={"ship_now": 500})
    s = buy.state
    assert (s["state"], s["auth_amt"]) == ("AUTHORIZED", 500) and s.get("auth_token")
    buy.command("capture")
    buy.command("authorize", amount=AMOUNT)  # more than the rest: amountError
    assert buy.state["result"]["code"] == "amountError" and buy.state["auth_amt"] == 500
    buy.command("authorize")
    s = buy.state
    assert (s["state"], s["auth_amt"], s["result"]["code"]) == ("CAPTURED", AMOUNT, "approved")
    buy.command("capture")
    assert buy.state["captured"] == AMOUNT and buy.bank["held"] == 0
    assert_ledger_holds(net)


def test_instalments_are_counted_by_the_gateway(parties):
    buy, net = flow(parties, terms=("instalments", 3), order_args={"instalments": 3})
    assert buy.state["auth_amt"] == AMOUNT // 3
    for _ in range(2):
        buy.command("authorize")
        assert buy.state["result"]["code"] == "approved"
    assert buy.state["auth_amt"] == AMOUNT and not buy.state.get("auth_token")
    out = buy.command("authorize", amount=1)
    assert out.refused and "no AuthToken" in out.refused
    buy.command("capture")
    assert buy.state["captured"] == AMOUNT
    assert_ledger_holds(net)


def test_recurring_payments_too_soon_then_on_time(parties):
    terms = ("recurring", 2, "20301231")  # every 2 days (the vectors' BCI lives a week)
    buy, net = flow(parties, terms=terms, order_args={"recurring": {"days": 2,
                                                                     "until": "20301231"}})
    buy.command("capture")
    buy.command("authorize")
    assert buy.state["result"]["code"] == "recurringTooSoon"
    later = T + dt.timedelta(days=2)
    buy.step(Command("authorize", {"xid": buy.key}), later)
    s = buy.state
    assert (s["result"]["code"], s["auth_amt"]) == ("approved", 2 * AMOUNT)
    buy.step(Command("capture", {"xid": buy.key}), later)
    assert buy.state["captured"] == 2 * AMOUNT
    assert_ledger_holds(net)


def test_a_sale_is_authorised_and_captured_in_one_answer(parties):
    buy, net = flow(parties, sale=True)
    s = buy.state
    assert (s["state"], s["captured"]) == ("CAPTURED", AMOUNT) and buy.gw["state"] == "CAPTURED"
    batch_id = s["captures"][0]["batch_id"]
    assert buy.shared["batches"][str(batch_id)]["items"] == [[1, "capture", buy.key, AMOUNT]]
    buy.command("refund")
    assert buy.state["state"] == "REFUNDED"
    assert_ledger_holds(net)


# --- auto_close and the attacker -------------------------------------------------------------------
def test_auto_close_closes_and_reconciles(parties):
    buy = captured(parties, auto_close=dt.timedelta(hours=1))
    ((address, key, name), timer), = [(k, t) for k, t in buy.net.timers.items()
                                      if k[0] == SHOP and k[2] == "auto_close"]
    assert key == buy.key
    buy.step(TimerFired(name, dict(timer.payload)), timer.due)
    (batch_id,) = buy.shared["batches"]
    record = buy.shared["batches"][batch_id]
    assert record["status"] == "closed" and record["reconciliation"]["result"] == "BALANCED"
    assert buy.net.states[(SHOP, "batches")]["requests"][-1]["auto"] is True


def test_a_replayed_answer_changes_nothing(parties):
    buy = captured(parties)
    wire = []
    buy.net.tamper = lambda sender, send: wire.append(send) or send
    buy.command("refund", amount=100)
    (cred_res,) = [s for s in wire if s.message_type == "CredRes"]
    before = dict(buy.state)
    out = buy.step(Inbound("CredRes", cred_res.wrapper_der, GW, "<again>"))
    assert out.refused and out.sends == () and buy.state == before
    assert buy.state["credited"] == 100 and len(buy.gw["credits"]) == 1
