"""A late issuer approval is reversed (IssRevReq 0400 / IssRevRes 0410, D-133): the gateway that
gave up (noReply, or an Error naming its request) and then hears 00 reverses the hold, once; the
issuer releases it, once; the merchant hears nothing more.  Real crypto, the real gateway and
issuer roles on tests/roles_net.py, the issuer answering only when the test lets it."""
from __future__ import annotations

import pytest

from setmail.asn1.issuer import IssRevReqData
from setmail.asn1.base import decode
from setmail.asn1.wrapper import decode_wrapper, message_body
from setmail.crypto.operators import open_Enc
from setmail.crypto.suite import DEFAULT_SUITE
from setmail.roles.base import Inbound
from setmail.roles.refusal import error_wrapper
from setmail.roles.network_msgs import stan
from setmail.vectors.build import NOW, PAN, Parties
from tests.gateway_cast import (BANK, GW, SHOP, Purchase, eur, fire_retry, gateway, issuer,
                                keyed)
from tests.roles_net import Net


@pytest.fixture(scope="module")
def p():
    return Parties(DEFAULT_SUITE)


def gave_up(p, how="noReply", **kw):
    """A gateway that sent IssAuthReq and gave up on it before the issuer (absent) answered:
    (net, purchase, the IssAuthReq as sent, every Send the gateway made, in order)."""
    net, sent = Net({GW: gateway(p, max_retries=0, **kw)}), []
    net.tamper = lambda frm, send: sent.append(send) or send
    pur = Purchase(p)
    request = net.step(GW, Inbound("AuthReq", pur.auth_req(), SHOP), NOW).sends[0]
    if how == "noReply":
        fire_retry(net)
    else:
        err = error_wrapper("signatureFailure", request.wrapper_der, now=NOW,
                            signer=p.issuer_sig)
        net.run(GW, Inbound("Error", err, BANK), NOW)
    state = keyed(net, GW, pur)
    assert (state["state"], state["auth_code"]) == ("DECLINED", how)
    return net, pur, request, sent


def late_answer(p, net, request, sent):
    """The issuer (now back) decides the IssAuthReq it was sent; its answer reaches the gateway
    and everything that follows is delivered.  Returns the issuer's IssAuthRes."""
    net.roles[BANK] = issuer(p)
    net.run(BANK, Inbound("IssAuthReq", request.wrapper_der, GW), NOW)
    return sends_of(sent, "IssAuthRes")[-1]


def sends_of(sent, message_type):
    return [s for s in sent if s.message_type == message_type]


@pytest.mark.parametrize("how", ["noReply", "systemError"])
def test_late_approval_is_reversed_and_the_hold_released(p, how):
    net, pur, request, sent = gave_up(p, how)
    late_answer(p, net, request, sent)
    assert [t for _, _, t in net.log][-3:] == ["IssAuthRes", "IssRevReq", "IssRevRes"]
    assert not [s for s in sent if s.to == SHOP][1:]  # the one AuthRes (noReply/systemError)
    bank = keyed(net, BANK, pur)
    assert (bank["state"], bank["held"], bank["authorized"]) == ("REVERSED", 0, 1234)
    assert net.shared[BANK][PAN] == {"held": 0, "posted": 0}
    hold, reverse = [e for a, e in net.effects if a == BANK]
    assert (hold.kind, reverse.kind) == ("ledger.hold", "ledger.reverse")
    assert reverse.data["amount"] == hold.data["amount"] == 1234
    state = keyed(net, GW, pur)
    assert (state["state"], state["auth_code"], state["auth_amt"]) == ("DECLINED", how, 0)
    assert (state["rev_code"], state["rev_amt"], state["late_amt"]) == ("00", 1234, 1234)
    assert state["late_approval_code"] == bank["approval_code"]
    assert state["rev_date"] == state["rev_req_date"] == state["late_at"] == NOW.isoformat()
    assert "_issuer" not in state and "secret" not in state
    assert not [k for k in net.timers if k[0] == GW]
    # what the gateway asked: the authorisation's RRN, approval and amount, a new STAN, no PAN
    (rev,) = sends_of(sent, "IssRevReq")
    assert rev.to == BANK
    opened = open_Enc(message_body(decode_wrapper(rev.wrapper_der)).dump(), p.issuer_kex,
                      "IssRevReqTBE", "IssRevReqData")
    data = decode(IssRevReqData, opened.content).native
    assert (data["mti"], data["reason_code"], data["original_mti"]) == ("0400", "68", "0100")
    assert (data["stan"], data["original_stan"]) == (stan(pur.xid, "IssRevReq"), stan(pur.xid))
    assert (data["rrn"], data["xid"], data["amount"]) == (pur.xid.hex()[:12], pur.xid, eur(1234))
    assert data["approval_code"] == bank["approval_code"] and PAN.encode() not in rev.wrapper_der


