"""The gateway's settlement batches (docs/lifecycle.md): every successful capture, credit and
sale goes into its merchant's open batch, the merchant opens, closes and queries batches with
BatchAdminReq, and a closed batch is cleared with the issuer in one mail (IssClearReq 0500).

    BatchAdminReq = Enc(M, P, BatchAdminReqData)  -> BatchAdminRes = Enc(P, M, BatchAdminResData)
    close answered                                 -> IssClearReq (0500) -> IssClearRes (0510)
                                                      00 SETTLED, 95 OUT_OF_BALANCE

Why batches live in two places: a capture is decided in its purchase's transaction, which is the
only state a step may change besides the role's *shared* state, so the batches still taking items
(the open one, and full ones rolled over at ``max_batch_items``) are kept in the shared state
``"gateway"``: ``{"batches": {merchant tag hex: book}}`` with ``book = {"mer_id", "next" (the id
the next batch gets), "open" (id or None), "live" {id: {"opened_at", "seq", "items", "full"}},
"admin" [the last signed RRPIDs of BatchAdminReqs]}`` and each item ``{"xid", "kind"
(capture|credit), "amount", "currency", "exp", "seq", "stan", "trans_ids", "auth_rrpid"}``.  A
closed batch leaves the shared state for a transaction of its own, ``batch/<merchant tag
hex>/<id>``, which clears it with the issuer (an Exchange like every issuer request).  So whether
a capture or credit may still be reversed is one look at the shared state: its batch is still
live (D-163: once closed, the clearing mail carries it, so it is processed).

Against the mail attacker: a BatchAdminReq is authenticated like every merchant request
(``gateway_requests``), concerns only the signing merchant's batches, is answered only at its
directory address, and a repeat of its signed RRPID (a replay under a new clear header) changes
nothing and sends nothing.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from setmail.errors import ProtocolError, SetmailError
from setmail.roles.base import START, Outcome
from setmail.roles.exchange import pin
from setmail.roles.gateway_answers import batch_admin_res
from setmail.roles.gateway_requests import authenticate, reply_to
from setmail.roles.network_msgs import (batch_xid, clear_totals, merchant_tag, opened, rrn,
                                        when)
from setmail.roles.refusal import guarded
from setmail.roles.wire import h, unh

#: shared state key of the gateway role
SHARED_KEY = "gateway"
#: signed RRPIDs of BatchAdminReqs remembered per merchant (repeats are absorbed)
ADMIN_MEMORY = 32


# --- the books (pure functions of the shared state) ---------------------------------------------
def batch_key(mer_id: str, batch_id: int | None) -> str:
    """``batch/<merchant tag hex>/<id>`` (``open``: a request naming no batch)."""
    return f"batch/{merchant_tag(mer_id).hex()}/{'open' if batch_id is None else batch_id}"


def _found(shared: Mapping, mer_id: str) -> Mapping | None:
    return (shared.get("batches") or {}).get(merchant_tag(mer_id).hex())


def book_of(shared: Mapping, mer_id: str) -> dict:
    """A copy of the merchant's book (a new one if it has none) that may be changed in place.

    Copied down to the item lists, not the items: the book functions replace an item, never
    change one, so the shared state given to the step stays untouched without a deep copy (whose
    cost grew with every capture of the open batch)."""
    found = _found(shared, mer_id)
    if found is None:
        return {"mer_id": mer_id, "next": 1, "open": None, "live": {}, "admin": []}
    live = {k: {**b, "items": list(b["items"])} for k, b in found["live"].items()}
    return {**found, "live": live, "admin": list(found["admin"])}


def with_book(shared: Mapping, book: dict) -> dict:
    """The shared state with ``book`` in place of its merchant's."""
    batches = dict(shared.get("batches") or {})
    batches[merchant_tag(book["mer_id"]).hex()] = book
    return {**shared, "batches": batches}


def _open_new(book: dict, now) -> int:
    batch_id = book["next"]
    book["next"] += 1
    book["live"][str(batch_id)] = {"opened_at": when(now), "seq": 0, "items": [], "full": False}
    book["open"] = batch_id
    return batch_id


def assign(shared: Mapping, mer_id: str, item: dict, now, max_items: int) -> tuple[dict, int, int]:
    """(shared, batch id, sequence number): ``item`` added to the merchant's open batch, opening
    one if none is open; a batch that reached ``max_items`` is set aside as full (it waits for the
    merchant's close) and a new one opened."""
    book = book_of(shared, mer_id)
    batch = book["live"].get(str(book["open"])) if book["open"] is not None else None
    if batch is not None and len(batch["items"]) >= max_items:
        batch["full"] = True
        batch = None
    if batch is None:
        batch = book["live"][str(_open_new(book, now))]
    batch["seq"] += 1
    batch["items"].append({**item, "seq": batch["seq"]})
    return with_book(shared, book), book["open"], batch["seq"]


def is_live(shared: Mapping, mer_id: str, batch_id: int) -> bool:
    """Is the batch still taking items (open or full, not closed)?"""
    found = _found(shared, mer_id)
    return found is not None and str(batch_id) in found["live"]


