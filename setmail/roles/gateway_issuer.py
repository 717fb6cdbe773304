"""The gateway's issuer leg (``roles/gateway.py`` composes it): asking the issuer, its answers to
authorisations and captures, giving up, and the reversals the gateway makes on its own (a late
approval, D-133; an expired authorisation, D-142).  The lifecycle's answers are handled where
their requests are (``gateway_adjust``, ``gateway_split``, ``gateway_batch``); the transition
table, the whole truth about all of them, stays in ``Gateway.TRANSITIONS``.

The leg is an ``Exchange`` (``roles.exchange``, slot ``_issuer``, timer ``retry``) pinned to the
issuer's signature certificate:

* Every request carries a fresh RRPID and, as header ids, the XID (a batch's derived XID for a
  clearing) and the merchant's tag (LID-M).  Its STAN is ``network_msgs.stan(xid, kind, seq)``,
  ``seq`` counting the requests of that kind the purchase made (``_seq``), so each request of a
  purchase has its own STAN; ``_leg`` {kind, seq, stan} names the outstanding one, and an answer
  must echo its STAN, RRN, XID and DE 42 (and a clearing its batch id).
* Re-sends are the same bytes, on ``timer:retry``, ``max_retries`` times; then the waiting
  merchant gets its answer with noReply/unspecifiedFailure.  An Error ends the request only when
  it is signed by the issuer and names our bytes (``refusedHash``); any other Error that names
  our request is noted (``issuer_error``) and brings the re-send forward once per attempt.
* Answers sent when the issuer has answered carry ``Send.answers`` (the merchant request's
  digest): the agent's dedupe then answers exact repeats of the request with them.
* An approval is kept for ``auth_expiry`` (``timer:auth_expiry``, ``expires_at``): then the card
  data is wiped and the hold reversed (IssRevReq reason 21): the purchase ends EXPIRED (if part
  of a split shipment was captured, only the rest is reversed, ``replacement_amount`` = what was
  captured, and those captures may still be refunded); a request in flight decides first (the
  timer is set again if it fails).
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
from setmail.roles.gateway_answers import (acq_card_msg, auth_res, auth_rev_res, cap_res,
                                           cap_res_payload)
from setmail.roles.gateway_batch import assign, batch_item
from setmail.roles.gateway_checks import amount_ok, cap_token, remaining
from setmail.roles.gateway_split import auth_token, more_allowed
from setmail.roles.network_msgs import (EXPIRY_REASON, REVERSAL_REASON, auth_code, cap_code,
                                        check_answer, check_signed, key_octets, leg_ids, opened,
                                        seal, stan, when, zero)
from setmail.roles.refusal import guarded
from setmail.roles.wire import h, unh, unwrap


def _money(state) -> dict:
    return {k: state[k] for k in ("currency", "amount", "amt_exp10")}


def _of(state, amount: int) -> dict:
    return {**_money(state), "amount": amount}


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
        """Send an issuer request of ``kind`` (its own STAN, a fresh RRPID; header ids: the XID
        and the merchant tag) and wait for its answer from the pinned issuer."""
        cfg, rrpid, xid = self.config, fresh(), unh(state["xid"])
        seqs = dict(state.get("_seq") or {})
        seq = seqs.get(kind, 0)
        number = stan(xid, kind, seq)
        state["_seq"] = {**seqs, kind: seq + 1}
        state["_leg"] = {"kind": kind, "seq": seq, "stan": number}
        der = seal(kind, {**fields, "stan": number, "transmitted": now.replace(microsecond=0),
                          "xid": xid, "merchant_id": state["mer_id"]},
                   cfg.signature, cfg.issuer_kex, now=now, rrpid=rrpid,
                   ids=leg_ids(xid, state["mer_id"]), suite=cfg.suite)
        if kind == "IssAuthReq" and seq == 0:
            state["_iss_auth_rrpid"] = h(rrpid)  # a late answer is matched after we gave up
        out = self.exchange.ask(state, key, to=cfg.issuer, type_name=kind, der=der, rrpid=rrpid,
                                expects=(kind.replace("Req", "Res"),),
                                pin_=pin(thumb=cfg.issuer_sig), now=now)
        return dataclasses.replace(out, peer=peer)

    def _issuer_answer(self, state, event, now, rrpid: str | None = None,
                       leg: dict | None = None):
        """The pinned issuer's answer to our outstanding request (or, ``rrpid`` and ``leg``
        given, to one we gave up on): signer, RRPID, STAN, RRN, XID, merchant (and batch)."""
        cfg, parsed = self.config, unwrap(event, now)
        data, signed = opened(event, cfg.key_exchange, cfg.suite)
        check_signed(parsed, data, signed, cfg.issuer_pinned, now)
        if rrpid is None:
            self.exchange.accept(state, parsed, signed.signer)
            leg = state["_leg"]
        elif parsed.rrpid != unh(rrpid):
            raise ProtocolError(f"{parsed.type} names another request (RRPID)", "badMessageHeader")
        check_answer(data, xid=unh(state["xid"]), mer_id=state["mer_id"], request=leg["kind"],
                     seq=leg["seq"],
                     batch_id=state["batch_id"] if leg["kind"] == "IssClearReq" else None)
        return data

    def _expiry_timer(self, state, key: str) -> SetTimer:
        return SetTimer("auth_expiry", dt.datetime.fromisoformat(state["expires_at"]),
                        {"transaction": key})

    def _resumed(self, state, key: str) -> tuple[SetTimer, ...]:
        """Back in AUTHORIZED after another request: its expiry timer again (one that fired
        while the request was with the issuer was stale then)."""
        return (self._expiry_timer(state, key),) if state["state"] == "AUTHORIZED" else ()

    # -- IssAuthRes ------------------------------------------------------------------------------
    @guarded
    def on_IssAuthRes(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        current = state["state"]
        if current in ("DECLINED", "REVERSING") and "_iss_auth_rrpid" in state:
            return self._late(state, key, event, now)
        if current in ("AUTHORIZED", "CAPTURED") and "_late_reauth" in state:
            return self._late_reauth(state, key, event, now)
        if current == "ISSUER_REAUTH":
            return self._reauthorized(state, key, self._issuer_answer(state, event, now), now)
        if current != "ISSUER_AUTH":
            return self._absorb(state, key, "IssAuthRes, but no IssAuthReq is outstanding")
        return self._authorized(state, key, self._issuer_answer(state, event, now), now)

    def _authorized(self, state, key: str, data, now) -> Outcome:
        """The issuer decided the first authorisation: AuthRes (CapToken, AcqCardMsg, and an
        AuthToken for a split or instalment/recurring purchase), or for a sale the capture now."""
        cfg = self.config
        iso, approval = data["response_code"], data["approval_code"]
        code, asked = auth_code(iso), _money(state)
        if code == "approved" and not (approval and len(approval) == 6
                                       and amount_ok(data["amount"], asked)):
            raise ProtocolError("approval without a code or for another amount")
        state, timers = self.exchange.settle(state)
        secret = state.pop("secret")
        back_key = unh(secret.get("back_key"))
        acq = acq_card_msg(cfg, back_key, iso) if back_key else None
        if code != "approved":
            send = auth_res(cfg, state["_reply"], now, code=code, amount=zero(asked), iso=iso,
                            acq=acq, answers=state["_auth_digest"])
            state.update(state="DECLINED", auth_code=code, iso_code=iso, approval_code=None,
                         auth_amt=0, authorized_at=when(now))
            return Outcome(key, state, sends=(send,), timers=timers, peer=cfg.issuer)
        held = data["amount"]["amount"]
        state.update(state="AUTHORIZED", auth_code=code, iso_code=iso, approval_code=approval,
                     approvals=[approval], auth_amt=held, authorized_at=when(now), auths=1,
                     prev_auth_at=when(now), cap_amt=0, _auth_rrpids=[state["_reply"]["rrpid"]],
                     expires_at=when(now + cfg.auth_expiry),
                     split=bool(state.get("terms")) or held < state["purch_amt"])
        state["secret"] = {"pan": secret["pan"], "expiry": secret["expiry"]}
        timers = (*timers, self._expiry_timer(state, key))
        token = cap_token(cfg, auth_rrpid=unh(state["_reply"]["rrpid"]), amount=data["amount"],
                          opaque=key_octets(key), pan=secret["pan"], expiry=secret["expiry"])
        more = (auth_token(cfg, state, key, pan=secret["pan"], expiry=secret["expiry"],
                           back_key=back_key) if state["split"] and more_allowed(state) else None)
        if state.get("sale"):  # CaptureNow: the capture first, then one AuthRes for both
            state["_sale"] = {"iso": iso, "approval": approval, "token": h(token), "acq": h(acq),
                              "auth_token": h(more), "held": held}
            return self._capture(state, key, now, amount=data["amount"], reply=state["_reply"],
                                 digest=state["_auth_digest"], timers=timers, answer="AuthRes")
        send = auth_res(cfg, state["_reply"], now, code=code, amount=data["amount"], iso=iso,
                        approval=approval, token=token, acq=acq, auth_token=more,
                        answers=state["_auth_digest"])
        return Outcome(key, state, sends=(send,), timers=timers, peer=cfg.issuer)

    # -- captures ------------------------------------------------------------------------------------
    def _capture(self, state: dict, key: str, now, *, amount: dict, reply: dict, digest: str,
                 timers=(), answer: str = "CapRes", peer: str | None = None) -> Outcome:
        """IssCapReq for ``amount`` (ISSUER_CAP); a split purchase keeps the rest held
        (``remaining_hold``), any other releases it (the single-shipment case)."""
        left = remaining(state) - amount["amount"]
        fields = {"rrn": state["rrn"], "amount": amount, "pan": state["secret"]["pan"],
                  "approval_code": state["approval_code"]}
        if state.get("split") and left > 0:
            fields["remaining_hold"] = _of(state, left)
        state.update(state="ISSUER_CAP", cap_req_amt=amount["amount"], cap_req_date=when(now))
        state["_serve"] = {"type": answer, "reply": reply, "digest": digest,
                           "amount": amount["amount"]}
        out = self._ask(state, key, "IssCapReq", fields, now, peer=peer or self.config.issuer)
        return dataclasses.replace(out, timers=(*timers, *out.timers))

    @guarded
    def on_IssCapRes(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        if state["state"] != "ISSUER_CAP":
            return self._absorb(state, key, "IssCapRes, but no IssCapReq is outstanding")
        data = self._issuer_answer(state, event, now)
        iso, asked = data["response_code"], _of(state, state["_serve"]["amount"])
        code = cap_code(iso)
        if code == "success" and not amount_ok(data["amount"], asked):
            raise ProtocolError("the issuer posted another amount than asked")
        return self._captured(state, key, now, shared, code, iso,
                              data["amount"] if code == "success" else zero(asked))

    def _captured(self, state, key: str, now, shared, code: str, iso: str | None,
                  posted: dict) -> Outcome:
        """Record a capture's outcome: posted into the merchant's open batch, the card wiped once
        nothing authorised is left to capture; answered with CapRes (a sale: its AuthRes)."""
        cfg, serve = self.config, state["_serve"]
        new, timers = self.exchange.settle(state)
        new.pop("_serve")
        new.update(cap_code=code, cap_iso_code=iso)
        new_shared, batch = None, None
        if code == "success":
            amount, number = posted["amount"], state["_leg"]["stan"]
            new_shared, batch_id, seq = assign(shared, state["mer_id"], batch_item(
                state, "capture", number, amount), now, cfg.max_batch_items)
            batch = (batch_id, seq)
            new["captures"] = [*state.get("captures", []), {
                "stan": number, "amount": amount, "at": when(now), "batch": batch_id,
                "seq": seq}]
            new.update(cap_amt=state.get("cap_amt", 0) + amount, captured_at=when(now))
        done = code == "success" and (not new.get("split") or remaining(new) <= 0)
        new["state"] = "CAPTURED" if done else "AUTHORIZED"
        if done:
            new.pop("secret", None)
            timers = (*timers, CancelTimer("auth_expiry"))
        else:
            timers = (*timers, self._expiry_timer(new, key))
        if serve["type"] == "AuthRes":  # a sale: one AuthRes for the approval and the capture
            sale = new.pop("_sale")
            send = auth_res(cfg, serve["reply"], now, code="approved",
                            amount=_of(state, sale["held"]), iso=sale["iso"],
                            approval=sale["approval"], token=unh(sale["token"]),
                            acq=unh(sale["acq"]), auth_token=unh(sale["auth_token"]),
                            captured=cap_res_payload(code, posted, batch),
                            answers=serve["digest"])
        else:
            send = cap_res(cfg, serve["reply"], now, code=code, amount=posted,
                           answers=serve["digest"], batch=batch)
        return Outcome(key, new, sends=(send,), timers=timers, shared=new_shared,
                       peer=cfg.issuer)

    # -- reversals: a late approval, an expired authorisation --------------------------------------
    def _late(self, state, key: str, event, now) -> Outcome:
        """An IssAuthRes to the IssAuthReq we gave up on: an approval placed a hold nobody will
        capture, so reverse it, once (a repeat re-sends the same IssRevReq bytes, which the
        issuer's dedupe answers again); a decline changes nothing."""
        cfg = self.config
        data = self._issuer_answer(state, event, now, rrpid=state["_iss_auth_rrpid"],
                                   leg={"kind": "IssAuthReq", "seq": 0})
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

    def _late_reauth(self, state, key: str, event, now) -> Outcome:
        """An approval of a subsequent authorisation we gave up on: the purchase keeps what it
        had, the late part is reversed (``replacement_amount`` = what stays authorised)."""
        cfg, late = self.config, state["_late_reauth"]
        data = self._issuer_answer(state, event, now, rrpid=late["rrpid"],
                                   leg={"kind": "IssAuthReq", "seq": late["seq"]})
        new = dict(state)
        new.pop("_late_reauth")
        if data["response_code"] != "00":
            return Outcome(key, new, peer=cfg.issuer)
        new.update(state="ISSUER_REV", late_approval_code=data["approval_code"],
                   late_amt=data["amount"]["amount"], late_at=when(now), rev_req_date=when(now))
        new["_serve"] = {"type": None, "kind": "late", "back": state["state"]}
        total = state["auth_amt"] + data["amount"]["amount"]
        return self._reverse(new, key, _of(state, total), data["approval_code"],
                             REVERSAL_REASON, now, original_stan=late["stan"],
                             replacement=_of(state, state["auth_amt"]))

    def _reverse(self, state: dict, key: str, held: dict, approval: str, reason: str, now, *,
                 original_stan: int | None = None, replacement: dict | None = None) -> Outcome:
        fields = {"rrn": state["rrn"], "amount": held, "approval_code": approval,
                  "reason_code": reason, "original_mti": "0100",
                  "original_stan": state["stan"] if original_stan is None else original_stan}
        if replacement is not None:
            fields["replacement_amount"] = replacement
        return self._ask(state, key, "IssRevReq", fields, now)

    def on_timer_auth_expiry(self, state, event, now, shared) -> Outcome:
        """The authorisation is ``auth_expiry`` old and not (fully) captured: wipe the card, give
        the hold back (IssRevReq, reason 21) and end EXPIRED; a split purchase with captures
        keeps them (``replacement_amount`` = what was captured: they can still be refunded).  A
        request in flight decides first (the timer is set again if it fails); in any other state
        the timer is stale."""
        key = self.transaction_key(event)
        if state["state"] != "AUTHORIZED":
            return Outcome(key, dict(state))
        days = self.config.auth_expiry / dt.timedelta(days=1)
        new = dict(state)
        new.pop("secret", None)
        new["rev_req_date"] = when(now)
        held, captured = _of(state, state["auth_amt"]), state.get("cap_amt", 0)
        if captured:  # a split shipment: what was captured stays, only the rest goes
            new.update(state="EXPIRED", expired={
                "at": when(now), "reason": f"the rest not captured within {days:g} days: card "
                                           "data wiped, the rest reversed at the issuer"})
            return self._reverse(new, key, held, state["approval_code"], EXPIRY_REASON, now,
                                 replacement=_of(state, captured))
        new.update(state="EXPIRED", expired={
            "at": when(now), "reason": f"not captured within {days:g} days: card data wiped, "
                                       "hold reversed at the issuer"})
        return self._reverse(new, key, held, state["approval_code"], EXPIRY_REASON, now)

    @guarded
    def on_IssRevRes(self, state, event, now, shared) -> Outcome:
        """The issuer's answer to a reversal: a void/reduction (``gateway_adjust``), or one of
        ours, recorded (rev_code, rev_amt, rev_date)."""
        key = self.transaction_key(event)
        if (state["state"] not in ("REVERSING", "EXPIRED", "ISSUER_REV")
                or self.exchange.pending(state) is None):
            return self._absorb(state, key, "IssRevRes, but no IssRevReq is outstanding")
        data = self._issuer_answer(state, event, now)
        if state["state"] == "ISSUER_REV" and state["_serve"]["kind"] == "void":
            return self._revised(state, key, data, now)
        new, timers = self.exchange.settle(state)
        new.update(rev_code=data["response_code"], rev_amt=data["amount"]["amount"],
                   rev_date=when(now))
        if state["state"] == "ISSUER_REV":  # a late subsequent approval, reversed
            new["state"] = new.pop("_serve")["back"]
            timers = (*timers, *self._resumed(new, key))
        else:
            new["state"] = "DECLINED" if state["state"] == "REVERSING" else "EXPIRED"
            if state.get("cap_amt") and data["response_code"] == "00":
                new["auth_amt"] = state["cap_amt"]  # the rest of a split shipment, reversed
        return Outcome(key, new, timers=timers, peer=self.config.issuer)

    # -- waiting on the issuer -----------------------------------------------------------------------
    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        return self.exchange.on_timer(state, key, now,
                                      lambda why: self._give_up(state, key, now, shared, why))

    def on_Error(self, state, event, now, shared) -> Outcome:
        """Ends our issuer request only if signed by the issuer and naming its bytes; an Error
        that merely names it brings the re-send forward (once per attempt); never answered."""
        key, cfg = self.transaction_key(event), self.config
        if state["state"] == START:
            return self._absorb(state, key, "Error for no purchase here")
        verdict = self.exchange.judge(state, event, now, suite=cfg.suite,
                                      validate=pinned_check(cfg.issuer_pinned, now))
        if verdict.kind == ENDS:
            return self._give_up(state, key, now, shared, verdict.why, verdict.code)
        if verdict.kind == NUDGE:
            new, timers = self.exchange.nudge(dict(state), key, now)
            return Outcome(key, {**new, "issuer_error": verdict.why}, timers=timers,
                           refused=verdict.why)
        return Outcome(key, dict(state), refused=verdict.why)

    def _give_up(self, state, key: str, now, shared, reason: str,
                 code: str | None = None) -> Outcome:
        """The issuer request is over without an answer: whoever waits gets its answer with
        noReply, systemError or unspecifiedFailure, and the purchase goes back where it was; an
        unanswered reversal of ours is recorded as ``rev_failure``."""
        cfg, current = self.config, state["state"]
        if current in ("ISSUER_CRED", "ISSUER_CREDREV", "ISSUER_CAPREV"):
            return self._give_up_adjust(state, key, now, shared, reason)
        if current == "ISSUER_REAUTH":
            return self._give_up_reauth(state, key, now, reason, code)
        if current == "CLEARING":
            return self._give_up_clearing(state, key, reason)
        if current == "ISSUER_CAP":
            out = self._captured(state, key, now, shared, "unspecifiedFailure", None,
                                 zero(_money(state)))
            out.state["reason"] = reason
            return out
        new, timers = self.exchange.settle(state)
        if current == "ISSUER_AUTH":
            auth = "noReply" if code is None else "systemError"
            send = auth_res(cfg, state["_reply"], now, code=auth, amount=zero(_money(state)),
                            answers=state["_auth_digest"])
            new.pop("secret", None)
            new.update(state="DECLINED", auth_code=auth, auth_amt=0, reason=reason)
            return Outcome(key, new, sends=(send,), timers=timers)
        if current == "ISSUER_REV":
            serve = new.pop("_serve")
            new.update(state=serve["back"], rev_failure=reason + (f" ({code})" if code else ""))
            timers = (*timers, *self._resumed(new, key))
            if serve["kind"] != "void":
                return Outcome(key, new, timers=timers)
            send = auth_rev_res(cfg, serve["reply"], now,
                                code="noReply" if code is None else "unspecifiedFailure",
                                new_amount=_of(state, state["auth_amt"]), answers=serve["digest"])
            return Outcome(key, new, sends=(send,), timers=timers)
        new.update(state="DECLINED" if current == "REVERSING" else current,
                   rev_failure=reason + (f" ({code})" if code else ""))
        return Outcome(key, new, timers=timers)
