"""A purchase authorised in parts: a later AuthReq whose PI is the AuthToken (split shipment,
instalments, recurring payments; docs/lifecycle.md).

    authorize {xid, amount} -> AuthReq = EncB(M, P, AuthReqData{SubsequentAuthInd}, [2] AuthToken)
    AuthRes = EncB(P, M, AuthResData, {CapToken for the new total, a new AuthToken while more
              may be authorised})

Why it looks like this: the gateway keeps no card data between the parts.  The AuthToken of an
authorisation is the gateway's own sealed note (only it opens it: it carries the PAN for it),
which the merchant keeps opaque and hands back with the next AuthReq; the cardholder is not asked
again, having agreed to the order (``ship_now``) or to its terms (instalments, recurring, in HOD)
once.  The gateway decides what may be authorised (the rest of a split, the next instalment, the
next recurring payment on time); the merchant asks for what it is told to and records the answer.

Amounts (``merchant_msgs.next_amount``, D-151): the order amount is the whole purchase for a
split (the default: what is not yet authorised) and for instalments (an equal part each, the last
what is left), and each payment's for recurring terms.
"""
from __future__ import annotations

import datetime as dt

from setmail.crypto.operators import EncB
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.roles import merchant_msgs as msgs
from setmail.roles.base import Outcome
from setmail.roles.merchant_msgs import iso, record
from setmail.roles.wire import unh


class SplitSide:
    """Handlers mixed into ``Merchant`` (which provides ``config``, ``exchange``, ``_ask``,
    ``_standing``, ``_back`` and ``transaction_key``)."""

    def on_authorize(self, state, event, now, shared) -> Outcome:
        key, token = self.transaction_key(event), state.get("auth_token")
        if not token:
            return Outcome(key, dict(state), refused="authorize refused: the gateway gave no "
                           "AuthToken with this purchase (nothing more may be authorised)")
        minor = event.args.get("amount")
        if minor is None:
            minor = msgs.next_amount(state)
        if isinstance(minor, bool) or not isinstance(minor, int) or minor <= 0:
            raise ProtocolError("authorize amount must be a positive integer in minor units "
                                "(nothing is left of the order to authorise)")
        cfg, rrpid = self.config, fresh()
        data = msgs.auth_req_data(state, rrpid=rrpid, mer_id=cfg.mer_id, now=now, minor=minor)
        body = EncB(cfg.sig, cfg.gateway_kex, "AuthReqTBS", data, "PI",
                    msgs.pi_auth_token(unh(token)), "AuthReqTBE", certs=cfg.request_certs,
                    suite=cfg.suite)
        state = {**state, "reauth_req_data": data.hex(), "reauth_amt": minor}
        return self._ask(state, key, now, "REAUTH_SENT", "AuthReq", body, rrpid)

    def _reauthorized(self, state: dict, key: str, now: dt.datetime, result: dict, baggage: dict,
                      payload_der: bytes, rrpid: str) -> Outcome:
        """A later AuthRes (the request already settled): approved adds its amount to what is
        authorised and replaces the tokens; anything else leaves the purchase where it was."""
        asked = state.pop("reauth_amt", None)
        data_hex = state.pop("reauth_req_data", None)
        code, amount = result["auth_code"], result["auth_amt"]
        state["result"] = {"request": "AuthReq", "rrpid": rrpid, "code": code, "amount": amount,
                           "asked": asked, "at": iso(now)}
        if baggage["auth_token"] is not None:
            state["auth_token"] = baggage["auth_token"].hex()
        if code != "approved":
            state = record(state, now, "gateway", "AuthRes", code,
                           f"further authorisation refused: {code}")
            state, timers = self._back(state, key, now)
            return Outcome(key, state, timers=timers)
        if baggage["auth_token"] is None:
            state.pop("auth_token", None)  # nothing more may be authorised
        if baggage["cap_token"] is not None:
            state["cap_token"] = baggage["cap_token"].hex()
        state.update(auth_amt=state["auth_amt"] + amount, auth_rrpid=rrpid, auth_date=iso(now),
                     auth_count=state.get("auth_count", 1) + 1,
                     auth_expires=iso(now + self.config.auth_expiry),
                     approval_code=result["approval_code"], iso_code=result["iso_code"],
                     iso_text=result["iso_text"], auth_req_data=data_hex,
                     auth_res_payload=payload_der.hex())
        state, timers = self._standing(state, key, now)
        return Outcome(key, state, timers=timers)
