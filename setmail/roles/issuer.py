"""The card issuer behind the payment gateway (D-130): decides authorisations, posts captures.

    IssAuthReq (0100) -> IssAuthRes (0110): 14 unknown card, 05 blocked, 54 expired/wrong expiry,
                                            05 other currency, 13 no positive amount, 51 over the
                                            available credit, else 00 and a hold of the amount
    IssCapReq  (0220) -> IssCapRes  (0230): 12 no approved hold, 94 already posted, 13 more than
                                            the hold, else 00: post the amount, release the hold
    IssRevReq  (0400) -> IssRevRes  (0410): 25 no approved authorisation under the XID, 12 another
                                            gateway's, another approval code or already posted,
                                            13 not the approved amount, else 00: release the hold
                                            (a repeat: 00 again, nothing released twice)

Why the shared state: the decision needs each card's running totals across transactions, so the
role keeps ``{pan: {"held": minor units, "posted": minor units}}`` under ``shared_key = "ledger"``
and the agent commits it with the transaction; the decision is then a pure function of (message,
accounts, totals, now).  Every change is also an effect (``ledger.hold``/``ledger.post``/
``ledger.decline``/``ledger.reverse``, ``setmail.agent.ledger``) that writes a row in the same
store transaction.

A request whose XID was already decided gets the same decision again (no second hold); the
agent's dedupe already answers an identical re-send.  Who may ask: only a gateway whose pinned
signature certificate signed the request; the answer is enveloped for that gateway's pinned
key-exchange certificate, and a capture or reversal must come from the gateway that got the hold.
Anything that does not open, verify or parse gets an unsigned SET Error and changes nothing.

``IssuerConfig``: ``name``, ``signature``/``key_exchange`` (Identity, pinned self-signed),
``gateways`` {address: (sig cert, kex cert)}, ``accounts`` {pan: Account}, ``suite``.
Transaction key: the header XID (hex).  State keeps the PAN under ``state["secret"]`` only.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509

from setmail.crypto.cms import Identity
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import START, Effect, Outcome, Role, Send
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import header_ids, unwrap
from setmail.roles.network_msgs import message_ids, open_network, seal, when, zero


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

    @cached_property
    def gateway_by_signer(self) -> dict[bytes, tuple[str, x509.Certificate]]:
        """thumbprint(pinned gateway sig cert) -> (gateway address, its kex cert)."""
        return {thumbprint(sig): (address, kex) for address, (sig, kex) in self.gateways.items()}


def pan_last4(pan: str) -> str:
    return pan[-4:]


def _decided(state: str) -> dict:
    """A state no request moves any more: each gets its answer (same decision, 12, 25, 94)."""
    return {"IssAuthReq": state, "IssCapReq": state, "IssRevReq": state, "Error": state}


class Issuer(Role):
    name = "issuer"
    shared_key = "ledger"
    TRANSITIONS = {
        START: {"IssAuthReq": ("HELD", "DECLINED"), "IssCapReq": START, "IssRevReq": START,
                "Error": START},
        "HELD": {"IssAuthReq": "HELD", "IssCapReq": ("POSTED", "HELD"),
                 "IssRevReq": ("REVERSED", "HELD"), "Error": "HELD"},
        "DECLINED": _decided("DECLINED"),
        "POSTED": _decided("POSTED"),
        "REVERSED": _decided("REVERSED"),
    }

    def __init__(self, config: IssuerConfig):
        self.config = config

    def transaction_key(self, event) -> str:
        xid = header_ids(event).get("xid")
        return xid.hex() if xid else "unroutable"

    def refuse(self, state, event, exc, now) -> Outcome:
        return refusal(state, event, exc, now, transaction=self.transaction_key(event),
                       suite=self.config.suite)

    def on_Error(self, state, event, now, shared) -> Outcome:
        """A gateway refused our answer: nothing to undo (its retry will ask again)."""
        key = self.transaction_key(event)
        return Outcome(key, None if state["state"] == START else dict(state))

    def _open(self, event, now):
        """(key, parsed, data, gateway address, gateway kex cert) of a pinned gateway's request."""
        parsed = unwrap(event, now)
        data, signed = open_network(parsed, self.config.key_exchange, self.config.gateway_by_signer,
                                    now, self.config.suite)
        address, kex = self.config.gateway_by_signer[thumbprint(signed.signer)]
        return self.transaction_key(event), parsed, data, address, kex

    def _answer(self, event, parsed, kex, request, code: str, amount: int, now, **fields) -> Send:
        """The response to ``request``: STAN, RRN, XID, RRPID and ids echoed, enveloped for the
        asking gateway's ``kex`` certificate."""
        kind = parsed.type.replace("Req", "Res")
        der = seal(kind, {"stan": request["stan"], "rrn": request["rrn"],
                          "response_code": code, "xid": request["xid"],
                          "amount": {**zero(request["amount"]), "amount": amount},
                          "transmitted": now.replace(microsecond=0), **fields},
                   self.config.signature, kex, now=now, rrpid=parsed.rrpid,
                   ids=message_ids(parsed), suite=self.config.suite)
        return Send(event.sender, kind, der, event.mail_id or None)

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

    @guarded
    def on_IssAuthReq(self, state, event, now, shared) -> Outcome:
        key, parsed, data, gateway, kex = self._open(event, now)
        if data["processing_code"] != "000000":
            raise ProtocolError("only purchases (processing code 000000) are handled",
                                "messageNotSupported")
        new_shared, effects = None, ()
        if state["state"] == START:
            pan, amount = data["pan"], data["amount"]
            code = self.decide(data, now, shared)
            held = amount["amount"] if code == "00" else 0
            state = {"state": "HELD" if held else "DECLINED", "xid": key, "gateway": gateway,
                     "pan_last4": pan_last4(pan), **amount, "response_code": code,
                     "authorized": held, "held": held,
                     "approval_code": fresh(3).hex().upper() if held else None,
                     "decided_at": when(now), "secret": {"pan": pan}}
            if held:
                new_shared = moved(shared, pan, held=held)
            effects = (ledger_effect("ledger.hold" if held else "ledger.decline", state, code,
                                     amount=amount["amount"]),)
        else:
            state = dict(state)  # decided before: the same answer, no second hold
        approval = {"approval_code": state["approval_code"]} if state["approval_code"] else {}
        send = self._answer(event, parsed, kex, data, state["response_code"], state["authorized"],
                            now, **approval)
        return Outcome(key, state, sends=(send,), effects=effects, shared=new_shared)

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
        new_shared, effects, posted = None, (), 0
        if code == "00":
            posted, hold = data["amount"]["amount"], state["held"]
            new_shared = moved(shared, state["secret"]["pan"], held=-hold, posted=posted)
            new_state.update(state="POSTED", posted=posted, held=0, posted_at=when(now))
            effects = (ledger_effect("ledger.post", state, code, amount=posted, released=hold),)
        send = self._answer(event, parsed, kex, data, code, posted, now)
        return Outcome(key, new_state, sends=(send,), effects=effects, shared=new_shared)

    # -- reversal --------------------------------------------------------------------------------
    def reversal_code(self, state, data, gateway: str) -> str:
        """DE 39 for a reversal request, in this order: is there an approval (25), is it this
        gateway's and not yet captured (12), is it the whole approved amount (13)."""
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
        new_shared, effects = None, ()
        released = state["authorized"] if code == "00" else 0
        if code == "00" and state["state"] == "HELD":  # a repeat releases nothing twice
            new_shared = moved(shared, state["secret"]["pan"], held=-state["held"])
            new_state.update(state="REVERSED", held=0, reversed_at=when(now))
            effects = (ledger_effect("ledger.reverse", state, code, amount=state["held"]),)
        send = self._answer(event, parsed, kex, data, code, released, now)
        return Outcome(key, new_state, sends=(send,), effects=effects, shared=new_shared)


def moved(shared: Mapping, pan: str, *, held: int = 0, posted: int = 0) -> dict:
    """The shared totals with ``pan``'s held and posted amounts moved by the given amounts."""
    totals = shared.get(pan, {"held": 0, "posted": 0})
    return {**shared, pan: {"held": totals["held"] + held, "posted": totals["posted"] + posted}}


def ledger_effect(kind: str, state: Mapping, code: str, **amounts) -> Effect:
    """The row data ``setmail.agent.ledger`` writes; the PAN only under ``secret``."""
    return Effect(kind, {"xid": state["xid"], "pan_last4": state["pan_last4"],
                         "currency": state["currency"], "code": code, **amounts,
                         "secret": {"pan": state["secret"]["pan"]}})
