"""One outstanding request and the authenticated answers it accepts.

Every party that asks and waits keeps the same record under the same rules: the wallet asking its
merchant (PInitReq, PReq, InqReq), the merchant asking its gateway (AuthReq, CapReq), the gateway
asking the issuer (IssAuthReq, IssCapReq, IssRevReq), an end entity asking a CA.  So the rules are
written once, here, and each role composes an ``Exchange`` (one per concurrent kind of request: the
wallet's inquiry has its own slot and timer beside the purchase's).

Rules (docs/threat-model.md):

* **The counterpart is named when asking, never learnt from a mail.**  The record keeps ``to``
  (an address from configuration or the world's directory) and ``pin``, how the counterpart's
  signature certificate is recognised (``pin_matches``).  Re-sends go to ``to``.
* **An answer is accepted only as an answer to this request**: its type is one the request
  ``expects``, its clear header repeats the request's RRPID, and its signer matches the pin
  (``accept``).  The role then checks what the message itself must echo (tags, challenges).
* **Re-sends are the same bytes** (``on_timer``), up to ``max_retries`` times: the responder's
  dedupe answers an identical re-send with its stored answer.  When they are spent the role decides
  what giving up means (``on_timer``'s ``give_up``).
* **An Error ends the request only if it is signed by the pinned counterpart and names exactly
  the bytes we sent** (``refusedHash`` = SHA-256 of our wrapper, D-134): verdict ``ENDS``.  Any
  other Error that repeats our RRPID (unsigned, another signer, another hash: anybody can copy a
  clear header) is ``NUDGE``: noted, and it brings the next re-send forward, at most once per
  attempt so a flood of them cannot make us send more.  Every other Error is ``UNRELATED``.
  Nothing here ever answers an Error.

State: ``state[slot]`` = {"type", "to", "der" (hex), "rrpid" (hex), "digest" (hex, SHA-256 of
the wrapper), "expects" [types], "pin" {...}, "attempts", "nudged" (the attempt a NUDGE moved the
re-send forward in, -1: none)}.  Timer payloads carry ``{"transaction": key}``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from setmail.errors import ProtocolError, SetmailError
from setmail.pki.setext import read_merchant_data
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import CancelTimer, Effect, Inbound, Outcome, Send, SetTimer
from setmail.roles.refusal import ReceivedError, read_error
from setmail.roles.wire import Parsed, h, unh, unwrap

ENDS, NUDGE, UNRELATED = "ends", "nudge", "unrelated"


# --- pins ----------------------------------------------------------------------------------------
def subject_hex(cert: x509.Certificate) -> str:
    """The DER of a certificate's subject name, as hex: one entity's signature and key-exchange
    certificates (and its renewals) share it."""
    return cert.subject.public_bytes().hex()


def pin(*, thumb: x509.Certificate | None = None, subject: x509.Certificate | None = None,
        mer_id: str | None = None) -> dict:
    """A pin: every given criterion must hold.  ``thumb``: exactly this certificate; ``subject``:
    any certificate of the entity that holds this one (same subject name; the role's own path
    check decides the certificate type); ``mer_id``: a merchant certificate with this merID."""
    out: dict = {}
    if thumb is not None:
        out["thumb"] = thumbprint(thumb).hex()
    if subject is not None:
        out["subject"] = subject_hex(subject)
    if mer_id is not None:
        out["mer_id"] = mer_id
    return out


def pin_matches(pin_: Mapping[str, Any], cert: x509.Certificate | None) -> bool:
    """Does ``cert`` satisfy every criterion of ``pin_``?  An empty pin accepts any signer the
    role's path check accepted (only for a first answer SET gives no way to predict, e.g. the CA
    certificate a registration is answered with; the role then pins its thumbprint)."""
    if cert is None:
        return False
    if "thumb" in pin_ and thumbprint(cert).hex() != pin_["thumb"]:
        return False
    if "subject" in pin_ and subject_hex(cert) != pin_["subject"]:
        return False
    if "mer_id" in pin_:
        info = read_merchant_data(cert)
        if info is None or info.mer_id != pin_["mer_id"]:
            return False
    return True


# --- verdicts on Errors --------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What a received Error means for an outstanding request (``ENDS``, ``NUDGE``, ``UNRELATED``),
    its SET code when it could be read, and a sentence for the log and the state."""

    kind: str
    code: str | None
    why: str


def _names(err: ReceivedError | None, parsed: Parsed | None, rec: Mapping) -> bool:
    """Does the Error repeat our request's RRPID (in its ErrorMsg, or in its own clear header when
    its body could not be trusted) or our bytes' beginning (BadWrapper)?"""
    rrpid = unh(rec["rrpid"])
    if err is not None:
        if err.rrpid is not None:
            return err.rrpid == rrpid
        if err.bad_wrapper:
            return rec["der"].startswith(err.bad_wrapper.hex())
    return parsed is not None and parsed.rrpid == rrpid


