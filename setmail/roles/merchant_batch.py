"""The merchant's batches: its own record of what the gateway put in each, BatchAdminReq/Res, and
the reconciliation of a close (docs/lifecycle.md).

    batch {operation open|close|query, batch_id} -> BatchAdminReq = Enc(M, P, BatchAdminReqData)
    BatchAdminRes = Enc(P, M, BatchAdminResData)  -> the batch record; a close is reconciled

Why the merchant keeps its own record: settlement pays what the *gateway's* batch says, so the
merchant must be able to tell when that differs from what it was told capture by capture.  Every
CapRes, CredRes, CapRevRes and CredRevRes (and a sale's AuthRes) it accepts adds or removes an
item [sequence, kind, XID, amount] of the batch the answer names; the answer to a close carries
the gateway's totals (and its items), compared with ours: BALANCED, or OUT_OF_BALANCE with both
totals and the items that differ, kept and shown, never hidden.

Where things live: the records span purchases, so they are the role's *shared* state, key
``"merchant"`` = {"brand": {brand: BCI sequence} (``roles/brand.py``), "batches": {id: record},
"admin": the outstanding BatchAdminReq (an ``Exchange`` record, at most one)}; a legacy flat
{brand: sequence} value is read as the "brand" part.  Batch commands and answers are the
transaction ``batches`` (its state: the recent requests and their results, for the CLI).  The
``auto_close`` timer (world.toml, seconds after a batch's first item) can only be set by the
purchase step that recorded that item, so it fires in that purchase's transaction and starts the
close from there; the request's re-send timer lives where the request was made and names its
RRPID, so a stale one changes nothing.

Against the mail attacker: a BatchAdminRes counts only as the answer to the outstanding request
(type, RRPID) signed by our own gateway (the purchase's pin), echoing the RRPID in its RRTags, with
a BCI that verifies and never goes back; an Error ends the request only if our gateway signed it
naming our exact bytes.  Nothing received here is ever answered.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from setmail.asn1 import capture as cap
from setmail.asn1.codec.fastder import encode
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.operators import Enc, open_Enc
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.roles.base import CancelTimer, Outcome, SetTimer
from setmail.roles.exchange import ENDS, NUDGE
from setmail.roles.merchant_msgs import iso, rr_tags
from setmail.roles.refusal import guarded
from setmail.roles.wire import check_echo, unh, unwrap, wrap

SHARED_KEY = "merchant"
#: the transaction of batch administration, and the LID-M its requests carry (so an Error about
#: one, which repeats the request's header, finds it)
BATCHES, BATCH_LID = "batches", b"batches"
OPERATIONS = ("open", "close", "query")
#: batch records kept (the oldest closed ones go first), requests remembered, differences listed
MAX_BATCHES, MAX_REQUESTS, MAX_DIFFERENCES = 50, 20, 20


# --- the shared state ----------------------------------------------------------------------------
def merchant_shared(shared: Mapping | None) -> dict:
    """A copy of the shared state in its current form; a legacy flat {brand: sequence} (what
    the merchant kept before batches) becomes its "brand" part."""
    shared = dict(shared or {})
    if isinstance(shared.get("brand"), dict) or isinstance(shared.get("batches"), dict):
        out = {"brand": dict(shared.get("brand") or {}),
               "batches": dict(shared.get("batches") or {})}
        if shared.get("admin"):
            out["admin"] = dict(shared["admin"])
        return out
    return {"brand": {k: v for k, v in shared.items() if isinstance(v, int)}, "batches": {}}


def totals(items) -> dict:
    """Our totals of a batch's items: credits and debits (captures, sales) by count and amount,
    and the net (debits - credits)."""
    credits = [i[3] for i in items if i[1] == "credit"]
    debits = [i[3] for i in items if i[1] != "credit"]
    return {"credit_count": len(credits), "credit_total": sum(credits),
            "debit_count": len(debits), "debit_total": sum(debits),
            "net": sum(debits) - sum(credits)}


def gateway_totals(batch_totals: Mapping) -> dict:
    """The gateway's BatchTotals (as ``decode_native`` gives them) in our form."""
    return {"credit_count": batch_totals["trans_count_credit"],
            "credit_total": batch_totals["trans_total_credit"]["amount"],
            "debit_count": batch_totals["trans_count_debit"],
            "debit_total": batch_totals["trans_total_debit"]["amount"],
            "net": batch_totals["batch_total"]["amount"]}


