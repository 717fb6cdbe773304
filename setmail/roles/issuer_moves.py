"""The issuer's hold and posting moves (``roles/issuer.py`` composes them): completion, reversal
of an authorisation, reversal of a completion.

    IssCapReq    (0220) -> IssCapRes    (0230): 12 no approved hold (or not this card, approval
                                                code or gateway), 13 not a positive amount in the
                                                purchase's currency, or amount + remaining_hold
                                                above the hold; else 00: post the amount and keep
                                                ``remaining_hold`` held (absent: release the rest)
    IssRevReq    (0400) -> IssRevRes    (0410): 25 no approved authorisation (or it expired),
                                                12 nothing held any more (captured, reversed) or
                                                another approval code, 13 not the authorised
                                                amount, or a replacement_amount not below it or
                                                below what captures already used; else 00:
                                                release the hold, or the part above the
                                                replacement amount (D-174)
    IssCapRevReq (0420) -> IssCapRevRes (0430): 25 no such completion (original STAN), 12 settled,
                                                credited, reversed already or another approval
                                                code, 13 not its amount; else 00: the posting is
                                                undone and the hold it released is held again
                                                (D-175)

Amounts: a purchase keeps ``authorized`` (approved, less partial reversals), ``held`` (what is
still held), ``posted`` and ``credited`` (net of reversals); what captures used of the
authorisation is ``authorized - held``.  Each completion is kept under ``captures[STAN]``
{amount, released, at, reversed}.  Every 00 is recorded for repeats (``Issuer.record``).
"""
from __future__ import annotations

from typing import Any

from setmail.roles.base import START, CancelTimer, Outcome, SetTimer
from setmail.roles.issuer_books import (
    is_pending,
    ledger_effect,
    moved,
    pend,
    pending_id,
    unpend,
)
from setmail.roles.network_msgs import when
from setmail.roles.refusal import guarded


def approved(state, approval_code: str) -> bool:
    """Is ``approval_code`` one of this purchase's approvals (the first or an incremental)?"""
    return approval_code in (state.get("approval_codes") or [state.get("approval_code")])


def same_money(state, amount) -> bool:
    return (amount["currency"], amount["amt_exp10"]) == (state.get("currency"),
                                                         state.get("amt_exp10"))


