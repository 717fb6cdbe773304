"""The payment gateway (docs/purchase.md): authorises and captures for merchants through the issuer.

    AuthReq  = EncB(M, P, AuthReqData, PI)  -> checks -> IssAuthReq (0100) to the issuer
    IssAuthRes (0110)                       -> AuthRes = EncB(P, M, AuthResData, AuthResBaggage)
    CapReq   = EncB(M, P, CapReqData, [CapToken]) -> checks -> IssCapReq (0220)
    IssCapRes (0230)                        -> CapRes = Enc(P, M, CapResData)
    IssAuthRes 00 after we gave up          -> IssRevReq (0400); IssRevRes (0410) is recorded

Why it looks like this: the gateway is the only party that sees the card (PANData) and it must
see nothing of the order (OIData stays with the merchant; HOD and DD(OIData) are all it gets).  It
answers a merchant it cannot authenticate with a SET Error, and an authenticated merchant whose
payment fails a check with an AuthRes/CapRes naming the reason (``gateway_checks``).  Between
AuthReq and capture it keeps PAN and expiry under ``state["secret"]`` (dropped on decline and on
capture); the merchant holds the CapToken, the gateway's own signed and encrypted memory of the
authorisation.  Requests to the issuer are re-sent with the same bytes on ``timer:retry``
(``Requester``); after ``max_retries`` the merchant gets AuthRes noReply (CapRes
unspecifiedFailure), and a SET Error from the issuer naming the request gives systemError.
An approval arriving after that (DECLINED) placed a hold nobody will capture: the gateway reverses
it (REVERSING, IssRevReq re-sent on ``timer:retry`` like the others) and goes back to DECLINED
with the issuer's answer; a repeat of the late approval re-sends the same IssRevReq bytes, a late
decline changes nothing, and the merchant hears nothing more (it has its AuthRes) (D-133).

``GatewayConfig``: ``name``, ``signature``/``key_exchange`` (Identity with the PCA chain),
``trust``, ``issuer`` (address), ``issuer_sig``/``issuer_kex`` (pinned certificates), ``bci``
(current BrandCRLIdentifier or None), ``acquirer_id``, ``suite``, ``retry_after``,
``max_retries``, ``crls`` (None: no revocation check), ``max_pi_age``.  Transaction key: the
header XID (hex).
State for ``setmail tx show``: state, xid, merchant, mer_id, amount/currency/amt_exp10, auth_code,
iso_code, approval_code, auth_amt, cap_code, cap_amt, reason and the dates; after a late
approval late_approval_code, late_amt, late_at, and the reversal's rev_code (DE 39), rev_amt,
rev_req_date, rev_date or rev_failure.  What answering needs later (the merchant's AuthTags, kex
certificate, ids, the IssAuthReq's RRPID, the IssRevReq sent) is bookkeeping under "_" keys.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography import x509

from setmail.crypto.cms import Identity
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.roles.base import START, CancelTimer, Outcome, Send
from setmail.roles.refusal import guarded
from setmail.roles.wire import h, unh, unwrap
from setmail.roles.gateway_checks import (Decline, acq_card_msg, amount_ok, auth_res, cap_res,
                                          cap_token, check_capture, check_payment,
                                          open_merchant_request, reply_to)
from setmail.roles.network_msgs import (REVERSAL_REASON, auth_code, cap_code, check_answer,
                                        open_network, rrn, seal, stan, when, zero)
from setmail.roles.requester import Requester


@dataclass(frozen=True)
class GatewayConfig:
    name: str
    signature: Identity
    key_exchange: Identity
    trust: TrustStore
    issuer: str
    issuer_sig: x509.Certificate
    issuer_kex: x509.Certificate
    bci: Any = None
    acquirer_id: str = "41111111"
    suite: CryptoSuite = DEFAULT_SUITE
    retry_after: dt.timedelta = dt.timedelta(minutes=30)
    max_retries: int = 3
    crls: tuple | None = None
    max_pi_age: dt.timedelta = dt.timedelta(days=30)

    @cached_property
    def kex_thumb(self) -> bytes:
        return thumbprint(self.key_exchange.cert)

    @cached_property
    def issuer_pinned(self) -> tuple[bytes, ...]:
        return (thumbprint(self.issuer_sig),)


def _settled(state: str) -> dict:
    """A state without an outstanding issuer request: late answers, stale timers and Errors
    change nothing."""
    return {"AuthReq": state, "CapReq": state, "IssAuthRes": state, "IssCapRes": state,
            "IssRevRes": state, "timer:retry": state, "Error": state}


def _money(state) -> dict:
    return {k: state[k] for k in ("currency", "amount", "amt_exp10")}


class Gateway(Requester):
    name = "gateway"
    LID_FIELD = "xid"
    TRANSITIONS = {
        START: {"AuthReq": ("ISSUER_AUTH", "DECLINED"), "CapReq": START, "Error": START},
        "ISSUER_AUTH": {"AuthReq": "ISSUER_AUTH", "CapReq": "ISSUER_AUTH",
                        "IssAuthRes": ("AUTHORIZED", "DECLINED", "ISSUER_AUTH"),
                        "timer:retry": ("ISSUER_AUTH", "DECLINED"),
                        "Error": ("ISSUER_AUTH", "DECLINED")},
        "AUTHORIZED": {**_settled("AUTHORIZED"), "CapReq": ("ISSUER_CAP", "AUTHORIZED")},
        "ISSUER_CAP": {"AuthReq": "ISSUER_CAP", "CapReq": "ISSUER_CAP", "IssAuthRes": "ISSUER_CAP",
                       "IssCapRes": ("CAPTURED", "AUTHORIZED", "ISSUER_CAP"),
                       "timer:retry": ("ISSUER_CAP", "AUTHORIZED"),
                       "Error": ("ISSUER_CAP", "AUTHORIZED")},
        "CAPTURED": _settled("CAPTURED"),
        "DECLINED": {**_settled("DECLINED"), "IssAuthRes": ("DECLINED", "REVERSING")},
        "REVERSING": {**_settled("REVERSING"), "IssRevRes": ("DECLINED", "REVERSING"),
                      "timer:retry": ("REVERSING", "DECLINED"), "Error": ("REVERSING", "DECLINED")},
    }

    def __init__(self, config: GatewayConfig):
        self.config = config
        self._merchants: dict = {}  # signature certificate DER -> (merID, thumbprint)

    # -- AuthReq ---------------------------------------------------------------------------------
    @guarded
    def on_AuthReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        parsed, req, data = open_merchant_request(cfg, event, now, self._merchants)
        tags = data["auth_req_item"]["auth_tags"]  # its DER (echoed), TransIDs DER inside
        ids = tags.native["trans_ids"]
        amount = data["auth_req_item"]["auth_req_payload"]["auth_req_amt"]
        reply = reply_to(event, parsed, req, auth_tags=h(tags), mer_thumb=h(req.thumb))
        record = {"xid": key, "merchant": event.sender, "mer_id": req.mer_id, **amount,
                  "_trans_ids": h(ids), "auth_req_date": when(now), "_reply": reply}
        try:
            pay = check_payment(cfg, parsed, req, data, now)
            if state["state"] != START:
                raise Decline("piPreviouslyUsed", "this XID was authorised before")
        except Decline as declined:
            send = auth_res(cfg, reply, now, code=declined.code, amount=zero(amount))
            if state["state"] != START:
                return Outcome(key, dict(state), sends=(send,))  # the XID's own story goes on
            new = None if parsed.message_id("xid") != ids.native["xid"] else {
                **record, "state": "DECLINED", "auth_code": declined.code,
                "reason": str(declined)[:200]}
            return Outcome(key, new, sends=(send,))
        xid = unh(key)
        new = {**record, "state": "ISSUER_AUTH", "stan": stan(xid), "rrn": rrn(xid),
               "p_req_date": when(ids.native["p_req_date"]),
               "secret": {"pan": pay.pan, "expiry": pay.expiry, "back_key": h(pay.back_key)}}
        return self._ask_issuer(new, "IssAuthReq", {
            "stan": new["stan"], "rrn": new["rrn"], "processing_code": "000000", "pan": pay.pan,
            "card_expiry": pay.expiry, "amount": pay.amount, "acquirer_id": cfg.acquirer_id,
            "merchant_id": req.mer_id}, now)

    def _ask_issuer(self, state: dict, kind: str, fields: dict, now) -> Outcome:
        """Send IssAuthReq/IssCapReq (fresh RRPID, the purchase's ids) and wait for the answer."""
        cfg, rrpid = self.config, fresh()
        ids = {k: unh(v) for k, v in state["_reply"]["ids"].items()}
        der = seal(kind, {**fields, "transmitted": now.replace(microsecond=0),
                          "xid": unh(state["xid"])},
                   cfg.signature, cfg.issuer_kex, now=now, rrpid=rrpid, ids=ids, suite=cfg.suite)
        return self.request(state, state["xid"], cfg.issuer, kind, der, now, rrpid)

    def _answer(self, state, event, now, request: str, waiting: str, rrpid: str | None = None):
        """The issuer's answer to our ``request`` (None: we are not ``waiting`` for it)."""
        if state["state"] != waiting:
            return None
        cfg, parsed = self.config, unwrap(event, now)
        data, _ = open_network(parsed, cfg.key_exchange, cfg.issuer_pinned, now, cfg.suite)
        check_answer(data, rrpid=unh(rrpid or state["rrpid"]), parsed=parsed,
                     xid=unh(state["xid"]), request=request)
        return data

    # -- IssAuthRes ------------------------------------------------------------------------------
    @guarded
    def on_IssAuthRes(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        if state["state"] in ("DECLINED", "REVERSING") and "stan" in state:
            return self._late(state, event, now)
        data = self._answer(state, event, now, "IssAuthReq", "ISSUER_AUTH")
        if data is None:
            return Outcome(key, dict(state))  # a repeated answer: already decided
        xid = unh(state["xid"])
        iso, approval = data["response_code"], data["approval_code"]
        code, asked = auth_code(iso), _money(state)
        held, token = zero(asked), None
        if code == "approved":
            held = data["amount"]
            if not (approval and len(approval) == 6 and amount_ok(held, asked)):
                raise ProtocolError("approval without a code or for another amount")
            token = cap_token(cfg, auth_rrpid=unh(state["_reply"]["rrpid"]), amount=held, xid=xid)
        state = dict(state)
        state.pop("last", None)
        secret = state.pop("secret")
        back_key = unh(secret.get("back_key"))
        acq = acq_card_msg(cfg, back_key, iso) if back_key else None
        send = auth_res(cfg, state["_reply"], now, code=code, amount=held, iso=iso,
                        approval=approval if token else None, token=token, acq=acq)
        state.update(state="AUTHORIZED" if token else "DECLINED", auth_code=code, iso_code=iso,
                     approval_code=approval if token else None, auth_amt=held["amount"],
                     authorized_at=when(now))
        if token:  # kept for the capture only
            state["secret"] = {"pan": secret["pan"], "expiry": secret["expiry"]}
        return Outcome(key, state, sends=(send,), timers=(CancelTimer("retry"),))

    # -- CapReq ----------------------------------------------------------------------------------
    @guarded
    def on_CapReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        parsed, req, data = open_merchant_request(cfg, event, now, self._merchants)
        tags, items = data["cap_rr_tags"], data["cap_item_seq"]
        if len(items) != 1:
            raise ProtocolError("a CapReq captures exactly one authorisation here",
                                "messageNotSupported")
        item = items[0]
        reply = reply_to(event, parsed, req, cap_rr_tags=h(tags), trans_ids=h(item["trans_ids"]),
                         auth_rrpid=h(item["auth_rrpid"]))
        try:
            amount = check_capture(cfg, state, req, item)
        except Decline as declined:
            send = cap_res(cfg, reply, now, code=declined.code,
                           amount=zero(item["cap_payload"]["cap_req_amt"]))
            return Outcome(key, None if state["state"] == START else dict(state), sends=(send,))
        new = {**state, "state": "ISSUER_CAP", "_cap_reply": reply, "cap_req_amt": amount["amount"],
               "cap_date": when(item["cap_payload"]["cap_date"]),
               "cap_req_date": when(now)}
        return self._ask_issuer(new, "IssCapReq", {
            "stan": stan(unh(key), "IssCapReq"), "rrn": state["rrn"], "amount": amount,
            "pan": state["secret"]["pan"], "approval_code": state["approval_code"],
            "merchant_id": state["mer_id"]}, now)

    # -- IssCapRes -------------------------------------------------------------------------------
    @guarded
    def on_IssCapRes(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        data = self._answer(state, event, now, "IssCapReq", "ISSUER_CAP")
        if data is None:
            return Outcome(key, dict(state))
        iso, asked = data["response_code"], {**_money(state), "amount": state["cap_req_amt"]}
        code, posted = cap_code(iso), zero(asked)
        if code == "success":
            posted = data["amount"]
            if not amount_ok(posted, asked):
                raise ProtocolError("the issuer posted another amount than asked")
        send = cap_res(cfg, state["_cap_reply"], now, code=code, amount=posted)
        state = dict(state)
        state.pop("last", None)
        state.update(state="CAPTURED" if code == "success" else "AUTHORIZED", cap_code=code,
                     cap_iso_code=iso, cap_amt=posted["amount"])
        if code == "success":
            state["captured_at"] = when(now)
            self.forget_secrets(state)
        return Outcome(key, state, sends=(send,), timers=(CancelTimer("retry"),))

    # -- a late approval: reverse it ---------------------------------------------------------------
    def _late(self, state, event, now) -> Outcome:
        """An IssAuthRes to the IssAuthReq we gave up on: an approval placed a hold nobody will
        capture, so reverse it, once (a repeat re-sends the same IssRevReq bytes, which the
        issuer's dedupe answers again); a decline changes nothing."""
        key, cfg = self.transaction_key(event), self.config
        data = self._answer(state, event, now, "IssAuthReq", state["state"],
                            rrpid=state.get("_auth_rrpid"))
        if data["response_code"] != "00":
            return Outcome(key, dict(state))
        if "_reversal" in state:
            again = Send(cfg.issuer, "IssRevReq", unh(state["_reversal"]))
            return Outcome(key, dict(state), sends=(again,))
        approval, held = data["approval_code"], data["amount"]
        if not (approval and len(approval) == 6):
            raise ProtocolError("approval without an approval code")
        new = {**state, "state": "REVERSING", "_auth_rrpid": state["rrpid"],
               "late_approval_code": approval, "late_amt": held["amount"], "late_at": when(now),
               "rev_req_date": when(now)}
        out = self._ask_issuer(new, "IssRevReq", {
            "stan": stan(unh(key), "IssRevReq"), "rrn": state["rrn"], "amount": held,
            "approval_code": approval, "reason_code": REVERSAL_REASON, "original_mti": "0100",
            "original_stan": state["stan"], "merchant_id": state["mer_id"]}, now)
        new["_reversal"] = new["last"]["der"]  # the one reversal of this XID, kept to re-send
        return out

    @guarded
    def on_IssRevRes(self, state, event, now, shared) -> Outcome:
        """The issuer's answer to our reversal: recorded (rev_code, rev_amt, rev_date)."""
        key = self.transaction_key(event)
        data = self._answer(state, event, now, "IssRevReq", "REVERSING")
        if data is None:
            return Outcome(key, dict(state))
        state = dict(state)
        state.pop("last", None)
        state.update(state="DECLINED", rev_code=data["response_code"],
                     rev_amt=data["amount"]["amount"], rev_date=when(now))
        return Outcome(key, state, timers=(CancelTimer("retry"),))

    # -- giving up on the issuer -------------------------------------------------------------------
    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        return self._gave_up(state, super().on_timer_retry(state, event, now, shared), now)

    def on_Error(self, state, event, now, shared) -> Outcome:
        """An Error naming our outstanding issuer request ends it; any other is only logged."""
        if state["state"] == START:
            return Outcome(self.transaction_key(event), None)
        return self._gave_up(state, super().on_Error(state, event, now, shared), now)

    def _gave_up(self, state, outcome: Outcome, now) -> Outcome:
        """Turn ``Requester``'s FAILED into the answer the waiting merchant is owed: AuthRes
        noReply/systemError (DECLINED) or CapRes unspecifiedFailure (back to AUTHORIZED).  A
        reversal nobody answers owes the merchant nothing: DECLINED, with ``rev_failure``."""
        if outcome.state is None or outcome.state.get("state") != self.FAILED:
            return outcome
        key, failed, cfg = outcome.transaction, outcome.state, self.config
        new = dict(state)
        new.pop("last", None)
        timers = (CancelTimer("retry"),)
        if state["state"] == "REVERSING":
            code = failed.get("error_code")
            new.update(state="DECLINED",
                       rev_failure=failed["reason"] + (f" ({code})" if code else ""))
            return Outcome(key, new, timers=timers)
        new["reason"] = failed["reason"]
        if state["state"] == "ISSUER_AUTH":
            code = "noReply" if failed.get("error_code") is None else "systemError"
            send = auth_res(cfg, state["_reply"], now, code=code, amount=zero(_money(state)))
            new.update(state="DECLINED", auth_code=code, auth_amt=0)
            self.forget_secrets(new)
        elif state["state"] == "ISSUER_CAP":
            send = cap_res(cfg, state["_cap_reply"], now, code="unspecifiedFailure",
                           amount=zero(_money(state)))
            new.update(state="AUTHORIZED", cap_code="unspecifiedFailure", cap_amt=0)
        else:
            return Outcome(key, dict(state))
        return Outcome(key, new, sends=(send,), timers=timers)
