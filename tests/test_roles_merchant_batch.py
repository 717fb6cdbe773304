"""The merchant's batches (docs/lifecycle.md): its own record of every capture and credit the
gateway put in a batch, BatchAdminReq/BatchAdminRes built and opened with real crypto, the
reconciliation of a close (BALANCED, or OUT_OF_BALANCE with both totals and the items that
differ, never hidden), a batch closed twice, ``auto_close``, re-sends and give-up, and the mail
attacker's rules for the batch exchange (only our gateway's answer to the outstanding request, an
Error ends it only if our gateway signed it naming our exact bytes)."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace

import pytest

from setmail.asn1 import capture as cap, purchase as pu
from setmail.asn1.codec.fastder import encode
from setmail.crypto.operators import Enc
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.errors import ProtocolError
from setmail.roles.base import CancelTimer, Command, Inbound, SetTimer, TimerFired
from setmail.roles.merchant_batch import (MAX_BATCHES, merchant_shared, reconcile, record_item,
                                          totals)
from setmail.roles.refusal import error_wrapper
from setmail.roles.wire import unh, wrap
from setmail.vectors.build import Parties
from tests.test_roles_merchant import GATEWAY, ORDER, T, Purchase, authorised, merchant_of
from tests.test_roles_merchant import another_gateway
from tests.test_roles_merchant_lifecycle import (cap_res, captured, command, cro_res, header_ids,
                                                 opened, usd)

HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def parties():
    return Parties(DEFAULT_SUITE)


@pytest.fixture(scope="module")
def gateway2(parties):
    return another_gateway(parties)


@dataclass
class Books:
    """The merchant's ``batches`` transaction beside a purchase (same role, same shared state)."""

    buy: Purchase
    state: dict | None = None
    outs: list = field(default_factory=list)

    def step(self, event, now=T):
        buy = self.buy
        out = buy.merchant.step(self.state, event, now, buy.shared)
        assert out.transaction == "batches"
        self.state = None if out.state is None else json.loads(json.dumps(out.state))
        if out.shared is not None:
            buy.shared = json.loads(json.dumps(out.shared))
        buy.sent.extend(out.sends)
        self.outs.append(out)
        return out

    def batch(self, operation: str, batch_id: int | None = None, ref: str = "r1", now=T):
        return self.step(Command("batch", {"operation": operation, "batch_id": batch_id,
                                           "ref": ref}), now)

    def deliver(self, type_name: str, der: bytes, now=T):
        return self.step(Inbound(type_name, der, GATEWAY, f"<{type_name}@test>"), now)

    @property
    def last(self) -> dict:
        return self.state["requests"][-1]


def bt(debits: int, debit: int, credits: int = 0, credit: int = 0) -> dict:
    return {"trans_count_credit": credits, "trans_total_credit": usd(credit),
            "trans_count_debit": debits, "trans_total_debit": usd(debit),
            "batch_total": usd(debit - credit)}


def batch_res(buy: Purchase, send, *, status="success", batch_id=1, batch_totals=None,
              details=None, closed=True, signer=None):
    """A BatchAdminRes for ``send`` (``details``: [(seq, amount)] of this purchase)."""
    req = opened(buy.p, send)
    fields: dict = {"batch_admin_rr_tags": req.data["batch_admin_rr_tags"], "ba_status": status,
                    "brand_crl_identifier": buy.p.tree.brand.bci}
    if batch_id is not None:
        fields["batch_id"] = batch_id
        fields["batch_status"] = {"batch_id": batch_id, "open_date_time": T,
                                  **({"closed_when": T} if closed else {}),
                                  **({"batch_totals": batch_totals} if batch_totals else {})}
    if details is not None:
        tids = pu.TransIDs.load(unh(buy.state["trans_ids"]))
        fields["trans_detail_seq"] = [{"trans_ids": tids, "auth_rrpid": unh(buy.state[
            "auth_rrpid"]), "cap_amt": usd(amount), "batch_sequence_num": seq}
            for seq, amount in details]
    body = Enc(signer or buy.p.gateway_sig, buy.p.merchant_kex.cert, "BatchAdminResData",
               encode(cap.BatchAdminResData, fields), "BatchAdminResTBE")
    return wrap("BatchAdminRes", body, now=T, rrpid=req.rrpid, lid_m=b"batches")


