"""The gateway's issuer leg (``roles/gateway.py`` composes it): asking the issuer, its answers,
giving up, and the reversals (a late approval, D-133; an expired authorisation, D-142).

Why a module of its own: the merchant side of the gateway (``gateway.py``: routing, AuthReq,
CapReq, refusals) and the issuer side share only the transaction state; the transition table,
the whole truth about both, stays in ``Gateway.TRANSITIONS``.

The leg is an ``Exchange`` (``roles.exchange``, slot ``_issuer``, timer ``retry``) pinned to the
issuer's signature certificate:

* IssAuthReq/IssCapReq/IssRevReq carry a fresh RRPID and, as header ids, the XID and the
  merchant's tag (LID-M): the gateway routes the answer (and an Error) by them, and checks the
  signed payload (STAN, RRN, XID and DE 42, the merchant) against the purchase, so an answer for
  another merchant's purchase with the same XID is refused whatever its header says.
* Re-sends are the same bytes, on ``timer:retry``, ``max_retries`` times; then the merchant gets
  AuthRes noReply (CapRes unspecifiedFailure).  An Error ends the request only when it is signed
  by the issuer and names our bytes (``refusedHash``): AuthRes systemError.  Any other Error that
  names our request is noted (``issuer_error``) and brings the re-send forward once per attempt.
* The AuthRes/CapRes sent when the issuer answers carry ``Send.answers`` (the request's digest):
  the agent's dedupe then answers exact repeats of the AuthReq/CapReq with them.
* An approval is kept for ``auth_expiry`` (``timer:auth_expiry``, ``expires_at``): then the card
  data is wiped, the hold reversed (IssRevReq reason 21) and the purchase ends EXPIRED with
  ``expired`` {at, reason}; a capture in flight decides first (the timer is set again if it fails).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.pki.pinned import pinned_check
from setmail.roles.base import START, CancelTimer, Outcome, Send, SetTimer
from setmail.roles.exchange import ENDS, NUDGE, Exchange, pin
from setmail.roles.gateway_checks import acq_card_msg, amount_ok, auth_res, cap_res, cap_token
from setmail.roles.network_msgs import (EXPIRY_REASON, REVERSAL_REASON, auth_code, cap_code,
                                        check_answer, key_octets, leg_ids, open_network, seal,
                                        stan, when, zero)
from setmail.roles.refusal import guarded
from setmail.roles.wire import h, unh, unwrap


def _money(state) -> dict:
    return {k: state[k] for k in ("currency", "amount", "amt_exp10")}


def _held(state) -> dict:
    return {**_money(state), "amount": state["auth_amt"]}


class IssuerLeg:
    """The issuer-side handlers of ``Gateway`` (a mixin: it uses the role's ``config`` and its
    ``exchange``; the transitions are in ``Gateway.TRANSITIONS``)."""

    config: Any
    exchange: Exchange

    @staticmethod
    def _absorb(state, key: str, why: str) -> Outcome:
        """A response or Error that answers nothing outstanding: no change, never answered."""
        return Outcome(key, None if state["state"] == START else dict(state), refused=why)

    def _ask(self, state: dict, key: str, kind: str, fields: dict, now, *,
             peer: str | None = None) -> Outcome:
        """Send IssAuthReq/IssCapReq/IssRevReq (fresh RRPID; header ids: XID and merchant tag)
        and wait for its answer from the pinned issuer."""
        cfg, rrpid, xid = self.config, fresh(), unh(state["xid"])
        der = seal(kind, {**fields, "transmitted": now.replace(microsecond=0), "xid": xid,
                          "merchant_id": state["mer_id"]},
                   cfg.signature, cfg.issuer_kex, now=now, rrpid=rrpid,
                   ids=leg_ids(xid, state["mer_id"]), suite=cfg.suite)
        if kind == "IssAuthReq":
            state["_iss_auth_rrpid"] = h(rrpid)  # a late answer is matched after we gave up
        out = self.exchange.ask(state, key, to=cfg.issuer, type_name=kind, der=der, rrpid=rrpid,
                                expects=(kind.replace("Req", "Res"),),
                                pin_=pin(thumb=cfg.issuer_sig), now=now)
        return dataclasses.replace(out, peer=peer)

    def _issuer_answer(self, state, event, now, request: str, rrpid: str | None = None):
        """The pinned issuer's answer to our outstanding ``request`` (or, ``rrpid`` given, to the
        one we gave up on): signer, RRPID, STAN, RRN, XID and merchant checked."""
        cfg, parsed = self.config, unwrap(event, now)
        data, signed = open_network(parsed, cfg.key_exchange, cfg.issuer_pinned, now, cfg.suite)
        if rrpid is None:
            self.exchange.accept(state, parsed, signed.signer)
        elif parsed.rrpid != unh(rrpid):
            raise ProtocolError(f"{parsed.type} names another request (RRPID)", "badMessageHeader")
        check_answer(data, xid=unh(state["xid"]), mer_id=state["mer_id"], request=request)
        return data

    def _expiry_timer(self, state, key: str) -> SetTimer:
        return SetTimer("auth_expiry", dt.datetime.fromisoformat(state["expires_at"]),
                        {"transaction": key})

    # -- IssAuthRes ------------------------------------------------------------------------------
    @guarded
    def on_IssAuthRes(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        if state["state"] in ("DECLINED", "REVERSING") and "_iss_auth_rrpid" in state:
            return self._late(state, key, event, now)
        if state["state"] != "ISSUER_AUTH":
            return self._absorb(state, key, "IssAuthRes, but no IssAuthReq is outstanding")
        data = self._issuer_answer(state, event, now, "IssAuthReq")
        iso, approval = data["response_code"], data["approval_code"]
        code, asked = auth_code(iso), _money(state)
        held, token = zero(asked), None
        if code == "approved":
            held = data["amount"]
            if not (approval and len(approval) == 6 and amount_ok(held, asked)):
                raise ProtocolError("approval without a code or for another amount")
            token = cap_token(cfg, auth_rrpid=unh(state["_reply"]["rrpid"]), amount=held,
                              opaque=key_octets(key))
        state, timers = self.exchange.settle(state)
        secret = state.pop("secret")
        back_key = unh(secret.get("back_key"))
        acq = acq_card_msg(cfg, back_key, iso) if back_key else None
        send = auth_res(cfg, state["_reply"], now, code=code, amount=held, iso=iso,
                        approval=approval if token else None, token=token, acq=acq,
                        answers=state["_auth_digest"])
        state.update(state="AUTHORIZED" if token else "DECLINED", auth_code=code, iso_code=iso,
                     approval_code=approval if token else None, auth_amt=held["amount"],
                     authorized_at=when(now))
        if token:  # kept for the capture only, and no longer than auth_expiry
            state["secret"] = {"pan": secret["pan"], "expiry": secret["expiry"]}
            state["expires_at"] = when(now + cfg.auth_expiry)
            timers = (*timers, self._expiry_timer(state, key))
        return Outcome(key, state, sends=(send,), timers=timers, peer=cfg.issuer)

    # -- IssCapRes -------------------------------------------------------------------------------
    @guarded
    def on_IssCapRes(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        if state["state"] != "ISSUER_CAP":
            return self._absorb(state, key, "IssCapRes, but no IssCapReq is outstanding")
        data = self._issuer_answer(state, event, now, "IssCapReq")
        iso, asked = data["response_code"], {**_money(state), "amount": state["cap_req_amt"]}
        code, posted = cap_code(iso), zero(asked)
        if code == "success":
            posted = data["amount"]
            if not amount_ok(posted, asked):
                raise ProtocolError("the issuer posted another amount than asked")
        send = cap_res(cfg, state["_cap_reply"], now, code=code, amount=posted,
                       answers=state["_cap_digest"])
        state, timers = self.exchange.settle(state)
        state.update(state="CAPTURED" if code == "success" else "AUTHORIZED", cap_code=code,
                     cap_iso_code=iso, cap_amt=posted["amount"])
        if code == "success":
            state["captured_at"] = when(now)
            state.pop("secret", None)
            timers = (*timers, CancelTimer("auth_expiry"))
        else:
            timers = (*timers, self._expiry_timer(state, key))
        return Outcome(key, state, sends=(send,), timers=timers, peer=cfg.issuer)

    # -- reversals: a late approval, an expired authorisation --------------------------------------
    def _late(self, state, key: str, event, now) -> Outcome:
        """An IssAuthRes to the IssAuthReq we gave up on: an approval placed a hold nobody will
        capture, so reverse it, once (a repeat re-sends the same IssRevReq bytes, which the
        issuer's dedupe answers again); a decline changes nothing."""
        cfg = self.config
        data = self._issuer_answer(state, event, now, "IssAuthReq", rrpid=state["_iss_auth_rrpid"])
        if data["response_code"] != "00":
            return Outcome(key, dict(state), peer=cfg.issuer)
        if "_reversal" in state:
            again = Send(cfg.issuer, "IssRevReq", unh(state["_reversal"]))
            return Outcome(key, dict(state), sends=(again,), peer=cfg.issuer)
        approval, held = data["approval_code"], data["amount"]
        if not (approval and len(approval) == 6):
            raise ProtocolError("approval without an approval code")
        new = {**state, "state": "REVERSING", "late_approval_code": approval,
               "late_amt": held["amount"], "late_at": when(now), "rev_req_date": when(now)}
        out = self._reverse(new, key, held, approval, REVERSAL_REASON, now)
        new["_reversal"] = new["_issuer"]["der"]  # the one reversal of this purchase, to re-send
        return dataclasses.replace(out, peer=cfg.issuer)

    def _reverse(self, state: dict, key: str, held: dict, approval: str, reason: str,
                 now) -> Outcome:
        return self._ask(state, key, "IssRevReq", {
            "stan": stan(unh(state["xid"]), "IssRevReq"), "rrn": state["rrn"], "amount": held,
            "approval_code": approval, "reason_code": reason, "original_mti": "0100",
            "original_stan": state["stan"]}, now)

    def on_timer_auth_expiry(self, state, event, now, shared) -> Outcome:
        """The authorisation is ``auth_expiry`` old and uncaptured: wipe the card, give the hold
        back (IssRevReq, reason 21) and end EXPIRED.  In ISSUER_CAP the capture decides first
        (the timer is set again if it fails); in any other state it is stale."""
        key = self.transaction_key(event)
        if state["state"] != "AUTHORIZED":
            return Outcome(key, dict(state))
        days = self.config.auth_expiry / dt.timedelta(days=1)
        new = dict(state)
        new.pop("secret", None)
        new.update(state="EXPIRED", rev_req_date=when(now), expired={
            "at": when(now), "reason": f"not captured within {days:g} days: card data wiped, "
                                       "hold reversed at the issuer"})
        return self._reverse(new, key, _held(state), state["approval_code"], EXPIRY_REASON, now)

    @guarded
    def on_IssRevRes(self, state, event, now, shared) -> Outcome:
        """The issuer's answer to our reversal: recorded (rev_code, rev_amt, rev_date)."""
        key = self.transaction_key(event)
        if state["state"] not in ("REVERSING", "EXPIRED") or self.exchange.pending(state) is None:
            return self._absorb(state, key, "IssRevRes, but no IssRevReq is outstanding")
        data = self._issuer_answer(state, event, now, "IssRevReq")
        new, timers = self.exchange.settle(state)
        new.update(state="DECLINED" if state["state"] == "REVERSING" else "EXPIRED",
                   rev_code=data["response_code"], rev_amt=data["amount"]["amount"],
                   rev_date=when(now))
        return Outcome(key, new, timers=timers, peer=self.config.issuer)

    # -- waiting on the issuer -----------------------------------------------------------------------
    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        return self.exchange.on_timer(state, key, now,
                                      lambda why: self._give_up(state, key, now, why))

    def on_Error(self, state, event, now, shared) -> Outcome:
        """Ends our issuer request only if signed by the issuer and naming its bytes; an Error
        that merely names it brings the re-send forward (once per attempt); never answered."""
        key, cfg = self.transaction_key(event), self.config
        if state["state"] == START:
            return self._absorb(state, key, "Error for no purchase here")
        verdict = self.exchange.judge(state, event, now, suite=cfg.suite,
                                      validate=pinned_check(cfg.issuer_pinned, now))
        if verdict.kind == ENDS:
            return self._give_up(state, key, now, verdict.why, verdict.code)
        if verdict.kind == NUDGE:
            new, timers = self.exchange.nudge(dict(state), key, now)
            return Outcome(key, {**new, "issuer_error": verdict.why}, timers=timers,
                           refused=verdict.why)
        return Outcome(key, dict(state), refused=verdict.why)

    def _give_up(self, state, key: str, now, reason: str, code: str | None = None) -> Outcome:
        """The issuer request is over without an answer: the waiting merchant gets AuthRes
        noReply/systemError (DECLINED, card wiped) or CapRes unspecifiedFailure (back to
        AUTHORIZED); an unanswered reversal is recorded as ``rev_failure``."""
        cfg, current = self.config, state["state"]
        new, timers = self.exchange.settle(state)
        if current == "ISSUER_AUTH":
            auth = "noReply" if code is None else "systemError"
            send = auth_res(cfg, state["_reply"], now, code=auth, amount=zero(_money(state)),
                            answers=state["_auth_digest"])
            new.pop("secret", None)
            new.update(state="DECLINED", auth_code=auth, auth_amt=0, reason=reason)
            return Outcome(key, new, sends=(send,), timers=timers)
        if current == "ISSUER_CAP":
            send = cap_res(cfg, state["_cap_reply"], now, code="unspecifiedFailure",
                           amount=zero(_money(state)), answers=state["_cap_digest"])
            new.update(state="AUTHORIZED", cap_code="unspecifiedFailure", cap_amt=0,
                       reason=reason)
            return Outcome(key, new, sends=(send,), timers=(*timers, self._expiry_timer(new, key)))
        new.update(state="DECLINED" if current == "REVERSING" else current,
                   rev_failure=reason + (f" ({code})" if code else ""))
        return Outcome(key, new, timers=timers)
