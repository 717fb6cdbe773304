"""The card issuer behind the payment gateway (D-130): decides authorisations, posts captures,
credits refunds and settles batches (the request types are listed with their codes in
``roles/issuer_moves.py``, ``issuer_credits.py`` and ``issuer_clearing.py``).

    IssAuthReq (0100) -> IssAuthRes (0110): 14 unknown card, 05 blocked, 54 expired/wrong expiry,
                                            05 other currency, 13 no positive amount, 51 over the
                                            available credit, else 00 and a hold of the amount.
                                            A new STAN on an approved purchase (same card) is an
                                            incremental authorisation: its hold is added (D-174)

Why the shared state: the decision needs each card's running totals across transactions, so the
role keeps ``{pan: {"held", "posted", "credited"}}`` (minor units) and, under ``"pending"``, every
posting and credit not yet settled (``<purchase key>/<STAN>`` -> kind, amount, PAN; a clearing
moves them to settled, D-176) under ``shared_key = "ledger"``; the agent commits it with the
transaction, so the decision is a pure function of (message, accounts, totals, now).  Every change
is also an effect (``setmail.agent.ledger``) that writes rows in the same store transaction.

Against the mail attacker: only a gateway whose pinned signature certificate signed the request
may ask, and the answer goes to *that gateway's configured address* (never to From), enveloped
for its pinned key-exchange certificate.  A purchase is (gateway, merchant, XID): the transaction
key is ``<XID hex>.<tag>`` with tag = SHA-256(gateway thumbprint, 0, merID)[:8] hex, read from the
signed payload (opened once per event in ``transaction_key``; the pin is judged in the step), so two
merchants' purchases with one XID never meet.  Each request of a purchase has its own STAN: every
request that changed something (and every authorisation decision) is recorded under
``_answered["<type>:<STAN>"]`` (hidden from ``tx show``) with a fingerprint of its signed fields,
so the same request again (a re-delivery under another header) gets the same answer and changes
nothing, and another request under a STAN already used gets 94.  Refusals change nothing and are not recorded.  Input that does
not open, verify or parse changes nothing; it gets a SET Error, signed by the issuer and naming the
refused bytes (D-134), only when its signer is a pinned gateway (to that gateway's address).  A
hold nobody captures or reverses is released after ``hold_expiry`` (``timer:hold_expiry``), even if
the gateway is gone.

``IssuerConfig``: ``name``, ``signature``/``key_exchange`` (Identity, pinned self-signed),
``gateways`` {address: (sig cert, kex cert)}, ``accounts`` {pan: Account}, ``suite``,
``hold_expiry``, ``holders`` {cardholder agent: directory address} (where statements go).  State
keeps the PAN and expiry under ``state["secret"]`` only.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from cryptography import x509

from setmail.crypto.cms import Identity
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import START, Inbound, Outcome, Role, Send, SetTimer, TimerFired
from setmail.roles.issuer_books import (
    PENDING,
    available,
    fingerprint,
    issuer_key,
    ledger_effect,
    moved,
    pan_last4,
)
from setmail.roles.issuer_clearing import ClearingLeg
from setmail.roles.issuer_credits import CreditLeg
from setmail.roles.issuer_moves import MovesLeg
from setmail.roles.issuer_statement import StatementLeg
from setmail.roles.network_msgs import (
    check_signed,
    message_ids,
    opened,
    seal,
    when,
    zero,
)
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import unwrap

__all__ = ["Account", "Issuer", "IssuerConfig", "issuer_key", "pan_last4"]

#: key of input that names no purchase: nothing is ever stored under it
UNROUTABLE = "unroutable"
#: the request types the issuer answers
REQUESTS = ("IssAuthReq", "IssCapReq", "IssRevReq", "IssCredReq", "IssCredRevReq",
            "IssCapRevReq", "IssClearReq")


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
    #: cardholder agent name -> its directory address (statements go there, never elsewhere)
    holders: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def gateway_by_signer(self) -> dict[bytes, tuple[str, x509.Certificate]]:
        """thumbprint(pinned gateway sig cert) -> (gateway address, its kex cert)."""
        return {thumbprint(sig): (address, kex) for address, (sig, kex) in self.gateways.items()}


def _decided(state: str) -> dict:
    """A state no request moves any more: each gets its answer (same decision, 12, 25, 94)."""
    return {**{kind: state for kind in REQUESTS}, "Error": state, "timer:hold_expiry": state}


class Issuer(MovesLeg, CreditLeg, ClearingLeg, StatementLeg, Role):
    name = "issuer"
    shared_key = "ledger"
    shared_parts = (PENDING,)
    TRANSITIONS = {
        START: {"IssAuthReq": ("HELD", "DECLINED"), "IssCapReq": START, "IssRevReq": START,
                "IssCredReq": START, "IssCredRevReq": START, "IssCapRevReq": START,
                "IssClearReq": ("CLEARED", "UNBALANCED"), "Error": START,
                "statement": "SENT"},
        "HELD": {"IssAuthReq": "HELD", "IssCapReq": ("POSTED", "HELD"),
                 "IssRevReq": ("REVERSED", "HELD", "POSTED"), "IssCredReq": "HELD",
                 "IssCredRevReq": "HELD", "IssCapRevReq": "HELD", "IssClearReq": "HELD",
                 "Error": "HELD", "timer:hold_expiry": ("EXPIRED", "POSTED")},
        "POSTED": {"IssAuthReq": ("POSTED", "HELD"), "IssCapReq": "POSTED",
                   "IssRevReq": "POSTED", "IssCredReq": "POSTED", "IssCredRevReq": "POSTED",
                   "IssCapRevReq": ("HELD", "POSTED"), "IssClearReq": "POSTED",
                   "Error": "POSTED", "timer:hold_expiry": "POSTED"},
        "DECLINED": _decided("DECLINED"),
        "REVERSED": _decided("REVERSED"),
        "EXPIRED": _decided("EXPIRED"),
        "CLEARED": _decided("CLEARED"),
        "UNBALANCED": {**_decided("UNBALANCED"), "IssClearReq": ("CLEARED", "UNBALANCED")},
        "SENT": {"statement": "SENT"},
    }

    def __init__(self, config: IssuerConfig):
        self.config = config

    def transaction_key(self, event) -> str:
        """From the signed payload (XID, merchant) and its signer, opened once per event."""
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        if not isinstance(event, Inbound):
            return self.command_key(event)
        if not event.message_type.startswith("Iss"):
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
        """(key, parsed, data, gateway address, gateway kex cert) of a pinned gateway's
        request."""
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

    # -- repeats ---------------------------------------------------------------------------------
    @staticmethod
    def recorded(state, kind: str, data) -> dict | None:
        """The answer recorded for this request type and STAN, if any."""
        return (state.get("_answered") or {}).get(f"{kind}:{data['stan']}")

    def repeat(self, key, state, event, parsed, data, gateway, kex, kind, now) -> Outcome | None:
        """The recorded answer again for the same request, 94 for another one under its STAN;
        None when this STAN is new.  Nothing changes either way."""
        found = self.recorded(state, kind, data)
        if found is None:
            return None
        if found["fp"] != fingerprint(data):
            send = self._answer(event, parsed, gateway, kex, data, "94", 0, now)
        else:
            extra = ({"approval_code": found["approval_code"]}
                     if found.get("approval_code") else {})
            send = self._answer(event, parsed, gateway, kex, data, found["code"],
                                found["amount"], now, **extra)
        return Outcome(key, dict(state), sends=(send,), peer=gateway)

    @staticmethod
    def record(state: dict, kind: str, data, code: str, amount: int, **extra) -> None:
        """Remember the answer to this request (in place), for its repeats."""
        state["_answered"] = {**(state.get("_answered") or {}), f"{kind}:{data['stan']}": {
            "fp": fingerprint(data), "code": code, "amount": amount, **extra}}

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
        if amount["amount"] > available(account.limit, totals.get(pan, {})):
            return "51"
        return "00"

    @guarded
    def on_IssAuthReq(self, state, event, now, shared) -> Outcome:
        key, parsed, data, gateway, kex = self._open(event, now)
        if data["processing_code"] != "000000":
            raise ProtocolError("only purchases (processing code 000000) are handled",
                                "messageNotSupported")
        if state["state"] != START:
            again = self.repeat(key, state, event, parsed, data, gateway, kex, "IssAuthReq", now)
            if again is not None:
                return again
            if not self.incremental(state, data, gateway):
                send = self._answer(event, parsed, gateway, kex, data, "94", 0, now)
                return Outcome(key, dict(state), sends=(send,), peer=gateway)
        pan, amount = data["pan"], data["amount"]
        code = self.decide(data, now, shared)
        held = amount["amount"] if code == "00" else 0
        approval = fresh(3).hex().upper() if held else None
        if state["state"] == START:
            new = {"state": "HELD" if held else "DECLINED", "xid": data["xid"].hex(),
                   "gateway": gateway, "merchant_id": data["merchant_id"],
                   "pan_last4": pan_last4(pan), **amount, "stan": data["stan"],
                   "rrn": data["rrn"], "response_code": code, "authorized": held, "held": held,
                   "posted": 0, "credited": 0, "approval_code": approval,
                   "approval_codes": [approval] if held else [], "decided_at": when(now),
                   "secret": {"pan": pan, "expiry": data["card_expiry"]}}
        else:  # an incremental authorisation of an approved purchase (split shipment, recurring)
            new = dict(state)
            if held:
                new.update(state="HELD", authorized=state["authorized"] + held,
                           held=state["held"] + held,
                           approval_codes=[*state["approval_codes"], approval])
        self.record(new, "IssAuthReq", data, code, held,
                    **({"approval_code": approval} if held else {}))
        new_shared, timers = None, ()
        if held:
            new_shared = moved(shared, pan, held=held)
            due = now + self.config.hold_expiry
            new["hold_expires_at"] = when(due)
            timers = (SetTimer("hold_expiry", due, {"transaction": key}),)
        effect = ledger_effect("ledger.hold" if held else "ledger.decline", key, new, code,
                               amount=amount["amount"], stan=data["stan"])
        send = self._answer(event, parsed, gateway, kex, data, code, held, now,
                            **({"approval_code": approval} if held else {}))
        return Outcome(key, new, sends=(send,), effects=(effect,), shared=new_shared,
                       timers=timers, peer=gateway)

    @staticmethod
    def incremental(state, data, gateway: str) -> bool:
        """May a new STAN add to this purchase's authorisation?  Only an approved purchase not
        reversed or expired, of the same gateway, card, expiry, currency and RRN."""
        amount = data["amount"]
        return (state["state"] in ("HELD", "POSTED") and state["gateway"] == gateway
                and state["secret"]["pan"] == data["pan"]
                and state["secret"].get("expiry") == data["card_expiry"]
                and (state["currency"], state["amt_exp10"]) == (amount["currency"],
                                                                amount["amt_exp10"])
                and state["rrn"] == data["rrn"])

    def on_timer_hold_expiry(self, state, event, now, shared) -> Outcome:
        """Nobody captured or reversed the hold in ``hold_expiry``: give it back, so nothing is
        held for ever even when the gateway is gone (a later IssCapReq gets 12).  What was posted
        stays posted."""
        key = self.transaction_key(event)
        if state["state"] != "HELD" or state.get("held", 0) <= 0:
            return Outcome(key, dict(state))  # stale
        days = self.config.hold_expiry / dt.timedelta(days=1)
        new = {**state, "state": "POSTED" if state.get("posted") else "EXPIRED", "held": 0,
               "expired": {"at": when(now), "reason": f"neither captured nor reversed within "
                                                      f"{days:g} days: hold released"}}
        return Outcome(key, new, shared=moved(shared, state["secret"]["pan"], held=-state["held"]),
                       effects=(ledger_effect("ledger.expire", key, state, "00",
                                              amount=state["held"]),))

