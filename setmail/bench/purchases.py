"""``scripts/bench purchases N``: complete purchases (PInit … CapRes) through SMTP, every agent
in its own process, against the same cryptography alone on one core, in one run.

Set-up (not measured): a fresh world in a temporary directory, one OS process per agent plus one
for the SMTP server (``setmail run --agents NAME --no-smtp``), alice registered by mail, her
credit limit raised so N purchases fit.  Then ``N`` purchases are started with ``setmail buy``'s
own code path, at most ``--window`` in flight, and each is complete when the merchant has
processed its CapRes (auto-capture).  Reported:

* purchases/s (wall clock, first submission to last completion), p50/p95 completion latency
  (submission -> the merchant's commit of the CapRes, from the merchant's stored state);
* CPU seconds per purchase summed over every process (``/proc/<pid>/stat``), peak resident memory
  per agent (VmHWM);
* crypto-only: the same signatures, envelopes and verifications a purchase makes
  (``crypto_purchase``), no ASN.1 of our own, no transport, no storage, one core: purchases/s and
  CPU s/purchase; the two ratios end-to-end ÷ crypto-only;
* the bare-RSA floor: the same RSA operation counts on ``cryptography`` alone (``bare_rsa``), and
  every figure as a multiple of it; the machine and its load average before the run.

``--sizes 100,2000`` runs several N in one world (after a warm-up) to show that the per-purchase
cost stays flat.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from setmail.bench import machine
from setmail.bench.crypto_purchase import yardsticks

TICK = os.sysconf("SC_CLK_TCK")
AGENTS = ("alice", "shop", "gateway", "bank")


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class BenchWorld:
    def __init__(self, home: Path):
        from setmail.mail.smtpd import pick_free_port
        from setmail.world import load_world
        from setmail.world.create import create_world
        self.home = home
        create_world(home, smtp_port=pick_free_port(), certificates="direct")
        self.world = load_world(home)
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, key: str, args: list[str]) -> None:
        """``setmail run ARGS`` as process ``key``, logging to ``logs/<key>.log`` (appended)."""
        env = {**os.environ}
        env.pop("SETMAIL_FAULT", None)
        (self.home / "logs").mkdir(exist_ok=True)
        with open(self.home / "logs" / f"{key}.log", "a") as log:
            self.procs[key] = subprocess.Popen(
                [sys.executable, "-m", "setmail.cli.main", "run", "--home", str(self.home),
                 "--poll", "0.25", *args], stdout=log, stderr=subprocess.STDOUT, env=env)

    def start(self) -> None:
        self._spawn("smtp", ["--agents", "none"])
        for name in self.world.agents:
            self._spawn(name, ["--agents", name, "--no-smtp"])
        from setmail.mail.smtpd import wait_listening
        if not wait_listening(self.world.smtp_host, self.world.smtp_port):
            raise SystemExit("SMTP server did not start")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each running process (agents and the SMTP server)."""
        return {k: _cpu(p.pid) for k, p in self.procs.items() if p.poll() is None}

    def prepare(self) -> None:
        """Register alice by mail and give her card room for every purchase."""
        from setmail.demo import setmail
        code, _ = setmail("register", "alice", "--wait", "60", "--home", str(self.home),
                          show=False)
        if code != 0:
            raise SystemExit("registration failed: see " + str(self.home / "logs"))
        con = sqlite3.connect(self.world.store_path("bank"))
        with con:  # room for every purchase; the issuer reads accounts when it starts
            con.execute("UPDATE issuer_accounts SET credit_limit_minor = ?", (10 ** 12,))
        con.close()
        self.procs["bank"].send_signal(signal.SIGINT)
        self.procs["bank"].wait(timeout=30)
        self._spawn("bank", ["--agents", "bank", "--no-smtp"])

    def submit(self, xid: str) -> None:
        from setmail.agent import commands as cmdq
        card = self.world.cards_of("alice")[0]
        shop, alice = self.world.agent("shop"), self.world.agent("alice")
        for name, command, args in (
                ("shop", "order", {"xid": xid, "description": "benchmark order", "amount": 1000,
                                   "currency": 978, "amt_exp10": -2, "cardholder": alice.address}),
                ("alice", "buy", {"xid": xid, "merchant": shop.address, "pan": card.pan,
                                  "expiry": card.expiry, "description": "benchmark order",
                                  "amount": 1000, "currency": 978, "amt_exp10": -2,
                                  "brand": self.world.brand})):
            store = self._stores[name]
            cmdq.submit(store, command, args)

    def open(self) -> None:
        from setmail.agent import commands as cmdq
        self._stores = {n: cmdq.open_store(self.world.store_path(n)) for n in ("shop", "alice")}
        self._shop = sqlite3.connect(self.world.store_path("shop"), timeout=30)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._shop.close()

    def completed(self, xids) -> dict[str, float]:
        """xid -> commit time of the merchant's CapRes (the state's ``updated_at``), for the
        purchases in flight the merchant has captured.  Looked up by primary key: scanning every
        stored state twenty times a second took CPU from the agents being measured."""
        return reached(self._shop, xids, "CAPTURED")


def reached(conn: sqlite3.Connection, keys, state: str) -> dict[str, float]:
    """key -> commit time (``updated_at``) for the transactions among ``keys`` whose stored
    role state is ``state`` (the benchmarks' completion check, by primary key)."""
    keys = tuple("tx/" + k for k in keys)
    if not keys:
        return {}
    return {k[3:]: t for k, t in conn.execute(
        f"SELECT txkey, updated_at FROM role_state WHERE txkey IN ({','.join('?' * len(keys))}) "
        "AND value LIKE ?", (*keys, f'%"state":"{state}"%')).fetchall()}


