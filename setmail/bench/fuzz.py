"""``scripts/fuzz N [--seed K]``: N structure-aware mutants of the genuine mail of finished
purchases (``bench.mutants``), sent over SMTP to every agent of a running world, one process per
agent.

Why: an agent reads mail from anybody.  Whatever arrives, it must stay up, say nothing it should
not, change nothing, and keep taking genuine mail.  The world (the soak's: shop auto-captures,
shop2 does not) first completes a refunded purchase, a voided one and a captured one, and both
merchants close their batches; every mail of that (registration included) is a seed.  Then N
mutants, each sent to the agent the seed was for (one in five to another agent), and afterwards:

* every process still runs and no log holds a traceback;
* every mutant was refused at SMTP, or quarantined with its reason beside it, or processed
  without effect: every transaction's state as before, the issuer's ledger rows and totals
  unchanged, nothing new at the gateway or the issuer;
* each process's resident memory grew by no more than half again plus 32 MiB;
* a genuine purchase then completes.
"""
from __future__ import annotations

import json
import random
import smtplib
import time
from collections import Counter
from pathlib import Path

from setmail.bench import machine
from setmail.bench.mutants import der_mutant, mail_mutant, nodes
from setmail.bench.soak import SoakWorld, _final, _store, close_batches, drive, quiesce
from setmail.store import parts


def seeds(sw: SoakWorld) -> list[tuple[str, bytes]]:
    """(recipient agent, raw mail) of every mail every agent received, with the CRLF line ends
    of the wire (Maildir files end lines with LF; smtplib sends bytes as they are)."""
    import re
    from setmail.mail import maildir
    out = []
    for name in sw.world.agents:
        box = sw.world.maildir(name)
        out += [(name, re.sub(rb"\r?\n", b"\r\n", maildir.read(box, e.key)))
                for e in maildir.list_messages(box)]
    return out


def snapshot(sw: SoakWorld) -> dict:
    """What a mutant must not change: each agent's transactions (key -> state name), the
    issuer's ledger rows and totals, and the mails each agent has processed."""
    from setmail.agent.ledger import ledger_rows
    snap: dict = {"states": {}, "processed": {}}
    for name in sw.world.agents:
        with _store(sw, name) as store:
            snap["states"][name] = {k: json.loads(v).get("state") for k, v in store.query(
                "SELECT txkey, value FROM role_state WHERE txkey LIKE 'tx/%'")}
            snap["processed"][name] = dict(store.query(
                "SELECT maildir_key, status FROM processed_mail"))
            if name == "bank":
                snap["ledger"] = [tuple(sorted(r.items())) for r in ledger_rows(store)]
                snap["totals"] = parts.load(store, "shared/ledger")[0]
    return snap


def _send(conn_box: list, world, sender: str, to: str, raw: bytes) -> str:
    """Send one raw mail: "accepted" or "refused <code> <text>".  After a refusal the
    connection is dropped: a server that stopped reading DATA midway (a line too long) would
    take the rest of the mail for commands."""
    for attempt in range(3):
        try:
            if not conn_box:
                conn_box.append(smtplib.SMTP(world.smtp_host, world.smtp_port, timeout=60))
            conn_box[0].sendmail(sender, [to], raw)
            return "accepted"
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
        except smtplib.SMTPResponseException as exc:
            code, text = exc.smtp_code, exc.smtp_error
        except (smtplib.SMTPServerDisconnected, ConnectionError, OSError):
            conn_box.clear()
            time.sleep(0.2)
            continue
        _drop(conn_box)
        if code == 421 and attempt < 2:
            continue
        return f"refused {code} {text.decode(errors='replace')[:40]}"
    return "refused disconnect"


def _drop(conn_box: list) -> None:
    for conn in conn_box:
        try:
            conn.close()
        except OSError:
            pass
    conn_box.clear()


def _backlog(sw: SoakWorld) -> int:
    """Mails delivered and not yet processed, over every agent."""
    return sum(sum(1 for _ in (sw.world.maildir(n) / "new").iterdir()) for n in sw.world.agents)


def fuzz(sw: SoakWorld, n: int, rng: random.Random, *, log=print) -> dict:
    """Send ``n`` mutants; -> counts by outcome and by kind."""
    from setmail.mail.mime import parse_mail
    pool = seeds(sw)
    trees = {}
    agents = sorted(sw.world.agents)
    outcome, kinds = Counter(), Counter()
    conn: list = []
    for i in range(n):
        name, raw = rng.choice(pool)
        mail = parse_mail(raw, max_size=1 << 22)
        if rng.random() < 0.75:
            tree = trees.setdefault(id(raw), nodes(mail.der))
            kind, der = der_mutant(mail.der, rng, tree)
            from setmail.bench.mutants import with_der
            kind, mutant = "der:" + kind, with_der(raw, der)
        else:
            kind, mutant = mail_mutant(raw, rng)
            kind = "mail:" + kind
        to = name if rng.random() < 0.8 else rng.choice(agents)
        result = _send(conn, sw.world, mail.sender or "x@y.example",
                       sw.world.agent(to).address, mutant)
        outcome[result.split()[0]] += 1
        outcome[result] += result != "accepted"
        kinds[kind] += 1
        if i % 100 == 99:
            sw.check_alive()
            while _backlog(sw) > 300:
                time.sleep(0.2)
        if i % 2000 == 1999:
            log(f"  {i + 1}/{n} sent")
    _drop(conn)
    return {"outcome": outcome, "kinds": kinds}


