"""A delivered mail's way through the agent (``runtime.Agent`` mixes ``Intake`` in):

claim → parse_mail → decode_wrapper → content type check → [fault after_decode] → dedupe lookup
(SHA-256 of the MessageWrapper DER) → role.step → ONE store transaction (state, shared state,
dedupe record with the responses unless the role refused the mail, outbox rows, timers, effects,
processed-mail record with its index facts, D-487) → [fault after_commit] → after-commit effects
→ mark_done → [fault after_mark_done].

A mail whose processed-mail record is already committed is only finished (marked done, or moved
to the quarantine) when seen again, so the crash window between commit and ``mark_done`` does
neither work nor sends twice.  Against a mail attacker (docs/threat-model.md): dedupe keys on the
exact SET content, never on a header; only accepted mail is recorded, so a refused forgery never
makes a later genuine mail a "duplicate"; an exact repeat of a request gets its stored answers
again within a budget, a repeat of a response nothing (``agent.dedupe``); undecodable mail is
quarantined and never answered (whatever its From says).
"""
from __future__ import annotations

import contextlib
import logging
import traceback

from setmail.agent import dedupe, fault, mailout
from setmail.agent.secrecy import loggable
from setmail.asn1.wrapper import MIME_TYPES, decode_wrapper
from setmail.errors import MaildirKeyError, SetmailError, WrongMailContentType
from setmail.mail import maildir
from setmail.mail.mime import ParsedMail, parse_mail
from setmail.roles.wire import received, wire
from setmail.store import DedupeRecord, MailFacts

log = logging.getLogger("setmail.agent")


