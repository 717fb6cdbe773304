"""What the attacker gets from the operator's side of the world (issue 12 points 8, 9, 10): a
second process on a running agent, a certificate for somebody else's card, secrets left in files.

``init --force`` runs last: without its defence it wipes the running world.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from setmail.agent import commands as cmdq
from setmail.agent.daemon import WIPE_DELAY
from tests.adversary.judge import buy, expect_completed, ledger, run_cli, settle, state, wait_for
from tests.e2e_world import REPO


def _second_process(rw, *args: str, timeout: float = 10) -> tuple[int | None, str]:
    """Run ``setmail ARGS`` as a second process; (exit code, output).  A process still running
    after ``timeout`` was accepted: it is stopped and the code is None."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SETMAIL_FAULT", None)
    proc = subprocess.Popen([sys.executable, "-m", "setmail.cli.main", *args, "--home",
                             str(rw.home)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out


def _wallet_cards(rw, holder) -> set[str]:
    path = rw.world.agent_home(holder) / "wallet.json"
    index = json.loads(path.read_text()) if path.exists() else {}
    return {e.get("pan_last4") for e in index.values()}


def test_a_second_process_for_a_running_agent_is_refused(rw, attacker):
    """Point 8: ``run --agents shop`` and ``agent shop`` while shop runs: one clear line, exit 3,
    and the running shop goes on undisturbed."""
    for args in (("run", "--agents", "shop", "--no-smtp", "--poll", "0.05"), ("agent", "shop")):
        code, out = _second_process(rw, *args)
        assert code == 3, f"{' '.join(args)}: exit {code}: {out}"
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and "shop" in lines[0] and "Traceback" not in out, out
    assert rw.procs["shop"].poll() is None
    p = buy(rw, "alice", "shop")
    expect_completed(rw, p)


def test_secrets_are_gone_from_every_file_after_the_purchase(rw, attacker):
    """Point 10: once purchases are captured, no card number is left in any file of a wallet's
    or the gateway's home, Maildir or log (SQLite free pages and WAL included)."""
    p = buy(rw, "bob", "shop")
    expect_completed(rw, p)
    settle(rw)
    wait_for("captured at the gateway", lambda: state(rw, "gateway", p.xid).get("state")
             == "CAPTURED")
    pans = [c.pan for c in rw.world.cards.values()]
    needles = [n for pan in pans for n in (pan.encode(), pan.encode().hex().encode(),
                                           pan.encode("utf-16-le"))]

    def left() -> list:
        found = []
        for agent in ("alice", "bob", "gateway"):
            for path in rw.files_written_by(agent):
                data = path.read_bytes()
                found += [f"{path.relative_to(rw.home)}: …{n[-4:].decode(errors='replace')}"
                          for n in needles if n in data]
        return found
    # a running agent's wipes share one WAL checkpoint, at most WIPE_DELAY after the first
    deadline = time.monotonic() + WIPE_DELAY + 2.0
    while (found := left()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not found, "card numbers left in files:\n" + "\n".join(found)


def test_register_with_another_cardholders_card_is_refused(rw, attacker):
    """Point 9: ``register alice --card bob-visa`` is refused by the CLI, and the same request
    put straight into alice's command queue (a tampered wallet) is refused by the CCA: alice never
    holds a certificate for bob's card, and cannot buy on it."""
    bob_card = rw.world.cards["bob-visa"]
    code, out, err = run_cli("register", "alice", "--card", "bob-visa", "--wait", "20",
                             "--home", str(rw.home))
    assert code != 0, out + err
    store = cmdq.open_store(rw.world.store_path("alice"))
    try:
        command = cmdq.submit(store, "register", {
            "pan": bob_card.pan, "expiry": bob_card.expiry, "ca": rw.world.agent("cca").address,
            "brand": rw.world.brand, "fields": {"CardholderName": "Alice",
                                                "PostalCode": "10001"}})
    finally:
        store.close()

    def finished():
        s = cmdq.open_store(rw.world.store_path("alice"))
        try:
            row = cmdq.get(s, command)
            if row is None or row.status == "pending":
                return None
            return row.status == "failed" or (s.get_state("tx/" + row.txkey) or {}).get(
                "state") in ("DONE", "FAILED")
        finally:
            s.close()
    wait_for("alice's forged registration to finish", finished, timeout=30)
    settle(rw)
    assert bob_card.pan[-4:] not in _wallet_cards(rw, "alice")
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--card",
                             "bob-visa", "--amount", "9.99", "--wait", "15", "--json", "--home",
                             str(rw.home))
    assert code != 0, out + err
    xid = json.loads(out)["xid"] if out.strip().startswith("{") else None
    if xid:
        assert not ledger(rw, xid)


def test_init_force_is_refused_while_the_world_runs(rw, attacker):
    """Point 8: ``init --force`` on a running world: one clear line, exit 3, nothing wiped."""
    world_toml = (rw.home / "world.toml").read_bytes()
    keys = sorted(p.relative_to(rw.home) for p in (rw.home / "agents").rglob("*.pem"))
    code, out, err = run_cli("init", "--force", "--home", str(rw.home), "--smtp-port",
                             str(rw.world.smtp_port))
    assert code == 3, out + err
    assert len(err.strip().splitlines()) == 1, err
    assert (rw.home / "world.toml").read_bytes() == world_toml
    assert sorted(p.relative_to(rw.home) for p in (rw.home / "agents").rglob("*.pem")) == keys
    p = buy(rw, "alice", "shop")
    expect_completed(rw, p)
