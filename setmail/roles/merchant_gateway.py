"""The merchant as its gateway's client: AuthReq/CapReq out, AuthRes/CapRes/Errors in.

Why a module of its own: this half of the merchant asks and waits, the other half
(``roles/merchant.py``) answers the cardholder.  Asking and waiting is the ``Exchange`` component
(``roles/exchange.py``), pinned to the merchant's *own acquirer's* gateway: the subject of the
gateway key-exchange certificate world.toml names, with a signer path of type ``pgwy``.  So an
AuthRes, CapRes or Error signed by any other gateway of the brand changes nothing; only an Error
signed by our gateway naming our exact bytes (D-134) ends a request, any other naming its RRPID
brings the re-send forward once per attempt; an answer nobody waits for is absorbed.  The BCI
every answer carries is verified on the gateway's validated path and never goes back.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

from setmail.asn1 import capture as cap, gateway as gw
from setmail.asn1.strict import decode_native
from setmail.crypto.operators import EncB, open_Enc, open_EncB
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.roles import merchant_msgs as msgs
from setmail.roles.base import START, CancelTimer, Outcome
from setmail.roles.brand import check_bci
from setmail.roles.exchange import ENDS, NUDGE
from setmail.roles.merchant_msgs import enter, expired, iso, record
from setmail.roles.refusal import guarded
from setmail.roles.wire import check_echo, h, unh, unwrap, wrap


class GatewaySide:
    """Handlers of the merchant's gateway exchange (mixed into ``Merchant``, which provides
    ``config``, ``exchange``, ``_gateway_pin``, ``_mer_thumb``, ``_pres``, ``_ids``, ``_check``,
    ``_expire_timer``, ``_absorb``, ``transaction_key`` and ``refuse``)."""

    # -- AuthRes -> PRes (+ CapReq) ----------------------------------------------------------------
    def _answer_from_gateway(self, state, event, now, request: str):
        """The opened envelope of an AuthRes/CapRes answering our outstanding ``request`` and
        signed by our gateway; None if nothing of the kind is outstanding (a repeat: absorbed
        without a note); else ProtocolError (refused and noted, never answered)."""
        rec = self.exchange.pending(state)
        if rec is None or rec["type"] != request:
            return None
        parsed = unwrap(event, now)
        cfg = self.config
        if request == "AuthReq":
            env = open_EncB(parsed.body, cfg.kex, "AuthResTBE", "AuthResTBS", "AuthResBaggage",
                            validate=self._check(now, "pgwy"), suite=cfg.suite)
        else:
            env = open_Enc(parsed.body, cfg.kex, "CapResTBE", "CapResData",
                           validate=self._check(now, "pgwy"), suite=cfg.suite)
        self.exchange.accept(state, parsed, env.signed.signer)
        return env

    def _bci(self, data: dict, env, now: dt.datetime, shared) -> dict | None:
        """The new shared "brand" state after the answer's BCI (None: unchanged)."""
        _, seen = check_bci(data.get("brand_crl_identifier"), env.signed.signer,
                            env.signed.certificates, trust=self.config.trust, now=now,
                            expected_type="pgwy", suite=self.config.suite, crls=self.config.crls,
                            seen=shared)
        return seen

    @guarded
    def on_AuthRes(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        env = self._answer_from_gateway(state, event, now, "AuthReq")
        if env is None:
            return self._absorb(state, key, "AuthRes answers no AuthReq outstanding")
        data = decode_native(gw.AuthResData, env.content, raw=("auth_tags.trans_ids",
                                                                "brand_crl_identifier"))
        check_echo("AuthTags RRPID", data["auth_tags"]["auth_rr_tags"]["rrpid"],
                   unh(state["auth_rrpid"]))
        if data["auth_tags"]["trans_ids"] != unh(state["trans_ids"]):
            raise ProtocolError("TransIDs differ from those signed in PInitRes", "unknownXID")
        if data["mer_thumb"] != self._mer_thumb:
            raise ProtocolError("AuthRes names another merchant certificate", "thumbsMismatch")
        seen = self._bci(data, env, now, shared)
        baggage = decode_native(gw.AuthResBaggage, env.baggage)
        state, timers = self.exchange.settle({**state, **msgs.auth_result(data),
                                              "auth_date": iso(now)})
        for name in ("cap_token", "acq_card_msg"):  # opaque: only the gateway/cardholder opens them
            if baggage[name] is not None:  # (their DER, untagged)
                state[name] = baggage[name].hex()
        if state["auth_code"] != "approved":
            state = enter(state, "DECLINED", now)
            return Outcome(key, state, sends=(self._pres(state, key, now),),
                           timers=(*timers, CancelTimer("expire")), shared=seen, peer=cfg.gateway)
        state["auth_expires"] = iso(now + cfg.auth_expiry)
        if cfg.auto_capture and state.get("cap_token"):
            pres = self._pres(enter(state, "AUTHORIZED", now), key, now)
            out = self._capture(state, key, now, state["auth_amt"])
            return replace(out, sends=(pres, *out.sends), shared=seen, peer=cfg.gateway)
        state, more = self._authorized(state, key, now)
        return Outcome(key, state, sends=(self._pres(state, key, now),), timers=(*timers, *more),
                       shared=seen, peer=cfg.gateway)

    def _authorized(self, state: dict, key: str, now: dt.datetime):
        """(state, timers) back in AUTHORIZED, waiting for a capture until ``auth_expires``; or
        EXPIRED if that moment has passed (the gateway has released the authorisation)."""
        due = dt.datetime.fromisoformat(state["auth_expires"])
        if now >= due:
            state = {k: v for k, v in state.items() if k != "cap_token"}
            return expired(state, now, f"authorisation of {state['auth_date']} not captured "
                           f"by {state['auth_expires']}"), (CancelTimer("expire"),)
        return enter(state, "AUTHORIZED", now), (self._expire_timer(key, due),)

    # -- capture -> CapReq; CapRes -----------------------------------------------------------------
    def on_capture(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        if state["state"] == "EXPIRED":
            return Outcome(key, dict(state), refused=f"capture refused: purchase expired "
                           f"({state['expired']['reason']})")
        if now >= dt.datetime.fromisoformat(state["auth_expires"]):
            return Outcome(key, dict(state), refused="capture refused: the authorisation "
                           f"expired at {state['auth_expires']}")
        minor = event.args.get("amount")
        minor = state["auth_amt"] if minor is None else minor
        if isinstance(minor, bool) or not isinstance(minor, int) or minor <= 0:
            raise ProtocolError("capture amount must be a positive integer in minor units")
        if not state.get("cap_token"):
            raise ProtocolError("the gateway sent no CapToken with this authorisation")
        return self._capture(dict(state), key, now, minor)

    def _capture(self, state: dict, key: str, now: dt.datetime, minor: int) -> Outcome:
        cfg, rrpid = self.config, fresh()
        state = {**state, "cap_rrpid": h(rrpid), "cap_req_amt": minor}
        data = msgs.cap_req_data(state, rrpid=rrpid, mer_id=cfg.mer_id, now=now, minor=minor)
        body = EncB(cfg.sig, cfg.gateway_kex, "CapReqTBS", data, "CapTokenSeq",
                    msgs.cap_token_seq(unh(state["cap_token"])), "CapReqTBE",
                    certs=cfg.request_certs, suite=cfg.suite)
        wrapper = wrap("CapReq", body, now=now, rrpid=rrpid,
                       **self._ids(state["pinit_req"]["lid_c"], key))
        return self.exchange.ask(enter(state, "CAP_SENT", now), key, to=cfg.gateway,
                                 type_name="CapReq", der=wrapper, rrpid=rrpid, expects=("CapRes",),
                                 pin_=self._gateway_pin, now=now, cancel=("retry",))

    @guarded
    def on_CapRes(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        env = self._answer_from_gateway(state, event, now, "CapReq")
        if env is None:
            return self._absorb(state, key, "CapRes answers no CapReq outstanding")
        data = decode_native(cap.CapResData, env.content, raw=("cap_res_item_seq.*.trans_ids",
                                                                "brand_crl_identifier"))
        check_echo("CapRRTags RRPID", data["cap_rr_tags"]["rrpid"], unh(state["cap_rrpid"]))
        mine = unh(state["trans_ids"])
        item = next((i for i in data["cap_res_item_seq"] if i["trans_ids"] == mine), None)
        if item is None or item["auth_rrpid"] != unh(state["auth_rrpid"]):
            raise ProtocolError("CapRes has no item for this purchase", "unknownXID")
        seen = self._bci(data, env, now, shared)
        payload = item["cap_res_payload"]
        code = payload["cap_code"]
        state, timers = self.exchange.settle({**state, "cap_code": code,
                                              "cap_amt": payload["cap_amt"]["amount"]})
        if code == "success":
            state = enter({**state, "cap_date": iso(now)}, "CAPTURED", now)
            more: tuple = (CancelTimer("expire"),)
        else:
            state = record(state, now, "gateway", "CapRes", code, f"capture refused: {code}")
            state, more = self._authorized(state, key, now)
        return Outcome(key, state, timers=(*timers, *more), shared=seen, peer=self.config.gateway)

    # -- Errors and retries ------------------------------------------------------------------------
    def on_Error(self, state, event, now, shared) -> Outcome:
        """Only an Error signed by our gateway naming the exact AuthReq/CapReq bytes ends it; one
        that merely names its RRPID is noted and brings the re-send forward (once per attempt);
        the rest changes nothing.  An Error is never answered."""
        key = self.transaction_key(event)
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
        """No authorisation: PRes orderRejected to the cardholder.  No capture: AUTHORIZED again
        (the merchant may ask again with ``capture``), or EXPIRED if the authorisation lapsed."""
        message = self.exchange.pending(state)["type"]
        state, timers = self.exchange.settle(state)
        state = record({**state, "failure": reason}, now, by, message, code, reason)
        if message == "CapReq":
            state, more = self._authorized(state, key, now)
            return Outcome(key, state, timers=(*timers, *more))
        state = enter(state, "REJECTED", now)
        return Outcome(key, state, sends=(self._pres(state, key, now),), timers=timers)
