"""The issuer's credits (refunds) and their reversals (``roles/issuer.py`` composes them).

    IssCredReq    (0220, DE 3 "200000") -> IssCredRes (0230): 12 nothing captured (or another
                                    gateway's purchase, another approval code), 13 not a positive
                                    amount in the purchase's currency or above what is captured
                                    and not yet credited, 94 another request under a STAN already
                                    used; else 00: the card is credited the amount
    IssCredRevReq (0420) -> IssCredRevRes (0430): 25 no such credit (original STAN), 12 settled,
                                    reversed already or another approval code, 13 not its amount;
                                    else 00: the credit is undone

No PAN in either: the issuer finds the purchase by (signing gateway, DE 42, XID), so a credit can
only go back to the card that paid.  Each credit is kept under ``credits[STAN]`` {amount, at,
reversed} and is pending (reversible) until a clearing settles it.  The purchase's state does not
change: a credited purchase is still POSTED (or HELD, when part of a split shipment is still
held); ``credited`` never exceeds ``posted`` (a capture reversal is refused once credited).
"""
from __future__ import annotations

from typing import Any

from setmail.errors import ProtocolError
from setmail.roles.base import Outcome
from setmail.roles.issuer_books import ledger_effect, moved, pend, pending_id, unpend
from setmail.roles.issuer_moves import approved, same_money
from setmail.roles.network_msgs import CREDIT_PROCESSING_CODE, when
from setmail.roles.refusal import guarded


class CreditLeg:
    """Credit handlers of ``Issuer`` (a mixin; its transitions are in ``Issuer.TRANSITIONS``)."""

    config: Any

    def credit_code(self, state, data, gateway: str) -> str:
        if data["processing_code"] != CREDIT_PROCESSING_CODE:
            raise ProtocolError(f"a credit carries processing code {CREDIT_PROCESSING_CODE}",
                                "messageNotSupported")
        if (state["state"] not in ("HELD", "POSTED") or state.get("posted", 0) <= 0
                or state["gateway"] != gateway or not approved(state, data["approval_code"])):
            return "12"
        amount = data["amount"]
        if (not same_money(state, amount) or amount["amount"] <= 0
                or amount["amount"] > state["posted"] - state.get("credited", 0)):
            return "13"
        return "00"

    @guarded
    def on_IssCredReq(self, state, event, now, shared) -> Outcome:
        out, request = self._judge(state, event, now, "IssCredReq",
                                   lambda key, data, gw: self.credit_code(state, data, gw))
        if out is not None:
            return out
        key, _, data, _, _ = request
        credited = data["amount"]["amount"]
        new = {**state, "credited": state.get("credited", 0) + credited, "credited_at": when(now),
               "credits": {**state.get("credits", {}), str(data["stan"]): {
                   "amount": credited, "at": when(now), "reversed": False}}}
        pan = state["secret"]["pan"]
        books = pend(moved(shared, pan, credited=credited), key, data["stan"], "credit",
                     data["amount"], pan, state["xid"])
        effect = ledger_effect("ledger.credit", key, state, "00", amount=credited,
                               stan=data["stan"])
        return self._done(event, now, request, new, credited, effect, books)

    @guarded
    def on_IssCredRevReq(self, state, event, now, shared) -> Outcome:
        out, request = self._judge(state, event, now, "IssCredRevReq", lambda key, data, gw: (
            self.advice_code(key, state, data, gw, shared, "credits")))
        if out is not None:
            return out
        key, _, data, _, _ = request
        original = str(data["original_stan"])
        credit = state["credits"][original]
        new = {**state, "credited": state["credited"] - credit["amount"], "credits": {
            **state["credits"], original: {**credit, "reversed": True}}}
        books = unpend(moved(shared, state["secret"]["pan"], credited=-credit["amount"]),
                       pending_id(key, data["original_stan"]))
        effect = ledger_effect("ledger.credit_reversal", key, state, "00",
                               amount=credit["amount"], stan=data["stan"],
                               original_stan=data["original_stan"])
        return self._done(event, now, request, new, credit["amount"], effect, books)