_COMPARED = ("credit_count", "credit_total", "debit_count", "debit_total")


def reconcile(record: Mapping, batch_totals: Mapping | None, details) -> dict:
    """BALANCED when the gateway's counts and amounts of credits and debits are ours; else
    OUT_OF_BALANCE with both totals and the items only one side has or that differ (by sequence
    number; the gateway's details name XID and amount).  ``batch_total`` (net) is shown, not
    compared: it follows from the four.  No totals in an answer that asked for them: the
    gateway's batch is empty (it has no currency to state totals in)."""
    ours = totals(record.get("items", []))
    theirs = gateway_totals(batch_totals) if batch_totals is not None else totals([])
    result = "BALANCED" if all(ours[k] == theirs[k] for k in _COMPARED) else "OUT_OF_BALANCE"
    out = {"result": result, "ours": ours, "gateway": theirs}
    if details is not None:
        mine = {i[0]: [i[2], i[3]] for i in record.get("items", [])}
        gws = {d["batch_sequence_num"]: [d["trans_ids"]["xid"].hex(), d["cap_amt"]["amount"]]
               for d in details}
        diffs = [{"seq": s, "ours": mine.get(s), "gateway": gws.get(s)}
                 for s in sorted(set(mine) | set(gws)) if mine.get(s) != gws.get(s)]
        if diffs:
            out["differences"] = diffs[:MAX_DIFFERENCES]
            if result == "BALANCED":  # same sums, other items: still not what we were told
                out["result"] = "OUT_OF_BALANCE"
    return out


def record_item(ms: dict, *, batch_id: int | None, seq: int | None, kind: str, xid: str,
                amount: int, currency: int, amt_exp10: int, now: dt.datetime) -> tuple[dict, bool]:
    """(shared, first item?) with one item the gateway put in batch ``batch_id`` (none named:
    nothing to record)."""
    if batch_id is None:
        return ms, False
    batches = dict(ms["batches"])
    record = dict(batches.get(str(batch_id)) or {
        "id": batch_id, "status": "open", "opened": iso(now), "currency": currency,
        "amt_exp10": amt_exp10, "items": []})
    record["items"] = [*record.get("items", []), [seq, kind, xid, amount]]
    if record.get("currency") != currency:
        record["mixed_currency"] = True  # totals in one currency would mean nothing
    if record["status"] != "open":
        record["late_items"] = record.get("late_items", 0) + 1  # after our close: shown
    batches[str(batch_id)] = record
    return _pruned({**ms, "batches": batches}), len(record["items"]) == 1


def drop_item(ms: dict, *, batch_id: int | None, seq: int | None, kind: str, xid: str) -> dict:
    """Shared state without the item a reversal took out of its batch."""
    record = ms["batches"].get(str(batch_id)) if batch_id is not None else None
    if record is None:
        return ms
    items = list(record.get("items", []))
    for n in range(len(items) - 1, -1, -1):
        if items[n][1] == kind and items[n][2] == xid and (seq is None or items[n][0] == seq):
            del items[n]
            break
    return {**ms, "batches": {**ms["batches"], str(batch_id): {**record, "items": items}}}


def _pruned(ms: dict) -> dict:
    batches = ms["batches"]
    if len(batches) <= MAX_BATCHES:
        return ms
    closed = sorted((r["id"] for r in batches.values() if r["status"] != "open"))
    drop = set(map(str, closed[:len(batches) - MAX_BATCHES]))
    return {**ms, "batches": {k: v for k, v in batches.items() if k not in drop}}


