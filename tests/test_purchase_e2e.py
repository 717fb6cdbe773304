"""Purchases end to end over real SMTP, every agent in its own process (tests/e2e_world.py).

One world for the module (registration by mail once); tests run in file order.  Attacks are
made the way an attacker or a dishonest party would: by changing a mail waiting in a Maildir
(the receiving agent crashed at a fault point before touching it) or by injecting a mail built
with a party's own keys.  Outcomes are read from the agents' stores, the issuer's ledger and the
files each agent wrote.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.base import decode
from setmail.asn1.wrapper import decode_wrapper, make_wrapper, message_body
from setmail.crypto import operators as op
from setmail.crypto.cms import Identity
from setmail.crypto.suite import fresh
from setmail.mail import maildir
from setmail.pki.thumbs import thumbprint
from setmail.world.keys import load_cert, load_chain, load_key
from tests.e2e_world import RunningWorld, minor_units, run_cli

SECRET_OD = "OD-secret-teapot"  # every order description contains it: the gateway must never see it


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    world = RunningWorld(tmp_path_factory.mktemp("e2e") / "world")
    world.start_smtp()
    world.start()
    try:
        for holder in ("alice", "bob"):
            code, out, err = run_cli("register", holder, "--wait", "90", "--home", str(world.home))
            assert code == 0, err + world.log(holder)
        yield world
    finally:
        world.stop()


def buy(w, holder, merchant, amount, *, wait=60, n=0):
    code, out, err = run_cli("buy", "--cardholder", holder, "--merchant", merchant, "--amount",
                             amount, "--description", f"{SECRET_OD} #{n} {time.time_ns()}",
                             "--home", str(w.home), *(["--wait", str(wait), "--json"] if wait else []))
    if not wait:
        assert code == 0, err
        return out.strip()
    assert code in (0, 1), err
    return json.loads(out)


def identity(w, agent, prefix="sig") -> Identity:
    keys = w.world.keys_dir(agent)
    return Identity(load_key(keys / f"{prefix}.key.pem"), load_cert(keys / f"{prefix}.cert.pem"),
                    tuple(load_chain(keys / "chain.pem")))


def ledger(w) -> dict:
    code, out, err = run_cli("ledger", "--json", "--home", str(w.home))
    assert code == 0, err
    return {a["holder"]: a for a in minor_units(json.loads(out))}


def restart_issuer(w) -> None:
    w.stop("bank")
    w.start("bank")


# --- the happy path ------------------------------------------------------------------------------
def test_approved_purchase_is_captured_and_every_mail_accepted(w):
    before = ledger(w)["alice"]
    r = buy(w, "alice", "shop", "12.34", n=1)
    assert r["state"] == "APPROVED" and r.get("captured"), r
    xid = r["xid"]
    assert w.wait_state("shop", xid, "CAPTURED")["cap_code"] == "success"
    assert w.wait_state("gateway", xid, "CAPTURED")
    assert w.wait_state("bank", xid, "POSTED")
    # the brand's BrandCRLIdentifier rode in PInitRes and AuthRes and was verified on receipt
    assert w.shared("alice", "brand")["Visa"] >= 1 and w.shared("shop", "merchant")["brand"]["Visa"] >= 1
    after = ledger(w)["alice"]
    assert after["posted"] - before["posted"] == 1234 and after["held"] == before["held"]
    code, out, _ = run_cli("tx", "show", xid, "--json", "--home", str(w.home))
    agents = json.loads(out)["agents"]
    assert code == 0 and set(agents) == {"alice", "shop", "gateway", "bank"}
    assert '"secret"' not in out and "4111111111111111" not in out
    code, out, _ = run_cli("trace", xid, "--json", "--home", str(w.home))
    trace = json.loads(out)
    types = [e["message_type"] for e in trace]
    assert sorted(types) == sorted(["PInitReq", "PInitRes", "PReq", "AuthReq", "IssAuthReq",
                                    "IssAuthRes", "AuthRes", "PRes", "CapReq", "IssCapReq",
                                    "IssCapRes", "CapRes"]), types
    assert types[0] == "PInitReq" and all(e["result"] == "accepted" for e in trace), trace
    assert [e["recipient"] for e in trace if e["message_type"] == "IssAuthReq"] == ["bank"]
    code, out, _ = run_cli("tx", "list", "--home", str(w.home))
    assert code == 0 and xid[:12] in out and xid not in out  # the short form, as git's
    code, out, _ = run_cli("inquire", xid, "--wait", "30", "--home", str(w.home))
    assert code == 0 and "CAPTURED" in out


# --- the issuer's answers ------------------------------------------------------------------------
DECLINES = [
    ("51", "2000.00", None),  # bob's limit is 1500.00
    ("05", "10.00", "UPDATE issuer_accounts SET status = 'blocked' WHERE holder = 'bob'"),
    ("54", "10.00", "UPDATE issuer_accounts SET expiry = '202001' WHERE holder = 'bob'"),
    ("14", "10.00", "UPDATE issuer_accounts SET pan = '4000000000000002' WHERE holder = 'bob'"),
]


@pytest.mark.parametrize("iso, amount, change", DECLINES, ids=[d[0] for d in DECLINES])
def test_issuer_decline_reaches_the_cardholder(w, iso, amount, change):
    saved = w.issuer_sql("SELECT pan, expiry, status FROM issuer_accounts WHERE holder = 'bob'")
    if change:
        w.issuer_sql(change)
        restart_issuer(w)
    try:
        before = ledger(w)
        r = buy(w, "bob", "shop", amount, n=2)
        assert r["state"] == "DECLINED" and str(r["iso_code"]) == iso, r
        shop = w.wait_state("shop", r["xid"], "DECLINED")
        assert shop.get("auth_code") != "approved"
        assert not r.get("captured")
        assert ledger(w).get("bob", {}).get("held") == before.get("bob", {}).get("held")
    finally:
        if change:
            w.issuer_sql("UPDATE issuer_accounts SET pan = ?, expiry = ?, status = ? "
                         "WHERE holder = 'bob'", saved[0])
            restart_issuer(w)


# --- capture rules (shop2 captures by command) ----------------------------------------------------
def test_capture_above_authorised_then_capture_then_second_capture(w):
    r = buy(w, "alice", "shop2", "50.00", n=3)
    assert r["state"] == "APPROVED" and not r.get("captured"), r
    xid, home = r["xid"], str(w.home)
    w.wait_state("shop2", xid, "AUTHORIZED")
    before = ledger(w)["alice"]
    code, out, err = run_cli("capture", xid, "--amount", "60.00", "--wait", "30", "--home", home)
    assert code == 3 and "amountTooLarge" in err, out + err  # the gateway refused
    code, out, err = run_cli("capture", xid, "--wait", "30", "--home", home)
    assert code == 0 and "success" in out, out + err
    code, _, err = run_cli("capture", xid, "--wait", "10", "--home", home)
    assert code == 3 and "CAPTURED" in err  # the merchant knows it captured already
    # a merchant that sends a new CapReq (new RRPID) with the same CapToken: the gateway refuses
    last = w.mail("gateway", w.wait_mail("gateway", "CapReq", count=2)[-1].key)
    opened = op.open_EncB(message_body(decode_wrapper(last.der)).dump(),
                          identity(w, "gateway", "kex"), "CapReqTBE", "CapReqTBS", "CapTokenSeq")
    data = decode(cap.CapReqData, opened.content)
    rrpid = fresh()
    data["cap_rr_tags"]["rrpid"] = rrpid
    shop2 = identity(w, "shop2")
    body = op.EncB(shop2, load_cert(w.world.keys_dir("gateway") / "kex.cert.pem"), "CapReqTBS",
                   data.dump(force=True), "CapTokenSeq", opened.baggage, "CapReqTBE",
                   certs=[shop2.cert, load_cert(w.world.keys_dir("shop2") / "kex.cert.pem"),
                          *shop2.chain[:-1]])
    wrapper = decode_wrapper(last.der)
    again = make_wrapper({**wrapper["message_header"].native, "rrpid": rrpid}, "CapReq",
                         cap.CapReq.load(body), mw_extensions=wrapper["mw_extensions"]).dump()
    w.deliver("gateway", again, sender=last.sender, message_type="CapReq",
              message_id=f"again.{time.time_ns()}@merchant2.example")
    cap_res = w.wait_mail("shop2", "CapRes", count=3)
    newest = max(cap_res, key=lambda e: e.mtime)
    opened = op.open_Enc(message_body(decode_wrapper(w.mail("shop2", newest.key).der)).dump(),
                         identity(w, "shop2", "kex"), "CapResTBE", "CapResData")
    item = decode(cap.CapResData, opened.content)["cap_res_item_seq"][0]
    assert item["cap_res_payload"]["cap_code"].native == "duplicateRequest"
    assert w.state("gateway", xid)["state"] == "CAPTURED"
    after = ledger(w)["alice"]
    assert after["posted"] - before["posted"] == 5000 and before["held"] - after["held"] == 5000
    assert [k for k, in w.issuer_sql("SELECT kind FROM issuer_ledger WHERE xid = ?", (xid,))
            ].count("post") == 1


# --- attacks ---------------------------------------------------------------------------------------
def _held_mail(w, agent, message_type):
    """The crashed agent's mail of ``message_type`` (claimed, not processed)."""
    entries = w.wait_mail(agent, message_type)
    return next(e for e in entries if "S" not in e.flags)


