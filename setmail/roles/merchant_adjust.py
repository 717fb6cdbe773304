"""After the authorisation: void, refunds, and the reversals of a capture or a credit
(docs/lifecycle.md), each one request to the merchant's gateway.

    void {xid, amount}      -> AuthRevReq = EncB(M, P, AuthRevReqData, {CapToken})
                            <- AuthRevRes = Enc(P, M, AuthRevResData) | EncB(.., {new CapToken})
    refund {xid, amount}    -> CredReq    = EncB(M, P, CredReqData, [CapToken])  <- CredRes
    refund_reverse {xid}    -> CredRevReq = EncB(M, P, CredRevReqData, [CapToken]) <- CredRevRes
    capture_reverse {xid}   -> CapRevReq  = EncB(M, P, CapRevReqData, [CapToken])  <- CapRevRes

Why the merchant checks so little: the gateway keeps the books that count (what was authorised,
captured, credited, settled), so the merchant sends what it is asked for and records the gateway's
SET code (amountTooLarge, alreadyCaptured, originalProcessed, ...) where ``setmail tx show`` and
the CLI show it.  It refuses locally only what it cannot even build: a command with a nonsense
amount, a reversal with nothing to name.  Defaults are what an acquirer's terminal offers: a
refund of what is still refundable, the reversal of the latest capture or credit.

What each answer does when it says success: a full void -> VOIDED (cap and auth tokens gone), a
partial one -> AUTHORIZED for the new amount with the new CapToken; a credit -> PARTLY_REFUNDED or
REFUNDED, in the batch the answer names; a credit reversal takes that credit out again; a capture
reversal -> AUTHORIZED again (the hold is back; capture again, or void).  The merchant's batch
records follow (``merchant_batch.py``).  When the gateway says ``originalProcessed`` (the capture
or credit was settled) or ``alreadyCaptured``, ``advice`` in the state says what to do instead.
"""
from __future__ import annotations

import datetime as dt

from setmail.asn1 import capture as cap, gateway as gw
from setmail.asn1.codec.fastder import Raw, encode
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.operators import EncB
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.roles.base import CancelTimer, Outcome
from setmail.roles.merchant_batch import drop_item
from setmail.roles.merchant_msgs import (MAX_ENTRIES, amount, captured_total, enter, expired,
                                         iso, record, rr_tags, utc)
from setmail.roles.refusal import guarded
from setmail.roles.wire import check_echo, unh

#: SET codes after which the merchant is told what to do instead
ADVICE = {
    ("CapRevReq", "originalProcessed"): "the capture is settled: refund it instead "
                                        "(setmail refund)",
    ("CredRevReq", "originalProcessed"): "the credit is settled: it can no longer be reversed",
    ("AuthRevReq", "alreadyCaptured"): "the authorisation is captured: refund it instead "
                                       "(setmail refund)",
}
#: the state's list each reversal names its original in, and the state it waits in
_ORIGINALS = {"CredRevReq": "credits", "CapRevReq": "captures"}
_WAITING = {"CredRevReq": "CREDREV_SENT", "CapRevReq": "CAPREV_SENT"}
_DATA = {"CredReq": (cap.CredResData, "CredReqTBS", "CredReqTBE"),
         "CredRevReq": (cap.CredRevResData, "CredRevReqTBS", "CredRevReqTBE"),
         "CapRevReq": (cap.CapRevResData, "CapRevReqTBS", "CapRevReqTBE")}


