"""``./scripts/demo``: a SET world on this machine, a registration and three purchase steps by mail.

Creates a world in a temporary directory (or ``--home``), starts the SMTP server and every agent
(``setmail run``), then, through the same commands a user types: registers alice's card with the
cardholder CA, buys 12.34 EUR at the shop (approved, captured automatically), tries 9,999.00 EUR
(declined by the issuer: insufficient funds), inquires about the first purchase, refunds it, closes
the shop's batch (reconciled, then cleared with the issuer), prints the trace and the issuer's
ledger, checks the ledger's invariant, and stops the agents.  Every outcome is checked; exit 0 only if all hold.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from setmail.cli.main import main as cli_main


def _say(text: str = "") -> None:
    print(text, flush=True)


def setmail(*args: str, show: bool = True) -> tuple[int, str]:
    """Run one setmail command in-process, echo it and its output like a terminal session."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
    if show:
        shown = [a for i, a in enumerate(args) if a != "--home" and (i == 0 or args[i - 1] != "--home")]
        _say("$ setmail " + shlex.join(shown))
        for line in (out.getvalue() + err.getvalue()).rstrip().splitlines():
            _say("  " + line)
    return code, out.getvalue()


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, what: str) -> None:
        _say(f"  {'✓' if ok else '✗'} {what}")
        if not ok:
            self.failed.append(what)