def _intercept(w, agent, nth, holder, merchant, amount):
    """Start a purchase while ``agent`` crashes on its ``nth`` mail; returns (xid, held mail)."""
    w.stop(agent)
    w.start(agent, fault=f"after_decode:{agent}:{nth}")
    xid = buy(w, holder, merchant, amount, wait=0, n=4)
    assert w.wait_exit(agent) == 99
    types = {"shop": "PReq", "gateway": "AuthReq"}
    return xid, _held_mail(w, agent, types[agent])


def test_tampered_order_information_is_refused(w):
    """A PReq changed in transit is refused with a signed Error naming the changed bytes; that Error
    does not end alice's genuine PReq (it only brings her re-send forward, D-134), and nothing
    reaches the gateway."""
    xid, entry = _intercept(w, "shop", 2, "alice", "shop", "30.00")
    der = w.mail("shop", entry.key).der
    oi = decode_wrapper(der)["message"].chosen.untag().chosen["oi_dual_signed"]["oi_data"].dump()
    tampered = oi[:-3] + bytes([oi[-3] ^ 0x01]) + oi[-2:]  # a byte of the BIN
    w.rewrite("shop", entry.key, der.replace(oi, tampered))
    w.start("shop")
    w.wait_mail("alice", "Error")
    alice = w.wait_state("alice", xid, "PREQ_SENT", check=lambda s: bool(s.get("refused")))
    assert "names other bytes" in json.dumps(alice["refused"]), alice
    assert w.state("shop", xid).get("state") == "PINIT_SENT"
    assert w.state("gateway", xid) == {}
    assert "REFUSED PReq" in w.log("shop") and "signature" in w.log("shop").lower()


