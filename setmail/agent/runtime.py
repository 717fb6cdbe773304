"""One party's agent: role + store + Maildir + outbox, processing one unit of work at a time.

Everything here is synchronous and single-threaded per agent (``setmail.agent.daemon`` runs it in
worker threads under asyncio).  A delivered mail's way is ``agent.intake``'s (docs/runtime.md);
then the sender: SMTP → [fault mid_send] → Sent copy → mark_sent.  One process per agent
(``agent.lock``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setmail.agent import commands as cmdq
from setmail.agent import effects as fx
from setmail.agent import dedupe, fault, mailout
from setmail.agent import reload as rl
from setmail.agent.intake import Intake
from setmail.agent.secrecy import loggable, secret_lost
from setmail.errors import SetmailError, TransportError
from setmail.mail import maildir
from setmail.mail.mime import ParsedMail
from setmail.mail.sender import Backoff, DrainResult, SMTPClientPool, drain_outbox
from setmail.mail.smtpd import DEFAULT_SIZE_LIMIT
from setmail.roles.base import CancelTimer, Command, Outcome, Role, SetTimer, TimerFired
from setmail.store import MailFacts, OutgoingMail, Store, parts
from setmail.store.lock import FileLock, agent_lock
from setmail.store.transaction import damaged

log = logging.getLogger("setmail.agent")

STATE_PREFIX, SHARED_PREFIX, SEQ_PREFIX = "tx/", "shared/", "seq/"


@dataclass(frozen=True)
class AgentConfig:
    name: str
    address: str
    home: Path                   # <world>/agents/<name>: keys/, state.db
    maildir: Path                # <world>/mailboxes/<name>
    smtp_host: str = "127.0.0.1"  # where outgoing mail goes (the world's server or a smarthost)
    smtp_port: int = 2525
    #: address -> agent name of the world's parties; never decides where an answer goes
    peers: Mapping[str, str] = field(default_factory=dict)
    max_mail_size: int = DEFAULT_SIZE_LIMIT
    backoff: Backoff = Backoff(base=0.5, factor=2.0, cap=30.0, max_attempts=15)

    @property
    def store_path(self) -> Path:
        return self.home / "state.db"


def _check_store(store: Store, mailbox: Path) -> None:
    """Refuse a damaged store, or one that records no mail while the Maildir holds mail it
    processed (truncated to nothing, deleted, replaced by an empty one): starting on it would
    forget every transaction and treat old mail as new (docs/faults.md).  The full check is
    skipped for a file untouched since the agent's last clean stop (``verify_unless_unchanged``)."""
    store.verify_unless_unchanged()
    if store.query("SELECT 1 FROM processed_mail LIMIT 1"):
        return
    seen = next((e for e in maildir.list_messages(mailbox, include_quarantine=True)
                 if e.done or e.folder == "quarantine"), None)
    if seen is not None:
        raise damaged(store.path, f"it records no mail, yet {mailbox} holds mail it processed")


def _ts_to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