def _start(home: Path) -> subprocess.Popen:
    log = open(home / "agents.log", "w")
    env = {**os.environ}
    env.pop("SETMAIL_FAULT", None)
    proc = subprocess.Popen([sys.executable, "-m", "setmail.cli.main", "run", "--home", str(home),
                             "--poll", "0.05"], stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return proc


def _wait_listening(home: Path, port: int, proc: subprocess.Popen) -> None:
    from setmail.mail.smtpd import wait_listening
    if not wait_listening("127.0.0.1", port, alive=lambda: proc.poll() is None):
        raise SystemExit("the agents did not start:\n" + (home / "agents.log").read_text())


def _certified(home: Path, timeout: float = 60.0) -> bool:
    """The shop and its gateway got their certificates by mail (``init`` asks for them), and the
    shop its gateway's key-exchange certificate: before that, the shop cannot sell."""
    import time
    from setmail.world import load_world
    from setmail.world.peers import peer_dir
    world = load_world(home)
    needed = (world.keys_dir("shop") / "sig.cert.pem", world.keys_dir("gateway") / "sig.cert.pem",
              peer_dir(world.agent_home("shop"), "gateway") / "kex.cert.pem")
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in needed):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _settled(home: Path, check: Checks, timeout: float = 30.0) -> dict:
    """alice's card in the issuer's statement, once the clearing mail has settled the batch."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        code, out = setmail("statement", "alice", "--json", "--home", str(home), show=False)
        card = (json.loads(out)["cards"] or [{}])[0] if code == 0 else {}
        card = {k: v["minor"] if isinstance(v, dict) and "minor" in v else v  # {amount, minor}
                for k, v in card.items()}
        if card.get("posted_settled") or time.monotonic() > deadline:
            check(card.get("posted_settled") == 1234 and card.get("credited_settled") == 1234
                  and not card.get("posted_pending") and not card.get("credited_pending"),
                  "the issuer settled the cleared batch: 12.34 posted and 12.34 credited")
            return card
        time.sleep(0.2)


def run(home: Path) -> int:
    from setmail.mail.smtpd import pick_free_port
    check = Checks()
    port = pick_free_port()
    h = ("--home", str(home))
    _say("setmail demo — SET card payments, store-and-forward over e-mail\n")
    _say("1. A world: Root → Brand → CAs; cardholders alice and bob, merchant shop, payment "
         "gateway, issuer bank")
    setmail("init", *h, "--smtp-port", str(port), "--force")
    proc = _start(home)
    try:
        _wait_listening(home, port, proc)
        _say(f"\n2. Agents running (SMTP on 127.0.0.1:{port}, one Maildir per agent); alice "
             "registers her card with the cardholder CA, by mail")
        code, _ = setmail("register", "alice", "--wait", "60", *h)
        check(code == 0, "alice holds a cardholder certificate")
        check(_certified(home), "shop and gateway hold their certificates (Me-AqCInit, RegForm, "
              "CertReq by mail) and shop its gateway's (PCertReq)")

        _say("\n3. alice buys at shop: PInit, PReq (dual signature), AuthReq, issuer 0100/0110, "
             "AuthRes, PRes, CapReq, 0220/0230, CapRes")
        code, out = setmail("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                            "12.34", "--description", "1 teapot, blue", "--wait", "60", "--json",
                            *h)
        first = json.loads(out) if code in (0, 1) and out.strip() else {}
        check(code == 0 and first.get("state") == "APPROVED", "approved by the issuer")
        check(bool(first.get("captured")), "captured by the merchant (auto-capture)")

        _say("\n4. alice tries 9,999.00 EUR: more than her credit limit of 5,000.00")
        code, out = setmail("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                            "9999.00", "--description", "a golden teapot", "--wait", "60",
                            "--json", *h)
        second = json.loads(out) if out.strip() else {}
        check(code == 1 and second.get("state") == "DECLINED", "declined")
        check(str(second.get("iso_code")) == "51", "issuer's reason reaches alice: 51 "
              "insufficient funds")

        xid = first.get("xid", "")
        _say("\n5. alice asks the merchant about the first purchase (InqReq/InqRes)")
        code, out = setmail("inquire", xid, "--wait", "30", *h)
        check(code == 0 and "CAPTURED" in out, "the merchant answers: captured")

        _say("\n6. alice sends the teapot back: shop refunds it (CredReq/CredRes; the issuer "
             "credits her card, 0220 credit)")
        code, out = setmail("refund", xid, "--wait", "30", "--json", *h)
        refund = json.loads(out) if code in (0, 1) and out.strip() else {}
        check(code == 0, "the gateway credited 12.34 EUR back")

        _say("\n7. The day ends: shop closes its batch (BatchAdminReq/BatchAdminRes); the "
             "gateway clears it with the issuer in one mail")
        code, out = setmail("batch", "close", "--merchant", "shop", "--wait", "30", "--json", *h)
        closed = json.loads(out) if code in (0, 1) and out.strip() else {}
        check(code == 0 and "BALANCED" in json.dumps(closed)
              and "OUT_OF_BALANCE" not in json.dumps(closed),
              "shop's totals and the gateway's agree (the capture and the credit)")

        _say("\n8. Every mail of the first purchase, as the Maildirs hold them")
        code, out = setmail("trace", xid, *h)
        check(code == 0 and "IssCapRes" in out and "CredRes" in out and "refused" not in out,
              "the whole purchase travelled by mail, every message accepted")

        _say("\n9. The issuer's books, once the clearing mail is in")
        card = _settled(home, check)
        setmail("ledger", *h)
        check(card.get("held") == 0 and card.get("balance") == 0, "nothing left on hold, "
              "alice owes nothing")
        code, _ = setmail("ledger", "--check", *h)
        check(code == 0, "the ledger's invariant holds for every card")
    finally:
        _say("\n10. Stopping the agents")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = (home / "agents.log").read_text()
    check(proc.returncode == 0, "agents stopped cleanly")
    check("4111111111111111" not in log, "no card number in the agents' log")
    if check.failed:
        _say(f"\n{len(check.failed)} check(s) failed; agents' log: {home / 'agents.log'}")
        return 1
    _say("\nall checks passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="world directory to (re)create and keep")
    args = parser.parse_args(argv)
    if args.home:
        return run(args.home.absolute())
    home = Path(tempfile.mkdtemp(prefix="setmail-demo-")) / "world"
    try:
        return run(home)
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
