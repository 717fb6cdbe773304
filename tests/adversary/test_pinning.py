"""Counterparts are pinned (issue 12 points 4, 5, 6): certified strangers and the world's other,
legitimate-but-malicious parties cannot answer for somebody else or spend somebody else's XID.

* the merchant takes AuthRes only from its acquirer's gateway (world.toml ``gateway``);
* the wallet takes PInitRes only from the merchant it chose (directory merID), and the brand's
  BrandCRLIdentifier only verified on the signer's own path, never older than one it saw;
* the gateway keys purchases by (authenticated merchant, XID): another merchant's AuthReq for a
  victim's XID, or its CapReq with the victim's CapToken, changes nothing of the victim's.

The module starts with the harness's own controls: capture sees every mail, injection reaches
the agents, and every forged-message builder makes messages the roles *accept* when built with
the right keys, so a forgery refused later is refused for who signed it or what it names.
"""
from __future__ import annotations

from setmail.roles.purchase_msgs import Order
from tests.adversary.harness import OUTSIDER, restart
from tests.adversary.judge import (attack_while_waiting, buy, expect_completed, expect_untouched,
                                   ledger, run_cli, settle, snapshot, state, states, wait_for,
                                   wait_processed)
from tests.adversary.wire import cap_token_of, preq_parts, split

TYPES = ["PInitReq", "PInitRes", "PReq", "AuthReq", "IssAuthReq", "IssAuthRes", "AuthRes",
         "PRes", "CapReq", "IssCapReq", "IssCapRes", "CapRes"]


# --- controls: the harness works --------------------------------------------------------------
def test_capture_sees_every_mail_of_a_purchase(rw, attacker):
    p = buy(rw, "alice", "shop")
    expect_completed(rw, p)
    settle(rw)
    seen = attacker.mails(xid=p.xid)
    assert sorted(c.type for c in seen) == sorted(TYPES), [c.type for c in seen]
    assert {c.agent for c in seen} == {"shop", "alice", "gateway", "bank"}


def test_injected_mail_reaches_the_agent_and_a_rewrap_keeps_the_body(rw, attacker):
    p = buy(rw, "bob", "shop")
    expect_completed(rw, p)
    res = attacker.mail("bob", "PRes", p.xid)
    again = attacker.replay(res)
    assert wait_processed(rw, attacker, "bob", again)[0] in ("duplicate", "done", "refused")
    moved = split(attacker.forge.error(about=res.der))
    assert moved.rrpid == res.parts.rrpid and moved.xid == res.parts.xid


def test_pinit_res_builder_is_accepted_from_the_right_merchant(rw, attacker):
    rw.stop("shop")
    p = buy(rw, "alice", "shop")
    req = attacker.mail("shop", "PInitReq", p.xid)
    forge = attacker.forge
    res = forge.pinit_res(req.der, merchant=forge.party("shop"), gateway=forge.party("gateway"))
    msgid = attacker.send("alice", res, sender="shop")
    wait_processed(rw, attacker, "alice", msgid)
    assert state(rw, "alice", p.xid)["state"] == "PREQ_SENT"


def test_auth_res_and_cap_res_builders_are_accepted_with_the_right_keys(rw, attacker):
    forge, gateway, shop = attacker.forge, attacker.forge.party("gateway"), attacker.forge.party(
        "shop")
    rw.stop("gateway")
    p = buy(rw, "bob", "shop")
    auth_req = attacker.mail("gateway", "AuthReq", p.xid)
    trans_ids = bytes(preq_parts(attacker.mail("shop", "PReq", p.xid).der)[2]["trans_ids"])
    res = forge.auth_res(gateway, auth_req=auth_req.der, trans_ids=trans_ids, merchant=shop,
                         amount=p.amount)
    wait_processed(rw, attacker, "shop", attacker.send("shop", res, sender="gateway"))
    assert state(rw, "shop", p.xid)["state"] == "CAP_SENT"  # shop captures at once
    cap_req = attacker.mail("gateway", "CapReq", p.xid)
    res = forge.cap_res(gateway, cap_req=cap_req.der, auth_rrpid=auth_req.parts.rrpid,
                        trans_ids=trans_ids, merchant=shop, amount=p.amount)
    wait_processed(rw, attacker, "shop", attacker.send("shop", res, sender="gateway"))
    assert state(rw, "shop", p.xid)["state"] == "CAPTURED"


def test_auth_req_builder_from_a_merchant_with_its_own_card_is_authorised(rw, attacker):
    """The attacker as wallet (mallory's card) and as merchant (shop2's keys): a whole purchase
    the gateway authorises; the revocation and XID tests rely on it."""
    forge = attacker.forge
    rw.stop("shop2")
    p = buy(rw, "alice", "shop2")  # only for a fresh PInitReq to shop2 (alice's stays unanswered)
    req = attacker.mail("shop2", "PInitReq", p.xid)
    shop2, gateway = forge.party("shop2"), forge.party("gateway")
    res = forge.pinit_res(req.der, merchant=shop2, gateway=gateway)
    order = Order("mallory's own order", 777, 978)
    preq = forge.preq(forge.evilcard, pinit_req=req.der, pinit_res=res, order=order)
    auth_req = forge.auth_req(shop2, preq=preq, amount=order.purch_amt,
                              gateway_kex=gateway.kex.cert)
    msgid = attacker.send("gateway", auth_req, sender="shop2")
    wait_processed(rw, attacker, "gateway", msgid)
    wait_for("gateway authorises mallory", lambda: any(
        s.get("state") == "AUTHORIZED" for s in states(rw, "gateway", p.xid).values()))


