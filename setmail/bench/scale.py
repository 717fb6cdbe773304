"""``scripts/bench scale``: does a purchase cost the same in a world that has done many, and how
do an agent's start and the inspection commands grow with what it has processed?

One world (as ``bench purchases``: every agent its own process, SMTP on loopback).  After a
warm-up, batches of the given sizes run one after another (default 100 then 1,000: what fits in a
few minutes on a 2-core machine); after each batch, with the agents still running:

* CPU per purchase of that batch (all processes) — flat if nothing grows with history;
* ``setmail tx list``, ``tx show XID``, ``trace XID --json``, ``mailbox list gateway`` as a user
  runs them (a fresh process each: wall seconds and the child's CPU seconds, Python start-up
  included, ~0.3 s of it);
* the gateway's restart: SIGINT, a new ``setmail run --agents gateway``, until its "started" log
  line (wall and CPU seconds of the new process by then).

``--fill N`` then grows one agent (the merchant) to N processed mails and N transactions by
cloning its real history (``bench.fill`` says how and why that is fair) and times the same
commands and its start on it, and a last batch of 100 real purchases.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from setmail.bench import machine
from setmail.bench.purchases import BenchWorld, _cpu, run_batch


def _child_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _cli(home: Path, *args: str) -> tuple[float, float]:
    """(wall, CPU) seconds of ``setmail ARGS --home HOME`` run to completion."""
    cpu0, t0 = _child_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "setmail.cli.main", *args, "--home", str(home)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"setmail {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return time.perf_counter() - t0, _child_cpu() - cpu0


def _stop(bw: BenchWorld, name: str) -> None:
    proc = bw.procs[name]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def _restart(bw: BenchWorld, name: str, *, stopped: bool = False) -> tuple[float, float]:
    """(wall, CPU) seconds from spawning agent ``name`` again to its "started" log line."""
    log = bw.home / "logs" / f"{name}.log"
    if not stopped:
        _stop(bw, name)
    before = log.read_text(errors="replace").count(" started (")
    t0 = time.perf_counter()
    bw._spawn(name, ["--agents", name, "--no-smtp"])
    while log.read_text(errors="replace").count(" started (") <= before:
        if bw.procs[name].poll() is not None or time.perf_counter() - t0 > 120:
            raise SystemExit(f"{name} did not start again; see {log}")
        time.sleep(0.01)
    return time.perf_counter() - t0, _cpu(bw.procs[name].pid)


def _processed(bw: BenchWorld, name: str) -> int:
    import sqlite3
    con = sqlite3.connect(bw.world.store_path(name), timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM processed_mail").fetchone()[0]
    finally:
        con.close()


def _filled(bw: BenchWorld, name: str, size: int, window: int) -> dict:
    """Stop ``name``, clone its history up to ``size`` mails and transactions (``bench.fill``),
    time its start and the commands a user runs on it, then a batch of real purchases."""
    from setmail.bench.fill import fill
    _stop(bw, name)
    made = fill(bw.world.store_path(name), bw.world.maildir(name), mails=size,
                transactions=size)
    checked = _restart(bw, name, stopped=True)  # the file changed: its store is checked in full
    batch = run_batch(bw, 100, window, 300)
    home, xid = bw.home, batch["last_xid"]
    timings = {f"{name} start, full check": checked,
               f"{name} start": _restart(bw, name),  # after a clean stop
               "tx list": _cli(home, "tx", "list", "--json"),
               "tx list --state": _cli(home, "tx", "list", "--state", "CAPTURED", "--json"),
               "tx show": _cli(home, "tx", "show", xid),
               "trace": _cli(home, "trace", xid, "--json"),
               "mailbox list": _cli(home, "mailbox", "list", name, "--json")}
    return {"agent": name, "size": size, "fill": made, "mails": _processed(bw, name),
            "cpu_per_after": batch["cpu_per"], "timings": timings}


def run(sizes: list[int], *, window: int = 16, keep: bool = False,
        as_json: bool = False, fill: int = 0, fill_agent: str = "shop") -> int:
    # the commands are timed as an installed setmail runs them: from cached bytecode (an
    # environment with PYTHONDONTWRITEBYTECODE compiles ~80 modules at every start, +0.1 s)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    box = machine.describe()
    home = Path(tempfile.mkdtemp(prefix="setmail-bench-scale-")) / "world"
    bw = BenchWorld(home)
    rows, total = [], 0
    try:
        bw.start()
        bw.prepare()
        bw.open()
        run_batch(bw, 20, window, 120)  # warm-up
        total = 20
        for size in sizes:
            batch = run_batch(bw, size, window, 60 + size * 2)
            total += size
            xid = batch["last_xid"]
            memory = {k: machine.status_mib(p.pid, "VmRSS") for k, p in bw.procs.items()
                      if p.poll() is None}
            timings = {"tx list": _cli(home, "tx", "list", "--json"),
                       "tx show": _cli(home, "tx", "show", xid),
                       "trace": _cli(home, "trace", xid, "--json"),
                       "mailbox list": _cli(home, "mailbox", "list", "gateway", "--json"),
                       "gateway start": _restart(bw, "gateway")}
            rows.append({"batch": size, "purchases_so_far": total, "cpu_per": batch["cpu_per"],
                         "cpu_per_process": batch["cpu_per_process"],
                         "rate": batch["rate"], "gateway_mails": _processed(bw, "gateway"),
                         "rss_mib": memory,
                         "timings": timings})
        filled = _filled(bw, fill_agent, fill, window) if fill else None
        bw.close()
    finally:
        bw.stop()
        if keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home.parent, ignore_errors=True)
    if as_json:
        print(json.dumps({"machine": box, "window": window, "rows": rows, "filled": filled},
                         indent=2))
        return 0
    print(f"setmail scale benchmark — batches of {', '.join(f'{s:,}' for s in sizes)} purchases "
          f"in one world, ≤{window} in flight")
    print(machine.line(box) + "\n")
    names = list(rows[0]["timings"]) if rows else []
    print("| purchases so far | batch | CPU/purchase | purchases/s | gateway mails | "
          + " | ".join(names) + " |")
    print("|---:" * (4 + len(names) + 1) + "|")
    for r in rows:
        cells = [f"{w:.2f} s ({c:.2f} CPU)" for w, c in r["timings"].values()]
        print(f"| {r['purchases_so_far']:,} | {r['batch']:,} | {r['cpu_per'] * 1000:.1f} ms | "
              f"{r['rate']:.1f} | {r['gateway_mails']:,} | " + " | ".join(cells) + " |")
    for r in rows:
        print(f"\nbatch of {r['batch']:,}, CPU per purchase by process: " + ", ".join(
            f"{k} {v * 1000:.1f} ms" for k, v in sorted(r["cpu_per_process"].items(),
                                                       key=lambda kv: -kv[1])))
    for r in rows:
        print(f"after {r['purchases_so_far']:,} purchases, RSS by process (MiB): " + ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(r["rss_mib"].items())))
    if len(rows) > 1:
        first, last = rows[0]["rss_mib"], rows[-1]["rss_mib"]
        print("RSS, last ÷ first: " + ", ".join(f"{k} {last[k] / first[k]:.2f}"
                                                for k in sorted(first) if k in last))
        first, last = rows[0]["cpu_per_process"], rows[-1]["cpu_per_process"]
        print(f"\nCPU per purchase, last batch ÷ first: "
              f"{rows[-1]['cpu_per'] / rows[0]['cpu_per']:.2f} (flat = 1.00); by process: "
              + ", ".join(f"{k} {last[k] / first[k]:.2f}" for k in first if k in last))
    if filled:
        made = filled["fill"]
        print(f"\n{filled['agent']} grown to {filled['mails']:,} processed mails and "
              f"{filled['size']:,} transactions ({made['mails_cloned']:,} mails and "
              f"{made['transactions_cloned']:,} transactions cloned in {made['seconds']:.1f} s, "
              "bench/fill.py), then 100 more purchases:")
        print(f"CPU per purchase {filled['cpu_per_after'] * 1000:.1f} ms (÷ the first batch's: "
              f"{filled['cpu_per_after'] / rows[0]['cpu_per']:.2f})" if rows else "")
        for what, (wall, cpu) in filled["timings"].items():
            print(f"  {what:<24} {wall:.2f} s ({cpu:.2f} CPU)")
    return 0
