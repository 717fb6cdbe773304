"""Nothing is held for ever (issue 12, point 10): an authorisation nobody captures expires at the
gateway after ``auth_expiry`` (card data wiped at once, the hold reversed with IssRevReq reason 21,
state EXPIRED, later CapReqs get authExpired), and the issuer itself releases a hold nobody
captured or reversed after ``hold_expiry`` (state EXPIRED, ledger row ``expired``).  Real crypto,
the real gateway and issuer roles (tests/roles_net.py); the ledger on a real Store."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from setmail.agent.effects import EffectContext, stage
from setmail.agent.ledger import ledger_report
from setmail.asn1.base import decode
from setmail.asn1.issuer import IssRevReqData
from setmail.asn1.wrapper import decode_wrapper, message_body
from setmail.crypto.operators import open_Enc
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.store import Store
from setmail.vectors.build import NOW, PAN, Parties
from setmail.world.create import ACCOUNTS_DDL
from tests.gateway_cast import (BANK, GW, SHOP, approved, cap_code, capture, fire, gateway,
                                gw_state, keyed, network)

WEEK = dt.timedelta(days=7)


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def sent(net, start: int = 0) -> list[tuple[str, str, str]]:
    return net.log[start:]


def test_an_uncaptured_authorisation_expires_wipes_the_card_and_gives_the_hold_back(p):
    net, pur, token = approved(p)
    assert gw_state(net, pur)["expires_at"] == (NOW + WEEK).isoformat()
    log, wire = len(net.log), []
    net.tamper = lambda frm, send: wire.append(send) or send
    fire(net, "auth_expiry")
    assert sent(net, log) == [(GW, BANK, "IssRevReq"), (BANK, GW, "IssRevRes")]  # nothing to SHOP
    state = gw_state(net, pur)
    assert state["state"] == "EXPIRED" and "secret" not in state and PAN not in json.dumps(state)
    assert state["expired"]["at"] == (NOW + WEEK).isoformat()
    assert state["expired"]["reason"].startswith("not captured within 7 days")
    assert (state["rev_code"], state["rev_amt"]) == ("00", 1234) and "_issuer" not in state
    (rev,) = [s for s in wire if s.message_type == "IssRevReq"]
    data = decode(IssRevReqData, open_Enc(message_body(decode_wrapper(rev.wrapper_der)).dump(),
                                          p.issuer_kex, "IssRevReqTBE", "IssRevReqData").content)
    assert (data["reason_code"].native, data["amount"]["amount"].native) == ("21", 1234)
    assert data["approval_code"].native == state["approval_code"]
    bank = keyed(net, BANK, pur)
    assert (bank["state"], bank["held"], bank["reversal_reason"]) == ("REVERSED", 0, "21")
    assert net.shared[BANK][PAN] == {"held": 0, "posted": 0}
    assert not [k for k in net.timers if k[0] == GW]
    # the merchant's capture, too late: authExpired, the issuer is not asked
    log = len(net.log)
    assert cap_code(p, capture(net, pur.cap_req(token))) == ("authExpired", 0)
    assert sent(net, log) == [(GW, SHOP, "CapRes")] and gw_state(net, pur)["state"] == "EXPIRED"


def test_a_capture_after_the_expiry_date_is_refused_even_before_the_timer(p):
    net, pur, token = approved(p)
    late = NOW + WEEK + dt.timedelta(seconds=1)
    assert cap_code(p, capture(net, pur.cap_req(token, now=late), now=late)) == ("authExpired", 0)
    assert gw_state(net, pur)["state"] == "AUTHORIZED"  # the timer does the rest
    fire(net, "auth_expiry")
    assert gw_state(net, pur)["state"] == "EXPIRED"


def test_expiry_waits_for_a_capture_in_flight_and_comes_back_if_it_fails(p):
    net, pur, token = approved(p, network(p, max_retries=0))
    bank = net.roles.pop(BANK)
    capture(net, pur.cap_req(token))
    fire(net, "auth_expiry")  # the capture decides first
    assert gw_state(net, pur)["state"] == "ISSUER_CAP" and gw_state(net, pur)["secret"]
    assert cap_code(p, fire(net, "retry")) == ("unspecifiedFailure", 0)  # the issuer is away
    assert gw_state(net, pur)["state"] == "AUTHORIZED"
    assert net.timers[(GW, keyed_key(net, pur), "auth_expiry")].due == NOW + WEEK
    net.roles[BANK] = bank
    fire(net, "auth_expiry")
    state = gw_state(net, pur)
    assert state["state"] == "EXPIRED" and "secret" not in state and state["rev_code"] == "00"


def keyed_key(net, pur) -> str:
    (key,) = [k for (a, k) in net.states if a == GW and k.startswith(pur.xid.hex())]
    return key


def test_an_unanswered_expiry_reversal_still_ends_expired_without_the_card(p):
    net, pur, _ = approved(p, network(p, max_retries=1))
    net.roles.pop(BANK)
    fire(net, "auth_expiry")
    fire(net, "retry")
    fire(net, "retry")
    state = gw_state(net, pur)
    assert state["state"] == "EXPIRED" and "secret" not in state
    assert state["rev_failure"] == "no answer to IssRevReq after 1 re-sends"
    assert not [k for k in net.timers if k[0] == GW]
    assert net.shared[BANK][PAN]["held"] == 1234  # the issuer's own expiry gives it back


def test_gateway_expiry_configurable(p):
    net, pur, _ = approved(p, network(p, auth_expiry=dt.timedelta(hours=36)))
    assert gw_state(net, pur)["expires_at"] == (NOW + dt.timedelta(hours=36)).isoformat()
    fire(net, "auth_expiry")
    assert gw_state(net, pur)["expired"]["reason"].startswith("not captured within 1.5 days")


# --- the issuer's own hold expiry ------------------------------------------------------------------
def test_the_issuer_releases_a_hold_nobody_claims(p, tmp_path):
    net, pur, token = approved(p)
    bank = keyed(net, BANK, pur)
    assert bank["hold_expires_at"] == (NOW + dt.timedelta(days=10)).isoformat()
    net.roles.pop(GW)  # the gateway is gone: nobody will capture or reverse
    (key,) = [k for (a, k) in net.states if a == BANK]
    fire(net, "hold_expiry", BANK)
    bank = net.states[(BANK, key)]
    assert (bank["state"], bank["held"], bank["authorized"]) == ("EXPIRED", 0, 1234)
    assert bank["expired"]["reason"].startswith("neither captured nor reversed within 10 days")
    assert net.shared[BANK][PAN] == {"held": 0, "posted": 0}
    assert [e.kind for a, e in net.effects if a == BANK] == ["ledger.hold", "ledger.expire"]
    # nothing left to capture or reverse
    net.roles[GW] = gateway(p)
    assert cap_code(p, capture(net, pur.cap_req(token))) == ("invalidAuthData", 0)  # issuer 12
    # the ledger rows add up: hold - expired = 0 held
    store = Store(tmp_path / "bank.db")
    try:
        with store.transaction(now=NOW.timestamp()) as tx:
            for statement in ACCOUNTS_DDL:
                tx.execute(statement)
            tx.execute("INSERT INTO issuer_accounts VALUES (?, '202912', 'alice', 500000, 'EUR', "
                       "0, 'active')", (PAN,))
        for _, effect in [(a, e) for a, e in net.effects if a == BANK]:
            with store.transaction(now=NOW.timestamp()) as tx:
                stage(EffectContext(BANK, tmp_path), tx, [effect])
        (alice,) = ledger_report(store)
    finally:
        store.close()
    assert [e["kind"] for e in alice["entries"]] == ["hold", "expired"]
    assert (alice["held"], alice["posted"], alice["available"]) == (0, 0, 500000)


def test_a_captured_or_reversed_hold_cancels_the_issuers_expiry(p):
    net, pur, token = approved(p)
    capture(net, pur.cap_req(token))
    assert not [k for k in net.timers if k[0] == BANK]
    net, pur, _ = approved(p)
    fire(net, "auth_expiry")  # the gateway reverses
    assert not [k for k in net.timers if k[0] == BANK]
    assert keyed(net, BANK, pur)["state"] == "REVERSED"


def test_a_gateway_reversal_after_the_issuers_expiry_finds_nothing_held(p):
    net, pur, _ = approved(p, network(p, auth_expiry=dt.timedelta(days=12)))
    fire(net, "hold_expiry", BANK)
    fire(net, "auth_expiry")
    state = gw_state(net, pur)
    assert (state["state"], state["rev_code"], state["rev_amt"]) == ("EXPIRED", "25", 0)
    assert net.shared[BANK][PAN] == {"held": 0, "posted": 0}


def test_every_gateway_state_that_holds_the_card_has_a_timer_out_of_it():
    """PAN and expiry live only in ISSUER_AUTH, AUTHORIZED and ISSUER_CAP (the other tests check
    each exit wipes them); each of those has a timer that leaves it, and the timers chain to a
    state without the card: ISSUER_AUTH -retry-> DECLINED, ISSUER_CAP -retry-> AUTHORIZED
    -auth_expiry-> EXPIRED."""
    from setmail.roles.gateway import Gateway
    table = Gateway.TRANSITIONS

    def exits(state, event):
        nexts = table[state][event]
        return {nexts} if isinstance(nexts, str) else set(nexts)
    assert "DECLINED" in exits("ISSUER_AUTH", "timer:retry")
    assert "AUTHORIZED" in exits("ISSUER_CAP", "timer:retry")
    assert exits("AUTHORIZED", "timer:auth_expiry") == {"EXPIRED"}
    carded = {"ISSUER_AUTH", "AUTHORIZED", "ISSUER_CAP"}
    assert carded < set(table) and not {"DECLINED", "EXPIRED", "CAPTURED"} & carded