class Intake:
    """Needs ``config``, ``name``, ``store``, ``role``, ``reloader``, ``sent``, ``stats``,
    ``clock``, ``rescanned``, ``_deferred``, ``_held`` and ``_step``, ``_commit``, ``_defer``,
    ``_apply_journal`` (``runtime.Agent``)."""

    def process_mail(self, key: str) -> str:
        """Process one delivered mail; returns its status (done, refused, duplicate, quarantined,
        ...)."""
        status = self.store.processed_status(key)
        if status is not None:
            if key in self.rescanned:  # taken after a rebuild, reported by the watcher too
                return status
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
            log.info("%-8s IN   %s is gone (removed before it was read): skipped", self.name, key)
            return "gone"
        mail: ParsedMail | None = None
        mtype = None
        try:
            mail = parse_mail(raw, max_size=self.config.max_mail_size)
            wrapper = decode_wrapper(mail.der, max_size=self.config.max_mail_size)
            event = received(mail.der, mail.sender, mail.message_id, wrapper)
            mtype = event.message_type
            wire(event)  # the header must decode too (the roles read it first)
            if mail.content_type != MIME_TYPES[mtype]:
                raise WrongMailContentType(f"{mtype} must travel as {MIME_TYPES[mtype]}, "
                                           f"not {mail.content_type}")
        except SetmailError as exc:
            return self._quarantine(key, exc, mail, mtype,
                                    mailout.mail_facts(raw, mail, claimed))
        facts = mailout.mail_facts(raw, mail, claimed)
        fault.hit("after_decode", self.name)
        if self.reloader is not None and not self.reloader.takes(event):
            return self._defer(key, mtype)
        self._deferred.discard(key)
        record = self.store.lookup_dedupe(event.digest)
        if record is not None:
            return self._duplicate(key, record, mail, mtype, facts, claimed)
        txkey = "?"
        try:
            txkey = self.role.transaction_key(event)
            outcome = self._step(txkey, event)
        except SetmailError as exc:
            return self._quarantine(key, exc, mail, mtype, facts)
        except Exception as exc:  # a bug in a role must not stop the agent
            log.error("%s: internal error on %s: %s", self.name, key, traceback.format_exc())
            return self._quarantine(key, exc, mail, mtype, facts, internal=True)
        tx_token = mailout.safe_token(outcome.transaction or txkey, 16)
        if outcome.peer and outcome.peer.lower() != mail.sender.lower():
            log.warning("%-8s IN   %-14s tx=%s From %s is not the signer's directory address %s",
                        self.name, mtype, tx_token, mail.sender, outcome.peer)
        if outcome.refused is not None:
            reason = loggable(outcome.refused)
            self._commit(txkey, outcome, mail_key=key, request=mail, status="refused",
                         detail=reason, facts=facts)
            self.stats["refused"] += 1
            log.warning("%-8s IN   REFUSED %s tx=%s %s", self.name, mtype, tx_token, reason)
            return self._finish_or_hold(key, "refused", claimed)
        self.stats["in"] += 1
        log.info("%-8s IN   %-14s tx=%s from %s", self.name, mtype, tx_token, mail.sender)
        self._commit(txkey, outcome, mail_key=key, request=mail, record=(event.digest, mtype),
                     facts=facts)
        return self._finish_or_hold(key, "done", claimed)

    @contextlib.contextmanager
    def grouped(self, on: bool = True):
        """Group commit for the mails processed inside: each one's commit is atomic but not
        flushed on its own, its outgoing mail is held back (``Store.due_outbox``) and it is
        not marked done; at the end one WAL flush makes them all durable, then they are marked
        done.  A crash before the flush loses at most the commits of mails still pending in the
        Maildir, which are processed again; a step with after-commit effects commits durably
        as ever (``effects.acts_outside``)."""
        if not on or self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                self.store.flush()
                for key, status, claimed in held:
                    self._finish(key, status, claimed=claimed)

    def _finish_or_hold(self, key: str, status: str, claimed: str | None) -> str:
        if self._held is None:
            return self._finish(key, status, claimed=claimed)
        self._held.append((key, status, claimed))
        return status

    def _finish(self, key: str, status: str, *, resumed: bool = False,
                claimed: str | None = None) -> str:
        if resumed:
            log.info("%-8s      resuming %s (%s before the crash)", self.name, key, status)
            self._apply_journal(self.clock())
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

    def _duplicate(self, key: str, record: DedupeRecord, mail: ParsedMail, mtype: str,
                   facts: MailFacts, claimed: str | None = None) -> str:
        """An exact repeat of an accepted mail: changes nothing; a request's stored answers are
        re-sent within their budget (``agent.dedupe``)."""
        record = dedupe.with_bytes(record, self.sent.read, self.name)
        with self.store.transaction(now=self.clock()) as tx:
            done = dedupe.repeat(tx, record, mtype)
            tx.mark_processed(key, "duplicate", txkey=record.txkey, facts=facts,
                              detail=f"repeat of {mtype} from {mail.sender}: {done.what}")
        fault.hit("after_commit", self.name)
        self.stats["duplicates"] += 1
        self.stats["absorbed"] += not done.resent
        log.log(logging.WARNING if done.over_limit else logging.INFO,
                "%-8s IN   %-14s duplicate from %s: %s", self.name, mtype, mail.sender,
                done.what)
        return self._finish(key, "duplicate", claimed=claimed)

    def _quarantine(self, key: str, exc: BaseException, mail: ParsedMail | None,
                    mtype: str | None, facts: MailFacts, *, internal: bool = False) -> str:
        """Keep the mail aside with the reason.  Never answered: an Error would go to whatever
        address the From names (an attacker's victim), about bytes nobody authenticated."""
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:1000]
        if internal:
            reason = "internal error: " + reason
        with self.store.transaction(now=self.clock()) as tx:
            tx.record_quarantine(key, reason, mail.message_id if mail else None)
            tx.mark_processed(key, "quarantined", detail=reason[:200], facts=facts)
        self.stats["quarantined"] += 1
        log.warning("%-8s IN   %-14s QUARANTINED %s (%s)", self.name, mtype or "?", key,
                    loggable(reason, 1000))
        return self._finish(key, "quarantined")
