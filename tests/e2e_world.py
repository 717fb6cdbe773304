"""A running world for end-to-end tests: one OS process per agent plus one for the SMTP server.

Each agent runs as ``setmail run --agents NAME --no-smtp`` with its own log file
(``<home>/logs/<name>.log``), so a test can stop one party (or crash it at a fault point), tamper
with the mail waiting for it, and start it again, and so the files each agent wrote (store,
Maildir, log) can be checked on their own.  The CLI runs in-process through ``main()``.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from setmail.cli.main import main
from setmail.mail import maildir
from setmail.mail.mime import build_mail, parse_mail
from setmail.mail.smtpd import pick_free_port, wait_listening
from setmail.world import load_world
from setmail.world.config import AgentSpec, Card
from setmail.world.create import create_world

REPO = Path(__file__).resolve().parents[1]
#: parties a purchase test world adds to the demo world
EXTRA_AGENTS = (
    AgentSpec("shop2", "merchant", "shop2@merchant2.example",
              options={"gateway": "gateway", "auto_capture": False, "mer_id": "SHOP-0002",
                       "acquirer_bin": "41111111", "display_name": "Second Shop"}),
    AgentSpec("gateway2", "gateway", "gateway2@gateway2.example", options={"issuer": "bank"}),
)


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def minor_units(value):
    """A --json document with every amount ({amount, currency, minor}) as its minor units, for
    tests that add amounts up."""
    if isinstance(value, dict):
        if set(value) == {"amount", "currency", "minor"}:
            return value["minor"]
        return {k: minor_units(v) for k, v in value.items()}
    if isinstance(value, list):
        return [minor_units(v) for v in value]
    return value


@contextlib.contextmanager
def started(home: Path, *, holders: tuple[str, ...] = ("alice",), **options):
    """A RunningWorld (``options`` as its constructor's) with SMTP and every agent running and
    ``holders`` registered by mail; stopped at the end (a module-scoped fixture yields it)."""
    world = RunningWorld(home, **options)
    world.start_smtp()
    world.start()
    try:
        for holder in holders:
            code, _, err = run_cli("register", holder, "--wait", "90", "--home", str(home))
            assert code == 0, err + world.log(holder)
        yield world
    finally:
        world.stop()


class RunningWorld:
    """``certificates``: "direct" (merchants and gateways certified by ``create_world``: fast, for
    tests that are not about registration) or "mail" (they register when their agents start)."""

    def __init__(self, home: Path, *, extra_agents=EXTRA_AGENTS, extra_cards: tuple[Card, ...] = (),
                 certificates: str = "direct"):
        self.home = home
        create_world(home, smtp_port=pick_free_port(), extra_agents=extra_agents,
                     extra_cards=extra_cards, certificates=certificates)
        self.world = load_world(home)
        self.procs: dict[str, subprocess.Popen] = {}
        (home / "logs").mkdir(mode=0o700, exist_ok=True)

    # -- processes ----------------------------------------------------------------------------
    def _spawn(self, key: str, args: list[str], fault: str | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("SETMAIL_FAULT", None)
        if fault:
            env["SETMAIL_FAULT"] = fault
        log = open(self.home / "logs" / f"{key}.log", "a")
        self.procs[key] = subprocess.Popen(
            [sys.executable, "-m", "setmail.cli.main", "run", "--home", str(self.home),
             "--poll", "0.05", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_smtp(self) -> None:
        self._spawn("smtp", ["--agents", "none"])
        if not wait_listening(self.world.smtp_host, self.world.smtp_port, 20):
            raise AssertionError("SMTP server did not start: " + self.log("smtp"))

    def start(self, *names: str, fault: str | None = None) -> None:
        for name in names or tuple(self.world.agents):
            self._spawn(name, ["--agents", name, "--no-smtp"], fault)

    def stop(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def wait_exit(self, name: str, timeout: float = 30) -> int:
        proc = self.procs.pop(name)
        return proc.wait(timeout=timeout)

    def log(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    # -- observing ------------------------------------------------------------------------------
    def state(self, agent: str, xid: str, mer_id: str | None = None) -> dict:
        """``agent``'s state of purchase ``xid``; at a gateway or issuer, which key by (merchant,
        XID), the one of merchant ``mer_id`` when it holds several."""
        from setmail.agent.commands import open_store
        from setmail.store import parts
        from setmail.txview import purchase_states
        store = open_store(self.world.store_path(agent))
        try:
            found = [s for _, s in purchase_states(store, xid)]
        finally:
            store.close()
        if mer_id is not None:
            found = [s for s in found if mer_id in (s.get("mer_id"), s.get("merchant_id"))]
        if len(found) > 1:
            raise AssertionError(f"{agent} holds {len(found)} states for {xid[:12]}: name mer_id")
        return found[0] if found else {}

    def shared(self, agent: str, key: str) -> dict:
        """``agent``'s cross-transaction state ``key`` (e.g. "brand": BCI sequences seen)."""
        from setmail.agent.commands import open_store
        from setmail.store import parts
        store = open_store(self.world.store_path(agent))
        try:
            return parts.load(store, "shared/" + key)[0] or {}
        finally:
            store.close()

    def wait_state(self, agent: str, xid: str, states, timeout: float = 30,
                   check=lambda s: True) -> dict:
        states = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            state = self.state(agent, xid)
            if state.get("state") in states and check(state):
                return state
            time.sleep(0.05)
        raise AssertionError(f"{agent} {xid[:12]}: wanted {states}, have {state.get('state')}: "
                             f"{ {k: v for k, v in state.items() if k != 'secret'} }\n"
                             + self.log(agent)[-3000:])

    def wait_mail(self, agent: str, message_type: str, *, count: int = 1,
                  timeout: float = 30) -> list:
        """Maildir entries of ``agent`` holding ``message_type`` (new, cur or quarantined), once
        ``count`` exist."""
        deadline = time.monotonic() + timeout
        found: list = []
        while time.monotonic() < deadline:
            found = [e for e in maildir.list_messages(self.world.maildir(agent),
                                                      include_quarantine=True)
                     if self.mail(agent, e.key).header("X-SET-Message-Type") == message_type]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{agent}: {len(found)} {message_type} mail(s), wanted {count}")

    def mail(self, agent: str, key: str):
        return parse_mail(maildir.read(self.world.maildir(agent), key), max_size=1 << 21)

    def issuer_sql(self, sql: str, params=()) -> list:
        con = sqlite3.connect(self.world.store_path("bank"))
        try:
            with con:
                return con.execute(sql, params).fetchall()
        finally:
            con.close()

    # -- tampering ------------------------------------------------------------------------------
    def rewrite(self, agent: str, key: str, new_der: bytes) -> None:
        """Replace the SET DER of a mail waiting in ``agent``'s Maildir, headers unchanged."""
        path = self.world.maildir(agent)
        mail = self.mail(agent, key)
        raw = build_mail(new_der, content_type=mail.content_type, sender=mail.sender,
                         recipient=mail.recipient, message_id=mail.message_id,
                         subject=mail.subject, in_reply_to=mail.in_reply_to,
                         references=mail.references,
                         extra_headers={"X-SET-Message-Type": mail.header("X-SET-Message-Type")})
        file = next(p for p in path.glob(f"*/{key}*") if p.is_file())
        file.write_bytes(raw)

    def deliver(self, agent: str, der: bytes, *, sender: str, message_type: str,
                message_id: str) -> str:
        """Put a mail into ``agent``'s Maildir as if SMTP had delivered it."""
        from setmail.asn1.wrapper import MIME_TYPES
        raw = build_mail(der, content_type=MIME_TYPES[message_type], sender=sender,
                         recipient=self.world.agent(agent).address, message_id=message_id,
                         subject=f"SET {message_type} injected",
                         extra_headers={"X-SET-Message-Type": message_type})
        return maildir.deliver(self.world.maildir(agent), raw)

    def files_written_by(self, agent: str) -> list[Path]:
        """Everything the agent's process wrote: its home (store, keys), Maildir and log."""
        roots = [self.world.agent_home(agent), self.world.maildir(agent)]
        files = [p for root in roots for p in root.rglob("*") if p.is_file()]
        return files + [self.home / "logs" / f"{agent}.log"]
