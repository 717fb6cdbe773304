"""``scripts/soak N [--kill-every S] [--seed K]``: N purchases through one process per agent and
the SMTP server while a killer SIGKILLs a random one of them every ~S seconds and restarts it.

Why: the runtime's promise is exactly-once across crashes (commit, then send; dedupe on the
SET content; the outbox re-sends until a 250).  The crash tests prove it at chosen fault points;
this proves it at random instants, with every party busy, for a whole lifecycle.

The world: the demo world plus ``shop2`` (no auto-capture), both merchants acquired by the one
gateway.  Each purchase draws a plan from ``--seed``: at ``shop`` (auto-capture) it is captured,
and a share is then refunded in full; at ``shop2`` it is captured by command or voided (an
authorisation reversal).  When every purchase is final, each merchant closes its batches (which
the gateway clears with the issuer), the kills stop, the world drains and is stopped, and:

* every purchase is in its final state at the wallet, the merchant, the gateway and the issuer;
* the issuer holds exactly one ``hold`` per purchase, one ``post`` per captured one, one
  ``credit`` per refunded one, every hold released, every posting and credit settled once, and
  ``ledger --check``'s invariant holds; each batch BALANCED and SETTLED;
* no process died on its own, and no log holds a traceback.
"""
from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

from setmail.bench.purchases import BenchWorld
from setmail.store import parts

AMOUNT = 1000
#: plan -> (merchant, the merchant's final state, the gateway's, the issuer's)
PLANS = {"capture": ("shop", "CAPTURED", "CAPTURED", "POSTED"),
         "refund": ("shop", "REFUNDED", "CAPTURED", "POSTED"),
         "capture2": ("shop2", "CAPTURED", "CAPTURED", "POSTED"),
         "void": ("shop2", "VOIDED", "VOIDED", "REVERSED")}
#: the merchant state in which a plan's follow-up command is queued, and the command
FOLLOW_UP = {"refund": ("CAPTURED", "refund"), "capture2": ("AUTHORIZED", "capture"),
             "void": ("AUTHORIZED", "void")}
WALLET_FINAL = ("APPROVED", "CAPTURED")
#: the processes a purchase goes through (the CAs and bob idle: killing them proves nothing)
KILLABLE = ("smtp", "alice", "shop", "shop2", "gateway", "bank")


def shop2_spec():
    from setmail.world.config import AgentSpec
    return AgentSpec("shop2", "merchant", "shop2@merchant2.example",
                     options={"gateway": "gateway", "auto_capture": False, "mer_id": "SHOP-0002",
                              "acquirer_bin": "41111111", "display_name": "Second Shop"})


def draw_plans(n: int, rng: random.Random) -> list[str]:
    """Half at each merchant; a third of shop's refunded, 40 % of shop2's voided."""
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            out.append("refund" if rng.random() < 1 / 3 else "capture")
        else:
            out.append("void" if rng.random() < 0.4 else "capture2")
    return out


class SoakWorld(BenchWorld):
    """BenchWorld with shop2, a killer and restarts; ``killed`` counts kills by process."""

    def __init__(self, home: Path):
        from setmail.mail.smtpd import pick_free_port
        from setmail.world import load_world
        from setmail.world.create import create_world
        self.home = home
        create_world(home, smtp_port=pick_free_port(), certificates="direct",
                     extra_agents=(shop2_spec(),))
        self.world = load_world(home)
        self.procs = {}
        self.killed: Counter = Counter()
        self.died: list[str] = []

    def kill_one(self, rng: random.Random) -> str:
        """SIGKILL a random one of ``KILLABLE``, reap it, start it again (same command line)."""
        from setmail.mail.smtpd import wait_listening
        key = rng.choice(KILLABLE)
        proc = self.procs[key]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.killed[key] += 1
        self.respawn(key)
        if key == "smtp":
            wait_listening(self.world.smtp_host, self.world.smtp_port, 30)
        return key

    def respawn(self, key: str) -> None:
        args = ["--agents", "none"] if key == "smtp" else ["--agents", key, "--no-smtp"]
        self._spawn(key, args)

    def check_alive(self) -> None:
        """A process that exited without our kill died on its own: note it, start it again."""
        for key, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.died.append(f"{key} (exit {proc.returncode})")
                self.respawn(key)

    def open(self) -> None:
        from setmail.agent import commands as cmdq
        self._stores = {n: cmdq.open_store(self.world.store_path(n))
                        for n in ("alice", "shop", "shop2", "gateway", "bank")}

    def close(self) -> None:
        for store in self._stores.values():
            store.close()

    def submit_purchase(self, xid: str, merchant: str) -> None:
        from setmail.agent import commands as cmdq
        card = self.world.cards_of("alice")[0]
        shop, alice = self.world.agent(merchant), self.world.agent("alice")
        order = {"description": "soak order", "amount": AMOUNT, "currency": 978, "amt_exp10": -2}
        cmdq.submit(self._stores[merchant], "order",
                    {"xid": xid, **order, "cardholder": alice.address})
        cmdq.submit(self._stores["alice"], "buy",
                    {"xid": xid, "merchant": shop.address, "pan": card.pan,
                     "expiry": card.expiry, **order, "brand": self.world.brand})

    def command(self, agent: str, name: str, args: dict) -> int:
        from setmail.agent import commands as cmdq
        return cmdq.submit(self._stores[agent], name, args)

    def states(self, agent: str, xid: str) -> list[dict]:
        from setmail.txview import purchase_states
        return [s for _, s in purchase_states(self._stores[agent], xid)]

    def state(self, agent: str, xid: str) -> str | None:
        found = self.states(agent, xid)
        return found[0].get("state") if len(found) == 1 else None