class Agent(Intake, rl.Reloading):
    """Runs ``role`` for one party.  ``clock`` returns epoch seconds (tests may pin it)."""

    def __init__(self, config: AgentConfig, role: Role, *, store: Store | None = None,
                 clock: Callable[[], float] = time.time, pool: SMTPClientPool | None = None,
                 lock: FileLock | None = None, reloader: rl.Reloader | None = None):
        """``lock``: this agent's ``agent.lock``, already taken (``setmail run`` takes every
        lock before building any agent); otherwise taken here (``AlreadyRunning`` if another
        process or Agent has it).  Held until ``close``.  ``reloader``: how to build the role
        again (``agent.reload``); None: the role is never rebuilt."""
        self.config = config
        self.role = role
        self.reloader = reloader
        self.rescan = False  # mail was deferred and a rebuild may take it now
        self.rescanned: set[str] = set()  # the mail taken up after the last rebuild
        self._deferred: set[str] = set()
        self._held: list[tuple[str, str, str | None]] | None = None  # see ``grouped``
        self._shared: tuple[str, Any, bool] | None = None  # see ``_shared_state``
        self.clock = clock
        config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.lock = lock if lock is not None and lock.held else agent_lock(config.home,
                                                                            config.name)
        try:
            maildir.ensure_maildir(config.maildir)
            self.store = store or cmdq.open_store(config.store_path)
            _check_store(self.store, config.maildir)
            self.pool = pool or SMTPClientPool(local_hostname=mailout.domain_of(config.address))
            self.sent = mailout.SentFolder(config.maildir)
            self.ctx = fx.EffectContext(config.name, config.home)
            cmdq.ensure_tables(self.store, cmdq.DDL + fx.JOURNAL_DDL)
        except BaseException:
            self.lock.release()
            raise
        for suffix in ("", "-wal", "-shm"):  # role state may hold secrets until a tx ends
            path = Path(str(config.store_path) + suffix)
            if path.exists():
                os.chmod(path, 0o600)
        self.stats = {"in": 0, "out": 0, "duplicates": 0, "absorbed": 0, "refused": 0,
                      "quarantined": 0, "commands": 0, "timers": 0}

    @property
    def name(self) -> str:
        return self.config.name

    # -- start-up --------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """After a (re)start: apply journaled effects; return the mail keys still to process."""
        self._apply_journal(self.clock())
        self.rescan = False
        return [e.key for e in maildir.pending(self.config.maildir)]

    def close(self) -> None:
        try:
            self.pool.close()
            self.store.close()
            self.store.stamp_clean_stop()
        finally:
            self.lock.release()

    # -- the role step and the commit ------------------------------------------------------------
    def _step(self, txkey: str, event) -> Outcome:
        """One step; a response that names newer CRLs (its BCI) rebuilds the role from the
        world's files and is judged again by the new one (``agent.reload``)."""
        now = _ts_to_dt(self.clock())
        for _ in range(2):
            state = self.store.get_state(STATE_PREFIX + txkey)
            shared = self._shared_state()
            outcome = self.role.step(state, event, now, shared)
            why = self.reloader.stale(self.role, outcome) if self.reloader is not None else None
            if why is None or not self.reload(why):
                break
        return outcome

    def _shared_state(self) -> Any:
        """The role's shared state, decoded once and then kept as the last commit left it.

        Why: it is read at every step and grows with the open batches and pending postings, so
        decoding its row each time made a step's cost grow with history.  Safe to keep because
        only this agent writes it (``agent.lock``) and roles never change what they are given
        (they return a new shared state); ``_commit`` forgets it before a transaction that
        writes it and keeps the new one only once that transaction has committed."""
        key = self.role.shared_key
        if not key:
            return None
        if self._shared is None or self._shared[0] != key:
            self._shared = (key, *parts.load(self.store, SHARED_PREFIX + key))
        return self._shared[1]

    def _outgoing(self, send, txkey: str, seq: int, now: dt.datetime,
                  request: ParsedMail | None) -> OutgoingMail:
        msgid, raw = mailout.build(agent=self.name, address=self.config.address, send=send,
                                   txkey=txkey, seq=seq, now=now, request=request)
        return OutgoingMail(send.to, self.config.smtp_host, self.config.smtp_port, raw, msgid,
                            send.message_type, mailout.subject_tx(txkey))

    def _commit(self, txkey: str, outcome: Outcome, *, mail_key: str | None = None,
                request: ParsedMail | None = None, record: tuple[bytes, str] | None = None,
                status: str = "done", detail: str | None = None, facts: MailFacts | None = None,
                extra: Callable[[Any], None] | None = None) -> None:
        """``record``: (digest, type) of an accepted mail, recorded with the mails sent."""
        now = self.clock()
        now_dt = _ts_to_dt(now).replace(microsecond=0)
        tx_key = outcome.transaction or txkey
        durable = self._held is None or fx.acts_outside(outcome.effects)
        shared_key = self.role.shared_key if outcome.shared is not None else None
        if shared_key:
            old, stored_split = self._shared_state(), self._shared[2]
            self._shared = None  # until the commit has succeeded
        with self.store.transaction(now=now, durable=durable) as tx:
            seq = tx.get_state(SEQ_PREFIX + tx_key, 0)
            mails = []
            for send in outcome.sends:
                seq += 1
                mails.append(self._outgoing(send, tx_key, seq, now_dt, request))
            if outcome.sends:
                tx.put_state(SEQ_PREFIX + tx_key, seq)
            if secret_lost(tx.state_secret(STATE_PREFIX + tx_key), outcome.state):
                tx.note_wipe()
            if outcome.state is None:
                tx.delete_state(STATE_PREFIX + tx_key)
            else:
                tx.put_state(STATE_PREFIX + tx_key, dict(outcome.state))
            if shared_key:
                parts.save(tx, SHARED_PREFIX + shared_key, old, dict(outcome.shared),
                           self.role.shared_parts, split=stored_split)
            for mail in mails:
                tx.enqueue(mail)
            if record is not None:
                tx.record_dedupe(*record, mails, txkey=tx_key)
            for send, mail in zip(outcome.sends, mails):
                dedupe.add_answer(tx, self.name, send, mail, record[0] if record else None)
            for timer in outcome.timers:
                tkey = f"{tx_key}/{timer.name}"
                if isinstance(timer, SetTimer):
                    tx.set_timer(tkey, timer.due.timestamp(),
                                 {"tx": tx_key, "name": timer.name, "payload": dict(timer.payload)})
                elif isinstance(timer, CancelTimer):
                    tx.cancel_timer(tkey)
            fx.stage(self.ctx, tx, outcome.effects)
            if mail_key is not None:
                tx.mark_processed(mail_key, status, txkey=tx_key, detail=detail, facts=facts)
            if extra is not None:
                extra(tx)
        if shared_key:
            self._shared = (shared_key, dict(outcome.shared), True)
        if log.isEnabledFor(logging.DEBUG):  # `run -v`; the "(sent)" line is logged at INFO
            for send in outcome.sends:
                log.debug("%-8s OUT  %-14s tx=%s to %s (queued)", self.name, send.message_type,
                          mailout.safe_token(tx_key, 16), send.to)
        fault.hit("after_commit", self.name)
        if outcome.effects:
            self._apply_journal(now, rl.asks_reload(outcome), look=False)

    # -- commands and timers -----------------------------------------------------------------------
    def process_commands(self) -> int:
        done = 0
        for row in cmdq.pending(self.store):
            if cmdq.expire_if_late(self.store, row, self.clock()):
                log.warning("%-8s CMD  %-14s expired: past its deadline, not carried out",
                            self.name, row.name)
                continue
            event = Command(row.name, row.args)
            if self.reloader is not None and not self.reloader.takes(event):
                continue  # pending until the role that takes it is built
            try:
                txkey = self.role.transaction_key(event)
                outcome = self._step(txkey, event)
            except Exception as exc:
                if not isinstance(exc, SetmailError):
                    log.error("%s: internal error on command %s: %s", self.name, row.name,
                              traceback.format_exc())
                with contextlib.suppress(cmdq.CommandGone), \
                        self.store.transaction(now=self.clock()) as tx:
                    cmdq.finish(tx, row.id, "failed", detail=cmdq.failure_detail(exc))
                log.warning("%-8s CMD  %-14s failed: %s", self.name, row.name, loggable(exc))
                continue
            tx_key = outcome.transaction or txkey
            status, reason = "done", None
            if outcome.refused is not None:  # the role's note is committed, the command failed
                status, reason = "failed", loggable(outcome.refused)
                log.warning("%-8s CMD  REFUSED %s tx=%s %s", self.name, row.name,
                            mailout.safe_token(tx_key, 16), reason)
            else:
                log.info("%-8s CMD  %-14s tx=%s", self.name, row.name,
                         mailout.safe_token(txkey, 16))
            try:
                self._commit(txkey, outcome, extra=lambda tx, r=row, k=tx_key, s=status, d=reason:
                             cmdq.finish(tx, r.id, s, txkey=k, detail=d))
            except cmdq.CommandGone:  # withdrawn while we worked: nothing of it was committed
                log.info("%-8s CMD  %-14s withdrawn before it ran", self.name, row.name)
                continue
            self.stats["commands"] += 1
            done += 1
        return done

    def fire_due_timers(self) -> int:
        fired = 0
        for timer in self.store.due_timers(self.clock()):
            info = timer.payload or {}
            txkey, name = info.get("tx", ""), info.get("name", timer.key)
            event = TimerFired(name, info.get("payload") or {})
            if self.reloader is not None and not self.reloader.takes(event):
                continue  # due until the role that set it is built again
            try:
                outcome = self._step(txkey, event)
            except Exception as exc:
                log.warning("%-8s TIME %-14s tx=%s dropped: %s", self.name, name,
                            mailout.safe_token(txkey, 16), exc)
                with self.store.transaction(now=self.clock()) as tx:
                    tx.cancel_timer(timer.key)
                continue
            log.info("%-8s TIME %-14s tx=%s", self.name, name, mailout.safe_token(txkey, 16))
            # the fired timer goes unless the role set it again in this very step
            self._commit(txkey, outcome, extra=lambda tx, k=timer.key, d=timer.due_at:
                         tx.execute("DELETE FROM timers WHERE key = ? AND due_at = ?", (k, d)))
            self.stats["timers"] += 1
            fired += 1
        return fired

    def next_timer_at(self) -> float | None:
        return self.store.next_timer_at()

    # -- sending -----------------------------------------------------------------------------------
    def _send_one(self, host, port, sender, recipients, raw, timeout) -> None:
        self.pool.send(host, port, sender, recipients, raw, timeout)
        self.sent.keep(raw)
        mtype, txkey = mailout.describe_raw(raw)
        self.stats["out"] += 1
        log.info("%-8s OUT  %-14s tx=%s to %s (sent)", self.name, mtype, txkey[:16],
                 ", ".join(recipients))
        fault.hit("mid_send", self.name)

    def send_due(self) -> DrainResult:
        """Send every due outbox row once (250 → its copy filed in .Sent, row deleted;
        failure → backoff or dead)."""
        result = drain_outbox(self.store, now=self.clock(), backoff=self.config.backoff,
                              sender=self.config.address, send_fn=self._send_one, timeout=30.0,
                              before_record=self.sent.file)
        rows = {r.id: r for r in self.store.outbox()} if result.failed or result.dead else {}
        for row_id in result.failed + result.dead:
            row = rows.get(row_id)
            if row is not None:
                log.warning("%-8s OUT  send to %s %s: %s", self.name, row.recipient,
                            "gave up" if row_id in result.dead else "will retry", row.last_error)
        return result

    def next_send_at(self) -> float | None:
        return self.store.next_send_at()


__all__ = ["Agent", "AgentConfig", "TransportError"]
