"""Dedupe on the exact SET content: what an agent does with an exact repeat of a mail it accepted,
and with an answer a later step gives to a request (issue 12, docs/runtime.md).

The key is ``Inbound.digest`` (SHA-256 of the MessageWrapper DER), never a header: a forged copy
carrying the genuine RRPID must not make the genuine mail a "duplicate".  A repeated *request*
(a relay's duplicate, the peer's retry) gets its stored answers again, sent where they went the
first time, at most ``MAX_RESENDS`` times per record: a replayed request amplifies nothing.  A
repeated *response* is absorbed: answering it again is how two agents once sent each other one
CapRes 2,706 times in 10 s, and how an attacker replaying a response would make us send.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from setmail.roles.base import Send, is_response
from setmail.roles.wire import MAX_AGE, MAX_SKEW
from setmail.store import DedupeRecord, OutgoingMail

log = logging.getLogger("setmail.agent")

#: how long a record is kept: a mail dated more than MAX_AGE ago is refused by every role
#: (``wire.unwrap``, messageTooOld), and an accepted one was dated at most MAX_SKEW after it was
#: processed, so past this no repeat of it could be accepted anyway (D-482)
RETENTION = MAX_AGE + MAX_SKEW

#: how many times an exact repeat of one request gets its stored answers again: enough for a
#: relay's duplicates and a peer's retries, bounded so a replayed request cannot make us send
MAX_RESENDS = 8


@dataclass(frozen=True)
class Repeat:
    """What was done with a repeat: ``resent`` mails queued again (the record's ``count``-th
    re-send), or absorbed (``over_limit``: because the budget is spent); ``what`` says it."""

    resent: int
    count: int
    over_limit: bool
    what: str


def repeat(tx, record: DedupeRecord, message_type: str) -> Repeat:
    """Inside the caller's transaction: queue the stored answers of a repeated request again
    while its budget lasts; a response, or a request without answers (yet), changes nothing."""
    if is_response(message_type):
        return Repeat(0, record.resends, False, "response absorbed")
    if not record.responses:
        return Repeat(0, record.resends, False, "no answer stored")
    if record.resends >= MAX_RESENDS:
        return Repeat(0, record.resends, True, f"re-send limit ({MAX_RESENDS}) reached, absorbed")
    for response in record.responses:
        tx.enqueue(response)
    count = tx.count_resend(record.digest)
    return Repeat(len(record.responses), count, False,
                  f"{len(record.responses)} stored response(s) re-sent ({count}/{MAX_RESENDS})")


def with_bytes(record: DedupeRecord, read_sent, agent: str) -> DedupeRecord:
    """``record`` with every answer's bytes: an answer stored by reference that has left the
    outbox is read back from the Sent folder (``read_sent(message_id)``, filed durably before
    its outbox row went).  One whose copy is gone (a mail client deleted it) is logged and left
    out: the repeat gets the answers that remain."""
    if all(r.raw is not None for r in record.responses):
        return record
    kept = []
    for response in record.responses:
        if response.raw is None:
            raw = read_sent(response.message_id)
            if raw is None:
                log.error("%s: stored answer %s is lost (no outbox row, no Sent copy); a repeat "
                          "cannot get it again", agent, response.message_id)
                continue
            response = replace(response, raw=raw)
        kept.append(response)
    return replace(record, responses=tuple(kept))


def add_answer(tx, agent: str, send: Send, mail: OutgoingMail, current: bytes | None) -> None:
    """``send`` also answers an earlier request (``Send.answers``: its hex digest): that
    request's record gets ``mail``, so an exact repeat of the request is answered again.
    ``current``: the digest of the mail this step handles, recorded with its answers already."""
    if send.answers is None:
        return
    try:
        digest = bytes.fromhex(send.answers)
    except (TypeError, ValueError):
        digest = b""
    if len(digest) != 32:  # a role's bug: logged, and the commit goes on without it
        log.error("%s: %s send: Send.answers must be a request's hex SHA-256, not %r", agent,
                  send.message_type, send.answers)
        return
    if digest != current and not tx.add_dedupe_responses(digest, [mail]):
        log.info("%-8s OUT  %-14s answers %s…, which has no dedupe record", agent,
                 send.message_type, send.answers[:16])


def expire(store, now: float, *, batch: int = 1000) -> int:
    """Drop the records (and their answers' references) processed more than RETENTION before
    ``now``, ``batch`` per transaction so a long backlog never holds the store for long; how
    many went."""
    cutoff, gone = now - RETENTION.total_seconds(), 0
    while True:
        with store.transaction(now=now) as tx:
            n = tx.execute("DELETE FROM dedupe WHERE digest IN (SELECT digest FROM dedupe WHERE "
                           "processed_at < ? LIMIT ?)", (cutoff, batch)).rowcount
        gone += n
        if n < batch:
            return gone
