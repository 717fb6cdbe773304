"""The card issuer behind the payment gateway (D-130): decides authorisations, posts captures.

    IssAuthReq (0100) -> IssAuthRes (0110): 14 unknown card, 05 blocked, 54 expired/wrong expiry,
                                            05 other currency, 13 no positive amount, 51 over the
                                            available credit, else 00 and a hold of the amount
    IssCapReq  (0220) -> IssCapRes  (0230): 12 no approved hold, 94 already posted, 13 more than
                                            the hold, else 00: post the amount, release the hold
    IssRevReq  (0400) -> IssRevRes  (0410): 25 no approved authorisation (or its hold expired),
                                            12 another gateway's, another approval code or
                                            already posted, 13 not the approved amount, else 00:
                                            release the hold (a repeat: 00 again, nothing
                                            released twice)

Why the shared state: the decision needs each card's running totals across transactions, so the
role keeps ``{pan: {"held": minor units, "posted": minor units}}`` under ``shared_key = "ledger"``
and the agent commits it with the transaction; the decision is then a pure function of (message,
accounts, totals, now).  Every change is also an effect (``ledger.hold``/``ledger.post``/
``ledger.decline``/``ledger.reverse``/``ledger.expire``, ``setmail.agent.ledger``) that writes a
row in the same store transaction.

Against the mail attacker: only a gateway whose pinned signature certificate signed the request
may ask, and the answer goes to *that gateway's configured address* (never to From), enveloped
for its pinned key-exchange certificate.  A purchase is (gateway, merchant, XID): the transaction
key is ``<XID hex>.<tag>`` with tag = SHA-256(gateway thumbprint, 0, merID)[:8] hex, read from the
signed payload (opened once per event in ``transaction_key``; the pin is judged in the step), so two
merchants' purchases with one XID never meet.  A request for a decided purchase gets the same
decision only when it is the same request (same PAN, expiry, amount, STAN and RRN: a re-delivery
with another header); any other gets 94 and changes nothing, so one card's decision is never
handed to another card.  A capture or reversal must come from the gateway that got the hold.
Input that does not open, verify or parse changes nothing; it gets a SET Error, signed by the
issuer and naming the refused bytes (D-134), only when its signer is a pinned gateway (to that
gateway's address).  A hold nobody captures or reverses is released after ``hold_expiry``
(``timer:hold_expiry``: EXPIRED, ledger row ``expired``), even if the gateway is gone.

``IssuerConfig``: ``name``, ``signature``/``key_exchange`` (Identity, pinned self-signed),
``gateways`` {address: (sig cert, kex cert)}, ``accounts`` {pan: Account}, ``suite``,
``hold_expiry``.  State keeps the PAN and expiry under ``state["secret"]`` only.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509

from setmail.crypto.cms import Identity
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import (START, CancelTimer, Effect, Inbound, Outcome, Role, Send,
                                SetTimer, TimerFired)
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import unwrap
from setmail.roles.network_msgs import check_signed, message_ids, opened, seal, when, zero

#: key of input that names no purchase: nothing is ever stored under it
UNROUTABLE = "unroutable"


@dataclass(frozen=True)
class Account:
    """One card account: ``limit`` in minor units of ``currency`` (ISO 4217 numeric)."""

    expiry: str            # YYYYMM
    limit: int
    currency: int
    status: str = "active"  # anything else is blocked (05)
    holder: str = ""
    amt_exp10: int = -2


@dataclass(frozen=True)
class IssuerConfig:
    name: str
    signature: Identity
    key_exchange: Identity
    gateways: Mapping[str, tuple[x509.Certificate, x509.Certificate]]
    accounts: Mapping[str, Account]
    suite: CryptoSuite = DEFAULT_SUITE
    hold_expiry: dt.timedelta = dt.timedelta(days=10)

    @cached_property
    def gateway_by_signer(self) -> dict[bytes, tuple[str, x509.Certificate]]:
        """thumbprint(pinned gateway sig cert) -> (gateway address, its kex cert)."""
        return {thumbprint(sig): (address, kex) for address, (sig, kex) in self.gateways.items()}


def pan_last4(pan: str) -> str:
    return pan[-4:]


def issuer_key(xid: bytes, gateway_thumb: bytes, mer_id: str) -> str:
    """``<XID hex>.<tag>``: one gateway's purchase of one merchant (``setmail tx show <xid>``
    finds it by the prefix)."""
    tag = hashlib.sha256(gateway_thumb + b"\x00" + mer_id.encode()).digest()[:8]
    return f"{xid.hex()}.{tag.hex()}"


def _decided(state: str) -> dict:
    """A state no request moves any more: each gets its answer (same decision, 12, 25, 94)."""
    return {"IssAuthReq": state, "IssCapReq": state, "IssRevReq": state, "Error": state,
            "timer:hold_expiry": state}


class Issuer(Role):
    name = "issuer"
    shared_key = "ledger"
    TRANSITIONS = {
        START: {"IssAuthReq": ("HELD", "DECLINED"), "IssCapReq": START, "IssRevReq": START,
                "Error": START},
        "HELD": {"IssAuthReq": "HELD", "IssCapReq": ("POSTED", "HELD"),
                 "IssRevReq": ("REVERSED", "HELD"), "Error": "HELD",
                 "timer:hold_expiry": "EXPIRED"},
        "DECLINED": _decided("DECLINED"),
        "POSTED": _decided("POSTED"),
        "REVERSED": _decided("REVERSED"),
        "EXPIRED": _decided("EXPIRED"),
    }

    def __init__(self, config: IssuerConfig):
        self.config = config

    def transaction_key(self, event) -> str:
        """From the signed payload (XID, merchant) and its signer, opened once per event."""
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        if not isinstance(event, Inbound) or not event.message_type.startswith("Iss"):
            return UNROUTABLE
        try:
            data, signed = opened(event, self.config.key_exchange, self.config.suite)
        except SetmailError:
            return UNROUTABLE
        return issuer_key(data["xid"], thumbprint(signed.signer), data["merchant_id"])

    def _claimed(self, event) -> str | None:
        """The configured address of the pinned gateway whose certificate signed ``event``
        (the signature verified; whatever else may have failed), else None."""
        try:
            _, signed = opened(event, self.config.key_exchange, self.config.suite)
        except (SetmailError, KeyError):
            return None
        found = self.config.gateway_by_signer.get(thumbprint(signed.signer))
        return found[0] if found else None

    def refuse(self, state, event, exc, now) -> Outcome:
        cfg = self.config
        return refusal(state, event, exc, now, transaction=self.transaction_key(event),
                       to=self._claimed(event), signer=cfg.signature, suite=cfg.suite)

    def on_Error(self, state, event, now, shared) -> Outcome:
        """We never ask, so an Error answers nothing of ours: nothing changes, never answered."""
        key = self.transaction_key(event)
        return Outcome(key, None if state["state"] == START else dict(state),
                       refused="an Error, but the issuer has no request outstanding")

    def _open(self, event, now):
        """(key, data, gateway address, gateway kex cert) of a pinned gateway's request."""
        cfg = self.config
        parsed = unwrap(event, now)
        data, signed = opened(event, cfg.key_exchange, cfg.suite)
        check_signed(parsed, data, signed, cfg.gateway_by_signer, now)
        address, kex = cfg.gateway_by_signer[thumbprint(signed.signer)]
        return self.transaction_key(event), parsed, data, address, kex

    def _answer(self, event, parsed, gateway: str, kex, request, code: str, amount: int, now,
                **fields) -> Send:
        """The response to ``request``: STAN, RRN, XID, DE 42, RRPID and ids echoed, enveloped
        for the asking gateway's ``kex`` certificate, to its configured address."""
        kind = parsed.type.replace("Req", "Res")
        der = seal(kind, {"stan": request["stan"], "rrn": request["rrn"],
                          "response_code": code, "xid": request["xid"],
                          "amount": {**zero(request["amount"]), "amount": amount},
                          "transmitted": now.replace(microsecond=0),
                          "merchant_id": request["merchant_id"], **fields},
                   self.config.signature, kex, now=now, rrpid=parsed.rrpid,
                   ids=message_ids(parsed), suite=self.config.suite)
        return Send(gateway, kind, der, event.mail_id or None)

    # -- authorisation ---------------------------------------------------------------------------
    def decide(self, data, now: dt.datetime, totals: Mapping) -> str:
        """ISO 8583 DE 39 for an authorisation request, in the contract's order."""
        pan, amount = data["pan"], data["amount"]
        account = self.config.accounts.get(pan)
        if account is None:
            return "14"
        if account.status != "active":
            return "05"
        expiry = data["card_expiry"]
        if expiry != account.expiry or expiry < f"{now:%Y%m}":
            return "54"
        if (amount["currency"], amount["amt_exp10"]) != (account.currency, account.amt_exp10):
            return "05"
        if amount["amount"] <= 0:
            return "13"
        used = totals.get(pan, {})
        if amount["amount"] > account.limit - used.get("held", 0) - used.get("posted", 0):
            return "51"
        return "00"

    @staticmethod
    def same_request(state, data) -> bool:
        """Is ``data`` the request ``state`` decided (a re-delivery), not another one under the
        same key?"""
        amount = data["amount"]
        return (state["secret"]["pan"] == data["pan"]
                and state["secret"].get("expiry") == data["card_expiry"]
                and (state["currency"], state["amount"], state["amt_exp10"]) == (
                    amount["currency"], amount["amount"], amount["amt_exp10"])
                and (state.get("stan"), state.get("rrn")) == (data["stan"], data["rrn"]))

    @guarded
    def on_IssAuthReq(self, state, event, now, shared) -> Outcome:
        key, parsed, data, gateway, kex = self._open(event, now)
        if data["processing_code"] != "000000":
            raise ProtocolError("only purchases (processing code 000000) are handled",
                                "messageNotSupported")
        if state["state"] != START:  # decided before: the same answer, if the same request
            if not self.same_request(state, data):
                send = self._answer(event, parsed, gateway, kex, data, "94", 0, now)
                return Outcome(key, dict(state), sends=(send,), peer=gateway)
            approval = {"approval_code": state["approval_code"]} if state["approval_code"] else {}
            send = self._answer(event, parsed, gateway, kex, data, state["response_code"],
                                state["authorized"], now, **approval)
            return Outcome(key, dict(state), sends=(send,), peer=gateway)
        pan, amount = data["pan"], data["amount"]
        code = self.decide(data, now, shared)
        held = amount["amount"] if code == "00" else 0
        state = {"state": "HELD" if held else "DECLINED", "xid": data["xid"].hex(),
                 "gateway": gateway, "merchant_id": data["merchant_id"],
                 "pan_last4": pan_last4(pan), **amount, "stan": data["stan"], "rrn": data["rrn"],
                 "response_code": code, "authorized": held, "held": held,
                 "approval_code": fresh(3).hex().upper() if held else None,
                 "decided_at": when(now), "secret": {"pan": pan, "expiry": data["card_expiry"]}}
        new_shared, timers = None, ()
        if held:
            new_shared = moved(shared, pan, held=held)
            due = now + self.config.hold_expiry
            state["hold_expires_at"] = when(due)
            timers = (SetTimer("hold_expiry", due, {"transaction": key}),)
        effect = ledger_effect("ledger.hold" if held else "ledger.decline", state, code,
                               amount=amount["amount"])
        approval = {"approval_code": state["approval_code"]} if held else {}
        send = self._answer(event, parsed, gateway, kex, data, code, held, now, **approval)
        return Outcome(key, state, sends=(send,), effects=(effect,), shared=new_shared,
                       timers=timers, peer=gateway)

    def on_timer_hold_expiry(self, state, event, now, shared) -> Outcome:
        """Nobody captured or reversed the hold in ``hold_expiry``: give it back, so nothing is
        held for ever even when the gateway is gone (a later IssCapReq gets 12)."""
        key = self.transaction_key(event)
        if state["state"] != "HELD":
            return Outcome(key, dict(state))  # stale
        days = self.config.hold_expiry / dt.timedelta(days=1)
        new = {**state, "state": "EXPIRED", "held": 0, "expired": {
            "at": when(now), "reason": f"neither captured nor reversed within {days:g} days: "
                                       "hold released"}}
        return Outcome(key, new, shared=moved(shared, state["secret"]["pan"], held=-state["held"]),
                       effects=(ledger_effect("ledger.expire", state, "00",
                                              amount=state["held"]),))

    # -- completion ------------------------------------------------------------------------------
    def capture_code(self, state, data, gateway: str) -> str:
        amount = data["amount"]
        if (state["state"] not in ("HELD", "POSTED") or state["secret"]["pan"] != data["pan"]
                or state["approval_code"] != data["approval_code"]
                or state["gateway"] != gateway):
            return "12"
        if state["state"] == "POSTED":
            return "94"
        if ((amount["currency"], amount["amt_exp10"]) != (state["currency"], state["amt_exp10"])
                or not 0 < amount["amount"] <= state["held"]):
            return "13"
        return "00"

    @guarded
    def on_IssCapReq(self, state, event, now, shared) -> Outcome:
        key, parsed, data, gateway, kex = self._open(event, now)
        code = self.capture_code(state, data, gateway)
        new_state = None if state["state"] == START else dict(state)
        new_shared, effects, posted, timers = None, (), 0, ()
        if code == "00":
            posted, hold = data["amount"]["amount"], state["held"]
            new_shared = moved(shared, state["secret"]["pan"], held=-hold, posted=posted)
            new_state.update(state="POSTED", posted=posted, held=0, posted_at=when(now))
            effects = (ledger_effect("ledger.post", state, code, amount=posted, released=hold),)
            timers = (CancelTimer("hold_expiry"),)
        send = self._answer(event, parsed, gateway, kex, data, code, posted, now)
        return Outcome(key, new_state, sends=(send,), effects=effects, shared=new_shared,
                       timers=timers, peer=gateway)

    # -- reversal --------------------------------------------------------------------------------
    def reversal_code(self, state, data, gateway: str) -> str:
        """DE 39 for a reversal request, in this order: is there an approval still held or
        reversed (25), is it this gateway's and not yet captured (12), is it the whole approved
        amount (13)."""
        if state["state"] not in ("HELD", "POSTED", "REVERSED"):
            return "25"
        if (state["state"] == "POSTED" or state["gateway"] != gateway
                or state["approval_code"] != data["approval_code"]):
            return "12"
        asked = tuple(data["amount"][k] for k in ("currency", "amt_exp10", "amount"))
        whole = (state["currency"], state["amt_exp10"], state["authorized"])
        return "00" if asked == whole else "13"

    @guarded
    def on_IssRevReq(self, state, event, now, shared) -> Outcome:
        key, parsed, data, gateway, kex = self._open(event, now)
        code = self.reversal_code(state, data, gateway)
        new_state = None if state["state"] == START else dict(state)
        new_shared, effects, timers = None, (), ()
        released = state["authorized"] if code == "00" else 0
        if code == "00" and state["state"] == "HELD":  # a repeat releases nothing twice
            new_shared = moved(shared, state["secret"]["pan"], held=-state["held"])
            new_state.update(state="REVERSED", held=0, reversed_at=when(now),
                             reversal_reason=data["reason_code"])
            effects = (ledger_effect("ledger.reverse", state, code, amount=state["held"]),)
            timers = (CancelTimer("hold_expiry"),)
        send = self._answer(event, parsed, gateway, kex, data, code, released, now)
        return Outcome(key, new_state, sends=(send,), effects=effects, shared=new_shared,
                       timers=timers, peer=gateway)


def moved(shared: Mapping, pan: str, *, held: int = 0, posted: int = 0) -> dict:
    """The shared totals with ``pan``'s held and posted amounts moved by the given amounts."""
    totals = shared.get(pan, {"held": 0, "posted": 0})
    return {**shared, pan: {"held": totals["held"] + held, "posted": totals["posted"] + posted}}


def ledger_effect(kind: str, state: Mapping, code: str, **amounts) -> Effect:
    """The row data ``setmail.agent.ledger`` writes; the PAN only under ``secret``."""
    return Effect(kind, {"xid": state["xid"], "pan_last4": state["pan_last4"],
                         "currency": state["currency"], "code": code, **amounts,
                         "secret": {"pan": state["secret"]["pan"]}})