def refunded(p, minor=200, merchant=None):
    """Captured in batch 1 (seq 1) and refunded ``minor`` (seq 2)."""
    buy = captured(p, merchant, batch=(1, 1))
    buy.deliver(*cro_res(buy, command(buy, "refund", amount=minor).sends[0], batch=(1, 2)),
                sender=GATEWAY)
    return buy


# --- close and reconciliation ---------------------------------------------------------------------
def test_a_close_whose_totals_agree_is_balanced(parties):
    buy = refunded(parties)
    books = Books(buy)
    out = books.batch("close", 1)
    (send,) = out.sends
    assert send.message_type == "BatchAdminReq" and send.to == GATEWAY
    assert {k: v for k, v in header_ids(send).items() if v} == {"lid_m": b"batches"}
    req = opened(parties, send)
    assert req.signer == parties.merchant_sig.cert
    data = req.data
    assert (data["batch_operation"], data["batch_id"]) == ("close", 1)
    assert data["return_batch_summary_ind"] and data["return_trans_detail_ind"]
    assert data["batch_admin_rr_tags"]["mer_term_ids"]["merchant_id"] == Parties.MER_ID
    assert books.state["state"] == "BATCHES" and books.last["ref"] == "r1"
    assert buy.shared["admin"]["op"] == "close"
    assert any(isinstance(t, SetTimer) and t.name == "batch_retry"
               and t.payload["rrpid"] == req.rrpid.hex() for t in out.timers)
    out = books.deliver("BatchAdminRes", batch_res(
        buy, send, batch_totals=bt(1, ORDER.amount, 1, 200),
        details=[(1, ORDER.amount), (2, 200)]))
    assert out.refused is None and CancelTimer("batch_retry") in out.timers
    assert out.peer == GATEWAY and out.sends == ()
    record = buy.shared["batches"]["1"]
    assert record["status"] == "closed" and "admin" not in buy.shared
    rec = record["reconciliation"]
    assert rec["result"] == "BALANCED" and rec["ours"] == rec["gateway"] == {
        "credit_count": 1, "credit_total": 200, "debit_count": 1, "debit_total": ORDER.amount,
        "net": ORDER.amount - 200}
    assert books.last["result"]["code"] == "success"
    assert books.last["result"]["reconciliation"] == "BALANCED"


def test_totals_that_disagree_are_out_of_balance_with_both_sides_shown(parties):
    buy = refunded(parties)
    books = Books(buy)
    send = books.batch("close").sends[0]  # the open batch: the gateway names it
    assert opened(parties, send).data["batch_id"] is None
    books.deliver("BatchAdminRes", batch_res(
        buy, send, batch_totals=bt(2, ORDER.amount + 999, 1, 200),
        details=[(1, ORDER.amount), (2, 200), (3, 999)]))
    rec = buy.shared["batches"]["1"]["reconciliation"]
    assert rec["result"] == "OUT_OF_BALANCE" and books.last["result"]["reconciliation"] == \
        "OUT_OF_BALANCE"
    assert rec["ours"]["debit_total"] == ORDER.amount
    assert rec["gateway"]["debit_total"] == ORDER.amount + 999
    assert rec["differences"] == [{"seq": 3, "ours": None, "gateway": [buy.key, 999]}]


def test_same_sums_but_other_items_are_still_out_of_balance():
    record = {"items": [[1, "capture", "aa", 500], [2, "capture", "bb", 300]]}
    native = {"trans_count_credit": 0, "trans_total_credit": usd(0), "trans_count_debit": 2,
              "trans_total_debit": usd(800), "batch_total": usd(800)}
    details = [{"batch_sequence_num": 1, "trans_ids": {"xid": bytes.fromhex("aa")},
                "cap_amt": usd(500)},
               {"batch_sequence_num": 2, "trans_ids": {"xid": bytes.fromhex("cc")},
                "cap_amt": usd(300)}]
    out = reconcile(record, native, details)
    assert out["result"] == "OUT_OF_BALANCE" and out["differences"] == [
        {"seq": 2, "ours": ["bb", 300], "gateway": ["cc", 300]}]
    assert reconcile(record, native, details[:1] + [{**details[1], "trans_ids": {
        "xid": bytes.fromhex("bb")}}])["result"] == "BALANCED"
    # an empty batch at the gateway has no totals: zero, against ours
    assert reconcile({"items": []}, None, [])["result"] == "BALANCED"
    assert reconcile(record, None, None)["result"] == "OUT_OF_BALANCE"


