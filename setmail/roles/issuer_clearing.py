"""The issuer's clearing of a merchant's batch (``roles/issuer.py`` composes it).

    IssClearReq (0500) -> IssClearRes (0510): 00 every item is a pending posting or credit of this
                                              gateway's purchases of this merchant, once, with its
                                              kind and amount, and the totals add up (the
                                              gateway's, the items', the issuer's): they move
                                              from pending to settled; else 95 reconcile error
                                              with the issuer's totals, and nothing moves

The clearing is a transaction of its own, keyed like a purchase by the batch's derived XID
(``network_msgs.batch_xid``, which the request must carry, D-171): CLEARED once settled (the same
request again gets the same answer, another one 94), UNBALANCED after a 95 (a later request for
the batch is judged afresh: nothing moved, so nothing can happen twice).  The issuer's totals are
computed from the pending entries it matched (``network_msgs.clear_totals``), so a 95 shows the
gateway what the issuer has.  Settled entries leave ``shared["pending"]``: their captures and
credits can no longer be reversed (12).  Effect ``ledger.settle`` writes one ``settle`` row per
item.
"""
from __future__ import annotations

from typing import Any

from setmail.errors import ProtocolError
from setmail.roles.base import START, Effect, Outcome, Send
from setmail.roles.issuer_books import PENDING, fingerprint, pending_id, unpend
from setmail.roles.network_msgs import batch_xid, clear_totals, message_ids, seal, when
from setmail.roles.refusal import guarded


def _totals_key(totals) -> list[tuple]:
    """Totals compared as a set of rows (the order of currencies is no difference)."""
    return sorted(tuple(sorted(t.items())) for t in totals)


class ClearingLeg:
    """The clearing handler of ``Issuer`` (a mixin; transitions in ``Issuer.TRANSITIONS``)."""

    config: Any

    def _clear_answer(self, event, parsed, gateway, kex, data, code: str, totals, now) -> Send:
        der = seal("IssClearRes", {
            "stan": data["stan"], "rrn": data["rrn"], "response_code": code,
            "batch_id": data["batch_id"], "totals": totals, "xid": data["xid"],
            "transmitted": now.replace(microsecond=0), "merchant_id": data["merchant_id"]},
            self.config.signature, kex, now=now, rrpid=parsed.rrpid, ids=message_ids(parsed),
            suite=self.config.suite)
        return Send(gateway, "IssClearRes", der, event.mail_id or None)

    def match(self, key: str, data, shared) -> tuple[list[tuple[str, dict]], list[str]]:
        """([(pending id, entry)] the items name, [why an item does not match])."""
        tag, pending = key.split(".", 1)[1], shared.get(PENDING, {})
        found, faults, seen = [], [], set()
        for item in data["items"]:
            ident = pending_id(f"{item['xid'].hex()}.{tag}", item["stan"])
            entry, amount = pending.get(ident), item["amount"]
            label = f"{item['kind']} {item['xid'].hex()[:16]}/{item['stan']}"
            if ident in seen:
                faults.append(f"{label}: listed twice")
            elif entry is None:
                faults.append(f"{label}: no pending {item['kind']} of this merchant")
            elif (entry["kind"], entry["amount"], entry["currency"], entry["amt_exp10"]) != (
                    item["kind"], amount["amount"], amount["currency"], amount["amt_exp10"]):
                faults.append(f"{label}: the issuer has {entry['kind']} {entry['amount']}")
            else:
                found.append((ident, entry))
            seen.add(ident)
        return found, faults

    @guarded
    def on_IssClearReq(self, state, event, now, shared) -> Outcome:
        key, parsed, data, gateway, kex = self._open(event, now)
        if data["xid"] != batch_xid(data["merchant_id"], data["batch_id"]):
            raise ProtocolError("the clearing's XID is not its batch's", "unknownXID")
        if state["state"] not in (START, "UNBALANCED", "CLEARED"):  # a purchase has this key
            send = self._clear_answer(event, parsed, gateway, kex, data, "95", [], now)
            return Outcome(key, dict(state), sends=(send,), peer=gateway)
        if state["state"] == "CLEARED":
            found = self.recorded(state, "IssClearReq", data)
            same = found is not None and found["fp"] == fingerprint(data)
            send = self._clear_answer(event, parsed, gateway, kex, data,
                                      found["code"] if same else "94",
                                      state["totals"] if same else [], now)
            return Outcome(key, dict(state), sends=(send,), peer=gateway)
        matched, faults = self.match(key, data, shared)
        ours = clear_totals([{"kind": e["kind"], "amount": e} for _, e in matched])
        theirs = data["totals"]
        if _totals_key(clear_totals(data["items"])) != _totals_key(theirs):
            faults.append("the totals are not the items' sums")
        if not faults and _totals_key(ours) != _totals_key(theirs):
            faults.append("the issuer's totals differ")
        new = {"state": "UNBALANCED" if faults else "CLEARED", "xid": data["xid"].hex(),
               "batch_id": data["batch_id"], "merchant_id": data["merchant_id"],
               "gateway": gateway, "stan": data["stan"], "items": len(data["items"]),
               "totals": ours, "_answered": state.get("_answered", {})}
        if faults:
            new.update(faults=faults[:20], unbalanced_at=when(now))
            send = self._clear_answer(event, parsed, gateway, kex, data, "95", ours, now)
            return Outcome(key, new, sends=(send,), peer=gateway)
        new["cleared_at"] = when(now)
        self.record(new, "IssClearReq", data, "00", 0)
        effect = Effect("ledger.settle", {
            "batch_id": data["batch_id"], "merchant_id": data["merchant_id"], "code": "00",
            "items": [{"xid": e["xid"], "purchase": ident.rsplit("/", 1)[0],
                       "stan": int(ident.rsplit("/", 1)[1]), "kind": e["kind"],
                       "amount": e["amount"], "currency": e["currency"],
                       "pan_last4": e["pan"][-4:]} for ident, e in matched],
            "secret": {"pans": [e["pan"] for _, e in matched]}})
        send = self._clear_answer(event, parsed, gateway, kex, data, "00", ours, now)
        return Outcome(key, new, sends=(send,), effects=(effect,),
                       shared=unpend(shared, *(ident for ident, _ in matched)), peer=gateway)