def run_batch(bw: BenchWorld, n: int, window: int, timeout: float) -> dict:
    from setmail.crypto.suite import fresh
    submitted: dict[str, float] = {}
    finished: dict[str, float] = {}
    cpu0, t0 = bw.cpu(), time.time()
    pending: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(finished) < n:
        while len(submitted) < n and len(pending) < window:
            xid = fresh(20).hex()
            submitted[xid] = time.time()
            bw.submit(xid)
            pending.add(xid)
        time.sleep(0.05)
        done = bw.completed(pending)
        finished.update(done)
        pending -= set(done)
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(finished)} of {n} purchases completed in {timeout:g} s; "
                             f"logs in {bw.home / 'logs'}")
    wall = max(finished.values()) - t0
    cpu1 = bw.cpu()
    per_process = {k: (cpu1[k] - cpu0.get(k, 0.0)) / n for k in cpu1}
    cpu_per = sum(per_process.values())
    latencies = sorted(finished[x] - submitted[x] for x in finished)
    return {"n": n, "wall": wall, "rate": n / wall, "cpu_per": cpu_per,
            "cpu_per_process": {k: v for k, v in per_process.items() if v > 0.0005},
            "p50": latencies[len(latencies) // 2],
            "p95": latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
            "last_xid": max(finished, key=finished.get)}


def run(n: int, *, sizes: list[int] | None = None, window: int = 16, seconds: float = 5.0,
        suite_name: str = "rsa2048", keep: bool = False, as_json: bool = False) -> int:
    sizes = sizes or [n]
    box = machine.describe()
    home = Path(tempfile.mkdtemp(prefix="setmail-bench-")) / "world"
    bw = BenchWorld(home)
    results = []
    try:
        bw.start()
        bw.prepare()
        bw.open()
        run_batch(bw, 20, window, 120)  # warm-up: imports, caches, SQLite pages
        for size in sizes:
            results.append(run_batch(bw, size, window, 60 + size * 2))
        memory = {name: machine.status_mib(bw.procs[name].pid, "VmHWM") for name in AGENTS}
        bw.close()
    finally:
        bw.stop()
        if not keep:
            shutil.rmtree(home.parent, ignore_errors=True)
    sticks = yardsticks(seconds, suite_name)
    crypto, rsa = sticks["crypto"], sticks["rsa"]
    last = results[-1]
    report = {"end_to_end": results, "peak_rss_mib": memory, "crypto_only": crypto,
              "bare_rsa": rsa, "machine": box,
              "throughput_ratio": last["rate"] / crypto["rate"],
              "cpu_ratio": last["cpu_per"] / crypto["cpu_per"],
              "rsa_ratios": {"cpu_end_to_end": last["cpu_per"] / rsa["cpu_per"],
                             "throughput_end_to_end": last["rate"] / rsa["rate"],
                             "cpu_crypto_only": crypto["cpu_per"] / rsa["cpu_per"]},
              "window": window, "cores": os.cpu_count()}
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    _print(report)
    return 0


def _print(r: dict) -> None:
    print(f"setmail purchase benchmark — every agent in its own process, SMTP on loopback, "
          f"{r['cores']} cores, ≤{r['window']} purchases in flight")
    print(machine.line(r["machine"]) + "\n")
    print("| purchases | purchases/s | p50 latency | p95 latency | CPU s/purchase (all processes) |")
    print("|---:|---:|---:|---:|---:|")
    for e in r["end_to_end"]:
        print(f"| {e['n']:,} | {e['rate']:.1f} | {e['p50']:.2f} s | {e['p95']:.2f} s | "
              f"{e['cpu_per'] * 1000:.1f} ms |")
    last = r["end_to_end"][-1]["cpu_per_process"]
    print("\nCPU per purchase by process: " + ", ".join(
        f"{k} {v * 1000:.1f} ms" for k, v in sorted(last.items(), key=lambda kv: -kv[1])))
    c = r["crypto_only"]
    print(f"\ncrypto only (same operations, one core): {c['rate']:.1f} purchases/s, "
          f"{c['cpu_per'] * 1000:.1f} ms CPU/purchase ({c['private_ops']} RSA private-key and "
          f"{c['public_ops']} public-key operations per purchase)")
    b, x = r["bare_rsa"], r["rsa_ratios"]
    print(f"bare RSA floor (those operations on cryptography alone, one core): "
          f"{b['rate']:.1f} purchases/s, {b['cpu_per'] * 1000:.1f} ms CPU/purchase")
    print("peak memory per agent: " + ", ".join(f"{k} {v:.0f} MiB"
                                                for k, v in r["peak_rss_mib"].items()))
    print(f"\nthroughput end-to-end ÷ crypto-only = {r['throughput_ratio']:.2f}  (goal ≥ 0.5)")
    print(f"CPU per purchase end-to-end ÷ crypto-only = {r['cpu_ratio']:.2f}  (goal ≤ 2)")
    print(f"against the bare RSA floor: CPU end-to-end {x['cpu_end_to_end']:.2f}×, "
          f"crypto-only {x['cpu_crypto_only']:.2f}×; throughput end-to-end "
          f"{x['throughput_end_to_end']:.2f} of the floor's")
    print("CPU per purchase by process ÷ bare RSA: " + ", ".join(
        f"{k} {v / b['cpu_per']:.2f}" for k, v in sorted(last.items(), key=lambda kv: -kv[1])))