def batch_admin_req_data(*, rrpid: bytes, mer_id: str, now: dt.datetime, operation: str,
                         batch_id: int | None) -> bytes:
    """BatchAdminReqData; a close or query asks for the summary and the items (reconciliation)."""
    detail = operation in ("close", "query")
    return encode(cap.BatchAdminReqData, {
        "batch_admin_rr_tags": rr_tags(rrpid, mer_id, now), "batch_id": batch_id,
        "batch_operation": operation, "return_batch_summary_ind": detail,
        "return_trans_detail_ind": detail})


# --- the role's half -------------------------------------------------------------------------------
class BatchSide:
    """Handlers mixed into ``Merchant`` (which provides ``config``, ``admin`` (the Exchange of
    BatchAdminReq: slot "admin", timer "batch_retry"), ``_gateway_pin``, ``_check``, ``_bci``,
    ``_absorb`` and ``transaction_key``)."""

    def _batch_item(self, ms: dict, key: str, now: dt.datetime, state: Mapping, *,
                    batch_id, seq, kind: str, amount: int) -> tuple[dict, tuple]:
        """(shared, timers) after recording an item of purchase ``key``; the batch's first item
        arms ``auto_close`` here (the only transaction this step may set a timer in)."""
        ms, first = record_item(ms, batch_id=batch_id, seq=seq, kind=kind, xid=state["xid"],
                                amount=amount, currency=state["currency"],
                                amt_exp10=state["amt_exp10"], now=now)
        after = self.config.auto_close
        if not first or not after:
            return ms, ()
        due = now + after
        record = {**ms["batches"][str(batch_id)], "auto_close": iso(due)}
        ms = {**ms, "batches": {**ms["batches"], str(batch_id): record}}
        return ms, (SetTimer("auto_close", due, {"transaction": key, "batch": batch_id}),)

    # -- asking ----------------------------------------------------------------------------------
    def on_batch(self, state, event, now, shared) -> Outcome:
        """A batch command: one BatchAdminReq at a time (the gateway keeps one open batch)."""
        key, args = self.transaction_key(event), event.args
        operation, batch_id = args.get("operation"), args.get("batch_id")
        state = {"requests": [], **state, "state": "BATCHES"}
        if operation not in OPERATIONS:
            raise ProtocolError(f"batch operation must be one of {', '.join(OPERATIONS)}, not "
                                f"{operation!r} (purge is not offered)")
        if batch_id is not None and (isinstance(batch_id, bool) or not isinstance(batch_id, int)
                                     or batch_id <= 0):
            raise ProtocolError("batch_id must be a positive integer")
        ms = merchant_shared(shared)
        busy = ms.get("admin")
        if busy:
            return Outcome(key, state, refused=f"a batch {busy['op']} asked at {busy['asked']} "
                           "is still waiting for the gateway's answer")
        out, ms = self._ask_batch(ms, key, now, operation, batch_id, ref=args.get("ref"))
        entry = {"ref": args.get("ref"), "op": operation, "batch_id": batch_id,
                 "asked": iso(now), "rrpid": ms["admin"]["rrpid"]}
        state["requests"] = [*state["requests"], entry][-MAX_REQUESTS:]
        return Outcome(key, state, sends=out.sends, timers=out.timers, shared=ms)

    def _ask_batch(self, ms: dict, key: str, now: dt.datetime, operation: str,
                   batch_id: int | None, *, ref=None, auto: bool = False):
        cfg, rrpid = self.config, fresh()
        data = batch_admin_req_data(rrpid=rrpid, mer_id=cfg.mer_id, now=now, operation=operation,
                                    batch_id=batch_id)
        body = Enc(cfg.sig, cfg.gateway_kex, "BatchAdminReqData", data, "BatchAdminReqTBE",
                   certs=cfg.request_certs, suite=cfg.suite)
        der = wrap("BatchAdminReq", body, now=now, rrpid=rrpid, lid_m=BATCH_LID)
        holder: dict = {}
        out = self.admin.ask(holder, key, to=cfg.gateway, type_name="BatchAdminReq", der=der,
                             rrpid=rrpid, expects=("BatchAdminRes",), pin_=self._gateway_pin,
                             now=now)
        rec = {**holder["admin"], "op": operation, "batch_id": batch_id, "ref": ref,
               "auto": auto, "asked": iso(now)}
        return _named(out, rec), {**ms, "admin": rec}

    # -- answers ---------------------------------------------------------------------------------
    @guarded
    def on_BatchAdminRes(self, state, event, now, shared) -> Outcome:
        key, cfg = self.transaction_key(event), self.config
        ms = merchant_shared(shared)
        rec = ms.get("admin")
        if rec is None:
            return self._absorb(state, key, "BatchAdminRes answers no BatchAdminReq outstanding")
        parsed = unwrap(event, now)
        env = open_Enc(parsed.body, cfg.kex, "BatchAdminResTBE", "BatchAdminResData",
                       validate=self._check(now, "pgwy"), suite=cfg.suite)
        self.admin.accept({"admin": rec}, parsed, env.signed.signer)
        data = decode_native(cap.BatchAdminResData, env.content, raw=("brand_crl_identifier",))
        check_echo("BatchAdmin RRTags RRPID", data["batch_admin_rr_tags"]["rrpid"],
                   unh(rec["rrpid"]))
        brand = self._bci(data, env, now, ms["brand"])
        if brand is not None:
            ms = {**ms, "brand": brand}
        ms, result = _applied(ms, rec, data, now)
        ms.pop("admin", None)
        state = _answered({**state, "state": "BATCHES"}, rec, result)
        return Outcome(key, state, timers=(CancelTimer("batch_retry"),), shared=ms,
                       peer=cfg.gateway)

    def _batch_error(self, state, event, now, shared) -> Outcome:
        """An Error in the ``batches`` transaction, judged against the outstanding request."""
        key = self.transaction_key(event)
        ms = merchant_shared(shared)
        rec = ms.get("admin")
        if rec is None:
            return self._absorb(state, key, "Error, but no batch request is outstanding")
        holder = {"admin": rec}
        verdict = self.admin.judge(holder, event, now, validate=self._check(now, "pgwy"),
                                   suite=self.config.suite)
        if verdict.kind == ENDS:
            ms = _failed(ms, rec, now, verdict.code, verdict.why)
            state = _answered({**state, "state": "BATCHES"}, rec,
                              {"code": verdict.code, "reason": verdict.why, "at": iso(now)})
            return Outcome(key, state, timers=(CancelTimer("batch_retry"),), shared=ms,
                           peer=self.config.gateway)
        if verdict.kind == NUDGE:  # the re-send timer comes here, so this transaction exists
            holder, timers = self.admin.nudge(holder, key, now)
            ms = {**ms, "admin": holder["admin"]}
            return Outcome(key, {"requests": [], **state, "state": "BATCHES"},
                           timers=_renamed(timers, rec), shared=ms, refused=verdict.why)
        return self._absorb(state, key, verdict.why)

    # -- timers (in whatever transaction set them) ------------------------------------------------
    def on_timer_batch_retry(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        ms = merchant_shared(shared)
        rec = ms.get("admin")
        if rec is None or rec["rrpid"] != event.payload.get("rrpid"):
            return Outcome(key, dict(state))  # stale: answered, or another request's

        def give_up(why: str) -> Outcome:
            new = dict(state)
            if new["state"] == "BATCHES":
                new = _answered(new, rec, {"code": "noReply", "reason": why, "at": iso(now)})
            return Outcome(key, new, timers=(CancelTimer("batch_retry"),),
                           shared=_failed(ms, rec, now, "noReply", why))
        out = self.admin.on_timer({"admin": rec}, key, now, give_up)
        if out.shared is not None:
            return out
        return Outcome(key, dict(state), sends=out.sends, timers=_renamed(out.timers, rec),
                       shared={**ms, "admin": {**rec, **out.state["admin"]}})

    def on_timer_auto_close(self, state, event, now, shared) -> Outcome:
        """``auto_close`` after the batch's first item: close it, unless it is closed already;
        while another batch request waits, a little later."""
        key, batch_id = self.transaction_key(event), event.payload.get("batch")
        ms = merchant_shared(shared)
        record = ms["batches"].get(str(batch_id))
        if record is None or record["status"] != "open":
            return Outcome(key, dict(state))
        if ms.get("admin"):
            due = now + self.config.nudge_after
            return Outcome(key, dict(state), timers=(SetTimer("auto_close", due,
                                                              dict(event.payload)),))
        out, ms = self._ask_batch(ms, key, now, "close", batch_id, auto=True)
        return Outcome(key, dict(state), sends=out.sends, timers=out.timers, shared=ms)


# --- bookkeeping -----------------------------------------------------------------------------------
def _named(out: Outcome, rec: Mapping) -> Outcome:
    return Outcome(out.transaction, out.state, sends=out.sends,
                   timers=_renamed(out.timers, rec))


def _renamed(timers, rec: Mapping) -> tuple:
    """The re-send timer names the request's RRPID: a timer that outlives its request (set in
    another transaction than the one its answer arrives in) is then recognised as stale."""
    return tuple(SetTimer(t.name, t.due, {**t.payload, "rrpid": rec["rrpid"]})
                 if isinstance(t, SetTimer) and t.name == "batch_retry" else t for t in timers)


def _applied(ms: dict, rec: Mapping, data: Mapping, now: dt.datetime) -> tuple[dict, dict]:
    """(shared, result) after the gateway's BatchAdminRes to request ``rec``."""
    code, op = data["ba_status"], rec["op"]
    batch_id = data["batch_id"] if data["batch_id"] is not None else rec["batch_id"]
    result: dict = {"code": code, "batch_id": batch_id, "at": iso(now)}
    if batch_id is None:
        return ms, result
    batches = dict(ms["batches"])
    record = dict(batches.get(str(batch_id)) or {
        "id": batch_id, "status": "open", "opened": iso(now), "items": []})
    if code != "success":
        record["refusals"] = [*record.get("refusals", []),
                              {"at": iso(now), "op": op, "code": code}][-MAX_REQUESTS:]
        batches[str(batch_id)] = record
        return {**ms, "batches": batches}, result
    status = data["batch_status"] or {}
    summary = status.get("batch_totals")
    if op == "close" or (op == "query" and status.get("closed_when") is not None):
        record.update(status="closed", closed=iso(status.get("closed_when") or now))
    if op in ("close", "query"):
        check = reconcile(record, summary, data["trans_detail_seq"])
        record["gateway"] = {"at": iso(now), "op": op, "totals": check["gateway"],
                             "open_date": iso(status["open_date_time"]) if status.get(
                                 "open_date_time") else None}
        if op == "close" or record.get("reconciliation") is None or record["status"] == "open":
            record["reconciliation"] = {**check, "at": iso(now), "op": op}
        result["reconciliation"] = check["result"]
    batches[str(batch_id)] = record
    return _pruned({**ms, "batches": batches}), result


def _failed(ms: dict, rec: Mapping, now: dt.datetime, code: str | None, why: str) -> dict:
    """Shared state after giving up a batch request (no answer, or our gateway's Error)."""
    ms = {k: v for k, v in ms.items() if k != "admin"}
    record = ms["batches"].get(str(rec.get("batch_id")))
    if record is None:
        return ms
    entry = {"at": iso(now), "op": rec["op"], "code": code, "reason": why[:200]}
    record = {**record, "refusals": [*record.get("refusals", []), entry][-MAX_REQUESTS:]}
    return {**ms, "batches": {**ms["batches"], str(rec["batch_id"]): record}}


def _answered(state: dict, rec: Mapping, result: dict) -> dict:
    """The ``batches`` state with the request's result (a request the ``auto_close`` timer made
    elsewhere is added here, where its answer arrived)."""
    requests = [dict(r) for r in state.get("requests", [])]
    entry = next((r for r in requests if r.get("rrpid") == rec["rrpid"]), None)
    if entry is None:
        entry = {"ref": rec.get("ref"), "op": rec["op"], "batch_id": rec.get("batch_id"),
                 "asked": rec.get("asked"), "rrpid": rec["rrpid"], "auto": rec.get("auto")}
        requests.append(entry)
    entry["result"] = result
    return {**state, "requests": requests[-MAX_REQUESTS:]}

