"""The world's roles without processes: every party of a world on disk, built by the agents' own
factories, on an in-memory network that keeps the agent's rules (tests/roles_net.py does the
stepping; this adds them) and a clock the test moves.

The agent's rules kept here (agent/runtime.py, docs/threat-model.md): dedupe on the SHA-256 of the
wrapper DER, recorded only for mail the role accepted (``Outcome.refused`` unset); an exact repeat
of a request gets its stored answers again at most 8 times, of a response nothing; a role's
``SetmailError`` is a quarantined mail (nothing changes); any other exception is a bug and
propagates.  Fast enough for property tests: no SMTP, no SQLite, no processes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from setmail.errors import SetmailError
from setmail.mail.smtpd import pick_free_port
from setmail.roles.base import Command, Inbound, Send, TimerFired
from setmail.world import load_world
from setmail.world.create import create_world
from tests.adversary.forge import Forge
from tests.adversary.harness import MALLORY_CARD
from tests.adversary.wire import split, utcnow
from tests.e2e_world import EXTRA_AGENTS
from tests.roles_net import Net

MAX_RESENDS = 8


def is_response(message_type: str) -> bool:
    return message_type.endswith("Res") or message_type == "Error"


def certify(world, forge: Forge, holder: str) -> None:
    """Give ``holder`` a certificate for its first card, written as registration writes the
    wallet files (keys/<id>.{key,cert,chain}.pem, .pansecret, wallet.json)."""
    from cryptography.hazmat.primitives import serialization

    from setmail.crypto.suite import fresh
    from setmail.pki.parse import to_pem
    card, cca = world.cards_of(holder)[0], forge.cas["cca"]
    key = forge.suite.generate_key()
    issued = cca.issue_cardholder(key.public_key(), pan=card.pan, expiry=card.expiry,
                                  card_secret=fresh(32), now=utcnow() - dt.timedelta(minutes=1))
    home = world.agent_home(holder)
    keys, name = home / "keys", f"{holder}-card"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / f"{name}.key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (keys / f"{name}.cert.pem").write_bytes(to_pem(issued.certificate))
    (keys / f"{name}.chain.pem").write_bytes(b"".join(to_pem(c) for c in cca.chain))
    (keys / f"{name}.pansecret").write_text(issued.pan_secret.hex() + "\n")
    (home / "wallet.json").write_text(json.dumps({name: {
        "key_id": name, "brand": world.brand, "pan_last4": card.pan[-4:],
        "not_after": issued.certificate.not_valid_after_utc.isoformat()}}))


class RoleWorld:
    """A world on disk (the adversary world's parties, alice and bob certified) and its roles."""

    def __init__(self, home: Path):
        create_world(home, smtp_port=pick_free_port(), extra_agents=EXTRA_AGENTS,
                     extra_cards=(MALLORY_CARD,), certificates="direct")
        self.world = load_world(home)
        self.forge = Forge(self.world)
        for holder in ("alice", "bob"):
            certify(self.world, self.forge, holder)
        from setmail.agent.factories import load_all
        from setmail.agent.factory import ROLE_FACTORIES
        load_all()
        self.roles = {spec.address: ROLE_FACTORIES[spec.kind](self.world, spec)
                      for spec in self.world.agents.values() if spec.kind in ROLE_FACTORIES}

    def address(self, name: str) -> str:
        return self.world.agent(name).address

    def net(self, now: dt.datetime | None = None) -> AgentNet:
        return AgentNet(self.roles, now=now or utcnow())


@dataclass
class AgentNet(Net):
    """``Net``'s stepping (states, shared states, effects, timers) plus the agent's rules, a
    clock (``now``) and a queue of mail in flight (``pending``)."""

    now: dt.datetime = field(default_factory=utcnow)
    dedupe: dict = field(default_factory=dict)    # (address, digest) -> {"sends", "resends"}
    pending: deque = field(default_factory=deque)  # (to, Inbound) in flight
    seen: list = field(default_factory=list)      # every (to, Inbound) delivered
    attacks: list = field(default_factory=list)   # "type From -> to: status" of forged mail

    def _step(self, address: str, event):
        return self.step(address, event, self.now)

    def _queue(self, sender: str, sends) -> None:
        for send in sends:
            if send.to in self.roles:
                self.pending.append((send.to, Inbound(send.message_type, send.wrapper_der,
                                                      sender, f"m{len(self.seen)}")))

    def deliver(self, to: str, event: Inbound) -> str:
        """The agent's processing of one mail; its status (done, refused, duplicate, ...)."""
        self.seen.append((to, event))
        digest = hashlib.sha256(event.wrapper_der).digest()
        record = self.dedupe.get((to, digest))
        if record is not None:
            status = "absorbed"
            if not is_response(event.message_type) and record["resends"] < MAX_RESENDS:
                record["resends"] += 1
                self._queue(to, record["sends"])
                status = "duplicate"
        else:
            try:
                out = self._step(to, event)
            except SetmailError:
                status = "quarantined"
            else:
                status = "refused" if getattr(out, "refused", None) else "done"
                if status == "done":
                    self.dedupe[(to, digest)] = {"sends": list(out.sends), "resends": 0}
                for send in out.sends:
                    answers = getattr(send, "answers", None)
                    if isinstance(answers, str) and (to, bytes.fromhex(answers)) in self.dedupe:
                        self.dedupe[(to, bytes.fromhex(answers))]["sends"].append(send)
                self._queue(to, out.sends)
        self.log.append((to, event.message_type, status))
        return status

    def command(self, address: str, name: str, args: dict) -> None:
        out = self._step(address, Command(name, args))
        self._queue(address, out.sends)

    def run(self, *, max_mails: int = 500, hold=lambda to, ev: False) -> list:
        """Deliver until nothing is in flight (``hold``: keep those aside); the held mail."""
        held, n = [], 0
        while self.pending:
            to, event = self.pending.popleft()
            if hold(to, event):
                held.append((to, event))
                continue
            n += 1
            assert n <= max_mails, f"mail loop: {self.log[-20:]}"
            self.deliver(to, event)
        return held

    def advance(self, delta: dt.timedelta, *, step: dt.timedelta = dt.timedelta(hours=6)) -> None:
        """Move the clock by ``delta``, firing every due timer (and delivering what it sends)."""
        end = self.now + delta
        while self.now < end:
            self.now = min(end, self.now + step)
            for (address, tx, name), timer in sorted(self.timers.items(),
                                                     key=lambda kv: kv[1].due):
                if timer.due > self.now or self.timers.get((address, tx, name)) is not timer:
                    continue
                self.timers.pop((address, tx, name))
                try:
                    out = self._step(address, TimerFired(name, dict(timer.payload)))
                except SetmailError:
                    continue
                self._queue(address, out.sends)
            self.run()

    # -- observing -------------------------------------------------------------------------------
    def state_of(self, address: str, xid: str) -> dict:
        found = [s for (a, k), s in self.states.items() if a == address and xid in k]
        assert len(found) <= 1, found
        return found[0] if found else {}

    def ledger(self, xid: str) -> list[tuple]:
        return [(e.kind.split(".")[-1], e.data.get("pan_last4"), e.data.get("amount"))
                for _, e in self.effects if e.kind.startswith("ledger.")
                and e.data.get("xid") == xid]


def buy(rw: RoleWorld, net: AgentNet, holder: str, merchant: str, minor: int) -> tuple[str, str]:
    """Queue a purchase as ``setmail buy`` does (order to the merchant, buy to the wallet);
    (xid, card PAN)."""
    from setmail.crypto.suite import fresh
    card, xid = rw.world.cards_of(holder)[0], fresh(20).hex()
    money = {"amount": minor, "currency": 978, "amt_exp10": -2}
    net.command(rw.address(merchant), "order", {"xid": xid, "description": f"order {xid[:8]}",
                                                "cardholder": rw.address(holder), **money})
    net.command(rw.address(holder), "buy", {
        "xid": xid, "merchant": rw.address(merchant), "pan": card.pan, "expiry": card.expiry,
        "description": f"order {xid[:8]}", "brand": rw.world.brand, **money})
    return xid, card.pan


def completed(rw: RoleWorld, net: AgentNet, xid: str, holder: str, merchant: str, pan: str,
              minor: int) -> list[str]:
    """What is wrong with purchase ``xid`` after the run ([] if it ended as an honest run does)."""
    captured = bool(rw.world.agent(merchant).options.get("auto_capture"))
    gateway = rw.address(rw.world.agent(merchant).options["gateway"])
    want = "CAPTURED" if captured else "AUTHORIZED"
    problems = []
    for who, ok in ((holder, ("APPROVED", "CAPTURED")), (merchant, (want,)),
                    ("bank", ("POSTED" if captured else "HELD",))):
        got = net.state_of(rw.address(who), xid).get("state")
        if got not in ok:
            problems.append(f"{who}: {got}")
    gw_states = [s.get("state") for (a, k), s in net.states.items() if a == gateway and xid in k
                 and s.get("merchant", rw.address(merchant)) in (rw.address(merchant), None)]
    if want not in gw_states:
        problems.append(f"gateway: {gw_states}")
    rows = net.ledger(xid)
    expected = [("hold", pan[-4:], minor)] + ([("post", pan[-4:], minor)] if captured else [])
    if [r for r in rows if r[0] in ("hold", "post", "reverse", "decline")] != expected:
        problems.append(f"ledger: {rows}")
    return problems


def send_to(net: AgentNet, to: str, der: bytes, sender: str, message_type: str | None = None):
    """Deliver the attacker's ``der`` to ``to`` From ``sender``; the agent's status."""
    try:
        mtype = message_type or split(der).type
    except SetmailError:
        mtype = message_type or "Error"
    status = net.deliver(to, Inbound(mtype, der, sender, f"forged{len(net.seen)}"))
    net.attacks.append(f"{mtype} {sender.split('@')[0]} -> {to.split('@')[0]}: {status}")
    return status


__all__ = ["AgentNet", "RoleWorld", "Send", "buy", "completed", "send_to"]
