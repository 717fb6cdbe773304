"""The sans-I/O contract between a SET role and the agent that runs it.

Rules this package keeps (h11 is the model):

* A role never touches sockets, files or clocks.  The agent gives it the transaction's current
  state, one decoded event and ``now``; the role returns an ``Outcome``: the new state, the SET
  messages to send, effects for the agent to commit (e.g. a ledger hold at the issuer), and timers.
* State is plain data (JSON-serialisable dicts of str/int/bool/None/list, bytes as hex) so the
  store can persist it and a crash can resume from it.  Keys, certificates and trust live in the
  role object's *configuration*, never in state.
* Every transition is listed in the role's ``TRANSITIONS`` table, ``{state: {event: next_state}}``;
  ``step`` refuses anything not in the table with ``ProtocolError`` before a handler runs, so the
  table is the whole truth about what a party accepts when (docs draw their diagrams from it).
* Events are either an ``Inbound`` SET message (event name = its message type, e.g. "CertRes"),
  a ``Command`` from the local user (e.g. "register"), or a ``TimerFired``.
* Facts that span transactions (a CA's set of certified keys and used challenges, an issuer's
  accounts) live in the role's *shared* state: a role that needs one names it in ``shared_key``;
  the agent loads it with the transaction state and commits ``Outcome.shared`` in the same
  transaction (``None`` = unchanged).
* A handler is deterministic given (state, event, now, randomness from ``setmail.crypto.suite.fresh``)
  and idempotency is the agent's job: it dedupes by the exact SET content (``Inbound.digest``, a
  hash of the MessageWrapper DER) before calling, never by anything a mail header says.

Rules every role keeps against the mail attacker (docs/threat-model.md):

* Nothing in a mail header is evidence.  ``Inbound.sender`` is only logged; every reply address
  comes from the role's configuration (the world's directory, bound to certificate identities) or
  from the transaction's own state, and a role names the authenticated sender in ``Outcome.peer``
  so the agent can log a From that disagrees.
* A state changes only on a message authenticated as the expected counterpart of that
  transaction (``roles.exchange``: an outstanding request and the answers it accepts).
* Input a role does not accept leaves the state as it was and says why in ``Outcome.refused``:
  the agent then records no dedupe entry, so a refused forgery never blocks a later genuine mail.
* A response (``is_response``: a ``…Res`` or an Error) is never answered, not even with an
  Error: a repeated or unexpected response is absorbed.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

from setmail.asn1.wrapper import decode_wrapper
from setmail.errors import ProtocolError

#: state name of a transaction that does not exist yet
START = "START"


def is_response(message_type: str) -> bool:
    """An answer (``…Res``) or an Error: never answered, a repeat is absorbed."""
    return message_type.endswith("Res") or message_type == "Error"


@dataclass(frozen=True)
class Inbound:
    """A SET message as delivered: the whole MessageWrapper DER, not yet verified by the role.

    ``sender`` is the mail's From: logged, never a reply address and never evidence of identity
    (the CA reads it only to pick which directory member a request claims to be, D-145) —
    identity comes from signatures inside the DER, addresses from the directory or the state.
    """

    message_type: str
    wrapper_der: bytes
    sender: str
    mail_id: str = ""
    #: the MessageWrapper already decoded from ``wrapper_der`` (the agent passes the one it made)
    decoded: Any = field(default=None, compare=False, repr=False)

    @property
    def event(self) -> str:
        return self.message_type

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the whole MessageWrapper DER: what dedupe keys on, what a signed Error
        names (``refusedHash``, D-134) and what ``Send.answers`` refers to."""
        return hashlib.sha256(self.wrapper_der).digest()

    @cached_property
    def wrapper(self):
        """The decoded MessageWrapper, decoded at most once per event (strict decoding of a
        certificate-carrying wrapper costs more than its RSA operations)."""
        return self.decoded if self.decoded is not None else decode_wrapper(self.wrapper_der)


