"""A cardholder's statement from the issuer's ledger (``setmail statement``, and the content of
the signed Statement the issuer mails: ``roles/issuer_statement.py``).

Why from the rows: they are the issuer's record of every change (``agent/ledger.py``).  The
card's totals are as of now, whatever the period (a balance is not a sum over a window); the
period only selects the entries shown.  Per card: limit, held, posted and credited split into
pending and settled (settled = what ``settle`` rows moved), balance = posted - credited (what the
holder owes), available = limit - held - posted + credited, and the entries of the period (XID,
kind, amount, when, merchant).  The JSON form is ``roles.statements.statement_json``'s.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from setmail.agent.ledger import KINDS, accounts, iso, ledger_rows


def _card(pan: str, account: dict[str, Any], rows: list[dict[str, Any]], start: float | None,
          end: float | None) -> dict[str, Any]:
    totals = {"held": 0, "posted": 0, "credited": 0}
    settled = {"capture": 0, "credit": 0}
    entries = []
    for row in rows:
        moves = KINDS.get(row["kind"])
        if moves is not None:
            totals[moves[0]] += moves[1] * row["amount"]
        if row["kind"] == "settle" and row.get("item") in settled:
            settled[row["item"]] += row["amount"]
        if (start is None or row["at"] >= start) and (end is None or row["at"] < end):
            entries.append({"xid": row["xid"], "kind": row["kind"], "amount": row["amount"],
                            "at": iso(row["at"]),
                            **({"merchant_id": row["merchant_id"]} if row.get("merchant_id")
                               else {})})
    return {"pan_last4": pan[-4:], "currency": account["currency_number"],
            "amt_exp10": account["amt_exp10"], "limit": account["limit"],
            "held": totals["held"], "posted_pending": totals["posted"] - settled["capture"],
            "posted_settled": settled["capture"],
            "credited_pending": totals["credited"] - settled["credit"],
            "credited_settled": settled["credit"],
            "balance": totals["posted"] - totals["credited"],
            "available": account["limit"] - totals["held"] - totals["posted"]
            + totals["credited"], "entries": entries}


def statement_report(store, holder: str, *, issuer: str, now: dt.datetime,
                     start: dt.datetime | None = None,
                     end: dt.datetime | None = None) -> dict[str, Any]:
    """The JSON form of ``holder``'s statement at ``issuer`` (its name as signed), issued
    ``now``; entries from ``start`` (inclusive) to ``end`` (exclusive)."""
    mine = {pan: a for pan, a in accounts(store).items() if a["holder"] == holder}
    rows: dict[str, list] = {pan: [] for pan in mine}
    for row in ledger_rows(store):
        if row["pan"] in rows:
            rows[row["pan"]].append(row)
    stamp = (lambda d: None if d is None else d.timestamp())
    return {"issuer": issuer, "holder": holder,
            "issued": iso(now.timestamp()),
            "period_from": iso(start.timestamp()) if start else None,
            "period_to": iso(end.timestamp()) if end else None,
            "cards": [_card(pan, mine[pan], rows[pan], stamp(start), stamp(end))
                      for pan in sorted(mine)]}