def _open_auth_req(w, der):
    opened = op.open_EncB(message_body(decode_wrapper(der)).dump(), identity(w, "gateway", "kex"),
                          "AuthReqTBE", "AuthReqTBS", "PI")
    return decode(gw.AuthReqData, opened.content), opened.baggage


def _rewrap(der, message_type, body, **header_changes):
    wrapper = decode_wrapper(der)
    header = wrapper["message_header"].native
    header.update(header_changes)
    return make_wrapper(header, message_type, gw.AuthReq.load(body) if message_type == "AuthReq"
                        else body, mw_extensions=wrapper["mw_extensions"]).dump()


def _reseal_auth_req(w, data, pi, recipient="gateway"):
    shop = identity(w, "shop")
    kex = load_cert(w.world.keys_dir("shop") / "kex.cert.pem")
    return op.EncB(shop, load_cert(w.world.keys_dir(recipient) / "kex.cert.pem"), "AuthReqTBS",
                   data.dump(force=True), "PI", pi, "AuthReqTBE",
                   certs=[shop.cert, kex, *shop.chain[:-1]])


def test_merchant_asking_more_than_the_cardholder_signed_is_declined(w):
    xid, entry = _intercept(w, "gateway", 1, "alice", "shop", "20.00")
    der = w.mail("gateway", entry.key).der
    data, pi = _open_auth_req(w, der)
    payload = data["auth_req_item"]["auth_req_payload"]
    payload["auth_req_amt"] = {**payload["auth_req_amt"].native, "amount": 2100}
    w.rewrite("gateway", entry.key, _rewrap(der, "AuthReq", _reseal_auth_req(w, data, pi)))
    w.start("gateway")
    r = w.wait_state("alice", xid, ("DECLINED", "REJECTED"))
    assert r["auth_code"] == "amountError", r
    assert w.issuer_sql("SELECT COUNT(*) FROM issuer_ledger WHERE xid = ?", (xid,))[0][0] == 0


