"""Forged mail against a purchase in progress: forged Errors (issue 12 point 1), dedupe poisoning
(point 2), copies under a forged From (point 3), mail loops, a PI swapped between two purchases,
and the downgrade to an unsigned purchase.

An Error ends an outstanding request only when it is signed by that request's pinned counterpart
and names exactly the bytes it refuses (refusedHash, D-134); an Error or a response is never
answered.  Dedupe keys on the exact SET content and records only accepted mail, so a refused
forgery never makes the genuine mail a "duplicate"; replies go to the address the directory or
the order binds, never to From.  The attacker delays the genuine mail (its receiver is stopped,
or dies at a fault point holding it) and makes its forgery arrive first (``arrive_first``).
"""
from __future__ import annotations

import pytest

from tests.adversary.harness import OUTSIDER
from tests.adversary.judge import (attack_while_waiting, buy, expect_completed, expect_untouched,
                                   sent_to, settle, snapshot, sql, state, states, wait_processed)
from tests.adversary.wire import flip_body, preq_body, preq_halves, preq_parts, rewrap


def _forged_errors(forge, genuine, signer=None):
    """What anybody makes of a request seen on the wire: Errors naming its header and exact
    hash, its RRPID and ids, an empty BadWrapper, or only its XID."""
    parts = genuine.parts
    return [forge.error("signatureFailure", about=genuine.der, signer=signer),
            forge.error("unspecifiedFailure", rrpid=parts.rrpid, ids=parts.ids, signer=signer),
            forge.error("unspecifiedFailure", bad_wrapper=b"", ids=parts.ids, signer=signer),
            forge.error("unknownXID", ids={"xid": parts.xid}, signer=signer)]


