"""The certificate lifecycle by mail in a running world (one process per agent, real SMTP):
``init`` by mail, merchants and gateways register when ``run`` starts and the merchants fetch
their gateway's certificates by PCertReq; a purchase completes; certificates are renewed while
everything runs (purchases still complete); a merchant revoked while everything runs is refused
by the wallet without a restart; a revoked certificate is not renewed.  The tests run in order
on one world (the revocation last)."""
from __future__ import annotations

import json
import time

import pytest

from setmail.agent.daemon import WIPE_DELAY
from setmail.world.keys import load_cert
from setmail.world.peers import peer_dir
from tests.e2e_world import RunningWorld, run_cli
from tests.ledger_check import assert_ledger_holds

EE = ("shop", "shop2", "gateway", "gateway2")


def wait_for(what, check, w, timeout=60, logs=EE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not {what} after {timeout} s\n" + "\n".join(
        f"--- {n}\n{w.log(n)[-2500:]}" for n in logs))


def files_holding(home, secret: bytes) -> list:
    return [p for p in home.rglob("*") if p.is_file() and secret in p.read_bytes()]


def ready(w, name) -> bool:
    """The agent rebuilt its role and it is the party's own now (``agent.reload`` logs it)."""
    return any(f"{name:<8} RELOAD role " in line and ", ready:" in line
               for line in w.log(name).splitlines())


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    world = RunningWorld(tmp_path_factory.mktemp("cert") / "world", certificates="mail")
    for name in EE:  # nothing issued by init: the codes are in world.toml, the commands queued
        assert not (world.world.keys_dir(name) / "sig.cert.pem").exists()
        assert world.world.agent(name).options["registration_code"]
    world.start_smtp()
    world.start()
    try:
        wait_for("registered by mail", lambda: all(ready(world, n) for n in EE), world)
        wait_for("the issuer ready", lambda: ready(world, "bank"), world, logs=("bank",))
        code, out, err = run_cli("register", "alice", "--wait", "90", "--home", str(world.home))
        assert code == 0, err + world.log("alice")
        world.pids = {n: p.pid for n, p in world.procs.items()}
        yield world
    finally:
        world.stop()


def buy(w, merchant="shop", amount="12.34", wait=60):
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", merchant, "--amount",
                             amount, "--wait", str(wait), "--json", "--home", str(w.home))
    return code, json.loads(out) if out.strip() else {}, err


def test_merchants_and_gateways_register_by_mail_and_a_purchase_completes(w):
    world = w.world
    for name in EE:
        keys = world.keys_dir(name)
        assert {p.name for p in keys.glob("*.pem")} >= {"sig.key.pem", "sig.cert.pem",
                                                         "kex.key.pem", "kex.cert.pem",
                                                         "chain.pem"}
        assert not list((keys / "pending").glob("*")), "pending keys installed and gone"
        code = world.agent(name).options["registration_code"].encode()
        # the store promises the wiped code is gone from every file within WIPE_DELAY and one
        # poll of the agent; the last registration may have ended just now
        wait_for(f"{name}'s registration code gone from every file",
                 lambda: not files_holding(world.agent_home(name), code), w,
                 timeout=WIPE_DELAY + 2.0, logs=(name,))
    for merchant in ("shop", "shop2"):  # its gateway's certificate came by PCertRes
        copy = peer_dir(world.agent_home(merchant), "gateway") / "kex.cert.pem"
        assert load_cert(copy) == load_cert(world.keys_dir("gateway") / "kex.cert.pem")
        assert "PCertRes" in w.log(merchant) and f"{merchant:<8} IN   PCertRes" in w.log(merchant)
    for ca, members in (("mca", 2), ("pca", 2)):
        assert w.log(ca).count("OUT  CertRes") == members
    code, out, err = buy(w)
    assert code == 0 and out["state"] == "APPROVED" and out["captured"], err + w.log("shop")
    assert_ledger_holds(w)


def _renew(w, agent) -> str:
    code, out, err = run_cli("renew", agent, "--wait", "60", "--home", str(w.home))
    assert code == 0, err + w.log(agent)
    assert "the old one stays valid" in out
    return out