def judge(sw: SoakWorld, before: dict, after: dict) -> tuple[dict, list[str]]:
    """The new mails' statuses, quarantine reasons and every change a mutant made."""
    from setmail.mail import maildir
    problems, statuses = [], Counter()
    for name in sw.world.agents:
        new = {k: s for k, s in after["processed"][name].items()
               if k not in before["processed"][name]}
        statuses.update(new.values())
        for key, status in new.items():
            if status == "quarantined" and not maildir.reason(sw.world.maildir(name), key):
                problems.append(f"{name}: {key} quarantined without a reason")
        for txkey, state in before["states"][name].items():
            if after["states"][name].get(txkey) != state:
                problems.append(f"{name}: {txkey[:20]} {state} -> "
                                f"{after['states'][name].get(txkey)}")
        added = Counter(s for k, s in after["states"][name].items()
                        if k not in before["states"][name])
        if added and sw.world.agent(name).kind in ("gateway", "issuer"):
            problems.append(f"{name}: new transactions {dict(added)}")
        if added:
            statuses.update({f"new {name} {s}": c for s, c in added.items()})
    if after["ledger"] != before["ledger"] or after["totals"] != before["totals"]:
        problems.append("the issuer's ledger changed")
    return statuses, problems


def genuine(sw: SoakWorld, rng: random.Random, kill_every: float = 0.0) -> dict:
    """Three purchases (refunded, voided, captured), both merchants' batches closed."""
    from setmail.crypto.suite import fresh
    plans = {fresh(20).hex(): p for p in ("refund", "void", "capture2", "capture")}
    result = drive(sw, plans, window=4, kill_every=kill_every, rng=rng, timeout=180)
    close_batches(sw, kill_every=0, rng=rng, timeout=120)
    return {"plans": plans, **result}


def run(n: int, *, seed: int | None = None, keep: bool = False, home: Path | None = None,
        log=print) -> int:
    import shutil
    import tempfile
    seed = random.SystemRandom().randrange(1 << 32) if seed is None else seed
    rng = random.Random(seed)
    base = home or Path(tempfile.mkdtemp(prefix="setmail-fuzz-"))
    sw = SoakWorld(base / "world")
    problems: list[str] = []
    try:
        sw.start()
        sw.prepare()
        sw.open()
        log(f"fuzz: {n} mutants, seed {seed}, world {sw.home}")
        first = genuine(sw, rng)
        if first["stuck"] or not quiesce(sw):
            raise SystemExit(f"the genuine purchases did not finish: {first['stuck']}")
        before = snapshot(sw)
        n_seeds = len(seeds(sw))
        rss0 = {k: machine.status_mib(p.pid, "VmRSS") for k, p in sw.procs.items()}
        t0 = time.monotonic()
        sent = fuzz(sw, n, rng, log=log)
        drained = quiesce(sw, timeout=600)
        wall = time.monotonic() - t0
        rss1 = {k: machine.status_mib(p.pid, "VmRSS") for k, p in sw.procs.items()}
        after = snapshot(sw)
        statuses, problems = judge(sw, before, after)
        if not drained:
            problems.append("the agents did not drain their mail in 600 s")
        last = genuine(sw, rng)
        if last["stuck"] or not all(_final(sw, x, p) for x, p in last["plans"].items()):
            problems.append(f"a genuine purchase after the fuzz did not complete: "
                            f"{last['stuck']}")
        problems += [f"{d} died on its own" for d in sw.died]
        sw.stop()
        problems += [f"{k} stopped with exit {p.returncode}" for k, p in sw.procs.items()
                     if p.returncode != 0]
        for path in sorted((sw.home / "logs").glob("*.log")):
            text = path.read_text(errors="replace")
            if "Traceback" in text or "internal error" in text:
                problems.append(f"traceback or internal error in {path.name}")
        sw.close()
    finally:
        sw.stop()
        if not keep and home is None:
            shutil.rmtree(base, ignore_errors=True)
    grown = {k: (rss0[k], rss1[k]) for k in rss0 if rss1.get(k, 0) > rss0[k] * 1.5 + 32}
    problems += [f"{k}: RSS {a:.0f} -> {b:.0f} MiB" for k, (a, b) in grown.items()]
    out = sent["outcome"]
    log(f"\nmutants: {n} of {n_seeds} genuine mails ({len(sent['kinds'])} kinds), "
        f"{n / wall:.0f}/s; wall time {wall:.0f} s")
    log(f"SMTP: accepted {out['accepted']}, refused {out['refused']} ("
        + ", ".join(f"{k[8:]}: {v}" for k, v in sorted(out.items())
                    if k.startswith("refused ")) + ")")
    log("agents: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    log("kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(sent["kinds"].items())))
    log("RSS before -> after (MiB): " + ", ".join(
        f"{k} {rss0[k]:.0f}->{rss1.get(k, 0):.0f}" for k in sorted(rss0)))
    log(f"genuine purchase after the fuzz: {'completed' if not last['stuck'] else 'STUCK'}")
    for problem in problems[:40]:
        log("PROBLEM: " + problem)
    log("fuzz: OK" if not problems else f"fuzz: FAILED ({len(problems)} problems)")
    return 0 if not problems else 1


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=10000, help="mutants (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="the mutants drawn")
    parser.add_argument("--keep", action="store_true", help="keep the world directory")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("n must be positive")
    return run(args.n, seed=args.seed, keep=args.keep)


if __name__ == "__main__":
    import sys
    sys.exit(main())