def test_a_repeated_late_approval_resends_the_same_reversal_and_releases_nothing_twice(p):
    net, pur, request, sent = gave_up(p)
    answer = late_answer(p, net, request, sent)
    before_gw, before_bank = keyed(net, GW, pur), dict(net.shared[BANK])
    effects = len(net.effects)
    net.run(GW, Inbound("IssAuthRes", answer.wrapper_der, BANK), NOW)  # the same answer again
    first, again = sends_of(sent, "IssRevReq")
    assert again.wrapper_der == first.wrapper_der and again.to == BANK
    assert [t for _, _, t in net.log][-2:] == ["IssRevReq", "IssRevRes"]
    assert keyed(net, GW, pur) == before_gw          # the late answer is ignored
    assert net.shared[BANK] == before_bank and len(net.effects) == effects
    assert keyed(net, BANK, pur)["state"] == "REVERSED"


def test_an_unanswered_reversal_is_resent_then_given_up_quietly(p):
    net, pur, request, sent = gave_up(p)
    net.roles[BANK] = issuer(p)

    def lose_reversals(frm, send):
        sent.append(send)
        return None if send.message_type == "IssRevReq" else send
    net.tamper = lose_reversals
    net.run(BANK, Inbound("IssAuthReq", request.wrapper_der, GW), NOW)
    answer = sends_of(sent, "IssAuthRes")[-1]
    assert keyed(net, GW, pur)["state"] == "REVERSING"
    net.run(GW, Inbound("IssAuthRes", answer.wrapper_der, BANK), NOW)  # a repeat, still waiting
    fire_retry(net)                                                     # max_retries=0: gives up
    first, *others = sends_of(sent, "IssRevReq")
    assert others and all(o.wrapper_der == first.wrapper_der for o in others)
    state = keyed(net, GW, pur)
    assert state["state"] == "DECLINED"
    assert state["rev_failure"].startswith("no answer to IssRevReq")
    assert "rev_code" not in state and "_issuer" not in state
    assert not [s for s in sent if s.to == SHOP][1:]
    assert net.shared[BANK][PAN] == {"held": 1234, "posted": 0}  # still held: the reversal was lost
    # the same bytes, delivered at last, release it
    net.tamper = None
    net.run(BANK, Inbound("IssRevReq", first.wrapper_der, GW), NOW)
    assert net.shared[BANK][PAN] == {"held": 0, "posted": 0}
    assert keyed(net, GW, pur)["state"] == "DECLINED"  # a late IssRevRes: no change


def test_no_reversal_for_an_answer_to_another_request(p):
    """An approval naming another IssAuthReq (same XID, another RRPID) is refused, not reversed."""
    net, pur, _, _ = gave_up(p)
    elsewhere = Net({GW: gateway(p)})
    foreign = elsewhere.step(GW, Inbound("AuthReq", Purchase(p, xid=pur.xid).auth_req(), SHOP),
                             NOW).sends[0]
    answer = issuer(p).step(None, Inbound("IssAuthReq", foreign.wrapper_der, GW), NOW, {})
    out = net.step(GW, Inbound("IssAuthRes", answer.sends[0].wrapper_der, BANK), NOW)
    assert out.sends == () and out.refused  # a response is never answered
    assert keyed(net, GW, pur)["state"] == "DECLINED"
