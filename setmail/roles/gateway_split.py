"""Split shipments, instalments and recurring payments at the gateway (docs/lifecycle.md): the
AuthToken, and the later AuthReqs that use it as their PI.

    AuthRes (first)  + AuthToken = EncX(P, P, AuthTokenData, PANToken)   (while more is allowed)
    AuthReq (SubsequentAuthInd TRUE, PI = [2] authToken) -> checks -> IssAuthReq (new STAN, same
    purchase: the issuer adds the amount to its hold) -> AuthRes with a CapToken for the new total
    and a new AuthToken while more is allowed

Why a token: SET's answer to "authorise the rest later" without the gateway keeping the card for
weeks.  The token is the gateway's own EncX: only it opens it, its signature is the gateway's, and
the PAN travels in the OAEP block, so between two authorisations the gateway keeps no card data
(the purchase keeps ``secret`` only while something authorised may still be captured).

A token is issued when the first AuthReq authorised less than the purchase amount (a split
shipment: ``split``), or when the purchase carries instalment or recurring terms (InstallRecurData,
signed by the cardholder in PIHead and repeated by the merchant; ``terms``).  Each token records
the purchase's counters (``recurring_count`` = authorisations so far, ``total_auth_amount``,
``prev_auth_date_time``), and the purchase's state must still show those counters: a token used
once is stale (``piPreviouslyUsed``), so a replayed or copied token authorises nothing twice.

Limits (first failure decides the AuthCode): not our token, or not this merchant's purchase
(piAuthMismatch); the purchase voided, declined or expired (invalidTransaction); stale
(piPreviouslyUsed); other terms than agreed (installRecurMismatch); a split above the purchase
amount, instalments above it in total, a recurring payment above the purchase amount
(amountError); instalments exhausted (installRecurMismatch); recurring before the previous
authorisation + frequency days (recurringTooSoon) or after its expiry (recurringExpired).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from setmail.asn1 import gateway as gw, purchase as pu
from setmail.asn1.codec.fastder import Raw, encode
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.operators import EncX, open_EncX
from setmail.errors import ProtocolError
from setmail.roles.base import Outcome
from setmail.roles.gateway_checks import (BUSY, Decline, amount_ok, answer, auth_res, cap_token,
                                          pan_token, reply_to)
from setmail.roles.gateway_answers import acq_card_msg
from setmail.roles.network_msgs import auth_code, key_octets, when, zero
from setmail.roles.wire import h, unh

#: AuthCode of a subsequent AuthReq when the purchase is in another request (no duplicateRequest)
BUSY_AUTH = "unspecifiedFailure"


def read_terms(der: bytes | None) -> dict | None:
    """InstallRecurData as state: {"instalments": N} or {"recurring": {"frequency" (days),
    "expiry" (ISO)}}, with its DER under "der" (compared byte-wise later); None: no terms."""
    if der is None:
        return None
    value = decode_native(pu.InstallRecurData, der)["install_recur_ind"]
    if isinstance(value, int):
        if value < 1:
            raise Decline("installRecurMismatch", "an instalment count below one")
        return {"der": h(der), "instalments": value}
    if value["recurring_frequency"] < 1:
        raise Decline("installRecurMismatch", "a recurring frequency below one day")
    return {"der": h(der), "recurring": {"frequency": value["recurring_frequency"],
                                         "expiry": when(value["recurring_expiry"])}}


def more_allowed(state: Mapping) -> bool:
    """May this purchase be authorised again (so its answer carries an AuthToken)?"""
    terms = state.get("terms")
    if terms is None:
        return state["auth_amt"] < state["purch_amt"]
    if "instalments" in terms:
        return state["auths"] < terms["instalments"] and state["auth_amt"] < state["purch_amt"]
    recurring = terms["recurring"]
    nxt = dt.datetime.fromisoformat(state["prev_auth_at"]) + dt.timedelta(
        days=recurring["frequency"])
    return when(nxt) <= recurring["expiry"]


def auth_token(cfg, state: Mapping, key: str, *, pan: str, expiry: str,
               back_key: bytes | None) -> bytes:
    """EncX(P, P, AuthTokenData, PANToken) naming this purchase (key octets) and its counters."""
    money = {k: state[k] for k in ("currency", "amt_exp10")}
    data: dict[str, Any] = {
        "trans_ids": Raw(unh(state["_trans_ids"])),
        "purch_amt": {**money, "amount": state["purch_amt"]}, "merchant_id": state["mer_id"],
        "recurring_count": state["auths"],
        "prev_auth_date_time": dt.datetime.fromisoformat(state["prev_auth_at"]),
        "total_auth_amount": {**money, "amount": state["auth_amt"]},
        "auth_token_opaque": key_octets(key)}
    if back_key is not None:
        data["acq_back_key_data"] = {"back_alg_id": {"algorithm": "aes256_wrap"},
                                     "back_key": back_key}
    if state.get("terms") is not None:
        data["install_recur_data"] = Raw(unh(state["terms"]["der"]))
    return EncX(cfg.signature, cfg.key_exchange.cert, "AuthTokenTBS",
                encode(gw.AuthTokenData, data), "PANToken", pan_token(pan, expiry),
                "AuthTokenTBE", certs=(), suite=cfg.suite)


def open_auth_token(cfg, pi: bytes | None) -> tuple[dict, str, str]:
    """(AuthTokenData, PAN, expiry) of a PI that is ``[2] authToken``, opened with our key and
    signed by us; a SetmailError otherwise."""
    if not pi or pi[:1] != b"\xa2":
        raise ProtocolError("the PI of a subsequent AuthReq must be an AuthToken")
    opened = open_EncX(b"\x30" + pi[1:], cfg.key_exchange, "AuthTokenTBE", "AuthTokenTBS",
                       "PANToken", certs=(cfg.signature.cert,), suite=cfg.suite)
    if opened.signed.signer != cfg.signature.cert:
        raise ProtocolError("the AuthToken is not signed by this gateway")
    data = decode_native(gw.AuthTokenData, opened.content,
                         raw=("trans_ids", "install_recur_data"))
    card = decode_native(pu.PANToken, opened.extra)
    return data, card["pan"], card["card_expiry"]


def check_subsequent(cfg, state: Mapping, req, key: str, now: dt.datetime):
    """The checks of a subsequent AuthReq, in order; (token data, PAN, expiry) or ``Decline``."""
    item = req.data["auth_req_item"]
    payload = item["auth_req_payload"]
    with answer("piAuthMismatch"):
        token, pan, expiry = open_auth_token(cfg, req.baggage)
    if (token["auth_token_opaque"] != key_octets(key) or token["merchant_id"] != req.mer_id
            or token["trans_ids"] != item["auth_tags"].native["trans_ids"]
            or state["state"] == "START" or token["trans_ids"] != unh(state["_trans_ids"])):
        raise Decline("piAuthMismatch", "the AuthToken names another purchase or merchant")
    if state["state"] in BUSY:
        raise Decline(BUSY_AUTH, "another request of this purchase is with the issuer")
    if state["state"] not in ("AUTHORIZED", "CAPTURED"):
        raise Decline("invalidTransaction", f"the purchase is {state['state']}")
    if (token["recurring_count"] != state["auths"]
            or token["total_auth_amount"]["amount"] != state["auth_amt"]
            or when(token["prev_auth_date_time"]) != state["prev_auth_at"]):
        raise Decline("piPreviouslyUsed", "this AuthToken was used before (a newer one exists)")
    terms = state.get("terms")
    if payload["install_recur_data"] != (None if terms is None else unh(terms["der"])):
        raise Decline("installRecurMismatch", "other instalment/recurring terms than agreed")
    asked, money = payload["auth_req_amt"], {k: state[k] for k in ("currency", "amt_exp10")}
    total = state["auth_amt"] + asked["amount"]
    if not amount_ok(asked, {**money, "amount": state["purch_amt"]}):
        raise Decline("amountError", "not a positive amount of the purchase's currency, up to "
                      "the purchase amount")
    if terms is None or "instalments" in terms:
        if terms is not None and state["auths"] >= terms["instalments"]:
            raise Decline("installRecurMismatch", f"all {terms['instalments']} instalments "
                          "were authorised")
        if total > state["purch_amt"]:
            raise Decline("amountError", "more in total than the purchase amount")
    else:
        recurring = terms["recurring"]
        if when(now) > recurring["expiry"]:
            raise Decline("recurringExpired", f"the recurring terms ended {recurring['expiry']}")
        due = dt.datetime.fromisoformat(state["prev_auth_at"]) + dt.timedelta(
            days=recurring["frequency"])
        if now < due:
            raise Decline("recurringTooSoon", f"the next payment is due {when(due)}")
    back = token["acq_back_key_data"]
    return token, pan, expiry, (back["back_key"] if back is not None else None)


class SplitAuth:
    """Subsequent authorisations (a mixin of ``Gateway``: it uses ``config``, ``exchange``,
    ``_ask``, ``_took``, ``_issuer_answer``, ``_expiry_timer``)."""

    def _subsequent(self, state, event, now, req, to: str, key: str) -> Outcome:
        """A later AuthReq of a purchase with an AuthToken: checked, then IssAuthReq."""
        cfg, item = self.config, req.data["auth_req_item"]
        asked = item["auth_req_payload"]["auth_req_amt"]
        reply = reply_to(event, to, req, auth_tags=h(item["auth_tags"]), mer_thumb=h(req.thumb))
        try:
            _, pan, expiry, _ = check_subsequent(cfg, state, req, key, now)
        except Decline as declined:
            send = auth_res(cfg, reply, now, code=declined.code, amount=zero(asked))
            keep = None if state["state"] == "START" else self._took(dict(state), req)
            return Outcome(key, keep, sends=(send,), peer=to)
        new = self._took({**state, "state": "ISSUER_REAUTH"}, req)
        new["_serve"] = {"type": "AuthRes", "reply": reply, "digest": event.digest.hex(),
                         "back": state["state"], "amount": asked["amount"],
                         "rrpid": h(req.rrpid), "token": h(req.baggage)}
        return self._ask(new, key, "IssAuthReq", {
            "rrn": state["rrn"], "processing_code": "000000", "pan": pan, "card_expiry": expiry,
            "amount": asked, "acquirer_id": cfg.acquirer_id}, now, peer=to)

    def _reauthorized(self, state, key: str, data, now) -> Outcome:
        """The issuer's answer to a subsequent IssAuthReq: approved, the purchase's totals grow
        and the merchant gets a CapToken for the new total (and an AuthToken while more is
        allowed); else the purchase is as it was."""
        cfg, serve = self.config, state["_serve"]
        iso, approval = data["response_code"], data["approval_code"]
        code = auth_code(iso)
        money = {k: state[k] for k in ("currency", "amt_exp10")}
        asked = {**money, "amount": serve["amount"]}
        if code == "approved" and not (approval and len(approval) == 6
                                       and amount_ok(data["amount"], asked)):
            raise ProtocolError("approval without a code or for another amount")
        new, timers = self.exchange.settle(state)
        new.pop("_serve")
        token, pan, expiry = open_auth_token(cfg, unh(serve["token"]))  # the card, sealed to us
        back = token["acq_back_key_data"]
        back_key = back["back_key"] if back is not None else None
        acq = acq_card_msg(cfg, back_key, iso) if back_key else None
        if code != "approved":
            send = auth_res(cfg, serve["reply"], now, code=code, amount=zero(asked), iso=iso,
                            acq=acq, answers=serve["digest"])
            new.update(state=serve["back"], reauth_code=code, reauth_iso_code=iso)
            return Outcome(key, new, sends=(send,), timers=(*timers, *self._resumed(new, key)),
                           peer=cfg.issuer)
        held = data["amount"]["amount"]
        new.update(state="AUTHORIZED", auth_amt=state["auth_amt"] + held,
                   auths=state["auths"] + 1, prev_auth_at=when(now), approval_code=approval,
                   approvals=[*state.get("approvals", []), approval], reauth_code=code,
                   reauth_iso_code=iso, expires_at=when(now + cfg.auth_expiry),
                   _auth_rrpids=[*state["_auth_rrpids"], serve["rrpid"]])
        new["secret"] = {"pan": pan, "expiry": expiry}
        cap = cap_token(cfg, auth_rrpid=unh(serve["rrpid"]), amount={**money,
                        "amount": new["auth_amt"]}, opaque=key_octets(key), pan=pan,
                        expiry=expiry)
        more = (auth_token(cfg, new, key, pan=pan, expiry=expiry, back_key=back_key)
                if more_allowed(new) else None)
        send = auth_res(cfg, serve["reply"], now, code=code, amount=data["amount"], iso=iso,
                        approval=approval, token=cap, acq=acq, auth_token=more,
                        answers=serve["digest"])
        return Outcome(key, new, sends=(send,), timers=(*timers, self._expiry_timer(new, key)),
                       peer=cfg.issuer)

    def _give_up_reauth(self, state, key: str, now, reason: str, code: str | None) -> Outcome:
        """No answer to a subsequent IssAuthReq: AuthRes noReply (systemError for the issuer's
        Error); a late approval is reversed when it comes (``_late_reauth``)."""
        cfg, serve = self.config, state["_serve"]
        new, timers = self.exchange.settle(state)
        new.pop("_serve")
        money = {k: state[k] for k in ("currency", "amt_exp10")}
        auth = "noReply" if code is None else "systemError"
        send = auth_res(cfg, serve["reply"], now, code=auth, amount={**money, "amount": 0},
                        answers=serve["digest"])
        new.update(state=serve["back"], reauth_code=auth, reason=reason,
                   _late_reauth={"rrpid": state["_issuer"]["rrpid"],
                                 "seq": state["_leg"]["seq"], "stan": state["_leg"]["stan"]})
        return Outcome(key, new, sends=(send,), timers=(*timers, *self._resumed(new, key)))