# --- attacks -----------------------------------------------------------------------------------
def _trans_ids(attacker, xid, merchant="shop"):
    """A purchase's TransIDs (DER): in clear in its PReq's OIData, on the wire."""
    _, _, oi = preq_parts(attacker.mail(merchant, "PReq", xid).der)
    return bytes(oi["trans_ids"])


def test_auth_res_signed_by_another_gateway_is_refused(rw, attacker):
    forge = attacker.forge

    def forgeries(auth_req):  # approving the amount ``buy`` asks for by default
        amount = {"currency": 978, "amount": 1234, "amt_exp10": -2}
        return [forge.auth_res(gateway, auth_req=auth_req.der, merchant=forge.party("shop"),
                               trans_ids=_trans_ids(attacker, auth_req.xid), amount=amount)
                for gateway in (forge.party("gateway2"), forge.evilgw)]
    attack_while_waiting(
        rw, attacker, stopped="gateway", request="AuthReq", at="shop", forgeries=forgeries,
        still=lambda p: state(rw, "shop", p.xid).get("state") == "AUTH_SENT"
        and not attacker.mails("alice", type="PRes", xid=p.xid))


def test_cap_res_signed_by_another_gateway_is_refused(rw, attacker):
    """shop2 captures on command: while its CapReq waits, CapRes "success" signed by gateway2 and
    by evilgw reach it; it stays CAP_SENT and the genuine capture posts once."""
    forge = attacker.forge
    p = buy(rw, "bob", "shop2")
    expect_completed(rw, p)
    rw.stop("gateway")
    code, out, err = run_cli("capture", p.xid, "--home", str(rw.home))
    assert code == 0, out + err
    cap_req = attacker.mail("gateway", "CapReq", p.xid)
    auth_rrpid = attacker.mail("gateway", "AuthReq", p.xid).parts.rrpid
    for gateway in (forge.party("gateway2"), forge.evilgw):
        res = forge.cap_res(gateway, cap_req=cap_req.der, auth_rrpid=auth_rrpid,
                            trans_ids=_trans_ids(attacker, p.xid, "shop2"),
                            merchant=forge.party("shop2"), amount=p.amount)
        wait_processed(rw, attacker, "shop2", attacker.send("shop2", res, sender="gateway"))
        assert state(rw, "shop2", p.xid)["state"] == "CAP_SENT", gateway.name
    rw.start("gateway")
    expect_completed(rw, p, captured=True)


def test_pinit_res_signed_by_another_merchant_is_refused(rw, attacker):
    """Another merchant's certificate (shop2, or the attacker's evilshop) answering the wallet's
    PInitReq to shop, naming its own gateway: the PAN would go to the attacker."""
    forge = attacker.forge
    pairs = ((forge.party("shop2"), forge.party("gateway2")),
             (forge.party("shop2"), forge.party("gateway")), (forge.evilshop, forge.evilgw))
    attack_while_waiting(
        rw, attacker, stopped="shop", request="PInitReq", at="alice",
        forgeries=lambda req: [forge.pinit_res(req.der, merchant=m, gateway=g) for m, g in pairs],
        still=lambda p: state(rw, "alice", p.xid).get("state") == "PINIT_SENT"
        and not attacker.mails(type="PReq", xid=p.xid))


def test_another_merchant_cannot_burn_an_xid(rw, attacker):
    """Point 5: AuthReqs for the victim's XID, signed by shop2 or evilshop and carrying the
    victim's own PI (copied from its PReq), reach the gateway first; the victim's AuthReq is still
    authorised, once."""
    before, forge = snapshot(rw), attacker.forge
    rw.stop("gateway")
    p = buy(rw, "bob", "shop")
    attacker.mail("gateway", "AuthReq", p.xid)
    preq = attacker.mail("shop", "PReq", p.xid)
    kex = forge.party("gateway").kex.cert
    forged = [attacker.send("gateway", forge.auth_req(forge.party("shop2"), preq=preq.der,
                                                      amount=p.amount, gateway_kex=kex),
                            sender="shop2"),
              attacker.send("gateway", forge.auth_req(forge.evilshop, preq=preq.der,
                                                      amount=p.amount, gateway_kex=kex),
                            sender=OUTSIDER)]
    attacker.arrive_first("gateway", *forged)
    rw.start("gateway")
    for msgid in forged:
        wait_processed(rw, attacker, "gateway", msgid)
    expect_completed(rw, p)
    expect_untouched(rw, before, p)


