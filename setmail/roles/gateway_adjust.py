"""Changing a purchase after its authorisation (docs/lifecycle.md): the merchant's void or
reduction (AuthRevReq), refunds (CredReq), their reversal (CredRevReq) and the reversal of a
capture (CapRevReq), each carried to the issuer on its own leg message.

    AuthRevReq = EncB(M, P, AuthRevReqData, AuthRevReqBaggage{capToken}) -> IssRevReq (0400, 17;
                 replacement_amount for a reduction) -> AuthRevRes (Enc, or EncB with new tokens)
    CredReq    = EncB(M, P, CredReqData, CapTokenSeq)    -> IssCredReq (0220, DE 3 200000)
                 -> CredRes (success with the credit's batch id and sequence number)
    CredRevReq = EncB(M, P, CredRevReqData, CapTokenSeq) -> IssCredRevReq (0420 of the credit)
    CapRevReq  = EncB(M, P, CapRevReqData, CapTokenSeq)  -> IssCapRevReq (0420 of the capture)
                 -> CapRevRes; the purchase is AUTHORIZED again (capture again, or void)

Why these rules: a merchant may only undo what it did and what has not moved on.  Every request
is authenticated and keyed (merchant, XID) like AuthReq/CapReq (``gateway_requests``), carries the
purchase's CapToken (ours, naming this purchase's key and one of its authorisations), and is
answered with a code, never an Error, once authenticated.  A credit never exceeds what is
captured and not yet credited; a capture or credit can be reversed only while its batch is live
(open, or full and not closed: D-163), and a capture only while no credit stands against it.
While the issuer decides a reversal, its item is out of its batch (so a close in between cannot
clear what is being undone); if the reversal fails, the item goes back (to its batch if still
live, else to the open one).  One issuer request per purchase at a time: a request arriving while
another is with the issuer gets duplicateRequest (alreadyCaptured for a void during a capture).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from setmail.asn1 import gateway as gw
from setmail.asn1.codec.strict import decode_native
from setmail.errors import SetmailError
from setmail.roles.base import START, CancelTimer, Outcome
from setmail.roles.gateway_answers import auth_rev_res, auth_res_payload, cap_rev_or_cred_res
from setmail.roles.gateway_batch import assign, batch_item, is_live, leave, with_book, book_of
from setmail.roles.gateway_checks import (BUSY, Decline, MissingToken, cap_token, open_cap_token,
                                          open_token_der, token_names)
from setmail.roles.gateway_requests import only_item, reply_to
from setmail.roles.gateway_split import auth_token, more_allowed
from setmail.roles.network_msgs import (CANCEL_REASON, CREDIT_PROCESSING_CODE, auth_rev_code,
                                        cred_code, key_octets, rev_advice_code, when, zero)
from setmail.roles.refusal import guarded
from setmail.roles.wire import h, unh

#: request -> (the state it waits in, its answer's type)
ADJUSTMENTS = {"CredReq": ("ISSUER_CRED", "CredRes"), "CredRevReq": ("ISSUER_CREDREV", "CredRevRes"),
               "CapRevReq": ("ISSUER_CAPREV", "CapRevRes")}


def money(state: Mapping, amount: int) -> dict:
    return {"currency": state["currency"], "amount": amount, "amt_exp10": state["amt_exp10"]}


def same_money(state: Mapping, amount: Mapping) -> bool:
    return (amount["currency"], amount["amt_exp10"]) == (state["currency"], state["amt_exp10"])


def restore(shared: Mapping, state: Mapping, entry: dict, now, max_items: int) -> tuple[dict, dict]:
    """(shared, entry): a capture or credit whose reversal failed goes back into its batch, or,
    if that batch was closed meanwhile, into the open one (its new batch and sequence noted)."""
    mer_id = state["mer_id"]
    item = {**batch_item(state, entry["kind"], entry["stan"], entry["amount"]),
            "auth_rrpid": entry.get("auth_rrpid", state["_auth_rrpids"][-1])}
    if is_live(shared, mer_id, entry["batch"]):
        book = book_of(shared, mer_id)
        batch = book["live"][str(entry["batch"])]
        batch["items"] = sorted([*batch["items"], {**item, "seq": entry["seq"]}],
                                key=lambda i: i["seq"])
        return with_book(shared, book), entry
    shared, batch_id, seq = assign(shared, mer_id, item, now, max_items)
    return shared, {**entry, "batch": batch_id, "seq": seq}


class Adjustments:
    """AuthRevReq, CredReq, CredRevReq and CapRevReq with their issuer answers (a mixin of
    ``Gateway``: it uses ``config``, ``exchange``, ``_merchant``, ``_repeat``, ``_took``, ``_ask``,
    ``_issuer_answer``, ``_absorb``, ``_expiry_timer``)."""

    # -- AuthRevReq ------------------------------------------------------------------------------
    @guarded
    def on_AuthRevReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        req, to = self._merchant(state, event, now)
        keep = None if state["state"] == START else dict(state)
        if self._repeat(state, req):
            return Outcome(key, keep, peer=to)
        data = req.data
        reply = reply_to(event, to, req, auth_rev_tags=h(data["auth_rev_tags"]))
        try:
            new_amt, token = self._check_auth_rev(state, req, key, now)
        except Decline as declined:
            now_amt = (money(state, state.get("auth_amt", 0)) if keep is not None
                       else zero(data["auth_new_amt"]))
            send = auth_rev_res(cfg, reply, now, code=declined.code, new_amount=now_amt)
            return Outcome(key, keep and self._took(keep, req), sends=(send,), peer=to)
        new = self._took({**state, "state": "ISSUER_REV"}, req)
        new["_serve"] = {"type": "AuthRevRes", "kind": "void", "reply": reply,
                         "digest": event.digest.hex(), "back": state["state"], "new": new_amt}
        fields = {"rrn": state["rrn"], "amount": money(state, state["auth_amt"]),
                  "approval_code": state["approval_code"], "reason_code": CANCEL_REASON,
                  "original_mti": "0100", "original_stan": state["stan"]}
        if new_amt:
            fields["replacement_amount"] = money(state, new_amt)
        new["rev_req_date"] = when(now)
        return self._ask(new, key, "IssRevReq", fields, now, peer=to)

    def _check_auth_rev(self, state, req, key: str, now) -> tuple[int, object]:
        """AuthRevReq checks in order: (the new authorised amount, the CapToken) or Decline."""
        data = req.data
        if state["state"] in (START, "DECLINED", "REVERSING"):
            raise Decline("unknownXID", "no authorisation for this XID from this merchant")
        try:
            baggage = decode_native(gw.AuthRevReqBaggage, req.baggage)
            if baggage["cap_token"] is None:
                raise MissingToken("the AuthRevReq carries no CapToken")
            token = open_token_der(self.config, b"\x30" + baggage["cap_token"][1:])
        except SetmailError as exc:
            raise Decline("unspecifiedFailure", f"CapToken: {exc}") from exc
        original = data["auth_req_data"]["auth_req_item"]["auth_tags"]
        if (data["auth_rev_tags"].native["trans_ids"] != unh(state["_trans_ids"])
                or not token_names(state, token, key_octets(key),
                                   original["auth_rr_tags"]["rrpid"])):
            raise Decline("unknownXID", "the CapToken or AuthReqData names another authorisation")
        current = state["state"]
        if current == "VOIDED":
            raise Decline("duplicateRequest", "the authorisation was voided before")
        if current == "EXPIRED" or (current == "AUTHORIZED" and when(now) >= state["expires_at"]):
            raise Decline("authExpired", "the authorisation expired")
        if current in ("CAPTURED", "ISSUER_CAP"):
            raise Decline("alreadyCaptured", "captured: refund it instead (CredReq)")
        if current in BUSY:
            raise Decline("duplicateRequest", "another request of this purchase is with the issuer")
        asked = data["auth_new_amt"]
        if not same_money(state, asked) or not 0 <= asked["amount"] < state["auth_amt"]:
            raise Decline("amountError", "the new amount must be below the authorised one")
        if asked["amount"] < state.get("cap_amt", 0) or (asked["amount"] == 0
                                                         and state.get("cap_amt", 0)):
            raise Decline("alreadyCaptured", "less than what was captured already")
        return asked["amount"], token

    def _revised(self, state, key: str, data, now) -> Outcome:
        """The issuer's answer to a void/reduction: the purchase VOIDED (card wiped), reduced
        (a new CapToken, and AuthToken while more may be authorised), or as it was."""
        cfg, serve = self.config, state["_serve"]
        code, iso = auth_rev_code(data["response_code"]), data["response_code"]
        new, timers = self.exchange.settle(state)
        new.pop("_serve")
        new.update(rev_code=iso, rev_amt=data["amount"]["amount"], rev_date=when(now),
                   auth_rev_code=code)
        if code != "approved":
            new["state"] = serve["back"]
            send = auth_rev_res(cfg, serve["reply"], now, code=code,
                                new_amount=money(state, state["auth_amt"]),
                                answers=serve["digest"])
            return Outcome(key, new, sends=(send,), timers=(*timers, *self._resumed(new, key)),
                           peer=cfg.issuer)
        target = serve["new"]
        new["auth_amt"] = target
        if target == 0 or target == new.get("cap_amt", 0):
            new.pop("secret", None)
            new["state"] = "VOIDED" if target == 0 else "CAPTURED"
            if target == 0:
                new["voided_at"] = when(now)
            send = auth_rev_res(cfg, serve["reply"], now, code=code, new_amount=money(state, target),
                                answers=serve["digest"])
            return Outcome(key, new, sends=(send,), timers=(*timers, CancelTimer("auth_expiry")),
                           peer=cfg.issuer)
        new["state"] = "AUTHORIZED"
        secret = new["secret"]
        token = cap_token(cfg, auth_rrpid=unh(new["_auth_rrpids"][-1]),
                          amount=money(state, target), opaque=key_octets(key),
                          pan=secret["pan"], expiry=secret["expiry"])
        more = (auth_token(cfg, new, key, pan=secret["pan"], expiry=secret["expiry"],
                           back_key=None) if new.get("split") and more_allowed(new) else None)
        payload = auth_res_payload(code="approved", amount=money(state, target),
                                   approval=state["approval_code"])
        send = auth_rev_res(cfg, serve["reply"], now, code=code, new_amount=money(state, target),
                            payload_new=payload, cap_token=token, auth_token=more,
                            answers=serve["digest"])
        return Outcome(key, new, sends=(send,), timers=(*timers, *self._resumed(new, key)),
                       peer=cfg.issuer)

    # -- CredReq, CredRevReq, CapRevReq ----------------------------------------------------------
    @guarded
    def on_CredReq(self, state, event, now, shared) -> Outcome:
        return self._adjust(state, event, now, shared)

    @guarded
    def on_CredRevReq(self, state, event, now, shared) -> Outcome:
        return self._adjust(state, event, now, shared)

    @guarded
    def on_CapRevReq(self, state, event, now, shared) -> Outcome:
        return self._adjust(state, event, now, shared)

    def _adjust(self, state, event, now, shared) -> Outcome:
        key, cfg, kind = self.transaction_key(event), self.config, event.message_type
        req, to = self._merchant(state, event, now)
        item = only_item(req.data["cap_rev_or_cred_req_item_seq"], kind)
        keep = None if state["state"] == START else dict(state)
        if self._repeat(state, req):
            return Outcome(key, keep, peer=to)
        waits, answer_type = ADJUSTMENTS[kind]
        reply = reply_to(event, to, req, rr_tags=h(req.data["cap_rev_or_cred_rr_tags"]),
                         trans_ids=h(item["trans_ids"]), auth_rrpid=h(item["auth_rrpid"]))
        asked = item["cap_rev_or_cred_req_amt"]
        try:
            token = self._check_original(state, req, item, key)
            entry, amount = getattr(self, "_pick_" + kind)(state, asked, shared)
        except Decline as declined:
            zero_amt = money(state, 0) if keep is not None else zero(
                asked or item["cap_payload"]["cap_req_amt"])
            send = cap_rev_or_cred_res(cfg, reply, now, type_name=answer_type,
                                       code=declined.code, amount=zero_amt)
            return Outcome(key, keep and self._took(keep, req), sends=(send,), peer=to)
        new = self._took({**state, "state": waits}, req)
        new["_serve"] = {"type": answer_type, "reply": reply, "digest": event.digest.hex(),
                         "back": state["state"], "amount": amount, "entry": entry,
                         "token": h(token.der)}
        fields = {"rrn": state["rrn"], "amount": money(state, amount),
                  "approval_code": state["approval_code"]}
        new_shared = None
        if kind == "CredReq":
            request = "IssCredReq"
            fields["processing_code"] = CREDIT_PROCESSING_CODE
        else:
            request = "IssCredRevReq" if kind == "CredRevReq" else "IssCapRevReq"
            fields.update(reason_code=CANCEL_REASON, original_mti="0220",
                          original_stan=entry["stan"])
            new_shared = leave(shared, state["mer_id"], entry["batch"], entry["seq"])
        out = self._ask(new, key, request, fields, now, peer=to)
        return out if new_shared is None else dataclasses.replace(out, shared=new_shared)

    def _check_original(self, state, req, item, key: str):
        """What CredReq, CredRevReq and CapRevReq share: a purchase of this merchant, its
        CapToken, its TransIDs, nothing else with the issuer.  Returns the opened CapToken."""
        if state["state"] == START:
            raise Decline("unknownXID", "no purchase of this merchant with this XID")
        try:
            token = open_cap_token(self.config, req.baggage)
        except MissingToken as exc:
            raise Decline("missingCapToken", str(exc)) from exc
        except SetmailError as exc:
            raise Decline("invalidCapToken", str(exc)) from exc
        if item["trans_ids"] != unh(state["_trans_ids"]):
            raise Decline("unknownXID", "TransIDs are not this XID's")
        if not token_names(state, token, key_octets(key), item["auth_rrpid"]):
            raise Decline("invalidCapToken", "the CapToken names another purchase or "
                          "authorisation")
        if state["state"] in BUSY or self.exchange.pending(state) is not None:
            raise Decline("duplicateRequest", "another request of this purchase is with the issuer")
        return token

    def _pick_CredReq(self, state, asked, shared) -> tuple[dict | None, int]:
        if not state.get("cap_amt"):
            raise Decline("originalNotFound", "nothing of this purchase was captured")
        refundable = state["cap_amt"] - state.get("cred_amt", 0)
        amount = refundable if asked is None else asked["amount"]
        if asked is not None and (not same_money(state, asked) or amount <= 0):
            raise Decline("capDataMismatch", "not a positive amount of the purchase's currency")
        if amount > refundable or amount <= 0:
            raise Decline("amountTooLarge", f"only {refundable} of what was captured is not yet "
                          "refunded")
        return None, amount

    def _pick_CredRevReq(self, state, asked, shared) -> tuple[dict, int]:
        return self._pick(state, "credits", asked, shared, "credit")

    def _pick_CapRevReq(self, state, asked, shared) -> tuple[dict, int]:
        if state.get("cred_amt"):
            raise Decline("originalProcessed", "credits stand against this capture: refund "
                          "or reverse the credits first")
        if state["state"] == "EXPIRED":
            raise Decline("originalProcessed", "the rest of the authorisation expired: a "
                          "capture can no longer be undone, refund it instead")
        return self._pick(state, "captures", asked, shared, "capture")

    @staticmethod
    def _pick(state, field: str, asked, shared, what: str) -> tuple[dict, int]:
        """The most recent unreversed capture or credit (of the asked amount, if given) whose
        batch is still live."""
        found = [i for i, e in enumerate(state.get(field, ())) if not e.get("reversed")
                 and (asked is None or (same_money(state, asked)
                                        and e["amount"] == asked["amount"]))]
        if not found:
            raise Decline("originalNotFound", f"no {what} of that amount to reverse")
        index = found[-1]
        entry = {**state[field][index], "index": index, "kind": what}
        if not is_live(shared, state["mer_id"], entry["batch"]):
            raise Decline("originalProcessed", f"the {what} is in batch {entry['batch']}, which "
                          "was closed for settlement")
        return entry, entry["amount"]

    # -- the issuer's answers ----------------------------------------------------------------------
    @guarded
    def on_IssCredRes(self, state, event, now, shared) -> Outcome:
        return self._adjusted(state, event, now, shared, "ISSUER_CRED", cred_code)

    @guarded
    def on_IssCredRevRes(self, state, event, now, shared) -> Outcome:
        return self._adjusted(state, event, now, shared, "ISSUER_CREDREV", rev_advice_code)

    @guarded
    def on_IssCapRevRes(self, state, event, now, shared) -> Outcome:
        return self._adjusted(state, event, now, shared, "ISSUER_CAPREV", rev_advice_code)

    def _adjusted(self, state, event, now, shared, waits: str, codes) -> Outcome:
        key = self.transaction_key(event)
        if state["state"] != waits:
            return self._absorb(state, key, f"{event.message_type}, but nothing of the kind is "
                                "outstanding")
        data = self._issuer_answer(state, event, now)
        iso = data["response_code"]
        code = codes(iso)
        if code == "success" and data["amount"]["amount"] != state["_serve"]["amount"]:
            raise SetmailError("the issuer moved another amount than asked")
        return self._finish_adjust(state, key, now, shared, code, iso)

    def _finish_adjust(self, state, key: str, now, shared, code: str, iso: str | None) -> Outcome:
        """Record the outcome of a credit, credit reversal or capture reversal and answer the
        merchant; a failed reversal's item goes back into a batch."""
        cfg, serve = self.config, state["_serve"]
        new, timers = self.exchange.settle(state)
        new.pop("_serve")
        amount, entry, kind = serve["amount"], serve["entry"], serve["type"]
        new.update(state=serve["back"], last_adjust={"type": kind, "code": code, "iso": iso,
                                                     "at": when(now)})
        new_shared, batch = None, None
        if code == "success" and kind == "CredRes":
            new_shared, batch_id, seq = assign(shared, state["mer_id"], batch_item(
                state, "credit", state["_leg"]["stan"], amount), now, cfg.max_batch_items)
            batch = (batch_id, seq)
            new["credits"] = [*state.get("credits", []), {
                "stan": state["_leg"]["stan"], "amount": amount, "at": when(now),
                "batch": batch_id, "seq": seq}]
            new["cred_amt"] = state.get("cred_amt", 0) + amount
        elif code == "success":
            field = "credits" if kind == "CredRevRes" else "captures"
            entries = [dict(e) for e in state[field]]
            entries[entry["index"]].update(reversed=True, reversed_at=when(now))
            new[field] = entries
            batch = (entry["batch"], entry["seq"])
            if kind == "CredRevRes":
                new["cred_amt"] = state["cred_amt"] - amount
            else:
                new["cap_amt"] = state["cap_amt"] - amount
                new["state"] = "AUTHORIZED"  # capture again, or void: the card from the token
                token = open_token_der(cfg, unh(serve["token"]))
                new["secret"] = {"pan": token.pan, "expiry": token.expiry}
        elif entry is not None:  # a reversal that failed: the item back into a batch
            new_shared, moved = restore(shared, state, entry, now, cfg.max_batch_items)
            if moved is not entry:
                field = "credits" if kind == "CredRevRes" else "captures"
                entries = [dict(e) for e in state[field]]
                entries[entry["index"]].update(batch=moved["batch"], seq=moved["seq"])
                new[field] = entries
        send = cap_rev_or_cred_res(cfg, serve["reply"], now, type_name=kind, code=code,
                                   amount=money(state, amount if code == "success" else 0),
                                   batch=batch, answers=serve["digest"])
        timers = (*timers, *self._resumed(new, key))
        return Outcome(key, new, sends=(send,), timers=timers, shared=new_shared,
                       peer=cfg.issuer)

    def _give_up_adjust(self, state, key: str, now, shared, reason: str) -> Outcome:
        out = self._finish_adjust(state, key, now, shared, "unspecifiedFailure", None)
        out.state["reason"] = reason
        return out

