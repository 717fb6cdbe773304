"""Durable per-agent storage (SQLite): role state, dedupe, outbox, timers, mail indexes."""
from setmail.store.db import Store, Transaction
from setmail.store.records import DedupeRecord, OutboxRow, OutgoingMail, QuarantineRecord, Timer

__all__ = ["Store", "Transaction", "DedupeRecord", "OutboxRow", "OutgoingMail",
           "QuarantineRecord", "Timer"]
