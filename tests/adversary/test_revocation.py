"""Expired and revoked certificates at each role that relies on one: the wallet (a merchant's),
the merchant (a cardholder's, its gateway's), the gateway (a merchant's) and a registering
cardholder (its CA's).

Expired: the party's own key, re-certified by its own CA for two days that ended yesterday (a
party that did not renew, or an attacker replaying an old certificate).  Revoked: ``setmail
revoke`` (the Brand CA's own CRL for a CA), then every agent restarts, as the operator is told to,
to read the new CRLs and BCI (an agent left running carries the older BCI, which a wallet that
saw the newer one refuses as a rollback).  Tests run in file order: revocations accumulate, the
CA's comes last.
"""
from __future__ import annotations

from setmail.roles.purchase_msgs import Order
from tests.adversary.harness import restart
from tests.adversary.judge import (attack_while_waiting, buy, expect_completed, expect_untouched,
                                   ledger, new_tx_keys, refusal, run_cli, settle, snapshot, state,
                                   states, wait_for, wait_processed)
from tests.adversary.wire import preq_parts, split


def _own_purchase(attacker, merchant, *, signer=None):
    """(xid hex, AuthReq) of a purchase of the attacker's own (mallory's card) at ``merchant``."""
    forge = attacker.forge
    der = forge.purchase(forge.party(merchant), forge.party("gateway"),
                         signer=signer, order=Order("mallory's order", 700, 978))
    return split(der).xid.hex(), der


def _refused_at_gateway(rw, attacker, der, xid, reason, sender="shop2"):
    _, detail = wait_processed(rw, attacker, "gateway",
                               attacker.send("gateway", der, sender=sender))
    assert reason in (detail or "").lower(), detail
    settle(rw)
    assert not states(rw, "gateway", xid), states(rw, "gateway", xid)
    assert not ledger(rw, xid)


def test_merchant_refuses_an_expired_cardholder_certificate(rw, attacker):
    """bob signs his PReq with an expired certificate of his own key; it arrives before his
    genuine one (the merchant crashed holding it)."""
    forge, before = attacker.forge, snapshot(rw)
    settle(rw)
    rw.stop("shop")
    p = buy(rw, "bob", "shop")
    req = attacker.mail("shop", "PInitReq", p.xid)
    attacker.crash_on("shop", 2)
    attacker.wait_crashed("shop")
    res = attacker.mail("bob", "PInitRes", p.xid)
    order = Order(p.description, p.minor, p.currency)
    preq = forge.preq(forge.expired(forge.card("bob")), pinit_req=req.der, pinit_res=res.der,
                      order=order)
    msgid = attacker.send("shop", preq, sender="bob")
    attacker.arrive_first("shop", msgid)
    rw.start("shop")
    assert "expired" in (wait_processed(rw, attacker, "shop", msgid)[1] or "").lower()
    expect_completed(rw, p)
    expect_untouched(rw, before, p)


def test_wallet_refuses_an_expired_merchant_certificate(rw, attacker):
    forge = attacker.forge
    attack_while_waiting(
        rw, attacker, stopped="shop2", request="PInitReq", at="alice", merchant="shop2",
        forgeries=lambda req: [forge.pinit_res(req.der, gateway=forge.party("gateway"),
                                               merchant=forge.expired(forge.party("shop2")))],
        still=lambda p: state(rw, "alice", p.xid).get("state") == "PINIT_SENT", reason="expired")


def test_merchant_refuses_an_auth_res_from_an_expired_gateway_certificate(rw, attacker):
    forge = attacker.forge

    def forgeries(auth_req):
        _, _, oi = preq_parts(attacker.mail("shop", "PReq", auth_req.xid).der)
        return [forge.auth_res(forge.expired(forge.party("gateway")), auth_req=auth_req.der,
                               trans_ids=bytes(oi["trans_ids"]), merchant=forge.party("shop"),
                               amount={"currency": 978, "amount": 1234, "amt_exp10": -2})]
    attack_while_waiting(
        rw, attacker, stopped="gateway", request="AuthReq", at="shop", forgeries=forgeries,
        still=lambda p: state(rw, "shop", p.xid).get("state") == "AUTH_SENT", reason="expired")


