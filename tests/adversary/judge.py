"""What the adversary tests conclude from: real outcomes only, read from the agents' own files
(role state, processed mail, outbox and sent log in each store; the issuer's ledger; Maildirs and
logs), and the genuine purchase every attack test keeps alive (``buy``, ``expect_completed``,
``expect_untouched``, ``attack_while_waiting``)."""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from setmail.mail import maildir
from setmail.money import currency_number
from tests.e2e_world import RunningWorld, run_cli

if TYPE_CHECKING:
    from tests.adversary.harness import Attacker

SECRET_OD = "OD-adversary-teapot"


def sql(rw: RunningWorld, agent: str, query: str, params=()) -> list:
    """Rows of a read-only ``query`` on ``agent``'s store ([] if the store or table is absent)."""
    path = rw.world.store_path(agent)
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute(query, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()


def states(rw: RunningWorld, agent: str, xid: str) -> dict[str, dict]:
    """Every transaction state of ``agent`` whose key names ``xid`` (a gateway may key by
    (merchant, XID)), {txkey: state}."""
    rows = sql(rw, agent, "SELECT txkey, kind, value FROM role_state WHERE txkey LIKE ?",
               (f"tx/%{xid}%",))
    return {k: json.loads(v) for k, kind, v in rows if kind == "json"}


def state(rw: RunningWorld, agent: str, xid: str, **match) -> dict:
    """The one state of ``agent`` for ``xid`` whose fields equal ``match`` ({} if none)."""
    found = [s for s in states(rw, agent, xid).values()
             if all(s.get(k) == v for k, v in match.items())]
    assert len(found) <= 1, f"{agent} holds {len(found)} states for {xid[:12]}: {found}"
    return found[0] if found else {}


def tx_keys(rw: RunningWorld) -> dict[str, set]:
    return {a: {k for k, in sql(rw, a, "SELECT txkey FROM role_state WHERE txkey LIKE 'tx/%'")}
            for a in rw.world.agents}


def snapshot(rw: RunningWorld) -> dict[str, set]:
    """The transaction keys once the world is at rest: what a test compares with afterwards."""
    settle(rw)
    return tx_keys(rw)


def new_tx_keys(rw: RunningWorld, before: dict[str, set], *xids: str) -> dict[str, set]:
    """Transaction keys created since ``before`` that name none of ``xids``: what an attack
    left behind."""
    now = tx_keys(rw)
    return {a: extra for a in now if (extra := {k for k in now[a] - before.get(a, set())
                                               if not any(x in k for x in xids)})}


def ledger(rw: RunningWorld, xid: str) -> list[tuple]:
    """The issuer's ledger rows for ``xid``: (kind, pan last 4, amount)."""
    return [tuple(r) for r in sql(rw, "bank", "SELECT kind, pan_last4, amount FROM issuer_ledger "
                                  "WHERE xid = ? ORDER BY rowid", (xid,))]


def processed(rw: RunningWorld, agent: str, key: str) -> tuple[str, str | None] | None:
    rows = sql(rw, agent, "SELECT status, detail FROM processed_mail WHERE maildir_key = ?",
               (key,))
    return tuple(rows[0]) if rows else None


def refusal(rw: RunningWorld, agent: str, key: str) -> str:
    """What ``agent`` recorded of processing its mail ``key`` (status and reason), lower case."""
    found = processed(rw, agent, key)
    return " ".join(str(x) for x in found).lower() if found else ""


def wait_processed(rw: RunningWorld, attacker: Attacker, agent: str, message_id: str,
                   timeout: float = 15) -> tuple[str, str | None]:
    """(status, detail) once ``agent`` has processed the mail ``message_id``: proof that an
    attack mail reached the agent and was dealt with (done, refused, duplicate, quarantined)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path = attacker.file_of(agent, message_id)
            key = path.name.split(":2,")[0]
            status = processed(rw, agent, key)
            finished = path.parent.parent.name == ".quarantine" or path.name.endswith("S")
            if status and finished:
                return status
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{agent} did not process {message_id} in {timeout} s\n"
                                 + rw.log(agent)[-2000:])
        time.sleep(0.05)


def in_flight(rw: RunningWorld) -> list[str]:
    """What is still moving: unprocessed mail, fresh outbox rows, pending commands."""
    busy = []
    for a in rw.world.agents:
        if maildir.pending(rw.world.maildir(a)):
            busy.append(f"{a}: mail")
        if sql(rw, a, "SELECT 1 FROM outbox WHERE attempts = 0 AND next_attempt_at IS NOT NULL"):
            busy.append(f"{a}: outbox")
        if sql(rw, a, "SELECT 1 FROM agent_commands WHERE status = 'pending'"):
            busy.append(f"{a}: command")
    return busy


def settle(rw: RunningWorld, timeout: float = 30) -> None:
    """Wait until nothing is in flight twice in a row (a bounded world comes to rest)."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 2:
        busy = in_flight(rw)
        quiet = 0 if busy else quiet + 1
        if busy and time.monotonic() > deadline:
            raise AssertionError(f"the world does not come to rest: {busy}")
        time.sleep(0.15)


def mail_count(rw: RunningWorld) -> dict[str, int]:
    return {a: len(maildir.list_messages(rw.world.maildir(a), include_quarantine=True))
            for a in rw.world.agents}


def sent_to(rw: RunningWorld, address: str) -> int:
    """Mails any agent sent (or tried to send) to ``address``."""
    return sum(len(sql(rw, a, "SELECT 1 FROM outbox WHERE lower(recipient) = lower(?)", (address,)))
               + len(sql(rw, a, "SELECT 1 FROM sent_log WHERE lower(recipient) = lower(?)",
                         (address,)))
               for a in rw.world.agents)


# --- the genuine purchase -----------------------------------------------------------------------
@dataclass(frozen=True)
class Purchase:
    xid: str
    holder: str
    merchant: str
    minor: int
    description: str
    card: str
    currency: int = 978

    @property
    def pan_last4(self) -> str:
        return self.card[-4:]

    @property
    def amount(self) -> dict:
        """The CurrencyAmount the cardholder agreed to."""
        return {"currency": self.currency, "amount": self.minor, "amt_exp10": -2}


def buy(rw: RunningWorld, holder: str, merchant: str, amount: str = "12.34") -> Purchase:
    description = f"{SECRET_OD} {holder}@{merchant} {time.time_ns()}"
    code, out, err = run_cli("buy", "--cardholder", holder, "--merchant", merchant, "--amount",
                             amount, "--description", description, "--json", "--home",
                             str(rw.home))
    assert code == 0, out + err
    units, _, cents = amount.partition(".")
    card = rw.world.cards_of(holder)[0]
    return Purchase(json.loads(out)["xid"], holder, merchant, int(units) * 100 + int(cents or 0),
                    description, card.pan, currency_number(card.currency)[0])


def wait_for(what, check, timeout: float = 15, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def expect_completed(rw: RunningWorld, p: Purchase, *, captured: bool | None = None,
                     timeout: float = 20, other_pans: bool = False) -> None:
    """The genuine purchase ``p`` ended as an honest world ends it: approved at the wallet,
    AUTHORIZED/CAPTURED at its merchant, its gateway and the issuer, and the issuer's ledger holds
    exactly one hold (and one posting if captured) for the XID, on the buyer's card, of its
    amount (``other_pans``: rows on the attacker's own card are another purchase's business)."""
    if captured is None:
        captured = bool(rw.world.agent(p.merchant).options.get("auto_capture"))
    gateway = rw.world.agent(p.merchant).options["gateway"]
    mer_id = rw.world.agent(p.merchant).options.get("mer_id")
    want = ("CAPTURED",) if captured else ("AUTHORIZED",)
    bank = ("POSTED",) if captured else ("HELD",)

    def merchant():
        return state(rw, p.merchant, p.xid).get("state") in want

    def gateway_done():
        found = [s for s in states(rw, gateway, p.xid).values()
                 if s.get("mer_id", mer_id) == mer_id]
        return len(found) == 1 and found[0].get("state") in want

    def wallet():
        return state(rw, p.holder, p.xid).get("state") in ("APPROVED", "CAPTURED")

    def issuer():
        return issuer_state(rw, p.xid, mer_id).get("state") in bank

    for name, check in (("wallet approved", wallet), ("merchant " + want[0], merchant),
                        ("gateway " + want[0], gateway_done), ("issuer " + bank[0], issuer)):
        try:
            wait_for(f"{p.xid[:12]}: {name}", check, timeout)
        except AssertionError:
            raise AssertionError(
                f"genuine purchase {p.xid[:12]} ({p.holder}@{p.merchant}) did not complete: "
                f"{name} never happened; wallet={_short(state(rw, p.holder, p.xid))} "
                f"merchant={_short(state(rw, p.merchant, p.xid))} "
                f"gateway={[_short(s) for s in states(rw, gateway, p.xid).values()]} "
                f"issuer={_short(issuer_state(rw, p.xid, mer_id))} ledger={ledger(rw, p.xid)}"
            ) from None
    rows = ledger(rw, p.xid)
    mine = [r for r in rows if r[1] == p.pan_last4]
    holds = [r for r in mine if r[0] == "hold"]
    posts = [r for r in mine if r[0] == "post"]
    assert [r[2] for r in holds] == [p.minor], f"holds for {p.xid[:12]}: {rows}"
    assert [r[2] for r in posts] == ([p.minor] if captured else []), f"posts: {rows}"
    assert not [r for r in mine if r[0] in ("decline", "reversal")], rows
    if not other_pans:
        assert mine == rows, f"ledger rows of other cards under {p.xid[:12]}: {rows}"


def issuer_state(rw: RunningWorld, xid: str, mer_id: str | None) -> dict:
    """The issuer's state of ``xid`` for merchant ``mer_id`` (it may key by both)."""
    found = [s for s in states(rw, "bank", xid).values()
             if s.get("merchant_id", mer_id) == mer_id]
    assert len(found) <= 1, found
    return found[0] if found else {}


def _short(s: dict) -> dict:
    return {k: s[k] for k in ("state", "auth_code", "cap_code", "failure", "refused", "reason")
            if k in s}


def attack_while_waiting(rw: RunningWorld, attacker: Attacker, *, stopped: str, request: str,
                         at: str, forgeries, still, holder: str = "alice",
                         merchant: str = "shop", reason: str | None = None) -> Purchase:
    """The pattern of most attacks on a step: ``stopped`` is down, so a genuine purchase waits
    with its ``request`` in ``stopped``'s Maildir; each of ``forgeries(that request)`` is sent to
    ``at`` as if from ``stopped`` and must be processed with ``still(purchase)`` holding (nothing
    moved; ``reason``: a word the agent's record of the refusal must contain); then ``stopped``
    answers and the purchase completes, leaving no other state."""
    before = snapshot(rw)
    rw.stop(stopped)
    p = buy(rw, holder, merchant)
    genuine = attacker.mail(stopped, request, p.xid)
    wait_for(f"{p.xid[:12]} waiting at {at}", lambda: still(p))
    for n, der in enumerate(forgeries(genuine)):
        _, detail = wait_processed(rw, attacker, at, attacker.send(at, der, sender=stopped))
        assert reason is None or reason in (detail or "").lower(), (n, detail)
        assert still(p), (f"forgery #{n} to {at} moved the purchase: "
                          f"{[_short(x) for x in states(rw, at, p.xid).values()]}")
    rw.start(stopped)
    expect_completed(rw, p)
    expect_untouched(rw, before, p)
    return p


def expect_untouched(rw: RunningWorld, before: dict[str, set], *genuine: Purchase) -> None:
    """No transaction state appeared anywhere but the genuine purchases' own, one per agent."""
    extra = new_tx_keys(rw, before, *(p.xid for p in genuine))
    assert not extra, f"the attack created transaction state: {extra}"
    for p in genuine:
        for agent in (p.holder, p.merchant, "bank"):
            assert len(states(rw, agent, p.xid)) == 1, (agent, states(rw, agent, p.xid))
