"""Plain records the store hands out and takes in (no behaviour, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OutgoingMail:
    """A built mail and where it goes: an outbox row to be, or a stored dedupe response (whose
    ``raw`` is None once its bytes live only in the agent's Sent folder, found by
    ``message_id``)."""

    recipient: str
    host: str
    port: int
    raw: bytes | None
    message_id: str
    #: what the mail carries and for which transaction (its Subject's words), kept with its
    #: line in ``sent_log`` so the Sent folder is listed without reading its files
    message_type: str | None = None
    tx: str | None = None


@dataclass(frozen=True)
class MailFacts:
    """What a processed mail's head said and when it was delivered: the store's index of the
    Maildir (display and lookup only; nothing in it is trusted)."""

    message_type: str | None
    tx: str | None
    sender: str | None
    message_id: str | None
    size: int
    received_at: float | None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    recipient: str
    host: str
    port: int
    raw: bytes
    message_id: str
    attempts: int
    next_attempt_at: float | None  # None: given up, kept for inspection
    last_error: str | None
    created_at: float

    @property
    def mail(self) -> OutgoingMail:
        return OutgoingMail(self.recipient, self.host, self.port, self.raw, self.message_id)


@dataclass(frozen=True)
class DedupeRecord:
    """An accepted mail, known by the SHA-256 of its MessageWrapper DER, and the answers it got
    (re-sent verbatim when a request is repeated, ``resends`` times so far)."""

    digest: bytes
    msg_type: str
    txkey: str | None
    processed_at: float
    resends: int
    responses: tuple[OutgoingMail, ...]


@dataclass(frozen=True)
class Timer:
    key: str
    due_at: float
    payload: Any


@dataclass(frozen=True)
class QuarantineRecord:
    maildir_key: str
    reason: str
    message_id: str | None
    quarantined_at: float