def test_another_merchants_own_purchase_under_the_victims_xid_does_not_disturb_it(rw, attacker):
    """shop2 runs a complete purchase of its own (mallory's card, dual signature valid) under
    the XID it saw in the victim's PInitReq, and its AuthReq arrives first: the victim's purchase
    is still authorised and captured on the victim's card, with exactly one hold and one
    posting."""
    forge = attacker.forge
    rw.stop("gateway")
    p = buy(rw, "alice", "shop")
    req = attacker.mail("shop", "PInitReq", p.xid)
    attacker.mail("gateway", "AuthReq", p.xid)
    shop2, gateway = forge.party("shop2"), forge.party("gateway")
    res = forge.pinit_res(req.der, merchant=shop2, gateway=gateway)
    order = Order("mallory's order under a stolen XID", 500, 978)
    preq = forge.preq(forge.evilcard, pinit_req=req.der, pinit_res=res, order=order)
    msgid = attacker.send("gateway", forge.auth_req(shop2, preq=preq, amount=order.purch_amt,
                                                    gateway_kex=gateway.kex.cert),
                          sender="shop2")
    attacker.arrive_first("gateway", msgid)
    rw.start("gateway")
    wait_processed(rw, attacker, "gateway", msgid)
    expect_completed(rw, p, other_pans=True)


def test_cap_token_used_by_another_merchant_is_refused(rw, attacker):
    """The CapToken travels in clear AuthRes baggage: a CapReq by the attacker's evilshop (and
    one by shop, the wrong merchant's certificate with the right token) captures nothing."""
    forge = attacker.forge
    p = buy(rw, "alice", "shop2")
    expect_completed(rw, p)  # shop2 captures on command: AUTHORIZED, held
    auth_res = attacker.mail("shop2", "AuthRes", p.xid)
    auth_req = attacker.mail("gateway", "AuthReq", p.xid)
    token = cap_token_of(auth_res.der)
    kex = forge.party("gateway").kex.cert
    for merchant, sender in ((forge.evilshop, OUTSIDER), (forge.party("shop"), "shop")):
        capture = forge.cap_req(merchant, cap_token=token,
                                trans_ids=_trans_ids(attacker, p.xid, "shop2"),
                                auth_rrpid=auth_req.parts.rrpid, amount=p.amount,
                                gateway_kex=kex, like=auth_req.der)
        wait_processed(rw, attacker, "gateway", attacker.send("gateway", capture, sender=sender))
    settle(rw)
    assert [s["state"] for s in states(rw, "gateway", p.xid).values()] == ["AUTHORIZED"]
    assert state(rw, "bank", p.xid)["state"] == "HELD"
    assert [r[0] for r in ledger(rw, p.xid)] == ["hold"]
    code, out, err = run_cli("capture", p.xid, "--wait", "20", "--home", str(rw.home))
    assert code == 0, out + err
    expect_completed(rw, p, captured=True)


def test_bci_of_a_foreign_brand_is_refused(rw, attacker):
    """shop2 answers the wallet with a BrandCRLIdentifier (sequence 999999) signed by a brand
    CA of the attacker's own root, or by another brand under the world's root, its certificate
    sent along: refused, and the wallet's brand sequence is not poisoned for later purchases."""
    forge = attacker.forge
    rw.stop("shop2")
    p = buy(rw, "bob", "shop2")
    req = attacker.mail("shop2", "PInitReq", p.xid)
    for brand in ("foreign", "sibling"):
        bci, certs = forge.bci(sequence=999999, brand=brand)
        res = forge.pinit_res(req.der, merchant=forge.party("shop2"),
                              gateway=forge.party("gateway"), bci=bci, extra_certs=certs)
        wait_processed(rw, attacker, "bob", attacker.send("bob", res, sender="shop2"))
        assert state(rw, "bob", p.xid)["state"] == "PINIT_SENT", brand
    rw.start("shop2")
    expect_completed(rw, p)
    q = buy(rw, "bob", "shop")
    expect_completed(rw, q)


def test_bci_rollback_is_refused(rw, attacker):
    """The brand re-issues its BCI (sequence n+1) and the world restarts with it; shop2 then
    answers with the older one (n), seen on the wire before: refused."""
    forge = attacker.forge
    old = forge.current_bci()
    newer, _ = forge.bci(sequence=forge.bci_sequence(old) + 1)
    forge.publish_bci(newer)
    restart(rw, "shop", "gateway")  # they carry n+1 now; shop2 still carries n
    q = buy(rw, "alice", "shop")
    expect_completed(rw, q)  # the wallet saw n+1
    rw.stop("shop2")
    p = buy(rw, "alice", "shop2")
    req = attacker.mail("shop2", "PInitReq", p.xid)
    res = forge.pinit_res(req.der, merchant=forge.party("shop2"), gateway=forge.party("gateway"),
                          bci=old)
    wait_processed(rw, attacker, "alice", attacker.send("alice", res, sender="shop2"))
    assert state(rw, "alice", p.xid)["state"] == "PINIT_SENT"
    rw.start("shop2")
    expect_completed(rw, p)