def _minor(value, what: str, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (
            value == 0 and not zero):
        raise ProtocolError(f"{what} must be a {'non-negative' if zero else 'positive'} integer "
                            "in minor units")
    return value


def auth_rev_req_data(state: dict, *, rrpid: bytes, mer_id: str, now: dt.datetime,
                      new: int) -> bytes:
    """AuthRevReqData: the authorisation as asked and as answered (kept as DER), the new amount."""
    return encode(gw.AuthRevReqData, {
        "auth_rev_tags": {"auth_rev_rr_tags": rr_tags(rrpid, mer_id, now),
                          "trans_ids": Raw(unh(state["trans_ids"]))},
        "auth_req_data": Raw(unh(state["auth_req_data"])),
        "auth_res_payload": Raw(unh(state["auth_res_payload"])),
        "auth_new_amt": amount(state, new)})


def cap_rev_or_cred_req_data(state: dict, *, rrpid: bytes, mer_id: str, now: dt.datetime,
                             cap_date: str, cap_amt: int, minor: int) -> bytes:
    """The one item of a CredReq, CredRevReq or CapRevReq: the capture it concerns (date and
    amount; for a credit the purchase's captures: the latest date, the total) and the amount."""
    return encode(cap.CapRevOrCredReqData, {
        "cap_rev_or_cred_rr_tags": rr_tags(rrpid, mer_id, now),
        "cap_rev_or_cred_req_item_seq": [{
            "trans_ids": Raw(unh(state["trans_ids"])), "auth_rrpid": unh(state["auth_rrpid"]),
            "cap_payload": {"cap_date": dt.datetime.fromisoformat(cap_date),
                            "cap_req_amt": amount(state, cap_amt)},
            "cap_rev_or_cred_req_date": utc(now),
            "cap_rev_or_cred_req_amt": amount(state, minor)}]})


class AdjustSide:
    """Handlers mixed into ``Merchant`` (which provides ``config``, ``exchange``, ``_ask``,
    ``_answer_from_gateway``, ``_shared``, ``_standing``, ``_back``, ``_absorb`` and
    ``transaction_key``)."""

    # -- void ----------------------------------------------------------------------------------------
    def on_void(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        new = _minor(event.args.get("amount") or 0, "void amount (what stays authorised)",
                     zero=True)
        if not (state.get("auth_req_data") and state.get("auth_res_payload")):
            return Outcome(key, dict(state), refused="void refused: this purchase keeps no copy "
                           "of its authorisation (authorised before voids existed)")
        cfg, rrpid = self.config, fresh()
        data = auth_rev_req_data(state, rrpid=rrpid, mer_id=cfg.mer_id, now=now, new=new)
        token = state.get("cap_token")
        baggage = encode(gw.AuthRevReqBaggage, {"cap_token": Raw(unh(token))} if token else {})
        body = EncB(cfg.sig, cfg.gateway_kex, "AuthRevReqTBS", data, "AuthRevReqBaggage",
                    baggage, "AuthRevReqTBE", certs=cfg.request_certs, suite=cfg.suite)
        return self._ask({**state, "void_amt": new}, key, now, "AUTHREV_SENT", "AuthRevReq", body,
                         rrpid)

    @guarded
    def on_AuthRevRes(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        env = self._answer_from_gateway(state, event, now, "AuthRevReq")
        if env is None:
            return self._absorb(state, key, "AuthRevRes answers no AuthRevReq outstanding")
        rec = self.exchange.pending(state)
        data = decode_native(gw.AuthRevResData, env.content, raw=(
            "auth_rev_tags.trans_ids", "brand_crl_identifier", "auth_res_payload_new"))
        check_echo("AuthRevTags RRPID", data["auth_rev_tags"]["auth_rev_rr_tags"]["rrpid"],
                   unh(rec["rrpid"]))
        if data["auth_rev_tags"]["trans_ids"] != unh(state["trans_ids"]):
            raise ProtocolError("TransIDs differ from those signed in PInitRes", "unknownXID")
        ms, changed = self._shared(data, env, now, shared)
        code, new = data["auth_rev_code"], data["auth_new_amt"]["amount"]
        baggage = (decode_native(gw.AuthRevResBaggage, env.baggage) if env.baggage is not None
                   else {"cap_token_new": None, "auth_token_new": None})
        state, timers = self.exchange.settle(dict(state))
        state = _noted(state, rec, code, new, now)
        if code == "approved" and new == 0:
            state = {k: v for k, v in state.items() if k not in ("cap_token", "auth_token")}
            state = enter({**state, "auth_amt": 0, "void_date": iso(now)}, "VOIDED", now)
            more: tuple = (CancelTimer("expire"),)
        elif code == "approved":
            state.update(auth_amt=new, void_date=iso(now))
            for field, name in (("cap_token_new", "cap_token"), ("auth_token_new", "auth_token")):
                if baggage[field] is not None:
                    state[name] = baggage[field].hex()
            if data["auth_res_payload_new"] is not None:
                state["auth_res_payload"] = data["auth_res_payload_new"].hex()
            state, more = self._standing(state, key, now)
        elif code == "authExpired":
            state = {k: v for k, v in state.items() if k != "cap_token"}
            state = expired(state, now, "the gateway says the authorisation expired "
                            "(AuthRevRes authExpired)")
            more = (CancelTimer("expire"),)
        else:
            state = record(state, now, "gateway", "AuthRevRes", code, f"void refused: {code}")
            state, more = self._back(state, key, now)
        return Outcome(key, state, timers=(*timers, *more), shared=ms if changed else None,
                       peer=self.config.gateway)

    # -- refunds and reversals -----------------------------------------------------------------------
    def on_refund(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        captured, credited = captured_total(state), state.get("credited", 0)
        minor = event.args.get("amount")
        if minor is None:
            minor = captured - credited
            if minor <= 0:
                return Outcome(key, dict(state), refused="refund refused: nothing is left to "
                               "refund (give an amount to ask the gateway anyway)")
        minor = _minor(minor, "refund amount")
        if len(state.get("credits", [])) >= MAX_ENTRIES:
            return Outcome(key, dict(state), refused=f"at most {MAX_ENTRIES} credits per "
                           "purchase")
        return self._cap_rev_or_cred(dict(state), key, now, "CredReq", "CRED_SENT",
                                     cap_date=state["cap_date"], cap_amt=captured, minor=minor)

    def on_refund_reverse(self, state, event, now, shared) -> Outcome:
        return self._reverse(state, event, now, shared, "CredRevReq")

    def on_capture_reverse(self, state, event, now, shared) -> Outcome:
        return self._reverse(state, event, now, shared, "CapRevReq")

    def _reverse(self, state, event, now, shared, request: str) -> Outcome:
        """Reverse the latest credit or capture (``_latest``): a CredRevReq names the purchase's
        captures as the credit did, a CapRevReq the capture it takes back."""
        key, name = self.transaction_key(event), _ORIGINALS[request]
        what = name[:-1]
        index = self._latest(state, name, shared)
        if index is None:
            return Outcome(key, dict(state), refused=f"{what} reversal refused: no {what} of "
                           "this purchase is left to reverse")
        entry = state[name][index]
        cap_date, cap_amt = ((entry["date"], entry["amount"]) if request == "CapRevReq" else
                             (state["cap_date"], captured_total(state)))
        return self._cap_rev_or_cred({**state, "reversing": index}, key, now, request,
                                     _WAITING[request], cap_date=cap_date, cap_amt=cap_amt,
                                     minor=entry["amount"])

    @staticmethod
    def _latest(state, name: str, shared) -> int | None:
        """The latest capture/credit not reversed, preferring one whose batch we have not seen
        closed (a settled one would only get originalProcessed); None: nothing to reverse."""
        from setmail.roles.merchant_batch import merchant_shared
        batches = merchant_shared(shared)["batches"]
        live = [n for n, e in enumerate(state.get(name, [])) if not e.get("reversed")]
        open_ = [n for n in live if (batches.get(str(state[name][n].get("batch_id"))) or {}).get(
            "status", "open") == "open"]
        return (open_ or live or [None])[-1]

    def _cap_rev_or_cred(self, state: dict, key: str, now: dt.datetime, request: str,
                         waiting: str, *, cap_date: str, cap_amt: int, minor: int) -> Outcome:
        cfg, rrpid = self.config, fresh()
        _, tbs, tbe = _DATA[request]
        data = cap_rev_or_cred_req_data(state, rrpid=rrpid, mer_id=cfg.mer_id, now=now,
                                        cap_date=cap_date, cap_amt=cap_amt, minor=minor)
        token = state.get("cap_token")
        tokens = encode(gw.CapTokenSeq, [Raw(unh(token))] if token else [])
        body = EncB(cfg.sig, cfg.gateway_kex, tbs, data, "CapTokenSeq", tokens, tbe,
                    certs=cfg.request_certs, suite=cfg.suite)
        return self._ask({**state, "adjust_amt": minor}, key, now, waiting, request, body, rrpid)

    @guarded
    def on_CredRes(self, state, event, now, shared) -> Outcome:
        return self._cap_rev_or_cred_res(state, event, now, shared, "CredReq")

    @guarded
    def on_CredRevRes(self, state, event, now, shared) -> Outcome:
        return self._cap_rev_or_cred_res(state, event, now, shared, "CredRevReq")

    @guarded
    def on_CapRevRes(self, state, event, now, shared) -> Outcome:
        return self._cap_rev_or_cred_res(state, event, now, shared, "CapRevReq")

    def _cap_rev_or_cred_res(self, state, event, now, shared, request: str) -> Outcome:
        key = self.transaction_key(event)
        env = self._answer_from_gateway(state, event, now, request)
        if env is None:
            return self._absorb(state, key, f"{event.message_type} answers no {request} "
                                "outstanding")
        rec = self.exchange.pending(state)
        cls = _DATA[request][0]
        data = decode_native(cls, env.content, raw=("cap_rev_or_cred_res_item_seq.*.trans_ids",
                                                     "brand_crl_identifier"))
        check_echo("RRTags RRPID", data["cap_rev_or_cred_rr_tags"]["rrpid"], unh(rec["rrpid"]))
        mine, auth_rrpid = unh(state["trans_ids"]), unh(state["auth_rrpid"])
        item = next((i for i in data["cap_rev_or_cred_res_item_seq"]
                     if i["trans_ids"] == mine and i["auth_rrpid"] == auth_rrpid), None)
        if item is None:
            raise ProtocolError(f"{event.message_type} has no item for this purchase",
                                "unknownXID")
        ms, changed = self._shared(data, env, now, shared)
        payload = item["cap_rev_or_cred_res_payload"]
        code, amt = payload["cap_rev_or_cred_code"], payload["cap_rev_or_cred_act_amt"]["amount"]
        state, timers = self.exchange.settle(dict(state))
        state = _noted(state, rec, code, amt, now)
        index = state.pop("reversing", None)
        if code != "success":
            state = record(state, now, "gateway", event.message_type, code,
                           f"{request} refused: {code}")
            state, more = self._back(state, key, now)
            return Outcome(key, state, timers=(*timers, *more), shared=ms if changed else None,
                           peer=self.config.gateway)
        if request == "CredReq":
            entry = {"rrpid": rec["rrpid"], "amount": amt, "date": iso(now),
                     "batch_id": payload["batch_id"], "seq": payload["batch_sequence_num"]}
            state.update(credited=state.get("credited", 0) + amt,
                         credits=[*state.get("credits", []), entry])
            ms, batch_timers = self._batch_item(ms, key, now, state, batch_id=entry["batch_id"],
                                                seq=entry["seq"], kind="credit", amount=amt)
            timers = (*timers, *batch_timers)
        else:
            name = _ORIGINALS[request]
            entries = [dict(e) for e in state[name]]
            original = entries[index]
            original["reversed"] = iso(now)
            state[name] = entries
            if request == "CredRevReq":
                state["credited"] = state.get("credited", 0) - original["amount"]
            else:
                state["captured"] = captured_total(state) - original["amount"]
                state["cap_amt"] = state["captured"]
            ms = drop_item(ms, batch_id=original.get("batch_id"), seq=original.get("seq"),
                           kind="credit" if name == "credits" else "capture",
                           xid=state["xid"])
        state, more = self._standing(state, key, now)
        return Outcome(key, state, timers=(*timers, *more), shared=ms, peer=self.config.gateway)


def _noted(state: dict, rec: dict, code: str, amt: int | None, now: dt.datetime) -> dict:
    """The request's result, and the advice its code calls for (or none)."""
    state = {k: v for k, v in state.items() if k not in ("advice", "adjust_amt", "void_amt")}
    state["result"] = {"request": rec["type"], "rrpid": rec["rrpid"], "code": code,
                       "amount": amt, "at": iso(now)}
    advice = ADVICE.get((rec["type"], code))
    if advice:
        state["advice"] = advice
    return state