def _final(sw: SoakWorld, xid: str, plan: str) -> bool:
    merchant, m_state, g_state, i_state = PLANS[plan]
    return (sw.state(merchant, xid) == m_state and sw.state("gateway", xid) == g_state
            and sw.state("bank", xid) == i_state and sw.state("alice", xid) in WALLET_FINAL)


def drive(sw: SoakWorld, plans: dict[str, str], *, window: int, kill_every: float,
          rng: random.Random, timeout: float, log=print) -> dict:
    """Start the purchases (``window`` in flight), queue each follow-up once its merchant is in
    the state that takes it, kill a process every ~``kill_every`` s; until all are final."""
    todo = list(plans)
    pending: dict[str, str] = {}   # xid -> "started" | "followed"
    done: set[str] = set()
    next_kill = time.monotonic() + (rng.uniform(0.5, 1.5) * kill_every if kill_every else 1e18)
    deadline = time.monotonic() + timeout
    last_note = time.monotonic()
    while len(done) < len(plans):
        while todo and len(pending) < window:
            xid = todo.pop()
            sw.submit_purchase(xid, PLANS[plans[xid]][0])
            pending[xid] = "started"
        time.sleep(0.1)
        for xid, stage in list(pending.items()):
            plan = plans[xid]
            if stage == "started" and plan in FOLLOW_UP:
                merchant = PLANS[plan][0]
                ready, command = FOLLOW_UP[plan]
                if sw.state(merchant, xid) == ready:
                    sw.command(merchant, command, {"xid": xid})
                    pending[xid] = "followed"
                continue
            if _final(sw, xid, plan):
                done.add(xid)
                del pending[xid]
        sw.check_alive()
        now = time.monotonic()
        if now >= next_kill:
            sw.kill_one(rng)
            next_kill = now + rng.uniform(0.5, 1.5) * kill_every
        if now - last_note > 15:
            log(f"  {len(done)}/{len(plans)} final, {sum(sw.killed.values())} kills")
            last_note = now
        if now > deadline:
            break
    return {"done": done, "stuck": {x: plans[x] for x in pending} | {x: plans[x] for x in todo}}


def close_batches(sw: SoakWorld, *, kill_every: float, rng: random.Random,
                  timeout: float) -> dict[str, list]:
    """Each merchant closes every batch it has not seen closed, kills going on; -> merchant ->
    its batch records once every one is closed with a reconciliation (or the timeout)."""
    from setmail.roles.merchant_batch import SHARED_KEY, merchant_shared
    deadline = time.monotonic() + timeout
    asked: set[tuple[str, int]] = set()
    next_kill = time.monotonic() + (kill_every or 1e18)
    records: dict[str, list] = {}
    while time.monotonic() < deadline:
        finished = True
        for merchant in ("shop", "shop2"):
            shared = merchant_shared(parts.load(sw._stores[merchant], "shared/" + SHARED_KEY)[0])
            records[merchant] = sorted(shared["batches"].values(), key=lambda r: r["id"])
            for record in records[merchant]:
                if record["status"] == "open" and (merchant, record["id"]) not in asked:
                    sw.command(merchant, "batch", {"operation": "close",
                                                   "batch_id": record["id"],
                                                   "ref": f"soak-{record['id']}"})
                    asked.add((merchant, record["id"]))
                if record["status"] == "open" or not record.get("reconciliation"):
                    finished = False
        if finished and _clearings(sw) and all(s == "SETTLED" for s in _clearings(sw).values()):
            return records
        sw.check_alive()
        if time.monotonic() >= next_kill:
            sw.kill_one(rng)
            next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * kill_every
        time.sleep(0.2)
    return records


