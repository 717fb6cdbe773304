"""The merchant as its gateway's client: every request to the gateway out, its answers in.

Why a module of its own: this half of the merchant asks and waits, the other half
(``roles/merchant.py``) answers the cardholder.  Asking and waiting is the ``Exchange`` component
(``roles/exchange.py``), pinned to the merchant's *own acquirer's* gateway: the subject of the
gateway key-exchange certificate world.toml names, with a signer path of type ``pgwy``.  So an
answer or Error signed by any other gateway of the brand changes nothing; only an Error signed by
our gateway naming our exact bytes (D-134) ends a request, any other naming its RRPID brings the
re-send forward once per attempt; an answer nobody waits for is absorbed.  The BCI every answer
carries is verified on the gateway's validated path and never goes back.

One request at a time per purchase (slot ``out``): the AuthReq, a CapReq, and after the
authorisation a later AuthReq (``merchant_split.py``), AuthRevReq, CredReq, CredRevReq or
CapRevReq (``merchant_adjust.py``); ``ANSWERS`` says how each answer opens.  A request made after
the authorisation waits in an ``ADJUSTING`` state; a refusal, an Error or the end of the re-sends
returns the purchase to the state it left (``base``), an accepted change to the state its amounts
say (``_standing``: AUTHORIZED, CAPTURED, PARTLY_REFUNDED, REFUNDED).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

from setmail.asn1 import capture as cap, gateway as gw
from setmail.asn1.codec.strict import decode_native
from setmail.crypto import der
from setmail.crypto.operators import EncB, open_Enc, open_EncB
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.roles import merchant_msgs as msgs
from setmail.roles.base import START, CancelTimer, Outcome
from setmail.roles.brand import check_bci
from setmail.roles.exchange import ENDS, NUDGE
from setmail.roles.merchant_batch import merchant_shared
from setmail.roles.merchant_msgs import MAX_ENTRIES, captured_total, enter, expired, iso, record
from setmail.roles.refusal import guarded
from setmail.roles.wire import check_echo, h, unh, unwrap, wrap

#: request -> (its answer, the envelope's content types: TBE, signed type, baggage type or None
#: for Enc).  AuthRevRes is a CHOICE of both forms (D-107): ``_open``.
ANSWERS = {
    "AuthReq": ("AuthRes", "AuthResTBE", "AuthResTBS", "AuthResBaggage"),
    "CapReq": ("CapRes", "CapResTBE", "CapResData", None),
    "AuthRevReq": ("AuthRevRes", None, None, None),
    "CredReq": ("CredRes", "CredResTBE", "CredResData", None),
    "CredRevReq": ("CredRevRes", "CredRevResTBE", "CredRevResData", None),
    "CapRevReq": ("CapRevRes", "CapRevResTBE", "CapRevResData", None),
}


class GatewaySide:
    """Handlers of the merchant's gateway exchange (mixed into ``Merchant``, which provides
    ``config``, ``exchange``, ``_gateway_pin``, ``_mer_thumb``, ``_pres``, ``_ids``, ``_check``,
    ``_expire_timer``, ``_absorb``, ``_batch_item``, ``_reauthorized``, ``transaction_key`` and
    ``refuse``)."""

    # -- answers -------------------------------------------------------------------------------------
    def _answer_from_gateway(self, state, event, now, request: str | tuple):
        """The opened envelope of an answer to our outstanding ``request`` (a type, or several)
        signed by our gateway; None if nothing of the kind is outstanding (a repeat: absorbed
        without a note); else ProtocolError (refused and noted, never answered)."""
        rec = self.exchange.pending(state)
        requests = (request,) if isinstance(request, str) else request
        if rec is None or rec["type"] not in requests:
            return None
        parsed = unwrap(event, now)
        env = self._open(rec["type"], parsed.body, now)
        self.exchange.accept(state, parsed, env.signed.signer)
        return env

    def _open(self, request: str, body: bytes, now: dt.datetime):
        cfg, validate = self.config, self._check(now, "pgwy")
        _, tbe, tbs, baggage = ANSWERS[request]
        if request == "AuthRevReq":  # [0] Enc (AuthRevResTBE) or [1] EncB (AuthRevResTBEB)
            inner = der.seq(der.content_of(body))
            if body[:1] == b"\xa0":
                return open_Enc(inner, cfg.kex, "AuthRevResTBE", "AuthRevResData",
                                validate=validate, suite=cfg.suite)
            if body[:1] != b"\xa1":
                raise ProtocolError("AuthRevRes is neither of its two forms", "decodingFailure")
            return open_EncB(inner, cfg.kex, "AuthRevResTBEB", "AuthRevResTBS",
                             "AuthRevResBaggage", validate=validate, suite=cfg.suite)
        if baggage is not None:
            return open_EncB(body, cfg.kex, tbe, tbs, baggage, validate=validate, suite=cfg.suite)
        return open_Enc(body, cfg.kex, tbe, tbs, validate=validate, suite=cfg.suite)

    def _bci(self, data: dict, env, now: dt.datetime, brand) -> dict | None:
        """The new "brand" part of the shared state after the answer's BCI (None: unchanged)."""
        _, seen = check_bci(data.get("brand_crl_identifier"), env.signed.signer,
                            env.signed.certificates, trust=self.config.trust, now=now,
                            expected_type="pgwy", suite=self.config.suite, crls=self.config.crls,
                            seen=brand)
        return seen

    def _shared(self, data: dict, env, now: dt.datetime, shared) -> tuple[dict, bool]:
        """(the shared state as it will be after this answer's BCI, changed?)."""
        ms = merchant_shared(shared)
        brand = self._bci(data, env, now, ms["brand"])
        return ({**ms, "brand": brand}, True) if brand is not None else (ms, False)

    # -- AuthRes -> PRes (+ CapReq) ------------------------------------------------------------------
    @guarded
    def on_AuthRes(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        env = self._answer_from_gateway(state, event, now, "AuthReq")
        if env is None:
            return self._absorb(state, key, "AuthRes answers no AuthReq outstanding")
        rec = self.exchange.pending(state)
        data = decode_native(gw.AuthResData, env.content, raw=(
            "auth_tags.trans_ids", "brand_crl_identifier", "auth_res_payload"))
        check_echo("AuthTags RRPID", data["auth_tags"]["auth_rr_tags"]["rrpid"], unh(rec["rrpid"]))
        if data["auth_tags"]["trans_ids"] != unh(state["trans_ids"]):
            raise ProtocolError("TransIDs differ from those signed in PInitRes", "unknownXID")
        if data["mer_thumb"] != self._mer_thumb:
            raise ProtocolError("AuthRes names another merchant certificate", "thumbsMismatch")
        payload_der = data["auth_res_payload"]
        data["auth_res_payload"] = decode_native(gw.AuthResPayload, payload_der)
        ms, changed = self._shared(data, env, now, shared)
        baggage = decode_native(gw.AuthResBaggage, env.baggage)
        result = msgs.auth_result(data)
        state, timers = self.exchange.settle(dict(state))
        if state["state"] == "REAUTH_SENT":
            out = self._reauthorized(state, key, now, result, baggage, payload_der, rec["rrpid"])
            return replace(out, timers=(*timers, *out.timers), peer=cfg.gateway,
                           shared=ms if changed else None)
        state.update(result, auth_date=iso(now), auth_res_payload=payload_der.hex(),
                     result=_result("AuthReq", rec, result["auth_code"], result["auth_amt"], now))
        for name in ("cap_token", "acq_card_msg", "auth_token"):  # opaque: only the gateway
            if baggage[name] is not None:                       # or the cardholder opens them
                state[name] = baggage[name].hex()
        if state["auth_code"] != "approved":
            state = enter(state, "DECLINED", now)
            return Outcome(key, state, sends=(self._pres(state, key, now),),
                           timers=(*timers, CancelTimer("expire")),
                           shared=ms if changed else None, peer=cfg.gateway)
        state.update(auth_expires=iso(now + cfg.auth_expiry), auth_count=1)
        sale = data["auth_res_payload"]["cap_res_payload"]
        if sale is not None:  # CaptureNow: authorised and captured in one answer
            return self._sale(state, key, now, sale, ms, timers)
        if cfg.auto_capture and state.get("cap_token"):
            state = enter(state, "AUTHORIZED", now)
            pres = self._pres(state, key, now)
            out = self._capture(state, key, now, state["auth_amt"])
            return replace(out, sends=(pres, *out.sends), shared=ms if changed else None,
                           peer=cfg.gateway)
        state, more = self._authorized(state, key, now)
        return Outcome(key, state, sends=(self._pres(state, key, now),), timers=(*timers, *more),
                       shared=ms if changed else None, peer=cfg.gateway)

    def _sale(self, state: dict, key: str, now: dt.datetime, payload: dict, ms: dict,
              timers: tuple) -> Outcome:
        """A sale's AuthRes: CAPTURED (the capture in the gateway's batch), or AUTHORIZED if its
        capture part failed (``capture`` may try again)."""
        code = payload["cap_code"]
        state = {**state, "cap_code": code}
        more: tuple = ()
        if code == "success":
            amount = payload["cap_amt"]["amount"]
            state = self._captured(state, now, amount, payload, rrpid=state["auth_rrpid"])
            ms, more = self._batch_item(ms, key, now, state, batch_id=payload["batch_id"],
                                        seq=payload["batch_sequence_num"], kind="capture",
                                        amount=amount)
            state = enter(state, "CAPTURED", now)
            more = (*more, CancelTimer("expire"))
        else:
            state = record(state, now, "gateway", "AuthRes", code, f"sale's capture: {code}")
            state, more = self._authorized(state, key, now)
        return Outcome(key, state, sends=(self._pres(state, key, now),), timers=(*timers, *more),
                       shared=ms, peer=self.config.gateway)

    def _authorized(self, state: dict, key: str, now: dt.datetime):
        """(state, timers) back in AUTHORIZED, waiting for a capture until ``auth_expires``; or
        EXPIRED if that moment has passed (the gateway has released the authorisation)."""
        due = dt.datetime.fromisoformat(state["auth_expires"])
        if now >= due:
            state = {k: v for k, v in state.items() if k != "cap_token"}
            return expired(state, now, f"authorisation of {state['auth_date']} not captured "
                           f"by {state['auth_expires']}"), (CancelTimer("expire"),)
        return enter(state, "AUTHORIZED", now), (self._expire_timer(key, due),)

    def _standing(self, state: dict, key: str, now: dt.datetime):
        """(state, timers) in the state the purchase's amounts say: nothing captured ->
        AUTHORIZED (or EXPIRED), captured -> CAPTURED, credited -> PARTLY_REFUNDED or REFUNDED."""
        captured, credited = captured_total(state), state.get("credited", 0)
        if captured <= 0:
            return self._authorized(state, key, now)
        name = ("CAPTURED" if credited <= 0 else
                "PARTLY_REFUNDED" if credited < captured else "REFUNDED")
        return enter(state, name, now), (CancelTimer("expire"),)

    def _back(self, state: dict, key: str, now: dt.datetime):
        """(state, timers) back where the refused request left (``base``)."""
        base = state.get("base", "AUTHORIZED")
        if base == "AUTHORIZED":
            return self._authorized(state, key, now)
        return enter(state, base, now), ()

    # -- capture -> CapReq; CapRes -------------------------------------------------------------------
    def on_capture(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        if state["state"] == "EXPIRED":
            return Outcome(key, dict(state), refused=f"capture refused: purchase expired "
                           f"({state['expired']['reason']})")
        if now >= dt.datetime.fromisoformat(state["auth_expires"]):
            return Outcome(key, dict(state), refused="capture refused: the authorisation "
                           f"expired at {state['auth_expires']}")
        minor = event.args.get("amount")
        if minor is None:  # what is authorised and not captured yet (the gateway decides)
            minor = max(state["auth_amt"] - captured_total(state), 0)
            if minor <= 0:
                return Outcome(key, dict(state), refused=f"capture refused: {state['state']}, "
                               "everything authorised is captured (give an amount to ask "
                               "anyway)")
        if isinstance(minor, bool) or not isinstance(minor, int) or minor <= 0:
            raise ProtocolError("capture amount must be a positive integer in minor units")
        if not state.get("cap_token"):
            raise ProtocolError("the gateway sent no CapToken with this authorisation")
        if len(state.get("captures", [])) >= MAX_ENTRIES:
            return Outcome(key, dict(state), refused=f"at most {MAX_ENTRIES} captures per "
                           "purchase")
        return self._capture(dict(state), key, now, minor)

    def _capture(self, state: dict, key: str, now: dt.datetime, minor: int) -> Outcome:
        cfg, rrpid = self.config, fresh()
        state = {**state, "cap_rrpid": h(rrpid), "cap_req_amt": minor}
        data = msgs.cap_req_data(state, rrpid=rrpid, mer_id=cfg.mer_id, now=now, minor=minor)
        body = EncB(cfg.sig, cfg.gateway_kex, "CapReqTBS", data, "CapTokenSeq",
                    msgs.cap_token_seq(unh(state["cap_token"])), "CapReqTBE",
                    certs=cfg.request_certs, suite=cfg.suite)
        return self._ask(state, key, now, "CAP_SENT", "CapReq", body, rrpid)

    def _ask(self, state: dict, key: str, now: dt.datetime, waiting: str, type_name: str,
             body: bytes, rrpid: bytes) -> Outcome:
        """Send one request to our gateway and wait for its answer in state ``waiting``."""
        cfg = self.config
        wrapper = wrap(type_name, body, now=now, rrpid=rrpid,
                       **self._ids(state["pinit_req"]["lid_c"], key))
        return self.exchange.ask(enter(state, waiting, now), key, to=cfg.gateway,
                                 type_name=type_name, der=wrapper, rrpid=rrpid,
                                 expects=(ANSWERS[type_name][0],), pin_=self._gateway_pin,
                                 now=now, cancel=("retry",))

    @guarded
    def on_CapRes(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        env = self._answer_from_gateway(state, event, now, "CapReq")
        if env is None:
            return self._absorb(state, key, "CapRes answers no CapReq outstanding")
        rec = self.exchange.pending(state)
        data = decode_native(cap.CapResData, env.content, raw=("cap_res_item_seq.*.trans_ids",
                                                                "brand_crl_identifier"))
        check_echo("CapRRTags RRPID", data["cap_rr_tags"]["rrpid"], unh(rec["rrpid"]))
        mine = unh(state["trans_ids"])
        item = next((i for i in data["cap_res_item_seq"] if i["trans_ids"] == mine), None)
        if item is None or item["auth_rrpid"] != unh(state["auth_rrpid"]):
            raise ProtocolError("CapRes has no item for this purchase", "unknownXID")
        ms, changed = self._shared(data, env, now, shared)
        payload = item["cap_res_payload"]
        code, amount = payload["cap_code"], payload["cap_amt"]["amount"]
        state, timers = self.exchange.settle({**state, "cap_code": code,
                                              "result": _result("CapReq", rec, code, amount, now)})
        if code == "success":
            state = self._captured(state, now, amount, payload, rrpid=rec["rrpid"])
            ms, more = self._batch_item(ms, key, now, state, batch_id=payload["batch_id"],
                                        seq=payload["batch_sequence_num"], kind="capture",
                                        amount=amount)
            state, standing = self._standing(state, key, now)
            more = (*more, *standing)
            changed = True
        else:
            state = record(state, now, "gateway", "CapRes", code, f"capture refused: {code}")
            state, more = self._back(state, key, now)
        return Outcome(key, state, timers=(*timers, *more), shared=ms if changed else None,
                       peer=self.config.gateway)

    @staticmethod
    def _captured(state: dict, now: dt.datetime, amount: int, payload: dict, *,
                  rrpid: str) -> dict:
        """``state`` with one more capture: ``captured`` (and ``cap_amt``) is the total now."""
        entry = {"rrpid": rrpid, "amount": amount, "date": iso(now),
                 "batch_id": payload.get("batch_id"), "seq": payload.get("batch_sequence_num")}
        captured = captured_total(state) + amount
        return {**state, "captured": captured, "cap_amt": captured, "cap_date": iso(now),
                "captures": [*state.get("captures", []), entry][-MAX_ENTRIES:]}

    # -- Errors and retries --------------------------------------------------------------------------
    def on_Error(self, state, event, now, shared) -> Outcome:
        """Only an Error signed by our gateway naming the exact bytes of the outstanding request
        ends it; one that merely names its RRPID is noted and brings the re-send forward (once per
        attempt); the rest changes nothing.  An Error is never answered."""
        key = self.transaction_key(event)
        if key == self.BATCHES:
            return self._batch_error(state, event, now, shared)
        if state["state"] == START:
            return Outcome(key, None, refused="Error about no purchase of ours")
        verdict = self.exchange.judge(state, event, now, validate=self._check(now, "pgwy"),
                                      suite=self.config.suite)
        if verdict.kind == ENDS:
            out = self._give_up(dict(state), key, now, verdict.why, verdict.code, by="gateway")
            return replace(out, peer=self.config.gateway)
        if verdict.kind == NUDGE:
            rec = self.exchange.pending(state)
            noted = record(dict(state), now, "unauthenticated", rec["type"], verdict.code,
                           verdict.why)
            noted, timers = self.exchange.nudge(noted, key, now)
            return Outcome(key, noted, timers=timers, refused=verdict.why)
        return Outcome(key, dict(state), refused=verdict.why)

    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        return self.exchange.on_timer(state, key, now, lambda why: self._give_up(
            dict(state), key, now, why, "noReply", by="merchant"))

    def _give_up(self, state: dict, key: str, now: dt.datetime, reason: str, code: str | None,
                 *, by: str) -> Outcome:
        """No authorisation: PRes orderRejected to the cardholder.  Any later request: back to
        the state it left (AUTHORIZED may have become EXPIRED meanwhile).  An answer arriving
        after this is absorbed; the batch's reconciliation would show what the gateway did."""
        rec = self.exchange.pending(state)
        state, timers = self.exchange.settle({k: v for k, v in state.items() if k not in _IN_FLIGHT})
        state = record({**state, "failure": reason,
                        "result": _result(rec["type"], rec, code, None, now)},
                       now, by, rec["type"], code, reason)
        if state["state"] != "AUTH_SENT":
            state, more = self._back(state, key, now)
            return Outcome(key, state, timers=(*timers, *more))
        state = enter(state, "REJECTED", now)
        return Outcome(key, state, sends=(self._pres(state, key, now),), timers=timers)


#: what a request in flight keeps of what it asked (gone with its answer, or when it gives up)
_IN_FLIGHT = ("reauth_req_data", "reauth_amt", "void_amt", "adjust_amt", "reversing")


def _result(request: str, rec: dict, code: str | None, amount: int | None,
            now: dt.datetime) -> dict:
    """What ``setmail tx show`` (and a CLI waiting for its command) reads of the last request's
    end: its type, RRPID, SET code and amount."""
    return {"request": request, "rrpid": rec["rrpid"], "code": code, "amount": amount,
            "at": iso(now)}