class MovesLeg:
    """Completion and reversal handlers of ``Issuer`` (a mixin; its transitions are in
    ``Issuer.TRANSITIONS``)."""

    config: Any

    def _hold_timer(self, key: str, state: dict, now) -> SetTimer:
        due = now + self.config.hold_expiry
        state["hold_expires_at"] = when(due)
        return SetTimer("hold_expiry", due, {"transaction": key})

    def _judge(self, state, event, now, kind: str, decide):
        """Open the request; a repeat's Outcome, or a refusal's (its code, nothing moved,
        nothing recorded), or None and the request's (key, parsed, data, gateway, kex) when
        ``decide(key, data, gateway)`` says 00."""
        key, parsed, data, gateway, kex = self._open(event, now)
        if state["state"] != START:
            again = self.repeat(key, state, event, parsed, data, gateway, kex, kind, now)
            if again is not None:
                return again, None
        code = decide(key, data, gateway)
        if code == "00":
            return None, (key, parsed, data, gateway, kex)
        send = self._answer(event, parsed, gateway, kex, data, code, 0, now)
        return Outcome(key, None if state["state"] == START else dict(state), sends=(send,),
                       peer=gateway), None

    def _done(self, event, now, request, new: dict, amount: int, effect, shared,
              timers=()) -> Outcome:
        """A 00: recorded for repeats, answered, the state and books moved."""
        key, parsed, data, gateway, kex = request
        self.record(new, parsed.type, data, "00", amount)
        send = self._answer(event, parsed, gateway, kex, data, "00", amount, now)
        return Outcome(key, new, sends=(send,), effects=(effect,), shared=shared,
                       timers=timers, peer=gateway)

    def advice_code(self, key, state, data, gateway: str, shared, book: str,
                    blocked: bool = False) -> str:
        """DE 39 of a reversal advice (0420) of the original in ``state[book]`` its DE 90
        names: 25 none (or not a 0220), 12 another gateway or approval, reversed already,
        ``blocked``, or settled (not pending), 13 not its amount."""
        if state["state"] not in ("HELD", "POSTED"):
            return "25"
        original = state.get(book, {}).get(str(data["original_stan"]))
        if original is None or data["original_mti"] != "0220":
            return "25"
        if (state["gateway"] != gateway or not approved(state, data["approval_code"])
                or original["reversed"] or blocked
                or not is_pending(shared, key, data["original_stan"])):
            return "12"
        if not same_money(state, data["amount"]) or data["amount"]["amount"] != original["amount"]:
            return "13"
        return "00"

    # -- completion ------------------------------------------------------------------------------
    def capture_code(self, state, data, gateway: str) -> str:
        amount, remaining = data["amount"], data.get("remaining_hold")
        if (state["state"] != "HELD" or state["secret"]["pan"] != data["pan"]
                or not approved(state, data["approval_code"]) or state["gateway"] != gateway):
            return "12"
        left = 0 if remaining is None else remaining["amount"]
        if (not same_money(state, amount) or amount["amount"] <= 0
                or (remaining is not None and (not same_money(state, remaining) or left < 0))
                or amount["amount"] + left > state["held"]):
            return "13"
        return "00"

    @guarded
    def on_IssCapReq(self, state, event, now, shared) -> Outcome:
        out, request = self._judge(state, event, now, "IssCapReq",
                                   lambda key, data, gw: self.capture_code(state, data, gw))
        if out is not None:
            return out
        key, _, data, _, _ = request
        pan, posted = state["secret"]["pan"], data["amount"]["amount"]
        left = (data.get("remaining_hold") or {"amount": 0})["amount"]
        released = state["held"] - left
        new = {**state, "state": "HELD" if left else "POSTED", "held": left,
               "posted": state.get("posted", 0) + posted, "posted_at": when(now),
               "captures": {**state.get("captures", {}), str(data["stan"]): {
                   "amount": posted, "released": released, "at": when(now), "reversed": False}}}
        books = pend(moved(shared, pan, held=-released, posted=posted), key, data["stan"],
                     "capture", data["amount"], pan, state["xid"])
        effect = ledger_effect("ledger.post", key, state, "00", amount=posted, released=released,
                               remaining=left, stan=data["stan"])
        return self._done(event, now, request, new, posted, effect, books,
                          () if left else (CancelTimer("hold_expiry"),))

    # -- reversal of an authorisation ------------------------------------------------------------
    def reversal_code(self, state, data, gateway: str) -> str:
        """DE 39 for a reversal request, in this order: is there an approval still held or
        reversed (25), is anything held, of this gateway and this approval (12), is it the whole
        authorised amount and a possible replacement (13)."""
        if state["state"] not in ("HELD", "POSTED", "REVERSED"):
            return "25"
        if (state["state"] != "HELD" or state["gateway"] != gateway
                or not approved(state, data["approval_code"])):
            return "12"
        asked = data["amount"]
        if not same_money(state, asked) or asked["amount"] != state["authorized"]:
            return "13"
        replacement = data.get("replacement_amount")
        if replacement is not None:
            used = state["authorized"] - state["held"]
            if (not same_money(state, replacement)
                    or not used <= replacement["amount"] < state["authorized"]):
                return "13"
        return "00"

    @guarded
    def on_IssRevReq(self, state, event, now, shared) -> Outcome:
        out, request = self._judge(state, event, now, "IssRevReq",
                                   lambda key, data, gw: self.reversal_code(state, data, gw))
        if out is not None:
            return out
        key, _, data, _, _ = request
        used = state["authorized"] - state["held"]
        replacement = data.get("replacement_amount")
        stays = used if replacement is None else replacement["amount"]
        left = stays - used                      # what stays held
        released = state["held"] - left
        after = "HELD" if left else ("POSTED" if state.get("posted") else "REVERSED")
        # a whole reversal keeps ``authorized`` (what was approved); a partial one lowers it
        new = {**state, "state": after, "held": left, "reversed_at": when(now),
               "reversal_reason": data["reason_code"],
               "authorized": state["authorized"] if replacement is None else stays}
        kind = "ledger.reverse" if not left else "ledger.partial_release"
        effect = ledger_effect(kind, key, state, "00", amount=released, stan=data["stan"])
        return self._done(event, now, request, new, released, effect,
                          moved(shared, state["secret"]["pan"], held=-released),
                          (CancelTimer("hold_expiry"),) if not left else ())

    # -- reversal of a completion ----------------------------------------------------------------
    @guarded
    def on_IssCapRevReq(self, state, event, now, shared) -> Outcome:
        out, request = self._judge(state, event, now, "IssCapRevReq", lambda key, data, gw: (
            self.advice_code(key, state, data, gw, shared, "captures",
                             blocked=state.get("credited", 0) > 0)))
        if out is not None:
            return out
        key, _, data, _, _ = request
        original = str(data["original_stan"])
        capture = state["captures"][original]
        undone, reinstated = capture["amount"], capture["released"]
        new = {**state, "state": "HELD", "held": state["held"] + reinstated,
               "posted": state["posted"] - undone, "captures": {
                   **state["captures"], original: {**capture, "reversed": True}}}
        books = unpend(moved(shared, state["secret"]["pan"], held=reinstated, posted=-undone),
                       pending_id(key, data["original_stan"]))
        effect = ledger_effect("ledger.capture_reversal", key, state, "00", amount=undone,
                               reinstated=reinstated, stan=data["stan"],
                               original_stan=data["original_stan"])
        return self._done(event, now, request, new, undone, effect, books,
                          (self._hold_timer(key, new, now),))