def _clearings(sw: SoakWorld) -> dict[str, str]:
    """The gateway's batch clearing transactions -> state."""
    store = sw._stores["gateway"]
    return {k: store.get_state(k).get("state") for k, in store.query(
        "SELECT txkey FROM role_state WHERE txkey LIKE 'tx/batch/%'")}


def quiesce(sw: SoakWorld, timeout: float = 120) -> bool:
    """Wait until no agent has mail waiting in new/ or cur/ unfinished, or anything to send."""
    from setmail.mail import maildir
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for name in sw.world.agents:
            if any(not e.done for e in maildir.list_messages(sw.world.maildir(name))):
                busy = True
            with _store(sw, name) as store:
                if store.outbox(include_dead=True):
                    busy = True
        if not busy:
            return True
        sw.check_alive()
        time.sleep(0.3)
    return False


def _store(sw: SoakWorld, name: str):
    from setmail.store import Store
    return Store(sw.world.store_path(name))


def verify(sw: SoakWorld, plans: dict[str, str], records: dict[str, list]) -> dict:
    """Everything the soak promises, read from the stopped world's stores and logs: -> figures
    and ``problems`` (empty: all held).  ``lost``: purchases not final somewhere or missing a
    ledger row; ``doubled``: a ledger row or batch item more than once."""
    from setmail.agent.ledger import ledger_rows
    from setmail.agent.ledger_check import check_ledger
    problems: list[str] = []
    lost, doubled = set(), set()
    for xid, plan in plans.items():
        if not _final(sw, xid, plan):
            lost.add(xid)
            problems.append(f"{xid[:12]} ({plan}) not final: " + ", ".join(
                f"{a}={sw.state(a, xid)}" for a in ("alice", PLANS[plan][0], "gateway", "bank")))
    with _store(sw, "bank") as bank:
        rows = ledger_rows(bank)
        violations = check_ledger(bank)
        cleared = Counter(state for state in ("CLEARED", "UNBALANCED") for _ in bank.query(
            "SELECT txkey FROM role_state WHERE value LIKE ?", (f'%"state":"{state}"%',)))
    problems += [f"ledger: {v['where']}: {v['problem']}" for v in violations]
    kinds: dict[str, Counter] = {x: Counter() for x in plans}
    held: Counter = Counter()
    for row in rows:
        if row["xid"] not in kinds:
            problems.append(f"ledger row of an unknown purchase {row['xid'][:12]}")
            continue
        kind = row["kind"] if row["kind"] != "settle" else "settle_" + row["item"]
        kinds[row["xid"]][kind] += 1
        sign = {"hold": 1, "release": -1, "partial_release": -1, "reversal": -1}.get(kind, 0)
        held[row["xid"]] += sign * row["amount"]
    for xid, plan in plans.items():
        captured, refunded = plan != "void", plan == "refund"
        want = {"hold": 1, "post": int(captured), "credit": int(refunded),
                "settle_capture": int(captured), "settle_credit": int(refunded)}
        have = {k: kinds[xid][k] for k in want}
        if have != want:
            (doubled if any(have[k] > want[k] for k in want) else lost).add(xid)
            problems.append(f"{xid[:12]} ({plan}): issuer rows {have}, want {want}")
        if held[xid] != 0:
            problems.append(f"{xid[:12]} ({plan}): {held[xid]} still held")
    items: Counter = Counter()
    for merchant, recs in records.items():
        for r in recs:
            result = (r.get("reconciliation") or {}).get("result")
            if r["status"] == "open" or result != "BALANCED":
                problems.append(f"{merchant} batch {r['id']}: {r['status']}, {result}")
            items.update((kind, xid) for _, kind, xid, _ in r.get("items", []))
    for (kind, xid), count in items.items():
        if count > 1:
            doubled.add(xid)
            problems.append(f"{xid[:12]}: {kind} {count} times in the merchant's batches")
    clearings = _clearings(sw)
    if not clearings or any(s != "SETTLED" for s in clearings.values()):
        problems.append(f"gateway clearings: {clearings}")
    if cleared["UNBALANCED"] or cleared["CLEARED"] != len(clearings):
        problems.append(f"issuer clearings: {dict(cleared)}, gateway's: {len(clearings)}")
    for name in sw.world.agents:
        with _store(sw, name) as store:
            if store.outbox(include_dead=True):
                problems.append(f"{name}: outbox not empty")
    for log in sorted((sw.home / "logs").glob("*.log")):
        if "Traceback" in log.read_text(errors="replace"):
            problems.append(f"traceback in {log.name}")
    problems += [f"{d} died on its own" for d in sw.died]
    return {"problems": problems, "lost": len(lost), "doubled": len(doubled),
            "batches": sum(len(r) for r in records.values()), "clearings": len(clearings),
            "ledger_rows": len(rows)}


