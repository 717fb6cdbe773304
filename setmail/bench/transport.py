"""``scripts/bench transport N``: the store-and-forward floor — what carrying a mail costs with no
cryptography and no protocol work, in the same runtime a purchase uses.

Why: the purchase benchmark's goal is CPU per purchase ≤ 2 × its cryptography, i.e. MIME, ASN.1,
SMTP, Maildir and SQLite together no dearer than the RSA.  This measures the part of that budget
the runtime spends on every mail whatever it carries, so the goal can be judged against a floor.

Set-up (not measured): two agents ("ping", "pong"), each in its own process running the real
daemon (``agent.daemon.serve``: MaildirWatcher, work and send threads, the SQLite store, the SMTP
client pool), and the real SMTP server (aiosmtpd + group-committed Maildir delivery) in a third.
The role, ``Bounce``, is the least a role can be: each mail is an unsigned SET Error of
``--size`` octets (about a purchase mail's DER), built once; a hop only re-wraps it with a fresh
RRPID and keeps ``--state`` octets of transaction state (about a purchase role's), so every mail
is claimed, parsed, its MessageWrapper strictly decoded, deduplicated, committed with its state,
the outgoing mail and the dedupe record, sent, delivered and marked done — and nothing else.
``N`` chains of 12 mails (a purchase's count) run with at most ``--window`` chains in flight.
Reported: CPU per mail and per 12 mails summed over the three processes, and the same 12 mails
against the purchase's crypto-only CPU and its bare-RSA floor (``bare_rsa``) measured in the same
run, with the machine and its load average before the run.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from setmail.roles.base import START, Command, Outcome, Role, Send

MAILS_PER_PURCHASE = 12
PING, PONG = "ping@ping.example", "pong@pong.example"
NAMES = {PING: "ping", PONG: "pong"}


class Bounce(Role):
    """ping: Command "bounce" sends the first mail; every Error that comes back is answered until
    ``last`` have arrived (DONE).  pong: answers every Error.  The chain id travels as LID-C."""

    name = "bounce"
    TRANSITIONS = {START: {"bounce": "FLYING", "Error": "FLYING"},
                   "FLYING": {"Error": ("FLYING", "DONE")}}

    def __init__(self, body: bytes, pad: int, last: int | None):
        self.body, self.pad, self.last = body, "0" * pad, last

    def transaction_key(self, event) -> str:
        if isinstance(event, Command):
            return event.args["id"]
        from setmail.roles.wire import wire
        return wire(event).header["message_ids"]["lid_c"].hex()

    def _send(self, chain: str, hop: int, to: str, now) -> Send:
        from setmail.roles.wire import wrap
        rrpid = hashlib.sha256(f"{chain}/{hop}".encode()).digest()[:20]
        return Send(to, "Error", wrap("Error", self.body, now=now, rrpid=rrpid,
                                      lid_c=bytes.fromhex(chain)))

    def on_bounce(self, state, event, now, shared) -> Outcome:
        chain = event.args["id"]
        return Outcome(chain, {"state": "FLYING", "seen": 0, "pad": self.pad},
                       sends=(self._send(chain, 1, PONG, now),))

    def on_Error(self, state, event, now, shared) -> Outcome:
        chain, seen = self.transaction_key(event), state.get("seen", 0) + 1
        if self.last is not None and seen >= self.last:
            return Outcome(chain, {"state": "DONE", "seen": seen, "pad": self.pad})
        return Outcome(chain, {"state": "FLYING", "seen": seen, "pad": self.pad},
                       sends=(self._send(chain, 2 * seen + (self.last is None), event.sender,
                                         now),))


def _body(size: int) -> bytes:
    """An unsigned Error carrying ``size`` octets as BadWrapper: a real SET message of about
    the size of a purchase mail whose reading needs no cryptography."""
    from setmail.asn1.error import Error, ErrorTBS
    tbs = ErrorTBS({"error_code": "unspecifiedFailure", "error_nonce": b"\0" * 20,
                    "error_msg": {"bad_wrapper": os.urandom(size)}})
    return Error(name="unsigned_error", value=tbs).dump()


def _config(root: Path, name: str, port: int):
    from setmail.agent import AgentConfig
    address = next(a for a, n in NAMES.items() if n == name)
    return AgentConfig(name, address, root / "agents" / name, root / "mailboxes" / name,
                       "127.0.0.1", port, NAMES)


def serve_child(root: str, name: str, port: int, size: int, pad: int) -> None:
    """One process of the benchmark: the SMTP server ("smtp") or one agent, until SIGTERM."""
    from setmail.agent import Agent
    from setmail.agent.daemon import serve
    home = Path(root)
    if name == "smtp":
        routes = {a: home / "mailboxes" / n for a, n in NAMES.items()}
        asyncio.run(serve([], routes=routes, listen=("127.0.0.1", port)))
        return
    role = Bounce(_body(size), pad, MAILS_PER_PURCHASE // 2 if name == "ping" else None)
    asyncio.run(serve([Agent(_config(home, name, port), role)]))


def run(n: int, *, window: int = 16, size: int = 6000, pad: int = 4000,
        seconds: float = 5.0, keep: bool = False) -> int:
    from setmail.agent import commands as cmdq
    from setmail.bench import machine
    from setmail.bench.crypto_purchase import yardsticks
    from setmail.bench.purchases import _cpu, reached
    from setmail.mail.maildir import ensure_maildir
    from setmail.mail.smtpd import pick_free_port, wait_listening
    box = machine.describe()
    root = Path(tempfile.mkdtemp(prefix="setmail-bench-transport-"))
    port = pick_free_port()
    for name in NAMES.values():
        ensure_maildir(root / "mailboxes" / name)
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "setmail.bench.transport", "--child", str(root), name, str(port),
         str(size), str(pad)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in ("smtp", "ping", "pong")}
    try:
        if not wait_listening("127.0.0.1", port, alive=lambda: procs["smtp"].poll() is None):
            raise SystemExit("SMTP server did not start")
        store_path = root / "agents" / "ping" / "state.db"
        deadline = time.monotonic() + 30
        while not store_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        store = cmdq.open_store(store_path)
        reader = sqlite3.connect(store_path, timeout=30)

        def batch(count: int) -> tuple[float, float]:
            ids = [os.urandom(16).hex() for _ in range(count)]
            pending, done, queued = set(), 0, 0
            cpu0, t0 = {k: _cpu(p.pid) for k, p in procs.items()}, time.time()
            stop = time.monotonic() + 60 + count
            while done < count:
                while queued < count and len(pending) < window:
                    cmdq.submit(store, "bounce", {"id": ids[queued]})
                    pending.add(ids[queued])
                    queued += 1
                time.sleep(0.05)
                finished = reached(reader, pending, "DONE")
                pending.difference_update(finished)
                done += len(finished)
                if time.monotonic() > stop:
                    raise SystemExit(f"only {done} of {count} chains completed")
            return {k: _cpu(p.pid) - cpu0[k] for k, p in procs.items()}, time.time() - t0

        batch(10)  # warm-up
        by_process, wall = batch(n)
        cpu = sum(by_process.values())
        store.close()
        reader.close()
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    sticks = yardsticks(seconds, "rsa2048")
    crypto, rsa = sticks["crypto"], sticks["rsa"]
    mails = n * MAILS_PER_PURCHASE
    per_mail, per_purchase = cpu / mails, cpu / n
    print(f"setmail transport floor — {n:,} chains of {MAILS_PER_PURCHASE} mails "
          f"({size:,}-octet SET Error each, {pad:,} octets of state), 3 processes, ≤{window} "
          f"chains in flight")
    print(machine.line(box) + "\n")
    print(f"CPU per mail (SMTP server + both agents): {per_mail * 1000:.2f} ms; "
          f"{mails / wall:.0f} mails/s")
    print("by process: " + ", ".join(f"{k} {v / mails * 1000:.2f} ms" for k, v in by_process.items()))
    print(f"CPU per {MAILS_PER_PURCHASE} mails (a purchase's worth): {per_purchase * 1000:.1f} ms")
    print(f"crypto only, one purchase (same run): {crypto['cpu_per'] * 1000:.1f} ms; "
          f"bare RSA floor (its {sum(crypto['ops'].values())} RSA operations on cryptography "
          f"alone): {rsa['cpu_per'] * 1000:.1f} ms")
    print(f"\ntransport floor ÷ crypto-only = {per_purchase / crypto['cpu_per']:.2f}  "
          f"(the purchase goal leaves ≤ 1.0 for everything that is not cryptography)")
    print(f"transport floor ÷ bare RSA = {per_purchase / rsa['cpu_per']:.2f}; crypto-only ÷ "
          f"bare RSA = {crypto['cpu_per'] / rsa['cpu_per']:.2f}")
    return 0


if __name__ == "__main__":  # pragma: no cover - the benchmark's child processes
    if sys.argv[1:2] == ["--child"]:
        root_, name_, port_, size_, pad_ = sys.argv[2:7]
        serve_child(root_, name_, int(port_), int(size_), int(pad_))