@dataclass(frozen=True)
class Command:
    """A local instruction (from the CLI) such as "register" or "buy", with its arguments."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def event(self) -> str:
        return self.name


@dataclass(frozen=True)
class TimerFired:
    """A timer the role set earlier is due (e.g. "retry": no response in time)."""

    name: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def event(self) -> str:
        return "timer:" + self.name


@dataclass(frozen=True)
class Send:
    """One outgoing SET message; the agent wraps it in MIME and puts it in the outbox."""

    to: str                       # recipient agent address
    message_type: str
    wrapper_der: bytes
    in_reply_to: str | None = None  # mail id of the request this answers (threading only)
    #: ``Inbound.digest`` (hex) of an earlier request this also answers, when the answer comes
    #: from a later step (a PInitReq parked until its order, an AuthReq answered once the issuer
    #: has): the agent adds the mail to that request's dedupe record, so an exact repeat of the
    #: request gets this answer again
    answers: str | None = None


@dataclass(frozen=True)
class Effect:
    """Something the agent commits with the state, e.g. Effect("ledger.hold", {...})."""

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SetTimer:
    name: str
    due: dt.datetime
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Outcome:
    """The result of one step: the new state (None = forget the transaction) and its consequences.

    ``refused``: the event was not accepted (why, for the log): the state is as it was, apart
    from a note of the refusal, and the agent records no dedupe entry for the mail.  ``peer``: the
    directory address of the sender the role authenticated (None: not authenticated)."""

    transaction: str
    state: Mapping[str, Any] | None
    sends: tuple[Send, ...] = ()
    effects: tuple[Effect, ...] = ()
    timers: tuple[SetTimer | CancelTimer, ...] = ()
    shared: Mapping[str, Any] | None = None
    refused: str | None = None
    peer: str | None = None


Event = Inbound | Command | TimerFired


class Role:
    """Base of every role: looks the event up in ``TRANSITIONS`` and calls ``on_<event>``.

    Subclasses define ``name``, ``TRANSITIONS`` and one handler per event, named ``on_`` + the
    event with non-identifier characters replaced by ``_`` (``"Me-AqCInitRes"`` ->
    ``on_Me_AqCInitRes``, ``"timer:retry"`` -> ``on_timer_retry``).  A handler receives
    ``(state, event, now, shared)`` and returns an Outcome whose state's ``"state"`` key must be the
    table's next state (checked here).
    """

    name = "role"
    #: key of the cross-transaction state this role reads and updates (None: it has none)
    shared_key: str | None = None
    #: the collections of the shared state that grow with history (``/`` paths, ``*`` any key):
    #: the store keeps each entry (or chunk of a list) as a row of its own, so a step writes only
    #: what it changed (``setmail.store.parts``)
    shared_parts: tuple[str, ...] = ()
    TRANSITIONS: Mapping[str, Mapping[str, str | tuple[str, ...]]] = {}

    def transaction_key(self, event: Event) -> str:
        """Which transaction an event belongs to (e.g. XID hex, LID-EE hex). Override."""
        raise NotImplementedError

    def step(self, state: Mapping[str, Any] | None, event: Event, now: dt.datetime,
             shared: Mapping[str, Any] | None = None) -> Outcome:
        current = (state or {}).get("state", START)
        allowed = self.TRANSITIONS.get(current, {})
        if event.event not in allowed:
            if isinstance(event, Command):  # the user's words: the agent records it for the CLI
                raise ProtocolError(f"{event.event} is not possible while it is {current}")
            raise ProtocolError(f"{self.name}: {event.event} is not expected in state {current}",
                                "messageNotSupported" if isinstance(event, Inbound) else None)
        handler = getattr(self, "on_" + "".join(c if c.isalnum() else "_" for c in event.event))
        outcome = handler(state or {"state": START}, event, now, shared or {})
        nexts = allowed[event.event]
        nexts = (nexts,) if isinstance(nexts, str) else nexts
        new = None if outcome.state is None else outcome.state.get("state")
        if outcome.state is not None and new not in nexts:
            raise AssertionError(f"{self.name}: handler for {event.event} went to {new}, "
                                 f"table allows {nexts}")
        return outcome