def run(n: int, *, kill_every: float = 5.0, seed: int | None = None, window: int = 16,
        keep: bool = False, home: Path | None = None, log=print) -> int:
    """The soak; prints its figures; 0 when every promise held, 1 otherwise."""
    import shutil
    import tempfile
    from setmail.crypto.suite import fresh
    seed = random.SystemRandom().randrange(1 << 32) if seed is None else seed
    rng = random.Random(seed)
    base = home or Path(tempfile.mkdtemp(prefix="setmail-soak-"))
    sw = SoakWorld(base / "world")
    plans = {fresh(20).hex(): plan for plan in draw_plans(n, rng)}
    t0 = time.monotonic()
    try:
        sw.start()
        sw.prepare()
        sw.open()
        log(f"soak: {n} purchases, a kill every ~{kill_every:g} s, seed {seed}, world {sw.home}")
        t1 = time.monotonic()
        result = drive(sw, plans, window=window, kill_every=kill_every, rng=rng,
                       timeout=300 + 3 * n)
        records = close_batches(sw, kill_every=kill_every, rng=rng, timeout=300)
        wall = time.monotonic() - t1
        quiet = quiesce(sw)
        sw.stop()
        # a clean stop is 0; 130 or death by SIGINT: the stop came while a restarted process
        # was still loading (nothing had started; setmail.cli.main exits quietly then)
        codes = {k: p.returncode for k, p in sw.procs.items()
                 if p.returncode not in (0, None, 130, -signal.SIGINT)}
        figures = verify(sw, plans, records)
        sw.close()
    finally:
        sw.stop()
        if not keep and home is None:
            shutil.rmtree(base, ignore_errors=True)
    if not quiet:
        figures["problems"].append("the world did not drain (mail or outbox left) in 120 s")
    figures["problems"] += [f"{k} stopped with exit {c}" for k, c in codes.items()]
    plan_counts = Counter(plans.values())
    kills = ", ".join(f"{k} {v}" for k, v in sorted(sw.killed.items())) or "none"
    log(f"\npurchases: {n} (captured {n - plan_counts['void']}, of which refunded "
        f"{plan_counts['refund']}; voided {plan_counts['void']}), final at every party: "
        f"{n - len(result['stuck'])}")
    log(f"kills: {sum(sw.killed.values())} ({kills}); died on their own: {len(sw.died)}")
    figures["kills"] = dict(sw.killed)
    log(f"batches closed and settled: {figures['batches']} (gateway clearings "
        f"{figures['clearings']}), issuer ledger rows: {figures['ledger_rows']}")
    log(f"lost: {figures['lost']}, doubled: {figures['doubled']}")
    log(f"wall time: {wall:.0f} s ({n / wall:.2f} purchases/s under kills), total "
        f"{time.monotonic() - t0:.0f} s with set-up and checks")
    for problem in figures["problems"][:40]:
        log("PROBLEM: " + problem)
    log("soak: OK" if not figures["problems"] else f"soak: FAILED ({len(figures['problems'])} "
        "problems)" + (f"; world kept in {base}" if keep or home else ""))
    return 0 if not figures["problems"] else 1


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=1000, help="purchases (default 1000)")
    parser.add_argument("--kill-every", type=float, default=5.0,
                        help="seconds between kills, about (default 5; 0: no kills)")
    parser.add_argument("--seed", type=int, default=None, help="the random plan and kills")
    parser.add_argument("--window", type=int, default=16, help="purchases in flight (default 16)")
    parser.add_argument("--keep", action="store_true", help="keep the world directory")
    args = parser.parse_args(argv)
    if args.n < 1 or args.window < 1 or args.kill_every < 0:
        parser.error("n and --window must be positive, --kill-every >= 0")
    return run(args.n, kill_every=args.kill_every, seed=args.seed, window=args.window,
               keep=args.keep)


if __name__ == "__main__":
    import sys
    sys.exit(main())