def test_a_batch_closed_twice_gets_the_gateways_code(parties):
    buy = refunded(parties)
    books = Books(buy)
    send = books.batch("close", 1).sends[0]
    books.deliver("BatchAdminRes", batch_res(buy, send, batch_totals=bt(1, ORDER.amount, 1, 200)))
    reconciled = buy.shared["batches"]["1"]["reconciliation"]
    send = books.batch("close", 1, ref="r2").sends[0]  # asked anyway: the gateway decides
    books.deliver("BatchAdminRes", batch_res(buy, send, status="batchIDUnavailable",
                                             batch_id=1, closed=True))
    record = buy.shared["batches"]["1"]
    assert books.last["ref"] == "r2" and books.last["result"]["code"] == "batchIDUnavailable"
    assert record["status"] == "closed" and record["reconciliation"] == reconciled
    assert record["refusals"][-1]["code"] == "batchIDUnavailable"


def test_open_and_query(parties):
    buy = captured(parties, batch=(1, 1))
    books = Books(buy)
    send = books.batch("open").sends[0]
    books.deliver("BatchAdminRes", batch_res(buy, send, batch_id=2, closed=False))
    assert buy.shared["batches"]["2"]["status"] == "open" and books.last["result"]["batch_id"] == 2
    send = books.batch("query", 1, ref="q").sends[0]
    assert opened(parties, send).data["batch_operation"] == "query"
    books.deliver("BatchAdminRes", batch_res(buy, send, closed=False,
                                             batch_totals=bt(1, ORDER.amount),
                                             details=[(1, ORDER.amount)]))
    record = buy.shared["batches"]["1"]
    assert record["status"] == "open" and record["reconciliation"]["result"] == "BALANCED"
    assert record["gateway"]["totals"]["debit_total"] == ORDER.amount


def test_batch_commands_one_at_a_time_and_bad_ones(parties):
    buy = captured(parties)
    books = Books(buy)
    for bad in ({"operation": "purge"}, {"operation": "close", "batch_id": 0},
                {"operation": "close", "batch_id": "1"}):
        with pytest.raises(ProtocolError):
            books.step(Command("batch", bad))
    books.batch("close", 1)
    out = books.batch("query", 1, ref="r2")
    assert out.refused and "still waiting" in out.refused and out.sends == ()
    assert buy.merchant.transaction_key(Command("batch", {})) == "batches"


# --- auto_close -------------------------------------------------------------------------------------
def test_auto_close_closes_a_batch_after_its_first_item(parties):
    merchant = merchant_of(parties, auto_close=HOUR)
    buy, _, _ = authorised(parties, merchant)
    cap_req = command(buy, "capture", amount=100).sends[0]
    out = buy.deliver("CapRes", cap_res(buy, cap_req, batch=(1, 1)), sender=GATEWAY)
    (timer,) = [t for t in out.timers if isinstance(t, SetTimer) and t.name == "auto_close"]
    assert timer.due == T + HOUR and timer.payload == {"transaction": buy.key, "batch": 1}
    assert buy.shared["batches"]["1"]["auto_close"] == (T + HOUR).isoformat()
    cap_req = command(buy, "capture").sends[0]  # a second item arms nothing
    out = buy.deliver("CapRes", cap_res(buy, cap_req, batch=(1, 2)), sender=GATEWAY)
    assert not [t for t in out.timers if isinstance(t, SetTimer) and t.name == "auto_close"]
    before = dict(buy.state)
    out = buy.step(TimerFired("auto_close", timer.payload), T + HOUR)
    (send,) = out.sends
    assert send.message_type == "BatchAdminReq" and buy.state == before
    assert opened(parties, send).data["batch_id"] == 1 and buy.shared["admin"]["auto"] is True
    assert any(t.name == "batch_retry" for t in out.timers)
    books = Books(buy)  # the answer arrives in the batches transaction, not yet there
    books.deliver("BatchAdminRes", batch_res(buy, send, batch_totals=bt(2, ORDER.amount),
                                             details=[(1, 100), (2, ORDER.amount - 100)]))
    assert books.state["state"] == "BATCHES" and books.last["auto"] is True
    assert buy.shared["batches"]["1"]["reconciliation"]["result"] == "BALANCED"
    assert buy.step(TimerFired("auto_close", timer.payload), T + 2 * HOUR).sends == ()


