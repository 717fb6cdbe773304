"""The payment gateway (docs/purchase.md): authorises and captures for merchants through the issuer.

    AuthReq  = EncB(M, P, AuthReqData, PI)  -> checks -> IssAuthReq (0100) to the issuer
    IssAuthRes (0110)                       -> AuthRes = EncB(P, M, AuthResData, AuthResBaggage)
    CapReq   = EncB(M, P, CapReqData, [CapToken]) -> checks -> IssCapReq (0220)
    IssCapRes (0230)                        -> CapRes = Enc(P, M, CapResData)
    IssAuthRes 00 after we gave up          -> IssRevReq (0400, reason 68); IssRevRes is recorded
    auth_expiry after approval, uncaptured  -> PAN wiped, IssRevReq (0400, reason 21), EXPIRED

Why it looks like this: the gateway is the only party that sees the card (PANData) and it must
see nothing of the order (OIData stays with the merchant; HOD and DD(OIData) are all it gets).

Against the mail attacker (docs/threat-model.md):

* **A purchase is one merchant's XID.**  The transaction key is ``<XID hex>.<merchant tag hex>``
  (``purchase_key``; the tag is SHA-256(merID)[:8]), read from the request *as signed*: the
  envelope is opened and the signature verified in ``transaction_key`` (pure, cached on the event),
  the signer's path validated in the step.  So another merchant can neither burn nor capture
  this merchant's XID, and an XID is spent (a state stored) only by an AuthReq whose every check
  passed, dual signature included; a failed one leaves no state.
* **Answers go to the directory**, never to From: AuthRes/CapRes to the directory address of the
  authenticated merchant (``config.directory``, by merID); a merchant not in the directory gets
  nothing.  A request we refuse gets a signed Error naming its digest, and only when its signed
  content names a merchant of the directory (to that merchant's address).
* **Repeats**: a request whose signed RRPID is the one this purchase already took (a replay with
  a changed clear header: other bytes, so the agent's dedupe missed it) changes nothing and sends
  nothing; the AuthRes/CapRes carry ``Send.answers`` (the request's digest), so exact repeats get
  the answer from the dedupe.  A new AuthReq for a spent purchase: AuthRes piPreviouslyUsed.
* **The issuer leg is an Exchange** pinned to the issuer's signature certificate
  (``roles/gateway_issuer.py``: re-sends, Errors, give-ups, reversals, expiry).
* **Nothing is kept for ever**: PAN and expiry live under ``state["secret"]`` from AuthReq to the
  capture, the decline, or ``auth_expiry`` after the approval, when the gateway wipes them,
  reverses the hold (D-142) and ends EXPIRED; a CapReq then gets CapRes authExpired.  Every
  state with a secret has a timer that ends it (``retry`` or ``auth_expiry``).

A late approval (after noReply/systemError) placed a hold nobody will capture: the gateway reverses
it (REVERSING, back to DECLINED with the issuer's answer); a repeat re-sends the same IssRevReq
bytes, a late decline changes nothing (D-133).

``GatewayConfig``: ``name``, ``signature``/``key_exchange`` (Identity with the PCA chain),
``trust``, ``issuer`` (address), ``issuer_sig``/``issuer_kex`` (pinned certificates),
``directory`` (the world's, for merchant addresses), ``bci``, ``acquirer_id``, ``suite``,
``retry_after``, ``max_retries``, ``crls`` (None: no revocation check), ``max_pi_age``,
``auth_expiry``.
State for ``setmail tx show``: state, xid, merchant, mer_id, amount/currency/amt_exp10, auth_code,
iso_code, approval_code, auth_amt, expires_at, cap_code, cap_amt, reason and the dates; a late
approval's late_approval_code, late_amt, late_at; a reversal's rev_code (DE 39), rev_amt,
rev_req_date, rev_date or rev_failure; ``expired`` {at, reason}.  Bookkeeping under "_" keys.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography import x509

from setmail.crypto.cms import Identity
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.roles.base import START, Inbound, Outcome, Role, TimerFired
from setmail.roles.directory import Directory
from setmail.roles.exchange import Exchange
from setmail.roles.gateway_checks import (Decline, MerchantRequest, auth_res, authenticate,
                                          authenticated, cap_res, check_capture, check_payment,
                                          claimed, open_request, reply_to)
from setmail.roles.gateway_issuer import IssuerLeg
from setmail.roles.network_msgs import (TAG_SIZE, key_octets, purchase_key, rrn, stan, when,
                                        zero)
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import h, header_ids

__all__ = ["Gateway", "GatewayConfig", "UNROUTABLE", "key_octets", "purchase_key"]

#: key of input that names no purchase: nothing is ever stored under it
UNROUTABLE = "unroutable"


@dataclass(frozen=True)
class GatewayConfig:
    name: str
    signature: Identity
    key_exchange: Identity
    trust: TrustStore
    issuer: str
    issuer_sig: x509.Certificate
    issuer_kex: x509.Certificate
    directory: Directory = Directory()
    bci: Any = None
    acquirer_id: str = "41111111"
    suite: CryptoSuite = DEFAULT_SUITE
    retry_after: dt.timedelta = dt.timedelta(minutes=30)
    max_retries: int = 3
    crls: tuple | None = None
    max_pi_age: dt.timedelta = dt.timedelta(days=30)
    auth_expiry: dt.timedelta = dt.timedelta(days=7)

    @cached_property
    def kex_thumb(self) -> bytes:
        return thumbprint(self.key_exchange.cert)

    @cached_property
    def issuer_pinned(self) -> tuple[bytes, ...]:
        return (thumbprint(self.issuer_sig),)


_RESPONSES = ("IssAuthRes", "IssCapRes", "IssRevRes", "Error")


def _stays(state: str, *events: str) -> dict:
    return {e: state for e in events}


def _settled(state: str) -> dict:
    """A state without an outstanding issuer request: repeats, late answers, stale timers and
    Errors change nothing."""
    return _stays(state, "AuthReq", "CapReq", *_RESPONSES, "timer:retry", "timer:auth_expiry")


class Gateway(IssuerLeg, Role):
    name = "gateway"
    TRANSITIONS = {
        START: {"AuthReq": (START, "ISSUER_AUTH"), "CapReq": START, **_stays(START, *_RESPONSES)},
        "ISSUER_AUTH": {**_settled("ISSUER_AUTH"),
                        "IssAuthRes": ("AUTHORIZED", "DECLINED", "ISSUER_AUTH"),
                        "timer:retry": ("ISSUER_AUTH", "DECLINED"),
                        "Error": ("ISSUER_AUTH", "DECLINED")},
        "AUTHORIZED": {**_settled("AUTHORIZED"), "CapReq": ("ISSUER_CAP", "AUTHORIZED"),
                       "timer:auth_expiry": "EXPIRED"},
        "ISSUER_CAP": {**_settled("ISSUER_CAP"),
                       "IssCapRes": ("CAPTURED", "AUTHORIZED", "ISSUER_CAP"),
                       "timer:retry": ("ISSUER_CAP", "AUTHORIZED"),
                       "Error": ("ISSUER_CAP", "AUTHORIZED")},
        "CAPTURED": _settled("CAPTURED"),
        "DECLINED": {**_settled("DECLINED"), "IssAuthRes": ("DECLINED", "REVERSING")},
        "REVERSING": {**_settled("REVERSING"), "IssRevRes": ("DECLINED", "REVERSING"),
                      "timer:retry": ("REVERSING", "DECLINED"), "Error": ("REVERSING", "DECLINED")},
        "EXPIRED": _settled("EXPIRED"),
    }

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.exchange = Exchange(retry_after=config.retry_after, max_retries=config.max_retries,
                                 slot="_issuer")
        self._merchants: dict = {}  # signature certificate DER -> (merID, thumbprint)

    # -- routing ----------------------------------------------------------------------------------
    def transaction_key(self, event) -> str:
        """AuthReq/CapReq: the XID and merchant *as signed* (the envelope opened here, once per
        event; its path is judged in the step).  Issuer answers and Errors: the header's XID and
        LID-M (the merchant tag our request carried; the payload is checked in the step)."""
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        if not isinstance(event, Inbound):
            return UNROUTABLE
        if event.message_type in ("AuthReq", "CapReq"):
            try:
                req = open_request(self.config, event, self._merchants)
            except SetmailError:
                return UNROUTABLE
            return purchase_key(req.xid, req.mer_id)
        ids = header_ids(event)
        xid, tag = ids.get("xid"), ids.get("lid_m")
        if xid and tag and len(tag) == TAG_SIZE:
            return f"{xid.hex()}.{tag.hex()}"
        return UNROUTABLE

    def _address(self, mer_id: str | None) -> str | None:
        party = self.config.directory.merchant(mer_id)
        return party.address if party is not None and party.kind == "merchant" else None

    def refuse(self, state, event, exc, now) -> Outcome:
        """A signed Error, only to the directory address of the merchant the request's signed
        content names (claimed; ``peer`` only once authenticated); responses get nothing."""
        cfg, req = self.config, claimed(event)
        to = self._address(req.mer_id) if req is not None else None
        out = refusal(state, event, exc, now, transaction=self.transaction_key(event), to=to,
                      signer=cfg.signature, suite=cfg.suite)
        return dataclasses.replace(out, peer=to if authenticated(event) is not None else None)

    def _merchant(self, state, event, now) -> tuple[MerchantRequest, str]:
        """The authenticated request and the merchant's directory address, or SetmailError."""
        _, req = authenticate(self.config, event, now, self._merchants)
        to = self._address(req.mer_id)
        if to is None:
            raise ProtocolError(f"merchant {req.mer_id!r} is not in the directory: nobody to "
                                "answer", "invalidCertificate")
        if state["state"] != START and state["mer_id"] != req.mer_id:
            raise ProtocolError("another merchant's purchase has this key", "unknownXID")
        return req, to

    # -- AuthReq ---------------------------------------------------------------------------------
    @guarded
    def on_AuthReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        req, to = self._merchant(state, event, now)
        if state["state"] != START and state["_reply"]["rrpid"] == h(req.rrpid):
            return Outcome(key, dict(state), peer=to)  # a repeat: in hand or answered
        item = req.data["auth_req_item"]
        amount = item["auth_req_payload"]["auth_req_amt"]
        reply = reply_to(event, to, req, auth_tags=h(item["auth_tags"]), mer_thumb=h(req.thumb))
        try:
            pay = check_payment(cfg, req, now)
            if state["state"] != START:
                raise Decline("piPreviouslyUsed", "this merchant's XID was authorised before")
        except Decline as declined:
            send = auth_res(cfg, reply, now, code=declined.code, amount=zero(amount))
            return Outcome(key, None if state["state"] == START else dict(state), sends=(send,),
                           peer=to)
        new = {"state": "ISSUER_AUTH", "xid": req.xid.hex(), "merchant": to,
               "mer_id": req.mer_id, **amount, "stan": stan(req.xid), "rrn": rrn(req.xid),
               "p_req_date": when(req.trans_ids.native["p_req_date"]),
               "auth_req_date": when(now), "_trans_ids": h(req.trans_ids), "_reply": reply,
               "_auth_digest": event.digest.hex(),
               "secret": {"pan": pay.pan, "expiry": pay.expiry, "back_key": h(pay.back_key)}}
        return self._ask(new, key, "IssAuthReq", {
            "stan": new["stan"], "rrn": new["rrn"], "processing_code": "000000", "pan": pay.pan,
            "card_expiry": pay.expiry, "amount": pay.amount, "acquirer_id": cfg.acquirer_id}, now,
            peer=to)

    # -- CapReq ----------------------------------------------------------------------------------
    @guarded
    def on_CapReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        req, to = self._merchant(state, event, now)
        items = req.data["cap_item_seq"]
        if len(items) != 1:
            raise ProtocolError("a CapReq captures exactly one authorisation here",
                                "messageNotSupported")
        if (state.get("_cap_reply") or {}).get("rrpid") == h(req.rrpid):
            return Outcome(key, dict(state), peer=to)  # a repeat: in hand or answered
        item = items[0]
        reply = reply_to(event, to, req, cap_rr_tags=h(req.data["cap_rr_tags"]),
                         trans_ids=h(item["trans_ids"]), auth_rrpid=h(item["auth_rrpid"]))
        try:
            amount = check_capture(cfg, state, req, key_octets(key), now)
        except Decline as declined:
            send = cap_res(cfg, reply, now, code=declined.code,
                           amount=zero(item["cap_payload"]["cap_req_amt"]))
            return Outcome(key, None if state["state"] == START else dict(state), sends=(send,),
                           peer=to)
        new = {**state, "state": "ISSUER_CAP", "_cap_reply": reply,
               "_cap_digest": event.digest.hex(), "cap_req_amt": amount["amount"],
               "cap_date": when(item["cap_payload"]["cap_date"]), "cap_req_date": when(now)}
        return self._ask(new, key, "IssCapReq", {
            "stan": stan(req.xid, "IssCapReq"), "rrn": state["rrn"], "amount": amount,
            "pan": state["secret"]["pan"], "approval_code": state["approval_code"]}, now, peer=to)
