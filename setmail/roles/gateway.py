"""The payment gateway (docs/purchase.md, docs/lifecycle.md): authorises, captures, reverses,
refunds and settles for merchants through the issuer.

    AuthReq  = EncB(M, P, AuthReqData, PI)  -> checks -> IssAuthReq (0100) to the issuer
    IssAuthRes (0110)                       -> AuthRes = EncB(P, M, AuthResData, AuthResBaggage)
                                               (a sale, CaptureNow: IssCapReq first, one AuthRes)
    AuthReq (SubsequentAuthInd, AuthToken)  -> IssAuthReq on the same purchase (gateway_split)
    CapReq   = EncB(M, P, CapReqData, [CapToken]) -> checks -> IssCapReq (0220)
    IssCapRes (0230)                        -> CapRes = Enc(P, M, CapResData), with its batch
    AuthRevReq / CredReq / CredRevReq / CapRevReq -> IssRevReq / IssCredReq / IssCredRevReq /
                                               IssCapRevReq -> their answers (gateway_adjust)
    BatchAdminReq = Enc(M, P, ..)           -> BatchAdminRes; a close -> IssClearReq (0500)
                                               (gateway_batch)
    IssAuthRes 00 after we gave up          -> IssRevReq (0400, reason 68); IssRevRes is recorded
    auth_expiry after approval, uncaptured  -> PAN wiped, IssRevReq (0400, reason 21), EXPIRED

Why it looks like this: the gateway is the only party that sees the card (PANData) and it must
see nothing of the order (OIData stays with the merchant; HOD and DD(OIData) are all it gets).

Against the mail attacker (docs/threat-model.md):

* **A purchase is one merchant's XID.**  The transaction key is ``<XID hex>.<merchant tag hex>``
  (``purchase_key``; the tag is SHA-256(merID)[:8]), read from the request *as signed*: the
  envelope is opened and the signature verified in ``transaction_key`` (pure, cached on the event),
  the signer's path validated in the step.  So another merchant can neither burn nor capture,
  void, refund or reverse this merchant's XID, and an XID is spent (a state stored) only by an
  AuthReq whose every check passed, dual signature included; a failed one leaves no state.  A
  batch is one merchant's too (``batch/<merchant tag hex>/<id>``).
* **Answers go to the directory**, never to From: every answer to the directory address of the
  authenticated merchant (``config.directory``, by merID); a merchant not in the directory gets
  nothing.  A request we refuse gets a signed Error naming its digest, and only when its signed
  content names a merchant of the directory (to that merchant's address).
* **Repeats**: a request whose signed RRPID this purchase already took (``_rrpids``: a replay
  with a changed clear header: other bytes, so the agent's dedupe missed it) changes nothing and
  sends nothing; answers sent once the issuer has answered carry ``Send.answers`` (the request's
  digest), so exact repeats get the answer from the dedupe.  A new AuthReq for a spent purchase:
  AuthRes piPreviouslyUsed.
* **The issuer leg is an Exchange** pinned to the issuer's signature certificate
  (``roles/gateway_issuer.py``: re-sends, Errors, give-ups, reversals, expiry).
* **Nothing is kept for ever**: PAN and expiry live under ``state["secret"]`` only while what is
  authorised may still be captured (and while a request that needs them is with the issuer); the
  CapToken and the AuthToken carry the card sealed to the gateway itself for later requests.
  Every state with a secret has a timer that ends it (``retry`` or ``auth_expiry``).

``GatewayConfig``: ``name``, ``signature``/``key_exchange`` (Identity with the PCA chain),
``trust``, ``issuer`` (address), ``issuer_sig``/``issuer_kex`` (pinned certificates),
``directory`` (the world's, for merchant addresses), ``bci``, ``acquirer_id``, ``suite``,
``retry_after``, ``max_retries``, ``crls`` (None: no revocation check), ``max_pi_age``,
``auth_expiry``, ``max_batch_items``.
State for ``setmail tx show``: state, xid, merchant, mer_id, amount/currency/amt_exp10 (the first
AuthReq's), purch_amt, auth_code, iso_code, approval_code(s), auth_amt (authorised total),
cap_amt (captured total), cred_amt (credited total), captures and credits ({stan, amount, at,
batch, seq, reversed}), terms, auths, expires_at, the reversals' rev_* fields, ``expired`` {at,
reason}.  Bookkeeping under "_" keys.
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
from setmail.roles.gateway_adjust import Adjustments
from setmail.roles.gateway_batch import SHARED_KEY, BatchAdmin, batch_key, clearing_key
from setmail.roles.gateway_checks import (Decline, auth_res, authenticate, authenticated,
                                          cap_res, check_capture, check_payment, claimed,
                                          open_request, reply_to)
from setmail.roles.gateway_issuer import IssuerLeg
from setmail.roles.gateway_requests import REQUEST_TYPES, only_item
from setmail.roles.gateway_split import SplitAuth, read_terms
from setmail.roles.network_msgs import (TAG_SIZE, key_octets, purchase_key, rrn, stan, when,
                                        zero)
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import h, header_ids

__all__ = ["Gateway", "GatewayConfig", "UNROUTABLE", "key_octets", "purchase_key"]

#: key of input that names no purchase: nothing is ever stored under it
UNROUTABLE = "unroutable"
#: signed RRPIDs a purchase remembers (its own requests; a repeat changes nothing)
RRPID_MEMORY = 64


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
    max_batch_items: int = 1000

    @cached_property
    def kex_thumb(self) -> bytes:
        return thumbprint(self.key_exchange.cert)

    @cached_property
    def issuer_pinned(self) -> tuple[bytes, ...]:
        return (thumbprint(self.issuer_sig),)


_RESPONSES = ("IssAuthRes", "IssCapRes", "IssRevRes", "IssCredRes", "IssCredRevRes",
              "IssCapRevRes", "Error")
#: the merchant requests about one purchase
_PURCHASE_REQUESTS = ("AuthReq", "CapReq", "AuthRevReq", "CredReq", "CredRevReq", "CapRevReq")
_TIMERS = ("timer:retry", "timer:auth_expiry")
#: where a credit or its reversal leaves a purchase: where it was
_BACK = ("AUTHORIZED", "CAPTURED", "EXPIRED")


def _stays(state: str, *events: str) -> dict:
    return {e: state for e in events}


def _settled(state: str) -> dict:
    """A purchase state without an outstanding issuer request: merchant requests are answered
    (with a refusing code) or absorbed as repeats, late answers, stale timers and Errors change
    nothing."""
    return _stays(state, *_PURCHASE_REQUESTS, *_RESPONSES, *_TIMERS)


def _waiting(state: str, answer: str, answered: tuple[str, ...], gave_up: tuple[str, ...]) -> dict:
    """A purchase state with one issuer request outstanding: its ``answer`` decides between
    ``answered``, giving up (re-sends spent, or the issuer's signed Error) between ``gave_up``;
    merchant requests get a 'busy' code meanwhile."""
    return {**_settled(state), answer: (state, *answered), "timer:retry": (state, *gave_up),
            "Error": (state, *gave_up)}


def _batch(state: str) -> dict:
    """A closed batch: queried, refused a second close, late answers absorbed."""
    return _stays(state, "BatchAdminReq", "IssClearRes", "Error", "timer:retry")


class Gateway(BatchAdmin, Adjustments, SplitAuth, IssuerLeg, Role):
    name = "gateway"
    shared_key = SHARED_KEY
    shared_parts = ("batches/*/live/*/items",)
    TRANSITIONS = {
        START: {**_settled(START), "AuthReq": (START, "ISSUER_AUTH"),
                "BatchAdminReq": (START, "CLEARING", "SETTLED"), "IssClearRes": START},
        # the first authorisation (a sale goes on to capture at once)
        "ISSUER_AUTH": _waiting("ISSUER_AUTH", "IssAuthRes", ("AUTHORIZED", "DECLINED",
                                                              "ISSUER_CAP"), ("DECLINED",)),
        "AUTHORIZED": {**_settled("AUTHORIZED"), "AuthReq": ("AUTHORIZED", "ISSUER_REAUTH"),
                       "CapReq": ("ISSUER_CAP", "AUTHORIZED"),
                       "AuthRevReq": ("ISSUER_REV", "AUTHORIZED"),
                       "CredReq": ("ISSUER_CRED", "AUTHORIZED"),
                       "CredRevReq": ("ISSUER_CREDREV", "AUTHORIZED"),
                       "CapRevReq": ("ISSUER_CAPREV", "AUTHORIZED"),
                       "IssAuthRes": ("AUTHORIZED", "ISSUER_REV"),
                       "timer:auth_expiry": "EXPIRED"},
        "ISSUER_CAP": _waiting("ISSUER_CAP", "IssCapRes", ("CAPTURED", "AUTHORIZED"),
                               ("AUTHORIZED",)),
        "CAPTURED": {**_settled("CAPTURED"), "AuthReq": ("CAPTURED", "ISSUER_REAUTH"),
                     "CredReq": ("ISSUER_CRED", "CAPTURED"),
                     "CredRevReq": ("ISSUER_CREDREV", "CAPTURED"),
                     "CapRevReq": ("ISSUER_CAPREV", "CAPTURED"),
                     "IssAuthRes": ("CAPTURED", "ISSUER_REV")},
        # a later authorisation of a split, instalment or recurring purchase (gateway_split)
        "ISSUER_REAUTH": _waiting("ISSUER_REAUTH", "IssAuthRes", ("AUTHORIZED", "CAPTURED"),
                                  ("AUTHORIZED", "CAPTURED")),
        # a void or reduction, a late subsequent approval, the rest of a split at its expiry
        "ISSUER_REV": _waiting("ISSUER_REV", "IssRevRes", ("VOIDED", "AUTHORIZED", "CAPTURED"),
                               ("AUTHORIZED", "CAPTURED")),
        "ISSUER_CRED": _waiting("ISSUER_CRED", "IssCredRes", _BACK, _BACK),
        "ISSUER_CREDREV": _waiting("ISSUER_CREDREV", "IssCredRevRes", _BACK, _BACK),
        "ISSUER_CAPREV": _waiting("ISSUER_CAPREV", "IssCapRevRes", ("AUTHORIZED", "CAPTURED"),
                                  ("AUTHORIZED", "CAPTURED")),
        "VOIDED": _settled("VOIDED"),
        "DECLINED": {**_settled("DECLINED"), "IssAuthRes": ("DECLINED", "REVERSING")},
        "REVERSING": _waiting("REVERSING", "IssRevRes", ("DECLINED",), ("DECLINED",)),
        # (a split purchase whose captures stay: they may still be refunded)
        "EXPIRED": {**_settled("EXPIRED"), "CredReq": ("ISSUER_CRED", "EXPIRED"),
                    "CredRevReq": ("ISSUER_CREDREV", "EXPIRED")},
        # a closed batch (gateway_batch)
        "CLEARING": {**_batch("CLEARING"), "IssClearRes": ("CLEARING", "SETTLED",
                                                           "OUT_OF_BALANCE", "UNCLEARED"),
                     "timer:retry": ("CLEARING", "UNCLEARED"), "Error": ("CLEARING", "UNCLEARED")},
        "SETTLED": _batch("SETTLED"),
        "OUT_OF_BALANCE": _batch("OUT_OF_BALANCE"),
        "UNCLEARED": {**_batch("UNCLEARED"), "BatchAdminReq": ("UNCLEARED", "CLEARING")},
    }

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.exchange = Exchange(retry_after=config.retry_after, max_retries=config.max_retries,
                                 slot="_issuer")
        self._merchants: dict = {}  # signature certificate DER -> (merID, thumbprint)

    # -- routing ----------------------------------------------------------------------------------
    def transaction_key(self, event) -> str:
        """Merchant requests: the XID (a batch) and merchant *as signed* (the envelope opened
        here, once per event; its path is judged in the step).  A clearing answer: the batch its
        signed payload names.  Other issuer answers and Errors: the header's XID and LID-M (the
        merchant tag our request carried; the payload is checked in the step)."""
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        if not isinstance(event, Inbound):
            return UNROUTABLE
        if event.message_type in REQUEST_TYPES:
            try:
                req = open_request(self.config, event, self._merchants)
            except SetmailError:
                return UNROUTABLE
            if req.trans_ids is None:
                return batch_key(req.mer_id, req.data["batch_id"])
            return purchase_key(req.xid, req.mer_id)
        if event.message_type == "IssClearRes":
            return clearing_key(self.config, event) or UNROUTABLE
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

    def _merchant(self, state, event, now):
        """The authenticated request and the merchant's directory address, or SetmailError."""
        _, req = authenticate(self.config, event, now, self._merchants)
        to = self._address(req.mer_id)
        if to is None:
            raise ProtocolError(f"merchant {req.mer_id!r} is not in the directory: nobody to "
                                "answer", "invalidCertificate")
        if state["state"] != START and state["mer_id"] != req.mer_id:
            raise ProtocolError("another merchant's purchase has this key", "unknownXID")
        return req, to

    @staticmethod
    def _repeat(state, req) -> bool:
        """Did this purchase take a request with this signed RRPID already?"""
        return h(req.rrpid) in state.get("_rrpids", ())

    @staticmethod
    def _took(state: dict, req) -> dict:
        """``state`` remembering the request's signed RRPID (a later repeat changes nothing)."""
        state["_rrpids"] = [*state.get("_rrpids", ()), h(req.rrpid)][-RRPID_MEMORY:]
        return state

    # -- AuthReq ---------------------------------------------------------------------------------
    @guarded
    def on_AuthReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        req, to = self._merchant(state, event, now)
        keep = None if state["state"] == START else dict(state)
        if self._repeat(state, req):
            return Outcome(key, keep, peer=to)  # a repeat: in hand or answered
        item = req.data["auth_req_item"]
        if item["auth_req_payload"]["subsequent_auth_ind"]:
            return self._subsequent(state, event, now, req, to, key)
        amount = item["auth_req_payload"]["auth_req_amt"]
        reply = reply_to(event, to, req, auth_tags=h(item["auth_tags"]), mer_thumb=h(req.thumb))
        try:
            pay = check_payment(cfg, req, now)
            if keep is not None:
                raise Decline("piPreviouslyUsed", "this merchant's XID was authorised before")
            terms = read_terms(pay.terms)
        except Decline as declined:
            send = auth_res(cfg, reply, now, code=declined.code, amount=zero(amount))
            return Outcome(key, keep and self._took(keep, req), sends=(send,), peer=to)
        new = {"state": "ISSUER_AUTH", "xid": req.xid.hex(), "merchant": to,
               "mer_id": req.mer_id, **amount, "purch_amt": pay.purch_amt["amount"],
               "terms": terms, "sale": bool(req.data["capture_now"]),
               "stan": stan(req.xid), "rrn": rrn(req.xid),
               "p_req_date": when(req.trans_ids.native["p_req_date"]),
               "auth_req_date": when(now), "_trans_ids": h(req.trans_ids), "_reply": reply,
               "_auth_digest": event.digest.hex(), "_rrpids": [h(req.rrpid)],
               "secret": {"pan": pay.pan, "expiry": pay.expiry, "back_key": h(pay.back_key)}}
        return self._ask(new, key, "IssAuthReq", {
            "rrn": new["rrn"], "processing_code": "000000", "pan": pay.pan,
            "card_expiry": pay.expiry, "amount": pay.amount, "acquirer_id": cfg.acquirer_id},
            now, peer=to)

    # -- CapReq ----------------------------------------------------------------------------------
    @guarded
    def on_CapReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        req, to = self._merchant(state, event, now)
        item = only_item(req.data["cap_item_seq"], "CapReq")
        keep = None if state["state"] == START else dict(state)
        if self._repeat(state, req):
            return Outcome(key, keep, peer=to)  # a repeat: in hand or answered
        reply = reply_to(event, to, req, cap_rr_tags=h(req.data["cap_rr_tags"]),
                         trans_ids=h(item["trans_ids"]), auth_rrpid=h(item["auth_rrpid"]))
        try:
            amount, token = check_capture(cfg, state, req, key_octets(key), now)
        except Decline as declined:
            send = cap_res(cfg, reply, now, code=declined.code,
                           amount=zero(item["cap_payload"]["cap_req_amt"]))
            return Outcome(key, keep and self._took(keep, req), sends=(send,), peer=to)
        new = self._took(dict(state), req)
        new["secret"] = {"pan": token.pan, "expiry": token.expiry}
        new["cap_date"] = when(item["cap_payload"]["cap_date"])
        return self._capture(new, key, now, amount=amount, reply=reply,
                             digest=event.digest.hex(), peer=to)