def leave(shared: Mapping, mer_id: str, batch_id: int, seq: int) -> dict | None:
    """The shared state without item ``seq`` of batch ``batch_id`` (a reversed capture or
    credit); None if that batch is no longer live."""
    book = book_of(shared, mer_id)
    batch = book["live"].get(str(batch_id))
    if batch is None:
        return None
    batch["items"] = [i for i in batch["items"] if i["seq"] != seq]
    return with_book(shared, book)


def batch_item(state: Mapping, kind: str, stan: int, amount: int) -> dict:
    """The batch item for a capture or credit of the purchase ``state``."""
    return {"xid": state["xid"], "kind": kind, "amount": amount, "currency": state["currency"],
            "exp": state["amt_exp10"], "stan": stan, "trans_ids": state["_trans_ids"],
            "auth_rrpid": state["_auth_rrpids"][-1]}


def _amount(currency: int, exp: int, amount: int) -> dict:
    return {"currency": currency, "amount": amount, "amt_exp10": exp}


def clearing_items(items: list) -> list[dict]:
    """The items as IssClearReq carries them."""
    return [{"xid": unh(i["xid"]), "kind": i["kind"], "stan": i["stan"],
             "amount": _amount(i["currency"], i["exp"], i["amount"])} for i in items]


def batch_totals(items: list) -> dict | None:
    """BatchTotals of the batch's first currency (captures are debits, credits credits); None
    for an empty batch.  Items in any other currency are in the clearing totals only (D-164)."""
    if not items:
        return None
    cur, exp = items[0]["currency"], items[0]["exp"]
    mine = [i for i in items if (i["currency"], i["exp"]) == (cur, exp)]
    debit = sum(i["amount"] for i in mine if i["kind"] == "capture")
    credit = sum(i["amount"] for i in mine if i["kind"] == "credit")
    return {"trans_count_credit": sum(i["kind"] == "credit" for i in mine),
            "trans_total_credit": _amount(cur, exp, credit),
            "trans_count_debit": sum(i["kind"] == "capture" for i in mine),
            "trans_total_debit": _amount(cur, exp, debit),
            "batch_total": _amount(cur, exp, debit - credit)}


def batch_status(batch_id: int, batch: Mapping, *, closed: str | None = None,
                 summary: bool = False) -> dict:
    """BatchStatus {batchID, openDateTime, closedWhen, batchTotals (``summary``)}."""
    out: dict = {"batch_id": batch_id,
                 "open_date_time": dt.datetime.fromisoformat(batch["opened_at"])}
    if closed:
        out["closed_when"] = dt.datetime.fromisoformat(closed)
    totals = batch_totals(batch["items"]) if summary else None
    if totals is not None:
        out["batch_totals"] = totals
    return out


