"""The ledger's invariant, checked on an issuer's store (``setmail ledger --check``, and every
lifecycle test through ``tests/ledger_check.py``).

Per card: the rows' held, posted and credited are what the issuer role decides with (its shared
totals, ``shared/ledger``), none is negative, so available = limit - held - posted + credited
holds for the numbers the issuer actually used.  Per purchase (the rows' purchase key; the XID for
rows written before there was one):

* every hold is released exactly once: releases (release, partial_release, reversal, expired)
  never exceed holds, and what is still held is exactly what the purchase's state says it holds
  (0 once it is no longer HELD);
* credits never exceed captures: net credited <= net posted, both >= 0;
* reversals never exceed holds (the first rule) and a capture or credit reversal names a posting or
  credit of that purchase that was not reversed before; each posting or credit settles at most
  once, and only while not reversed.

A violation names the card or the purchase, says what is wrong, and lists the rows involved (no
PAN: ``ledger.entry``).  Pure reading: nothing is written.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from setmail.agent.ledger import KINDS, entry, ledger_rows
from setmail.store import parts

RELEASES = ("release", "partial_release", "reversal", "expired")
#: store key prefixes of the issuer agent (agent/runtime.py)
STATE_PREFIX, SHARED_KEY = "tx/", "shared/ledger"


def _violation(where: str, problem: str, rows) -> dict[str, Any]:
    return {"where": where, "problem": problem, "entries": [entry(r) for r in rows]}


def _cards(rows, shared: Mapping) -> list[dict[str, Any]]:
    out = []
    by_pan: dict[str, list] = defaultdict(list)
    for row in rows:
        by_pan[row["pan"]].append(row)
    for pan in sorted(set(by_pan) | {k for k in shared if k != "pending"}):
        mine = by_pan.get(pan, [])
        totals = {"held": 0, "posted": 0, "credited": 0}
        for row in mine:
            moves = KINDS.get(row["kind"])
            if moves is not None:
                totals[moves[0]] += moves[1] * row["amount"]
        where = f"card …{pan[-4:]}"
        for name, value in totals.items():
            if value < 0:
                out.append(_violation(where, f"{name} is negative ({value})", mine))
        decided = shared.get(pan)
        if decided is not None:
            said = {k: decided.get(k, 0) for k in totals}
            if said != totals:
                out.append(_violation(where, f"the rows add up to {totals}, the issuer decided "
                                             f"with {said}", mine))
    return out


def _purchase(key: str, rows, state: Mapping | None) -> list[dict[str, Any]]:
    where = f"purchase {key[:16]}…" if len(key) > 16 else f"purchase {key}"
    out, sums = [], defaultdict(int)
    for row in rows:
        sums[row["kind"]] += row["amount"]
    holds, released = sums["hold"], sum(sums[k] for k in RELEASES)
    posted = sums["post"] - sums["capture_reversal"]
    credited = sums["credit"] - sums["credit_reversal"]
    if released > holds:
        out.append(_violation(where, f"released {released}, more than held {holds}", rows))
    if posted < 0 or credited < 0:
        out.append(_violation(where, f"posted {posted}, credited {credited}: negative", rows))
    if credited > posted:
        out.append(_violation(where, f"credited {credited}, more than captured {posted}", rows))
    if state is not None and "batch_id" not in state:
        still = state.get("held", 0) if state.get("state") == "HELD" else 0
        if holds - released != still:
            out.append(_violation(where, f"{holds - released} still held by the rows, the "
                                         f"purchase ({state.get('state')}) holds {still}", rows))
    out.extend(_originals(where, rows))
    return out


def _originals(where: str, rows) -> list[dict[str, Any]]:
    """Reversals name an unreversed original; settlements happen once, never after a reversal."""
    out = []
    made = {(r["kind"], r["stan"]) for r in rows if r["kind"] in ("post", "credit")}
    undone, settled = set(), set()
    for row in rows:
        kind = row["kind"]
        if kind in ("capture_reversal", "credit_reversal"):
            original = ("post" if kind == "capture_reversal" else "credit", row["original_stan"])
            if row["original_stan"] is not None and original not in made:
                out.append(_violation(where, f"{kind} of STAN {row['original_stan']}: no such "
                                             "original", [row]))
            elif original in undone:
                out.append(_violation(where, f"{kind} of STAN {row['original_stan']} twice",
                                      [row]))
            undone.add(original)
        elif kind == "settle":
            original = ("post" if row["item"] == "capture" else "credit", row["stan"])
            if original in settled or original in undone:
                out.append(_violation(where, f"{row['item']} STAN {row['stan']} settled twice "
                                             "or after its reversal", [row]))
            settled.add(original)
    return out


def check_rows(rows, shared: Mapping, state_of) -> list[dict[str, Any]]:
    """Every violation of the invariant in ``rows`` (oldest first, as ``ledger_rows`` reads
    them), given the issuer's shared totals and ``state_of(purchase key)`` (its transaction
    state, or None).  Pure: the store's check and the model checker's (``setmail.check``)."""
    out = _cards(rows, shared)
    by_purchase: dict[str, list] = defaultdict(list)
    for row in rows:
        by_purchase[row["purchase"] or row["xid"]].append(row)
    for key, mine in by_purchase.items():
        out.extend(_purchase(key, mine, state_of(key) if "." in key else None))
    return out


def check_ledger(store) -> list[dict[str, Any]]:
    """Every violation of the invariant in an issuer's store ([] = the books hold)."""
    return check_rows(ledger_rows(store), parts.load(store, SHARED_KEY)[0] or {},
                      lambda key: store.get_state(STATE_PREFIX + key))