def test_gateway_refuses_an_expired_merchant_certificate(rw, attacker):
    forge = attacker.forge
    xid, der = _own_purchase(attacker, "shop2", signer=forge.expired(forge.party("shop2")))
    _refused_at_gateway(rw, attacker, der, xid, "expired")


def test_gateway_refuses_a_revoked_merchant(rw, attacker):
    """Control first: shop2's own purchase is authorised; then shop2 is revoked and the same
    kind of AuthReq creates nothing at the gateway or the issuer."""
    xid, der = _own_purchase(attacker, "shop2")
    wait_processed(rw, attacker, "gateway", attacker.send("gateway", der, sender="shop2"))
    wait_for("control authorised", lambda: ledger(rw, xid))
    code, out, err = run_cli("revoke", "shop2", "--home", str(rw.home))
    assert code == 0, out + err
    restart(rw)
    xid, der = _own_purchase(attacker, "shop2")
    _refused_at_gateway(rw, attacker, der, xid, "revoked")


def test_wallet_refuses_a_revoked_merchant(rw, attacker):
    """shop2 (revoked above) answers alice's PInitReq with its genuine, revoked certificate:
    the wallet sends no PReq, nothing reaches the gateway or the issuer."""
    before = snapshot(rw)
    p = buy(rw, "alice", "shop2")
    res = wait_for("shop2 answered", lambda: attacker.mails("alice", type="PInitRes", xid=p.xid))
    settle(rw)
    assert "revoked" in refusal(rw, "alice", res[0].key)
    assert state(rw, "alice", p.xid).get("state") in ("PINIT_SENT", "FAILED")
    assert not attacker.mails(type="PReq", xid=p.xid)
    assert not states(rw, "gateway", p.xid) and not ledger(rw, p.xid)
    q = buy(rw, "alice", "shop")
    expect_completed(rw, q)
    assert not new_tx_keys(rw, before, p.xid, q.xid)


def test_merchant_refuses_a_revoked_cardholder(rw, attacker):
    code, out, err = run_cli("revoke", "bob", "--home", str(rw.home))
    assert code == 0, out + err
    restart(rw)
    p = buy(rw, "bob", "shop")
    preq = wait_for("bob's PReq reached shop",
                    lambda: attacker.mails("shop", type="PReq", xid=p.xid))
    settle(rw)
    assert "revoked" in refusal(rw, "shop", preq[0].key)
    assert state(rw, "shop", p.xid).get("state") == "PINIT_SENT"
    assert state(rw, "bob", p.xid).get("state") not in ("APPROVED", "CAPTURED")
    assert not states(rw, "gateway", p.xid) and not ledger(rw, p.xid)
    q = buy(rw, "alice", "shop")
    expect_completed(rw, q)


def test_cardholder_refuses_a_revoked_ca(rw, attacker):
    """The Brand CA revokes the Cardholder CA: a cardholder (re-)registering gets the CCA's
    CardCInitRes, refuses it (no RegFormReq follows) and stores no certificate.  Control first:
    before the revocation the same re-registration goes on to RegFormReq."""
    def counts():
        return (len(attacker.mails("alice", type="CardCInitRes")),
                len(attacker.mails("cca", type="RegFormReq")))

    def register():
        answers, forms = counts()
        code, out, err = run_cli("register", "alice", "--home", str(rw.home))
        assert code == 0, out + err  # queued
        wait_for("the CCA's answer", lambda: counts()[0] > answers)
        settle(rw)
        return counts()[1] > forms

    assert register(), "control: alice cannot re-register at all"
    before = (rw.world.agent_home("alice") / "wallet.json").read_text()
    attacker.forge.revoke_ca("cca")
    restart(rw)
    assert not register(), "the revoked CCA's answer was accepted"
    assert "revoked" in refusal(rw, "alice", attacker.mails("alice", type="CardCInitRes")[-1].key)
    assert (rw.world.agent_home("alice") / "wallet.json").read_text() == before