def test_certificates_are_renewed_while_everything_runs(w):
    world = w.world
    old = {n: load_cert(world.keys_dir(n) / "sig.cert.pem") for n in ("shop", "gateway")}
    old_kex = load_cert(world.keys_dir("gateway") / "kex.cert.pem")
    reloads = w.log("bank").count("RELOAD role issuer")
    _renew(w, "shop")
    out = _renew(w, "gateway")
    assert "queued pcert for shop" in out and "queued pcert for shop2" in out
    for name in ("shop", "gateway"):
        new = load_cert(world.keys_dir(name) / "sig.cert.pem")
        assert new.serial_number != old[name].serial_number and new.subject == old[name].subject
        kept = world.keys_dir(name) / f"old-{old[name].serial_number:x}.sig.cert.pem"
        assert load_cert(kept) == old[name]  # still valid; `setmail revoke` revokes it too
    new_kex = load_cert(world.keys_dir("gateway") / "kex.cert.pem")
    copy = peer_dir(world.agent_home("shop"), "gateway") / "kex.cert.pem"
    wait_for("shop's copy of the new gateway certificate",
             lambda: load_cert(copy) == new_kex, w)
    assert new_kex != old_kex
    wait_for("the issuer's pins reloaded",  # it watches the certificates it pins (D-130)
             lambda: w.log("bank").count("RELOAD role issuer") > reloads, w, logs=("bank",))
    code, out, err = run_cli("renew", "alice", "--wait", "60", "--home", str(w.home))
    assert code == 0, err + w.log("alice")
    code, out, err = buy(w, amount="3.21")
    assert code == 0 and out["state"] == "APPROVED", err + w.log("shop") + w.log("gateway")
    assert {n: p.pid for n, p in w.procs.items()} == w.pids  # nobody restarted
    assert_ledger_holds(w)


def test_a_revoked_merchant_is_refused_by_the_wallet_without_a_restart(w):
    code, out, err = run_cli("revoke", "shop", "--home", str(w.home))
    assert code == 0, err
    wait_for("shop on the new CRLs", lambda: "crl.pem changed" in w.log("shop"), w,
             logs=("shop",))
    code, out, err = buy(w, amount="4.56", wait=15)
    xid = out["xid"]
    refused = w.wait_state("alice", xid, "PINIT_SENT", check=lambda s: "refused" in s)
    assert refused["refused"]["type"] == "PInitRes"
    assert refused["refused"]["code"] == "revokedCertificate", refused["refused"]
    assert "RELOAD role cardholder, ready: a BrandCRLIdentifier with sequence" in w.log("alice")
    assert _mail_types(w, "shop", xid) == ["PInitReq"]  # no PReq followed
    assert {n: p.pid for n, p in w.procs.items()} == w.pids  # nobody restarted
    # another merchant still sells: the wallet refused shop, not everybody
    code, out, err = buy(w, merchant="shop2", amount="1.00")
    assert code == 0 and out["state"] == "APPROVED", (out, err, *(w.log(n)[-3000:] for n in (
        "alice", "shop2", "gateway", "bank")))


def _mail_types(w, agent, xid) -> list[str]:
    """The types of the mails of purchase ``xid`` in ``agent``'s Maildir."""
    from setmail.asn1.wrapper import decode_wrapper
    from setmail.mail import maildir
    found = []
    for entry in maildir.list_messages(w.world.maildir(agent), include_quarantine=True):
        mail = w.mail(agent, entry.key)
        ids = decode_wrapper(mail.der)["message_header"]["message_ids"].native or {}
        if xid in {bytes(v).hex() for v in ids.values() if isinstance(v, bytes)}:
            found.append(mail.header("X-SET-Message-Type"))
    return found


def test_a_revoked_certificate_is_not_renewed(w):
    code, out, err = run_cli("renew", "shop", "--home", str(w.home))
    assert code == 3 and "was revoked on" in err and "cannot be renewed" in err
    # and should a renewal reach the MCA, its CertRes says so (rejectByCA)
    from setmail.agent import commands as cmdq
    from setmail.world.create import registration_args
    store = cmdq.open_store(w.world.store_path("shop"))
    try:
        command = cmdq.submit(store, "renew", registration_args(w.world, w.world.agent("shop")))
    finally:
        store.close()

    def failed():
        store = cmdq.open_store(w.world.store_path("shop"))
        try:
            row = cmdq.get(store, command)
            state = store.get_state("tx/" + row.txkey) if row.txkey else None
        finally:
            store.close()
        return state if state and state.get("state") == "FAILED" else None

    wait_for("the MCA's refusal", lambda: failed() is not None, w, logs=("shop", "mca"))
    state = failed()
    assert state["error_code"] == "rejectByCA" and "is revoked" in state["reason"]
    assert "REFUSED CertReq" in w.log("mca")