# --- the exchange --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exchange:
    """How one kind of request waits: where its record lives (``slot``), its timer's name, how
    long to wait (``retry_after``), how often to re-send (``max_retries``) and how soon a NUDGE
    brings the re-send (``nudge_after``)."""

    retry_after: dt.timedelta = dt.timedelta(minutes=30)
    max_retries: int = 3
    slot: str = "out"
    timer: str = "retry"
    nudge_after: dt.timedelta = dt.timedelta(seconds=60)

    # -- asking --------------------------------------------------------------------------------
    def ask(self, state: dict, key: str, *, to: str, type_name: str, der: bytes, rrpid: bytes,
            expects: Iterable[str], pin_: Mapping[str, Any], now: dt.datetime,
            effects: Iterable[Effect] = (), cancel: Iterable[str] = ()) -> Outcome:
        """Send ``der`` to ``to`` and wait for one of ``expects`` from the pinned counterpart."""
        state[self.slot] = {"type": type_name, "to": to, "der": der.hex(), "rrpid": h(rrpid),
                            "digest": hashlib.sha256(der).hexdigest(), "expects": list(expects),
                            "pin": dict(pin_), "attempts": 0, "nudged": -1}
        timers = (*[CancelTimer(n) for n in cancel], self._timer(key, now + self.retry_after))
        return Outcome(key, state, sends=(Send(to, type_name, der),), effects=tuple(effects),
                       timers=timers)

    def pending(self, state: Mapping) -> dict | None:
        """The outstanding request, or None."""
        return state.get(self.slot) or None

    def _timer(self, key: str, due: dt.datetime) -> SetTimer:
        return SetTimer(self.timer, due, {"transaction": key})

    # -- answers ---------------------------------------------------------------------------------
    def accept(self, state: Mapping, parsed: Parsed, signer: x509.Certificate | None) -> dict:
        """The outstanding record ``parsed`` answers, or ProtocolError: nothing outstanding, a type
        the request does not expect, another RRPID, or a signer the pin does not match."""
        rec = self.pending(state)
        if rec is None or parsed.type not in rec["expects"]:
            raise ProtocolError(f"{parsed.type} answers no request outstanding here",
                                "challengeMismatch")
        if parsed.rrpid != unh(rec["rrpid"]):
            raise ProtocolError(f"{parsed.type} names another request (RRPID)", "badMessageHeader")
        if not pin_matches(rec["pin"], signer):
            raise ProtocolError(f"{parsed.type} is signed by another party than the one asked",
                                "invalidCertificate")
        return rec

    def settle(self, state: dict) -> tuple[dict, tuple[CancelTimer, ...]]:
        """The request is answered (or abandoned): forget it and its timer."""
        state = dict(state)
        state.pop(self.slot, None)
        return state, (CancelTimer(self.timer),)

    def repin(self, state: dict, cert: x509.Certificate) -> dict:
        """Narrow the pin to exactly ``cert`` (the first answer named the counterpart's
        certificate; every later answer of this transaction must come from it)."""
        rec = dict(self.pending(state) or {})
        if rec:
            rec["pin"] = {**rec["pin"], "thumb": thumbprint(cert).hex()}
            state[self.slot] = rec
        return state

    # -- timers ----------------------------------------------------------------------------------
    def on_timer(self, state: Mapping, key: str, now: dt.datetime,
                 give_up: Callable[[str], Outcome]) -> Outcome:
        """Re-send the same bytes; when the re-sends are spent, ``give_up(why)`` (the role ends the
        request its own way and calls ``settle``); a stale timer (nothing outstanding) changes
        nothing."""
        rec = self.pending(state)
        if rec is None:
            return Outcome(key, dict(state))
        if rec["attempts"] >= self.max_retries:
            return give_up(f"no answer to {rec['type']} after {rec['attempts']} re-sends")
        rec = {**rec, "attempts": rec["attempts"] + 1}
        return Outcome(key, {**state, self.slot: rec},
                       sends=(Send(rec["to"], rec["type"], unh(rec["der"])),),
                       timers=(self._timer(key, now + self.retry_after),))

    # -- Errors ----------------------------------------------------------------------------------
    def judge(self, state: Mapping, event: Inbound, now: dt.datetime, *,
              validate: Callable | None, suite) -> Verdict:
        """What the Error ``event`` means for the outstanding request.  ``validate``: the path
        check a signer must pass (the counterpart's certificate type); the pin does the rest."""
        rec = self.pending(state)
        if rec is None:
            return Verdict(UNRELATED, None, "Error, but no request is outstanding")
        parsed = err = None
        try:
            parsed = unwrap(event, now)
            err = read_error(parsed, validate=validate, suite=suite)
        except SetmailError as exc:
            if _names(None, parsed, rec):
                return Verdict(NUDGE, None, f"unreadable or unverifiable Error naming our "
                               f"{rec['type']}: {exc}")
            return Verdict(UNRELATED, None, f"unreadable Error: {exc}")
        if not _names(err, parsed, rec):
            return Verdict(UNRELATED, err.code, f"Error {err.code} names another request")
        if err.signer is None:
            return Verdict(NUDGE, err.code, f"unsigned Error {err.code} naming our {rec['type']}")
        if not pin_matches(rec["pin"], err.signer):
            return Verdict(NUDGE, err.code, f"Error {err.code} naming our {rec['type']} signed by "
                           "another party than the one asked")
        if err.refused_hash is None or err.refused_hash.hex() != rec["digest"]:
            return Verdict(NUDGE, err.code, f"signed Error {err.code} names other bytes than our "
                           f"{rec['type']}")
        return Verdict(ENDS, err.code, f"{rec['type']} refused: {err.code}")

    def nudge(self, state: dict, key: str, now: dt.datetime) -> tuple[dict, tuple[SetTimer, ...]]:
        """Bring the next re-send forward (to ``nudge_after`` from now), once per attempt."""
        rec = self.pending(state)
        if rec is None or rec["nudged"] == rec["attempts"]:
            return state, ()
        due = now + min(self.nudge_after, self.retry_after)
        return {**state, self.slot: {**rec, "nudged": rec["attempts"]}}, (self._timer(key, due),)
