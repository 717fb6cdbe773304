"""The gateway's batches (docs/lifecycle.md): captures and credits go into the merchant's open
batch, BatchAdminReq opens, queries and closes (a batch closed twice, unknown ids, another
merchant's batches), a close is cleared with the real issuer in one IssClearReq (SETTLED, or
OUT_OF_BALANCE on its 95), batches roll over at ``max_batch_items``.  Real keys, the real Issuer,
the merchant's requests built by hand."""
from __future__ import annotations

import pytest

from setmail.crypto.suite import DEFAULT_SUITE
from setmail.roles.network_msgs import batch_xid
from setmail.vectors.build import Parties
from tests.gateway_cast import (BANK, GW, MER_ID, SHOP, Purchase, adjust_code, approved,
                                batch_admin_req, batch_state, book, cap_batch, capture, deliver,
                                eur, fire_retry, gw_state, network, open_batch_res, shop2)
from tests.ledger_check import assert_ledger_holds
from tests.test_roles_gateway_attacker import EVIL, rewrap


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def admin(p, net, operation, sender=SHOP, merchant=None, **kw):
    done = deliver(net, "BatchAdminReq", batch_admin_req(p, operation, merchant=merchant, **kw),
                   sender=sender)
    return open_batch_res(p, done, merchant), done


def status(data) -> tuple:
    return data["ba_status"].native, data["batch_id"].native


def captured(p, net, amount: int = 1234):
    net, pur, token = approved(p, net)
    done = capture(net, pur.cap_req(token, amount=eur(amount)))
    return pur, token, cap_batch(p, done)


def sent(net, start: int) -> list[str]:
    return [t for _, _, t in net.log[start:]]


def test_captures_fill_the_open_batch_and_a_close_settles_it_with_the_issuer(p):
    net = network(p)
    pur1, token1, res1 = captured(p, net, 1000)
    pur2, _, res2 = captured(p, net, 500)
    assert res1 == ("success", 1000, 1, 1) and res2 == ("success", 500, 1, 2)
    deliver(net, "CredReq", pur1.adjust_req("CredReq", token1, amount=200))
    log = len(net.log)
    data, done = admin(p, net, "close", detail=True)
    assert status(data) == ("success", 1)
    assert sent(net, log) == ["BatchAdminRes", "IssClearReq", "IssClearRes"]
    totals = data["batch_status"]["batch_totals"].native
    assert (totals["trans_count_debit"], totals["trans_total_debit"]["amount"],
            totals["trans_count_credit"], totals["trans_total_credit"]["amount"],
            totals["batch_total"]["amount"]) == (2, 1500, 1, 200, 1300)
    assert data["batch_status"]["closed_when"].native is not None
    assert [d["batch_sequence_num"].native for d in data["trans_detail_seq"]] == [1, 2, 3]
    batch = batch_state(net, 1)
    assert (batch["state"], batch["clear_code"], batch["batch_id"]) == ("SETTLED", "00", 1)
    assert batch["xid"] == batch_xid(MER_ID, 1).hex() and len(batch["items"]) == 3
    assert batch["issuer_totals"] == batch["totals"]
    assert book(net)["open"] is None and book(net)["live"] == {} and book(net)["next"] == 2
    # the next capture opens batch 2
    assert captured(p, net, 100)[2] == ("success", 100, 2, 1)
    assert_ledger_holds(net)


def test_a_batch_closed_twice_and_unknown_batches(p):
    net = network(p)
    captured(p, net)
    assert status(admin(p, net, "close")[0]) == ("success", 1)
    assert status(admin(p, net, "close", batch_id=1)[0]) == ("batchIDUnavailable", 1)
    assert status(admin(p, net, "close")[0])[0] == "unknownBatchID"  # none is open
    assert status(admin(p, net, "close", batch_id=7)[0]) == ("unknownBatchID", 7)
    assert status(admin(p, net, "query", batch_id=7)[0]) == ("unknownBatchID", 7)
    assert batch_state(net, 1)["state"] == "SETTLED"
    # a closed batch is still queried, with its totals and details
    data, _ = admin(p, net, "query", batch_id=1, summary=True, detail=True)
    assert status(data) == ("success", 1)
    assert data["batch_status"]["batch_totals"]["batch_total"]["amount"].native == 1234
    assert len(data["trans_detail_seq"]) == 1
    assert_ledger_holds(net)


def test_open_query_and_purge(p):
    net = network(p)
    data, _ = admin(p, net, "open")
    assert status(data) == ("success", 1) and data["batch_status"]["batch_id"].native == 1
    assert status(admin(p, net, "open")[0]) == ("batchAlreadyOpen", 1)
    data, _ = admin(p, net, "query", summary=True)
    assert status(data) == ("success", 1)
    assert data["batch_status"]["batch_totals"].native is None  # empty: no totals
    assert status(admin(p, net, "purge")[0])[0] == "unspecifiedFailure"
    log = len(net.log)
    assert status(admin(p, net, "close")[0]) == ("success", 1)
    assert sent(net, log) == ["BatchAdminRes"]  # nothing to clear
    assert batch_state(net, 1)["state"] == "SETTLED"
    assert status(admin(p, net, "open", batch_id=5)[0]) == ("batchIDUnavailable", 5)
    assert status(admin(p, net, "open", batch_id=2)[0]) == ("success", 2)
    assert_ledger_holds(net)