# --- BatchAdminReq and clearing (mixed into Gateway) ----------------------------------------------
class BatchAdmin:
    """The gateway's batch handlers (a mixin: it uses the role's ``config``, ``exchange``,
    ``_merchants``, ``_address``, ``_ask``, ``_issuer_answer``, ``_absorb``)."""

    @guarded
    def on_BatchAdminReq(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        _, req = authenticate(cfg, event, now, self._merchants)
        to = self._address(req.mer_id)
        if to is None:
            raise ProtocolError(f"merchant {req.mer_id!r} is not in the directory: nobody to "
                                "answer", "invalidCertificate")
        keep = None if state["state"] == START else dict(state)
        book = book_of(shared, req.mer_id)
        if h(req.rrpid) in book["admin"]:
            return Outcome(key, keep, peer=to)  # a repeat under another clear header
        book["admin"] = [*book["admin"], h(req.rrpid)][-ADMIN_MEMORY:]
        data = req.data
        reply = reply_to(event, to, req, rr_tags=h(data["batch_admin_rr_tags"]))
        op = data["batch_operation"] or "query"
        target = data["batch_id"] if data["batch_id"] is not None else book["open"]

        def answer(status, **kw) -> Outcome:
            return Outcome(key, keep, sends=(batch_admin_res(cfg, reply, now, status=status, **kw),),
                           shared=with_book(shared, book), peer=to)

        if op == "open":
            if book["open"] is not None:
                return answer("batchAlreadyOpen", batch_id=book["open"])
            if data["batch_id"] is not None and data["batch_id"] != book["next"]:
                return answer("batchIDUnavailable", batch_id=data["batch_id"])
            batch_id = _open_new(book, now)
            return answer("success", batch_id=batch_id,
                          batch_status=batch_status(batch_id, book["live"][str(batch_id)]))
        if op not in ("close", "query"):
            return answer("unspecifiedFailure", batch_id=data["batch_id"])
        if target is None:
            return answer("unknownBatchID")
        live = book["live"].get(str(target))
        if live is None:
            if keep is not None and keep.get("batch_id") == target:  # a closed batch of ours
                if op == "close" and keep["state"] == "UNCLEARED":
                    return self._reclear(keep, key, answer, data, now)
                if op == "close":
                    return answer("batchIDUnavailable", batch_id=target)
                return answer("success", batch_id=target, **self._shown(keep, data))
            return answer("batchIDUnavailable" if op == "close" and 0 < target < book["next"]
                          else "unknownBatchID", batch_id=target)
        if op == "query":
            return answer("success", batch_id=target, batch_status=batch_status(
                target, live, summary=data["return_batch_summary_ind"]),
                details=live["items"] if data["return_trans_detail_ind"] else None)
        return self._close(key, book, target, live, reply, data, now, shared, to)

    @staticmethod
    def _shown(batch: Mapping, data: Mapping) -> dict:
        """What a query of a closed batch answers: its status (and totals, details if asked)."""
        return {"batch_status": batch_status(batch["batch_id"], batch, closed=batch["closed_at"],
                                             summary=data["return_batch_summary_ind"]),
                "details": batch["items"] if data["return_trans_detail_ind"] else None}

    def _close(self, key, book, target, live, reply, data, now, shared, to) -> Outcome:
        """Close ``target``: it leaves the shared state for its own transaction, the merchant
        gets its totals, and a batch with items is cleared with the issuer in the same step."""
        cfg = self.config
        book["live"].pop(str(target))
        if book["open"] == target:
            book["open"] = None
        mer_id, xid = book["mer_id"], batch_xid(book["mer_id"], target)
        batch = {"kind": "batch", "batch_id": target, "merchant": to, "mer_id": mer_id,
                 "xid": h(xid), "rrn": rrn(xid), "opened_at": live["opened_at"],
                 "closed_at": when(now), "items": live["items"],
                 "totals": clear_totals(clearing_items(live["items"]))}
        status = batch_status(target, live, closed=batch["closed_at"], summary=True)
        res = batch_admin_res(cfg, reply, now, status="success", batch_id=target,
                              batch_status=status,
                              details=live["items"] if data["return_trans_detail_ind"] else None)
        new_key, new_shared = batch_key(mer_id, target), with_book(shared, book)
        if not live["items"]:
            batch.update(state="SETTLED", settled_at=when(now))
            return Outcome(new_key, batch, sends=(res,), shared=new_shared, peer=to)
        batch["state"] = "CLEARING"
        out = self._ask(batch, new_key, "IssClearReq", {
            "rrn": batch["rrn"], "batch_id": target, "items": clearing_items(live["items"]),
            "totals": batch["totals"]}, now)
        batch.update(_clear_der=batch["_issuer"]["der"], _clear_rrpid=batch["_issuer"]["rrpid"])
        return dataclasses.replace(out, sends=(res, *out.sends), shared=new_shared, peer=to)

    def _reclear(self, batch: dict, key: str, answer, data, now) -> Outcome:
        """Closing a batch the issuer never answered about: the very same IssClearReq again (the
        issuer answers a request it has decided the same way, so nothing settles twice)."""
        cfg = self.config
        out = answer("success", batch_id=batch["batch_id"], **self._shown(batch, data))
        batch = {**batch, "state": "CLEARING", "reclear_at": when(now)}
        asked = self.exchange.ask(batch, key, to=cfg.issuer, type_name="IssClearReq",
                                  der=unh(batch["_clear_der"]), rrpid=unh(batch["_clear_rrpid"]),
                                  expects=("IssClearRes",), pin_=pin(thumb=cfg.issuer_sig),
                                  now=now)
        return dataclasses.replace(asked, sends=(*out.sends, *asked.sends), shared=out.shared,
                                   peer=out.peer)

    @guarded
    def on_IssClearRes(self, state, event, now, shared) -> Outcome:
        """The issuer's reconciliation: 00 SETTLED (its postings and credits moved to settled),
        95 OUT_OF_BALANCE (nothing moved; both totals kept), anything else UNCLEARED."""
        key = self.transaction_key(event)
        if state["state"] != "CLEARING":
            return self._absorb(state, key, "IssClearRes, but no IssClearReq is outstanding")
        data = self._issuer_answer(state, event, now)
        new, timers = self.exchange.settle(state)
        code = data["response_code"]
        new.update(clear_code=code, issuer_totals=[dict(t) for t in data["totals"]],
                   cleared_at=when(now))
        new["state"] = {"00": "SETTLED", "95": "OUT_OF_BALANCE"}.get(code, "UNCLEARED")
        if code == "00":
            new["settled_at"] = when(now)
        return Outcome(key, new, timers=timers, peer=self.config.issuer)

    def _give_up_clearing(self, state, key: str, reason: str) -> Outcome:
        new, timers = self.exchange.settle(state)
        new.update(state="UNCLEARED", clear_failure=reason)
        return Outcome(key, new, timers=timers)


def clearing_key(cfg, event) -> str | None:
    """The batch transaction an IssClearRes answers, from its signed payload (merchant and batch
    id; the header names the batch only by its derived XID); None if it does not open."""
    try:
        data, _ = opened(event, cfg.key_exchange, cfg.suite)
    except SetmailError:
        return None
    mer_id = data.get("merchant_id")
    return None if mer_id is None else batch_key(mer_id, data["batch_id"])
