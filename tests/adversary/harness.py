"""The mail attacker of issue 12, against a running world (tests/e2e_world.py).

The attacker (``Attacker``) uses only what the threat model gives it:

* **inject** any mail into any agent through the world's real SMTP server (smtplib on loopback),
  with forged From, envelope sender, Message-ID, Subject and X-SET-Message-Type (``send``,
  ``send_raw``, ``flood``);
* **capture** every mail of the run from every agent's Maildir (new/, cur/, .quarantine/) and
  **replay** any of them to any agent, unchanged, under a new clear header (``forge.rewrap``:
  no signature covers it) or with bits flipped (``forge.flip``);
* **delay** a genuine mail so its forgery arrives first (``arrive_first``; or ``crash_on``: the
  receiving agent dies at a fault point holding the genuine mail, as in test_purchase_e2e);
* its own **certificates** and those of the legitimate-but-malicious shop2, gateway2 and bob
  (``attacker.forge``, tests/adversary/forge.py).

What the tests conclude from is read by ``tests/adversary/judge.py``: only real outcomes, in the
agents' own files.
"""
from __future__ import annotations

import os
import smtplib
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from setmail.asn1.wrapper import MIME_TYPES
from setmail.errors import SetmailError
from setmail.mail import maildir
from setmail.mail.mime import ParsedMail, build_mail, parse_mail
from setmail.world.config import Card
from tests.adversary.forge import MALLORY_EXPIRY, MALLORY_PAN, Forge
from tests.adversary.judge import settle, wait_for
from tests.adversary.wire import Parts, split
from tests.e2e_world import EXTRA_AGENTS, RunningWorld, run_cli

#: the attacker's card account at the world's issuer (it may buy like anybody)
MALLORY_CARD = Card("mallory-visa", "mallory", "bank", MALLORY_PAN, MALLORY_EXPIRY, "5000.00")
#: an address outside the world: mail to it is refused by the world's SMTP server (550)
OUTSIDER = "mallory@evil.example"


def start_world(home: Path) -> RunningWorld:
    """The adversary world: the demo parties plus shop2 and gateway2, mallory's card account,
    every agent running, alice and bob registered by mail."""
    rw = RunningWorld(home, extra_agents=EXTRA_AGENTS, extra_cards=(MALLORY_CARD,))
    rw.start_smtp()
    rw.start()
    for holder in ("alice", "bob"):
        code, _, err = run_cli("register", holder, "--wait", "60", "--home", str(home))
        assert code == 0, err + rw.log(holder)[-3000:]
    return rw


def keep_running(rw: RunningWorld) -> None:
    """Restart every agent a test stopped or crashed (and left so after a failure), and let
    what they find waiting come to rest before the next test looks."""
    down = []
    for name in rw.world.agents:
        proc = rw.procs.get(name)
        if proc is not None and proc.poll() is not None:
            rw.procs.pop(name)
            proc = None
        if proc is None:
            down.append(name)
    if down:
        restart(rw, *down)
        settle(rw)


def restart(rw: RunningWorld, *names: str, timeout: float = 60) -> None:
    """Stop and start ``names`` (default: every agent) and wait until each says it started:
    how an agent takes up new CRLs, a new BCI or a changed configuration."""
    names = names or tuple(rw.world.agents)
    started = {n: rw.log(n).count(" started (") for n in names}
    rw.stop(*names)
    rw.start(*names)
    wait_for("agents started", lambda: all(rw.log(n).count(" started (") > started[n]
                                           for n in names), timeout)


# --- captured mail ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Captured:
    """One mail as found in ``agent``'s Maildir."""

    agent: str
    key: str
    folder: str   # new, cur or quarantine
    flags: str    # "S": processed
    raw: bytes
    mail: ParsedMail

    @property
    def der(self) -> bytes:
        return self.mail.der

    @cached_property
    def parts(self) -> Parts | None:
        try:
            return split(self.mail.der)
        except SetmailError:  # undecodable: the attacker's garbage, quarantined
            return None

    @property
    def type(self) -> str | None:
        return self.parts.type if self.parts else self.mail.header("X-SET-Message-Type")

    @property
    def xid(self) -> str | None:
        xid = self.parts.xid if self.parts else None
        return xid.hex() if xid else None

    @property
    def sender(self) -> str:
        return self.mail.sender

    @property
    def message_id(self) -> str:
        return self.mail.message_id