def test_batches_roll_over_at_max_batch_items(p):
    net = network(p, max_batch_items=2)
    results = [captured(p, net, 100 + i)[2][2:] for i in range(3)]
    assert results == [(1, 1), (1, 2), (2, 1)]
    assert book(net)["live"]["1"]["full"] is True and book(net)["open"] == 2
    assert status(admin(p, net, "close", batch_id=1)[0]) == ("success", 1)  # the full one
    assert status(admin(p, net, "close")[0]) == ("success", 2)  # the open one
    assert batch_state(net, 1)["state"] == batch_state(net, 2)["state"] == "SETTLED"
    assert_ledger_holds(net)


def test_another_merchants_batches_are_its_own(p):
    net = network(p)
    captured(p, net)
    other = shop2(p)
    data, done = admin(p, net, "close", batch_id=1, merchant=other, sender=SHOP)
    assert status(data) == ("unknownBatchID", 1)  # shop2 has no batch 1
    assert not [s for _, out in done for s in out.sends if s.to == SHOP]
    assert book(net)["live"]["1"]["items"] and book(net, "shop-0002") != book(net)
    assert status(admin(p, net, "close")[0]) == ("success", 1)
    assert_ledger_holds(net)


def test_answers_go_to_the_directory_and_a_replay_is_silent(p):
    net = network(p)
    captured(p, net)
    der = batch_admin_req(p, "close")
    done = deliver(net, "BatchAdminReq", der, sender=EVIL)
    assert [(s.to, s.message_type) for _, out in done for s in out.sends][0] == (SHOP,
                                                                                   "BatchAdminRes")
    log = len(net.log)
    again = deliver(net, "BatchAdminReq", rewrap(der), sender=EVIL)
    assert sent(net, log) == [] and again[0][1].state is None
    assert_ledger_holds(net)


def test_the_issuers_95_leaves_the_batch_out_of_balance(p):
    net = network(p)
    pur, _, _ = captured(p, net)
    pending = net.shared[BANK]["pending"]
    pending.pop(next(iter(pending)))  # the issuer has lost the posting
    admin(p, net, "close")
    batch = batch_state(net, 1)
    assert (batch["state"], batch["clear_code"]) == ("OUT_OF_BALANCE", "95")
    assert batch["issuer_totals"] == [] and batch["totals"][0]["capture_amount"] == 1234
    assert gw_state(net, pur)["state"] == "CAPTURED"


def test_a_silent_issuer_leaves_the_batch_uncleared(p):
    net = network(p, max_retries=1)
    captured(p, net)
    bank = net.roles.pop(BANK)
    clears = []

    def keep(frm, send):
        if send.message_type == "IssClearReq":
            clears.append(send.wrapper_der)
        return send
    net.tamper = keep
    admin(p, net, "close")
    first_clear = clears[0]
    assert batch_state(net, 1)["state"] == "CLEARING"
    fire_retry(net)
    fire_retry(net)
    batch = batch_state(net, 1)
    assert batch["state"] == "UNCLEARED" and "IssClearReq" in batch["clear_failure"]
    assert not [k for k in net.timers if k[0] == GW]
    # closing it again sends the very same clearing; the issuer is back and settles it
    net.roles[BANK] = bank
    log = len(net.log)
    data, _ = admin(p, net, "close", batch_id=1)
    assert status(data) == ("success", 1)
    assert sent(net, log) == ["BatchAdminRes", "IssClearReq", "IssClearRes"]
    assert clears[-1] == first_clear
    assert batch_state(net, 1)["state"] == "SETTLED"
    assert status(admin(p, net, "close", batch_id=1)[0]) == ("batchIDUnavailable", 1)
    assert_ledger_holds(net)


def test_a_sale_lands_in_the_batch_with_its_authres(p):
    from tests.gateway_cast import auth, auth_res
    net = network(p)
    pur = Purchase(p)
    code, data, baggage = auth_res(p, auth(net, pur.auth_req(sale=True)))
    assert code == "approved"
    cap = data["auth_res_payload"]["cap_res_payload"].native
    assert (cap["cap_code"], cap["cap_amt"]["amount"], cap["batch_id"],
            cap["batch_sequence_num"]) == ("success", 1234, 1, 1)
    assert baggage["cap_token"] is not None  # for refunds later
    assert gw_state(net, pur)["state"] == "CAPTURED" and "secret" not in gw_state(net, pur)
    assert [t for _, _, t in net.log] == ["IssAuthReq", "IssAuthRes", "IssCapReq", "IssCapRes",
                                          "AuthRes"]
    token = baggage["cap_token"].untag().dump()
    done = deliver(net, "CredReq", pur.adjust_req("CredReq", token, amount=34))
    assert adjust_code(p, done, "CredRes") == ("success", 34, 1, 2)
    assert_ledger_holds(net)