def test_auto_close_waits_while_another_batch_request_is_outstanding(parties):
    buy = captured(parties, merchant_of(parties, auto_close=HOUR), batch=(1, 1))
    Books(buy).batch("query", 1)
    out = buy.step(TimerFired("auto_close", {"transaction": buy.key, "batch": 1}), T + HOUR)
    (timer,) = out.timers
    assert out.sends == () and timer.name == "auto_close" and timer.due > T + HOUR


# --- re-sends, Errors, the attacker -----------------------------------------------------------------
def test_a_batch_request_is_re_sent_then_given_up(parties):
    buy = captured(parties, merchant_of(parties, max_retries=1))
    books = Books(buy)
    out = books.batch("close", 1)
    (timer,) = [t for t in out.timers if isinstance(t, SetTimer)]
    stale = books.step(TimerFired("batch_retry", {"transaction": "batches", "rrpid": "00"}))
    assert stale.sends == () and buy.shared["admin"]["attempts"] == 0
    (again,) = books.step(TimerFired("batch_retry", dict(timer.payload))).sends
    assert again.wrapper_der == out.sends[0].wrapper_der
    books.step(TimerFired("batch_retry", dict(timer.payload)))
    assert "admin" not in buy.shared and books.last["result"]["code"] == "noReply"
    assert buy.shared["batches"]["1"]["refusals"][-1]["code"] == "noReply"


def test_only_our_gateways_signed_error_naming_the_request_ends_it(parties, gateway2):
    buy = captured(parties)
    books = Books(buy)
    send = books.batch("close", 1).sends[0]
    forged = error_wrapper("unknownXID", send.wrapper_der, now=T, signer=gateway2)
    assert buy.merchant.transaction_key(Inbound("Error", forged, GATEWAY)) == "batches"
    out = books.deliver("Error", forged)
    assert out.refused and buy.shared["admin"] and out.timers[0].name == "batch_retry"
    genuine = error_wrapper("messageNotSupported", send.wrapper_der, now=T,
                            signer=parties.gateway_sig)
    out = books.deliver("Error", genuine)
    assert out.refused is None and "admin" not in buy.shared
    assert books.last["result"]["code"] == "messageNotSupported"


def test_batch_answers_from_another_gateway_or_for_nothing_are_refused(parties, gateway2):
    buy = captured(parties)
    books = Books(buy)
    out = books.deliver("BatchAdminRes", wrap("BatchAdminRes", b"\x30\x00", now=T))
    assert out.refused and out.state is None  # nothing outstanding: absorbed, nothing stored
    send = books.batch("close", 1).sends[0]
    out = books.deliver("BatchAdminRes", batch_res(buy, send, signer=gateway2))
    assert out.refused and buy.shared["admin"]
    assert buy.shared["batches"]["1"]["status"] == "open"


# --- the shared state ---------------------------------------------------------------------------------
def test_the_shared_state_reads_the_legacy_brand_sequences_and_stays_bounded():
    assert merchant_shared({"Visa": 3}) == {"brand": {"Visa": 3}, "batches": {}}
    assert merchant_shared(None) == {"brand": {}, "batches": {}}
    ms = merchant_shared({})
    for n in range(1, MAX_BATCHES + 6):
        ms, first = record_item(ms, batch_id=n, seq=1, kind="capture", xid="aa", amount=n,
                                currency=840, amt_exp10=-2, now=T)
        assert first
        ms["batches"][str(n)]["status"] = "closed" if n < MAX_BATCHES else "open"
    assert len(ms["batches"]) == MAX_BATCHES and "1" not in ms["batches"]
    assert totals([[1, "capture", "a", 5], [2, "credit", "a", 2]])["net"] == 3


def test_factory_reads_sale_and_auto_close(tmp_path):
    from setmail.agent.factories import load_all
    from setmail.agent.factory import ROLE_FACTORIES
    from setmail.errors import WorldError
    from tests.test_roles_merchant import certified_world
    load_all()
    world = certified_world(tmp_path / "world")
    spec = world.agent("shop")
    cfg = ROLE_FACTORIES["merchant"](world, spec).config
    assert (cfg.sale, cfg.auto_close) == (False, dt.timedelta(0))
    tuned = replace(spec, options={**spec.options, "sale": True, "auto_close": 3600})
    cfg = ROLE_FACTORIES["merchant"](world, tuned).config
    assert (cfg.sale, cfg.auto_close) == (True, HOUR)
    for bad in ({"sale": "yes"}, {"auto_close": -1}, {"auto_close": "soon"}):
        with pytest.raises(WorldError):
            ROLE_FACTORIES["merchant"](world, replace(spec, options={**spec.options, **bad}))