class Attacker:
    def __init__(self, rw: RunningWorld):
        self.rw, self.world = rw, rw.world
        self.forge = Forge(rw.world)
        self._n = 0

    # -- injection over the world's SMTP server ------------------------------------------------
    def _msgid(self) -> str:
        self._n += 1
        return f"forged.{time.time_ns()}.{self._n}@evil.example"

    def build(self, to: str, der: bytes, *, message_type: str | None = None,
              sender: str = OUTSIDER, message_id: str | None = None, subject: str | None = None,
              type_header: str | None = None, content_type: str | None = None) -> tuple[str, bytes]:
        """(Message-ID, raw mail) of ``der`` for agent ``to``: From ``sender`` (an agent name or
        an address), the SET type read from ``der`` unless ``message_type`` says it (it must for
        DER that does not decode)."""
        mtype = message_type or split(der).type
        msgid = message_id or self._msgid()
        sender = self.address(sender)
        raw = build_mail(der, content_type=content_type or MIME_TYPES[mtype], sender=sender,
                         recipient=self.world.agent(to).address, message_id=msgid,
                         subject=subject or f"SET {mtype} {msgid[:16]}",
                         extra_headers={"X-SET-Message-Type": type_header or mtype})
        return msgid, raw

    def address(self, who: str) -> str:
        return self.world.agent(who).address if who in self.world.agents else who

    def send(self, to: str, der: bytes, *, envelope_from: str | None = None, **kw) -> str:
        """Inject ``der`` into agent ``to``; returns the Message-ID (see ``build``)."""
        msgid, raw = self.build(to, der, **kw)
        self.send_raw(to, raw, envelope_from=envelope_from or self.address(kw.get("sender",
                                                                                   OUTSIDER)))
        return msgid

    def send_raw(self, to: str, raw: bytes, *, envelope_from: str = OUTSIDER) -> None:
        self.flood([(to, raw)], envelope_from=envelope_from)

    def flood(self, mails: list[tuple[str, bytes]], *, envelope_from: str = OUTSIDER) -> None:
        """Many mails over one SMTP connection (RCPT = each target agent's address)."""
        with smtplib.SMTP(self.world.smtp_host, self.world.smtp_port, timeout=30) as smtp:
            for to, raw in mails:
                smtp.sendmail(envelope_from, [self.world.agent(to).address], raw)

    def replay(self, captured: Captured, to: str | None = None, *, der: bytes | None = None,
               sender: str | None = None, **kw) -> str:
        """``captured`` again (or ``der`` in its place, announced as the same type) to ``to``
        (default: where it went), From its original sender unless ``sender``."""
        kw.setdefault("message_type", captured.type)
        return self.send(to or captured.agent, der if der is not None else captured.der,
                         sender=sender or captured.sender, **kw)

    # -- capture ----------------------------------------------------------------------------------
    def mails(self, agent: str | None = None, *, type: str | None = None,
              xid: str | None = None) -> list[Captured]:
        """Every mail of the run in ``agent``'s Maildir (all agents if None), oldest first."""
        out = []
        for name in [agent] if agent else list(self.world.agents):
            path = self.world.maildir(name)
            for e in maildir.list_messages(path, include_quarantine=True):
                try:
                    raw = maildir.read(path, e.key)
                    mail = parse_mail(raw, max_size=1 << 22)
                except SetmailError:  # moved meanwhile, or not a mail at all
                    continue
                c = Captured(name, e.key, e.folder, e.flags, raw, mail)
                if (type is None or c.type == type) and (xid is None or c.xid == xid):
                    out.append(c)
        return out

    def mail(self, agent: str, type: str, xid: str, timeout: float = 15) -> Captured:
        """The (newest) mail of ``type`` for purchase ``xid`` in ``agent``'s Maildir, waited for."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.mails(agent, type=type, xid=xid)
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {type} for {xid[:12]} reached {agent}")
            time.sleep(0.05)

    # -- ordering ---------------------------------------------------------------------------------
    def file_of(self, agent: str, message_id: str) -> Path:
        """Where the mail ``message_id`` is in ``agent``'s Maildir right now (the agent moves
        files as it claims and finishes them: a file gone meanwhile means look again)."""
        needle = f"message-id: <{message_id}>".lower().encode()  # not a reply naming it
        for _ in range(5):
            try:
                for path in self._files(agent):
                    with open(path, "rb") as fh:
                        if needle in fh.read(4096).lower():
                            return path
            except FileNotFoundError:
                continue
            break
        raise AssertionError(f"{message_id} is not in {agent}'s Maildir")

    def _files(self, agent: str):
        root = self.world.maildir(agent)
        for folder in ("new", "cur", ".quarantine/new", ".quarantine/cur"):
            for path in (root / folder).glob("*"):
                if path.is_file():
                    yield path

    def arrive_first(self, agent: str, *message_ids: str) -> None:
        """Make these (waiting, unprocessed) mails the oldest of ``agent``'s Maildir: a stopped or
        crashed agent takes them first when it starts (pending mail is taken oldest first)."""
        oldest = min((p.stat().st_mtime for p in self._files(agent)), default=time.time())
        for n, msgid in enumerate(message_ids):
            t = oldest - 10 + n * 0.01
            os.utime(self.file_of(agent, msgid), (t, t))

    def crash_on(self, agent: str, nth: int) -> None:
        """Restart ``agent`` so that it dies holding the ``nth`` mail it decodes from now on
        (claimed, unprocessed: the genuine mail the attacker races)."""
        self.rw.stop(agent)
        self.rw.start(agent, fault=f"after_decode:{agent}:{nth}")

    def wait_crashed(self, agent: str, timeout: float = 40) -> Captured:
        assert self.rw.wait_exit(agent, timeout) == 99, self.rw.log(agent)[-2000:]
        held = [c for c in self.mails(agent) if c.folder == "cur" and "S" not in c.flags]
        assert held, f"{agent} crashed holding no mail"
        return held[-1]