def test_pi_forwarded_to_another_gateway_is_refused(w):
    """A merchant that sends the PI to another gateway gets wrongGateway from it (PIHead names the
    gateway alice chose, D-102), no hold is placed, and the merchant takes no answer from a gateway
    that is not its acquirer's (D-137)."""
    xid, entry = _intercept(w, "gateway", 1, "alice", "shop", "21.00")
    der = w.mail("gateway", entry.key).der
    data, pi = _open_auth_req(w, der)
    mail = w.mail("gateway", entry.key)
    w.deliver("gateway2", _rewrap(der, "AuthReq", _reseal_auth_req(w, data, pi, "gateway2")),
              sender=mail.sender, message_type="AuthReq", message_id=mail.message_id)
    for path in w.world.maildir("gateway").glob(f"*/{entry.key}*"):
        path.unlink()  # the merchant sent it elsewhere instead
    w.start("gateway")
    gateway2 = w.world.agent("gateway2").address
    deadline = time.monotonic() + 30
    while True:
        found = [m for m in (w.mail("shop", e.key) for e in w.wait_mail("shop", "AuthRes"))
                 if m.sender == gateway2]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    res = found[0]
    opened = op.open_EncB(message_body(decode_wrapper(res.der)).dump(), identity(w, "shop", "kex"),
                          "AuthResTBE", "AuthResTBS", "AuthResBaggage")
    answer = decode(gw.AuthResData, opened.content)["auth_res_payload"]["auth_header"]
    assert answer["auth_code"].native == "wrongGateway"
    deadline = time.monotonic() + 20
    while maildir.pending(w.world.maildir("shop")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.state("shop", xid)["state"] == "AUTH_SENT"  # gateway2 is not shop's acquirer
    assert w.state("gateway2", xid) == {}
    assert w.issuer_sql("SELECT COUNT(*) FROM issuer_ledger WHERE xid = ?", (xid,))[0][0] == 0


def test_auth_res_for_another_merchant_is_refused(w):
    xid, entry = _intercept(w, "gateway", 1, "alice", "shop", "22.00")
    der = w.mail("gateway", entry.key).der
    data, _ = _open_auth_req(w, der)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    shop2 = load_cert(w.world.keys_dir("shop2") / "sig.cert.pem")
    forged = gw.AuthResData({
        "auth_tags": gw.AuthTags.load(data["auth_req_item"]["auth_tags"].dump()),
        "auth_res_payload": {"auth_header": {
            "auth_amt": data["auth_req_item"]["auth_req_payload"]["auth_req_amt"].native,
            "auth_code": "approved", "response_data": {"log_ref_id": b"00"}}},
        "mer_thumb": thumbprint(shop2)})
    gateway = identity(w, "gateway")
    body = op.EncB(gateway, load_cert(w.world.keys_dir("shop") / "kex.cert.pem"), "AuthResTBS",
                   forged.dump(), "AuthResBaggage", b"\x30\x00", "AuthResTBE",
                   certs=[gateway.cert, *gateway.chain[:-1]])
    wrapper = decode_wrapper(der)
    res = make_wrapper({**wrapper["message_header"].native, "rrpid": fresh(), "date": now},
                       "AuthRes", gw.AuthRes.load(body),
                       mw_extensions=wrapper["mw_extensions"]).dump()
    w.deliver("shop", res, sender=w.world.agent("gateway").address, message_type="AuthRes",
              message_id=f"forged.{time.time_ns()}@gateway.example")
    time.sleep(1.5)
    assert w.state("shop", xid)["state"] == "AUTH_SENT"  # the forgery changed nothing
    w.start("gateway")  # the genuine answer still completes the purchase
    assert w.wait_state("alice", xid, "APPROVED")


def test_replayed_purchase_request_is_not_authorised_twice(w):
    r = buy(w, "alice", "shop", "13.00", n=5)
    xid = r["xid"]
    w.wait_state("shop", xid, "CAPTURED")
    rows_before = w.issuer_sql("SELECT kind, amount FROM issuer_ledger WHERE xid = ?", (xid,))
    preq = next(e for e in maildir.list_messages(w.world.maildir("shop"))
                if w.mail("shop", e.key).header("X-SET-Message-Type") == "PReq"
                and xid in json.dumps(decode_wrapper(w.mail("shop", e.key).der)[
                    "message_header"]["message_ids"].native, default=lambda b: b.hex()))
    mail = w.mail("shop", preq.key)
    errors_before = len([e for e in maildir.list_messages(w.world.maildir("alice"))
                         if w.mail("alice", e.key).header("X-SET-Message-Type") == "Error"])
    # the same mail again (SMTP's at-least-once), and the same PReq in a new wrapper
    w.deliver("shop", mail.der, sender=mail.sender, message_type="PReq",
              message_id=mail.message_id)
    rewrapped = decode_wrapper(mail.der)
    header = {**rewrapped["message_header"].native, "rrpid": fresh()}
    again = make_wrapper(header, "PReq", pu.PReq.load(message_body(rewrapped).dump()),
                         mw_extensions=rewrapped["mw_extensions"]).dump()
    w.deliver("shop", again, sender=mail.sender, message_type="PReq",
              message_id=f"replay.{time.time_ns()}@cardholder.example")
    deadline = time.monotonic() + 20
    while maildir.pending(w.world.maildir("shop")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    assert w.state("shop", xid)["state"] == "CAPTURED"
    assert w.issuer_sql("SELECT kind, amount FROM issuer_ledger WHERE xid = ?", (xid,)) == rows_before
    # the exact copy is answered from the dedupe record (PRes again, which alice absorbs); the
    # re-wrapped copy is absorbed: a PReq for a purchase past PINIT_SENT is never answered
    assert "REFUSED PReq" in w.log("shop")
    time.sleep(1.0)
    errors_after = len([e for e in maildir.list_messages(w.world.maildir("alice"))
                        if w.mail("alice", e.key).header("X-SET-Message-Type") == "Error"])
    assert errors_after == errors_before


# --- what each party may know --------------------------------------------------------------------
def test_merchant_never_holds_a_card_number_and_gateway_never_an_order(w):
    time.sleep(0.5)
    pans = [c.pan.encode() for c in w.world.cards.values()]
    for merchant in ("shop", "shop2"):
        for path in w.files_written_by(merchant):
            data = path.read_bytes()
            assert not any(p in data for p in pans), path
    for gateway in ("gateway", "gateway2"):
        for path in w.files_written_by(gateway):
            assert SECRET_OD.encode() not in path.read_bytes(), path


def test_issuer_ledger_balances(w):
    report = ledger(w)
    for holder, acct in report.items():
        entries = acct.get("entries", [])
        assert acct["held"] + acct["posted"] + acct["available"] == acct["limit"], acct
        assert acct["held"] >= 0 and acct["posted"] >= 0
        holds = {e["xid"]: e["amount"] for e in entries if e["kind"] == "hold"}
        posts = {e["xid"]: e["amount"] for e in entries if e["kind"] == "post"}
        assert acct["posted"] == sum(posts.values())
        open_holds = sum(a for x, a in holds.items() if x not in posts)
        assert acct["held"] == open_holds
    # what the merchants captured is exactly what the issuer posted
    from setmail.txview import transactions
    captured = sum(w.state(row["merchant"], row["xid"]).get("cap_amt") or 0
                   for row in transactions(w.world) if row.get("merchant_state") == "CAPTURED")
    assert captured == sum(a["posted"] for a in report.values())
