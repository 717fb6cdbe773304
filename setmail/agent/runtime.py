"""One party's agent: role + store + Maildir + outbox, processing one unit of work at a time.

Everything here is synchronous and single-threaded per agent (``setmail.agent.daemon`` runs it in
worker threads under asyncio).  The path of one mail (docs/runtime.md):

claim → parse_mail → decode_wrapper → content type check → [fault after_decode] → dedupe lookup
→ role.step → ONE store transaction (state, shared state, dedupe record with the responses,
outbox rows, timers, effects, processed-mail record) → [fault after_commit] → after-commit
effects → mark_done → [fault after_mark_done] … sender: SMTP → [fault mid_send] → mark_sent.

A mail whose processed-mail record is already committed is only finished (marked done, or moved
to the quarantine) when seen again, so the crash window between commit and ``mark_done`` does
neither work nor sends twice.  A repeat of an already processed request (SMTP's at-least-once, a
peer's retry) re-enqueues the stored responses and changes nothing else.
"""
from __future__ import annotations

import datetime as dt
import hashlib
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
from setmail.agent import fault, mailout
from setmail.asn1.wrapper import MIME_TYPES, decode_wrapper
from setmail.errors import (
    MaildirKeyError, SetmailError, TransportError, WrongMailContentType,
)
from setmail.mail import maildir
from setmail.mail.mime import ParsedMail, parse_mail
from setmail.mail.sender import Backoff, DrainResult, SMTPClientPool, drain_outbox
from setmail.mail.smtpd import DEFAULT_SIZE_LIMIT
from setmail.roles.base import CancelTimer, Command, Outcome, Role, SetTimer, TimerFired
from setmail.roles.wire import received, wire
from setmail.store import OutgoingMail, Store  # noqa: F401  (Store: type of .store)

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
    peers: Mapping[str, str] = field(default_factory=dict)  # address -> agent name
    max_mail_size: int = DEFAULT_SIZE_LIMIT
    backoff: Backoff = Backoff(base=0.5, factor=2.0, cap=30.0, max_attempts=15)

    @property
    def store_path(self) -> Path:
        return self.home / "state.db"


def _ts_to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


