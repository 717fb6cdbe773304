"""Durable per-agent storage (SQLite): role state, dedupe, outbox, timers, mail indexes."""
from setmail.store.db import Store, Transaction
from setmail.store.records import (
    DedupeRecord, MailFacts, OutboxRow, OutgoingMail, QuarantineRecord, Timer,
)

__all__ = ["Store", "Transaction", "DedupeRecord", "MailFacts", "OutboxRow", "OutgoingMail",
           "QuarantineRecord", "Timer"]