#: where a request waits, and who forges the Errors naming it: (stopped answerer, request, the
#: waiting party, the buyer, its state while waiting, the mail it would send on if the request
#: ended, signers of the forged Errors: None = unsigned)
ERROR_CASES = {
    "merchant-unsigned": ("gateway", "AuthReq", "shop", "alice", "AUTH_SENT", "PRes", [None]),
    "merchant-other-gateways": ("gateway", "AuthReq", "shop", "bob", "AUTH_SENT", "PRes",
                                ["gateway2", "evilgw"]),
    "gateway-unsigned-or-stranger": ("bank", "IssAuthReq", "gateway", "alice", "ISSUER_AUTH",
                                     "AuthRes", [None, "evilgw"]),
    "wallet-unsigned": ("shop", "PInitReq", "alice", "alice", "PINIT_SENT", "PReq", [None]),
    "wallet-other-merchants": ("shop", "PInitReq", "bob", "bob", "PINIT_SENT", "PReq",
                               ["shop2", "evilshop"]),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_forged_error_does_not_end_the_request(rw, attacker, case):
    """Point 1: unsigned Errors, and Errors signed by other certified parties, naming the
    waiting request by header, by its exact hash, by an empty BadWrapper or by XID alone: the
    request stays outstanding (nothing sent on), and the genuine answer completes it."""
    stopped, request, at, holder, waiting, onward, signers = ERROR_CASES[case]
    forge = attacker.forge

    def signer(name):
        if name is None:
            return None
        return (getattr(forge, name) if name.startswith("evil") else forge.party(name)).sig

    def still(p):
        return ([s.get("state") for s in states(rw, at, p.xid).values()] == [waiting]
                and not attacker.mails(type=onward, xid=p.xid))
    attack_while_waiting(rw, attacker, stopped=stopped, request=request, at=at, holder=holder,
                         still=still, forgeries=lambda genuine: [
                             e for name in signers
                             for e in _forged_errors(forge, genuine, signer(name))])


def test_errors_and_responses_bounced_between_agents_stop(rw, attacker):
    """Errors, responses and undecodable mail with the From of another agent are never answered;
    a refused request is answered at most once, and that answer is not answered again."""
    p = buy(rw, "alice", "shop")
    expect_completed(rw, p)
    settle(rw)
    before = {(c.agent, c.key) for c in attacker.mails()}
    mine = {c.type: c for c in attacker.mails(xid=p.xid)}
    error = attacker.forge.error
    silent = [  # (to, forged From, der): each absorbed without any answer
        ("shop", "gateway", error(about=mine["AuthReq"].der)),
        ("gateway", "shop", error(about=mine["AuthRes"].der)),
        ("alice", "shop", error(about=mine["PReq"].der)),
        ("shop", "alice", error(about=mine["PRes"].der)),
        ("gateway", "bank", error(about=mine["IssCapReq"].der)),
        ("bank", "gateway", error(about=mine["IssCapRes"].der)),
        *[(to, sender, flip_body(mine[t].der, 3)) for to, sender, t in (
            ("shop", "gateway", "AuthRes"), ("shop", "gateway", "CapRes"),
            ("alice", "shop", "PRes"), ("gateway", "bank", "IssAuthRes"))],
        ("shop", "gateway", b"\x30\x03\x02\x01\x01"),  # undecodable
        ("gateway", "shop", mine["AuthRes"].der),  # headers announce a PReq, it holds a response
    ]
    answered_once = [("shop", "gateway", flip_body(mine["PReq"].der, 3)),
                     ("gateway", "shop", flip_body(mine["AuthReq"].der, 3))]
    sent = set()
    for n, (to, sender, der) in enumerate(silent + answered_once):
        kw = {"message_type": "Error"} if der.startswith(b"\x30\x03") else {}
        if n == len(silent) - 1:
            kw = {"subject": "SET PReq", "type_header": "PReq"}
        sent.add(msgid := attacker.send(to, der, sender=sender, **kw))
        wait_processed(rw, attacker, to, msgid)
    settle(rw)
    generated = [f"{c.sender} -> {c.agent}: {c.type}" for c in attacker.mails()
                 if (c.agent, c.key) not in before and c.message_id not in sent]
    assert len(generated) <= len(answered_once), generated
    assert all(g.endswith("Error") and g.split(" -> ")[1].startswith(("alice", "shop"))
               for g in generated), generated
    assert state(rw, "shop", p.xid)["state"] == "CAPTURED"


# --- dedupe poisoning and forged From -----------------------------------------------------------
def _hold_preq(rw, attacker, holder, merchant="shop"):
    """A purchase whose PReq the merchant claimed but did not process (it crashed)."""
    settle(rw)
    rw.stop(merchant)
    p = buy(rw, holder, merchant)
    attacker.mail(merchant, "PInitReq", p.xid)
    attacker.crash_on(merchant, 2)  # the PInitReq is the first mail it decodes, the PReq second
    held = attacker.wait_crashed(merchant)
    assert held.type == "PReq" and held.xid == p.xid
    return p, held


def _processed_at(rw, agent, key):
    rows = sql(rw, agent, "SELECT processed_at FROM processed_mail WHERE maildir_key = ?", (key,))
    return rows[0][0] if rows else float("inf")


def test_forged_copy_with_the_genuine_rrpid_arriving_first_does_not_block_the_genuine(rw,
                                                                                     attacker):
    """Point 2: copies of the PReq with a signature bit flipped (same RRPID, same or another
    From) or another XID in the header are refused first, and refusing them records nothing that
    makes the genuine PReq a duplicate."""
    before = snapshot(rw)
    p, genuine = _hold_preq(rw, attacker, "bob")
    forged = [attacker.replay(genuine, der=flip_body(genuine.der, 2)),
              attacker.replay(genuine, der=flip_body(genuine.der, 40), sender=OUTSIDER),
              attacker.replay(genuine, der=rewrap(genuine.der, xid=bytes(20)))]
    attacker.arrive_first("shop", *forged)
    rw.start("shop")
    for msgid in forged:
        wait_processed(rw, attacker, "shop", msgid)
    expect_completed(rw, p)
    keys = [attacker.file_of("shop", m).name.split(":2,")[0] for m in forged]
    assert max(_processed_at(rw, "shop", k) for k in keys) <= _processed_at(rw, "shop",
                                                                             genuine.key)
    expect_untouched(rw, before, p)


def test_copy_of_pinit_req_from_another_sender_does_not_take_the_purchase(rw, attacker):
    """Point 3: whoever sends the PInitReq first, the merchant answers the cardholder its order
    names; the copies' senders (bob, an outsider) get nothing."""
    before = snapshot(rw)
    rw.stop("shop")
    p = buy(rw, "alice", "shop")
    genuine = attacker.mail("shop", "PInitReq", p.xid)
    copies = [attacker.replay(genuine, sender="bob"), attacker.replay(genuine, sender=OUTSIDER)]
    attacker.arrive_first("shop", *copies)
    rw.start("shop")
    for msgid in copies:
        wait_processed(rw, attacker, "shop", msgid)
    expect_completed(rw, p)
    settle(rw)
    assert state(rw, "shop", p.xid).get("cardholder") in (None, rw.world.agent("alice").address)
    assert not attacker.mails("bob", xid=p.xid), "the merchant wrote to the copy's sender"
    assert sent_to(rw, OUTSIDER) == 0
    expect_untouched(rw, before, p)


@pytest.mark.parametrize("stopped, mtype, holder, bystander", [
    ("gateway", "AuthReq", "alice", "shop2"), ("bank", "IssAuthReq", "bob", "gateway2")],
    ids=["gateway", "issuer"])
def test_answers_go_to_the_authenticated_sender_not_the_from(rw, attacker, stopped, mtype,
                                                            holder, bystander):
    """Point 3 at the gateway (the merchant whose signature the AuthReq carries) and the issuer
    (its pinned gateway): exact copies From a bystander or an outsider arrive first; the answer
    goes to the directory address, the bystander and the outsider get nothing."""
    before = snapshot(rw)
    rw.stop(stopped)
    p = buy(rw, holder, "shop")
    genuine = attacker.mail(stopped, mtype, p.xid)
    copies = [attacker.replay(genuine, sender=bystander),
              attacker.replay(genuine, sender=OUTSIDER)]
    attacker.arrive_first(stopped, *copies)
    rw.start(stopped)
    expect_completed(rw, p)
    settle(rw)
    assert not attacker.mails(bystander, xid=p.xid), f"{stopped} answered the From"
    assert sent_to(rw, OUTSIDER) == 0
    expect_untouched(rw, before, p)


def test_refusals_are_not_sent_to_the_from(rw, attacker):
    """Point 3 for refusals: damaged copies of a purchase's requests, From a bystander or an
    outsider, are refused without writing to either."""
    p = buy(rw, "alice", "shop")
    expect_completed(rw, p)
    settle(rw)
    mine = {c.type: c for c in attacker.mails(xid=p.xid)}
    for to, typ, bystander in (("shop", "PReq", "bob"), ("gateway", "AuthReq", "shop2"),
                               ("gateway", "CapReq", "shop2"), ("bank", "IssAuthReq", "gateway2")):
        for sender in (bystander, OUTSIDER):
            msgid = attacker.replay(mine[typ], der=flip_body(mine[typ].der, 5), sender=sender)
            wait_processed(rw, attacker, to, msgid)
    settle(rw)
    for bystander in ("bob", "shop2", "gateway2"):
        assert not attacker.mails(bystander, xid=p.xid), f"{bystander} was answered"
    assert sent_to(rw, OUTSIDER) == 0


# --- the PI and the signature -------------------------------------------------------------------
def test_pi_swapped_between_two_concurrent_purchases_is_refused(rw, attacker):
    settle(rw)
    before = snapshot(rw)
    rw.stop("shop")
    p1, p2 = buy(rw, "alice", "shop", "21.00"), buy(rw, "bob", "shop", "22.00")
    for p in (p1, p2):
        attacker.mail("shop", "PInitReq", p.xid)
    attacker.crash_on("shop", 3)  # both PInitReqs, then the first PReq
    held = attacker.wait_crashed("shop")
    other = attacker.mail("shop", "PReq", p2.xid if held.xid == p1.xid else p1.xid)
    (pi_a, oi_a), (pi_b, oi_b) = preq_halves(held.der), preq_halves(other.der)
    swapped = [attacker.replay(held, der=rewrap(held.der, body=preq_body(pi_b, oi_a))),
               attacker.replay(other, der=rewrap(other.der, body=preq_body(pi_a, oi_b)))]
    attacker.arrive_first("shop", *swapped)
    rw.start("shop")
    for msgid in swapped:
        wait_processed(rw, attacker, "shop", msgid)
    expect_completed(rw, p1)
    expect_completed(rw, p2)
    expect_untouched(rw, before, p1, p2)


def test_downgrade_to_an_unsigned_purchase_is_refused(rw, attacker):
    """A PReq without dual signature (PReqUnsigned, the attacker's own card token) arriving
    before the genuine one, then unsigned and foreign-signed InqReqs: refused, no status leaks."""
    before = snapshot(rw)
    p, genuine = _hold_preq(rw, attacker, "alice")
    forge = attacker.forge
    down = forge.unsigned_preq(genuine.der, gateway_kex=forge.party("gateway").kex.cert)
    msgid = attacker.replay(genuine, der=down)
    attacker.arrive_first("shop", msgid)
    rw.start("shop")
    wait_processed(rw, attacker, "shop", msgid)
    expect_completed(rw, p)
    settle(rw)
    _, _, oi = preq_parts(genuine.der)
    tids = bytes(oi["trans_ids"])
    inquiries = state(rw, "shop", p.xid).get("inquiries")
    for der, sender in ((forge.unsigned_inq_req(trans_ids=tids, like=genuine.der), OUTSIDER),
                        (forge.unsigned_inq_req(trans_ids=tids, like=genuine.der), "bob"),
                        (forge.signed_inq_req(forge.card("bob"), trans_ids=tids,
                                              like=genuine.der), "bob")):
        wait_processed(rw, attacker, "shop", attacker.send("shop", der, sender=sender))
    settle(rw)
    assert not attacker.mails("bob", xid=p.xid), "an inquiry was answered to its From"
    assert sent_to(rw, OUTSIDER) == 0
    assert state(rw, "shop", p.xid)["state"] == "CAPTURED"
    assert state(rw, "shop", p.xid).get("inquiries") == inquiries
    expect_untouched(rw, before, p)