class Agent:
    """Runs ``role`` for one party.  ``clock`` returns epoch seconds (tests may pin it)."""

    def __init__(self, config: AgentConfig, role: Role, *, store: Store | None = None,
                 clock: Callable[[], float] = time.time, pool: SMTPClientPool | None = None):
        self.config = config
        self.role = role
        self.clock = clock
        config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        maildir.ensure_maildir(config.maildir)
        self.store = store or cmdq.open_store(config.store_path)
        self.pool = pool or SMTPClientPool(local_hostname=mailout.domain_of(config.address))
        self.ctx = fx.EffectContext(config.name, config.home)
        cmdq.ensure_tables(self.store, cmdq.DDL + fx.JOURNAL_DDL)
        for suffix in ("", "-wal", "-shm"):  # role state may hold secrets until a tx ends
            path = Path(str(config.store_path) + suffix)
            if path.exists():
                os.chmod(path, 0o600)
        self.stats = {"in": 0, "out": 0, "duplicates": 0, "quarantined": 0, "commands": 0,
                      "timers": 0}

    @property
    def name(self) -> str:
        return self.config.name

    # -- start-up --------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """After a (re)start: apply journaled effects; return the mail keys still to process."""
        fx.apply_journal(self.ctx, self.store, self.clock())
        return [e.key for e in maildir.pending(self.config.maildir)]

    def close(self) -> None:
        self.pool.close()
        self.store.close()

    # -- mail ---------------------------------------------------------------------------------------
    def process_mail(self, key: str) -> str:
        """Process one delivered mail; returns its status (done, duplicate, quarantined, ...)."""
        status = self.store.processed_status(key)
        if status is not None:
            return self._finish(key, status, resumed=True)
        claimed = None
        try:
            claimed = maildir.claim(self.config.maildir, key)
        except MaildirKeyError:
            pass  # already claimed by us before a restart, or gone meanwhile
        try:
            raw = (maildir.read(self.config.maildir, key) if claimed is None
                   else maildir.read_claimed(self.config.maildir, key, claimed))
        except MaildirKeyError:
            return "gone"
        mail: ParsedMail | None = None
        header = mtype = None
        try:
            mail = parse_mail(raw, max_size=self.config.max_mail_size)
            wrapper = decode_wrapper(mail.der, max_size=self.config.max_mail_size)
            event = received(mail.der, mail.sender, mail.message_id, wrapper)
            mtype, header = event.message_type, wire(event).header
            if mail.content_type != MIME_TYPES[mtype]:
                raise WrongMailContentType(f"{mtype} must travel as {MIME_TYPES[mtype]}, "
                                           f"not {mail.content_type}")
        except SetmailError as exc:
            return self._quarantine(key, exc, mail, header, mtype)
        fault.hit("after_decode", self.name)
        rrpid = header["rrpid"] or hashlib.sha256(mail.der).digest()
        peer = mail.sender
        record = self.store.lookup_dedupe(peer, rrpid, mtype)
        if record is not None:
            return self._duplicate(key, record, mail, mtype, claimed)
        txkey = "?"
        try:
            txkey = self.role.transaction_key(event)
            outcome = self._step(txkey, event)
        except SetmailError as exc:
            return self._quarantine(key, exc, mail, header, mtype)
        except Exception as exc:  # a bug in a role must not stop the agent
            log.error("%s: internal error on %s: %s", self.name, key, traceback.format_exc())
            return self._quarantine(key, exc, mail, None, mtype, internal=True)
        self.stats["in"] += 1
        log.info("%-8s IN   %-14s tx=%s from %s", self.name, mtype, mailout.safe_token(txkey, 16),
                 peer)
        self._commit(txkey, outcome, mail_key=key, request=mail,
                     dedupe=(peer, rrpid, mtype))
        return self._finish(key, "done", claimed=claimed)

    def _finish(self, key: str, status: str, *, resumed: bool = False,
                claimed: str | None = None) -> str:
        if resumed:
            log.info("%-8s      resuming %s (%s before the crash)", self.name, key, status)
            fx.apply_journal(self.ctx, self.store, self.clock())
        try:
            if status == "quarantined":
                if any(e.key == key for e in maildir.pending(self.config.maildir)):
                    reason = next((q.reason for q in self.store.quarantined()
                                   if q.maildir_key == key), "quarantined")
                    maildir.quarantine(self.config.maildir, key, reason)
            else:
                maildir.mark_done(self.config.maildir, key, claimed=claimed)
        except MaildirKeyError:
            if status != "quarantined":
                try:  # still in new/ (claim lost in a crash): claim, then mark done
                    maildir.claim(self.config.maildir, key)
                    maildir.mark_done(self.config.maildir, key)
                except MaildirKeyError:
                    pass
        fault.hit("after_mark_done", self.name)
        return status

    def _duplicate(self, key: str, record, mail: ParsedMail, mtype: str,
                   claimed: str | None = None) -> str:
        now = self.clock()
        with self.store.transaction(now=now) as tx:
            for response in record.responses:
                tx.enqueue(response)
            tx.mark_processed(key, "duplicate", txkey=record.txkey,
                              detail=f"repeat of {mtype} from {mail.sender}")
        fault.hit("after_commit", self.name)
        self.stats["duplicates"] += 1
        log.info("%-8s IN   %-14s duplicate from %s: %d stored response(s) re-sent", self.name,
                 mtype, mail.sender, len(record.responses))
        return self._finish(key, "duplicate", claimed=claimed)

    def _quarantine(self, key: str, exc: BaseException, mail: ParsedMail | None, header,
                    mtype: str | None, *, internal: bool = False) -> str:
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:1000]
        if internal:
            reason = "internal error: " + reason
        now = self.clock()
        error_mail = None
        # An Error reply only where it can be correlated and cannot loop: the wrapper decoded,
        # it is not itself an Error, and the sender is a party of this world.
        if (header is not None and mtype not in (None, "Error") and mail is not None
                and mail.sender.lower() in self.config.peers):
            code = getattr(exc, "set_error_code", "unspecifiedFailure")
            try:
                der = mailout.build_error(code, mail.der, _ts_to_dt(now).replace(microsecond=0))
                txkey = "error-" + hashlib.sha256(key.encode()).hexdigest()[:16]
                msgid = mailout.message_id(self.name, self.config.address, txkey, 1)
                error_mail = self._outgoing(mail.sender, "Error", der, txkey, msgid, _ts_to_dt(now),
                                            mail)
            except Exception as build_exc:  # never let the reply stop the quarantine
                log.warning("%s: cannot build Error reply: %s", self.name, build_exc)
        with self.store.transaction(now=now) as tx:
            tx.record_quarantine(key, reason, mail.message_id if mail else None)
            tx.mark_processed(key, "quarantined", detail=reason[:200])
            if error_mail is not None:
                tx.enqueue(error_mail)
        self.stats["quarantined"] += 1
        log.warning("%-8s IN   %-14s QUARANTINED %s (%s)%s", self.name, mtype or "?", key, reason,
                    " -> Error sent" if error_mail else "")
        return self._finish(key, "quarantined")

    # -- the role step and the commit ------------------------------------------------------------
    def _step(self, txkey: str, event) -> Outcome:
        state = self.store.get_state(STATE_PREFIX + txkey)
        shared = (self.store.get_state(SHARED_PREFIX + self.role.shared_key)
                  if self.role.shared_key else None)
        return self.role.step(state, event, _ts_to_dt(self.clock()), shared)

    def _outgoing(self, to: str, mtype: str, der: bytes, txkey: str, msgid: str,
                  now: dt.datetime, request: ParsedMail | None) -> OutgoingMail:
        raw = mailout.build(der=der, content_type=MIME_TYPES[mtype], sender=self.config.address,
                            recipient=to, msgid=msgid, message_type=mtype, txkey=txkey, now=now,
                            reply_to_id=request.message_id if request else None,
                            reply_refs=request.references if request else ())
        return OutgoingMail(to, self.config.smtp_host, self.config.smtp_port, raw, msgid)

    def _commit(self, txkey: str, outcome: Outcome, *, mail_key: str | None = None,
                request: ParsedMail | None = None, dedupe: tuple | None = None,
                extra: Callable[[Any], None] | None = None) -> None:
        now = self.clock()
        now_dt = _ts_to_dt(now).replace(microsecond=0)
        tx_key = outcome.transaction or txkey
        with self.store.transaction(now=now) as tx:
            seq = tx.get_state(SEQ_PREFIX + tx_key, 0)
            mails = []
            for send in outcome.sends:
                seq += 1
                msgid = mailout.message_id(self.name, self.config.address, tx_key, seq)
                mails.append(self._outgoing(send.to, send.message_type, send.wrapper_der, tx_key,
                                            msgid, now_dt, request))
            if outcome.sends:
                tx.put_state(SEQ_PREFIX + tx_key, seq)
            if outcome.state is None:
                tx.delete_state(STATE_PREFIX + tx_key)
            else:
                tx.put_state(STATE_PREFIX + tx_key, dict(outcome.state))
            if outcome.shared is not None and self.role.shared_key:
                tx.put_state(SHARED_PREFIX + self.role.shared_key, dict(outcome.shared))
            for mail in mails:
                tx.enqueue(mail)
            if dedupe is not None:
                tx.record_dedupe(*dedupe, mails, txkey=tx_key)
            for send, mail in zip(outcome.sends, mails):
                if send.answers is not None:  # a request answered in a later step
                    tx.add_dedupe_responses(*send.answers, [mail])
            for timer in outcome.timers:
                tkey = f"{tx_key}/{timer.name}"
                if isinstance(timer, SetTimer):
                    tx.set_timer(tkey, timer.due.timestamp(),
                                 {"tx": tx_key, "name": timer.name, "payload": dict(timer.payload)})
                elif isinstance(timer, CancelTimer):
                    tx.cancel_timer(tkey)
            fx.stage(self.ctx, tx, outcome.effects)
            if mail_key is not None:
                tx.mark_processed(mail_key, "done", txkey=tx_key)
            if extra is not None:
                extra(tx)
        if log.isEnabledFor(logging.DEBUG):  # `run -v`; the "(sent)" line is logged at INFO
            for send in outcome.sends:
                log.debug("%-8s OUT  %-14s tx=%s to %s (queued)", self.name, send.message_type,
                          mailout.safe_token(tx_key, 16), send.to)
        fault.hit("after_commit", self.name)
        if outcome.effects:
            fx.apply_journal(self.ctx, self.store, now)

    # -- commands and timers -----------------------------------------------------------------------
    def process_commands(self) -> int:
        done = 0
        for row in cmdq.pending(self.store):
            event = Command(row.name, row.args)
            try:
                txkey = self.role.transaction_key(event)
                outcome = self._step(txkey, event)
            except Exception as exc:
                if not isinstance(exc, SetmailError):
                    log.error("%s: internal error on command %s: %s", self.name, row.name,
                              traceback.format_exc())
                with self.store.transaction(now=self.clock()) as tx:
                    cmdq.finish(tx, row.id, "failed", detail=f"{type(exc).__name__}: {exc}")
                log.warning("%-8s CMD  %-14s failed: %s", self.name, row.name, exc)
                continue
            log.info("%-8s CMD  %-14s tx=%s", self.name, row.name, mailout.safe_token(txkey, 16))
            tx_key = outcome.transaction or txkey
            self._commit(txkey, outcome,
                         extra=lambda tx, r=row, k=tx_key: cmdq.finish(tx, r.id, "done", txkey=k))
            self.stats["commands"] += 1
            done += 1
        return done

    def fire_due_timers(self) -> int:
        fired = 0
        for timer in self.store.due_timers(self.clock()):
            info = timer.payload or {}
            txkey, name = info.get("tx", ""), info.get("name", timer.key)
            event = TimerFired(name, info.get("payload") or {})
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
        mtype, txkey = mailout.describe_raw(raw)
        self.stats["out"] += 1
        log.info("%-8s OUT  %-14s tx=%s to %s (sent)", self.name, mtype, txkey[:16],
                 ", ".join(recipients))
        fault.hit("mid_send", self.name)

    def send_due(self) -> DrainResult:
        """Send every due outbox row once (250 → row deleted; failure → backoff or dead)."""
        result = drain_outbox(self.store, now=self.clock(), backoff=self.config.backoff,
                              sender=self.config.address, send_fn=self._send_one, timeout=30.0)
        rows = {r.id: r for r in self.store.outbox()} if result.failed or result.dead else {}
        for row_id in result.failed + result.dead:
            row = rows.get(row_id)
            if row is not None:
                log.warning("%-8s OUT  send to %s %s: %s", self.name, row.recipient,
                            "gave up" if row_id in result.dead else "will retry", row.last_error)
        return result

    def next_send_at(self) -> float | None:
        rows = self.store.query("SELECT MIN(next_attempt_at) FROM outbox "
                                "WHERE next_attempt_at IS NOT NULL")
        return rows[0][0] if rows else None


__all__ = ["Agent", "AgentConfig", "TransportError"]
