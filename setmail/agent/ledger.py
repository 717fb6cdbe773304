"""The issuer's ledger: the effects ``ledger.hold``/``ledger.post``/``ledger.decline``/
``ledger.reverse``/``ledger.expire`` and the report ``setmail ledger`` prints.

Why rows as well as the role's shared totals: the totals decide (they are small and travel with
every step), the rows explain — one row per change, written by the effect handlers inside the
agent's single store transaction, so a row exists exactly when the state that caused it was
committed.  Kinds: ``hold`` (an approved authorisation), ``release`` (the hold given back when the
capture posts), ``post`` (the captured amount), ``decline`` (a refused authorisation; it changes
no total), ``reversal`` (the hold given back because the gateway reversed the authorisation,
IssRevReq 0400), ``expired`` (the hold given back because nobody captured or reversed it within
the issuer's ``hold_days``).  Per card: held = holds - releases - reversals - expired, posted =
posts; the issuer role keeps the same numbers in its shared state (tested).

The issuer's store already holds full PANs (``issuer_accounts``); ledger rows keep the PAN too, to
join them to the account, and ``pan_last4`` for display.  Nothing here logs a PAN.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from setmail.agent.effects import register_effect

LEDGER_DDL = ("CREATE TABLE IF NOT EXISTS issuer_ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, "
              "xid TEXT NOT NULL, kind TEXT NOT NULL, pan TEXT NOT NULL, pan_last4 TEXT NOT NULL, "
              "amount INTEGER NOT NULL, currency INTEGER, code TEXT NOT NULL, at REAL NOT NULL)")


def _rows(tx, data: Mapping[str, Any], *rows: tuple[str, int]) -> None:
    tx.execute(LEDGER_DDL)
    pan = str((data.get("secret") or {}).get("pan", ""))
    for kind, amount in rows:
        tx.execute("INSERT INTO issuer_ledger (xid, kind, pan, pan_last4, amount, currency, code, "
                   "at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (data["xid"], kind, pan, data["pan_last4"], int(amount), data.get("currency"),
                    data["code"], tx.now))


def hold(ctx, tx, data) -> None:
    _rows(tx, data, ("hold", data["amount"]))


def post(ctx, tx, data) -> None:
    """The capture posts its amount and gives back the whole hold."""
    _rows(tx, data, ("release", data["released"]), ("post", data["amount"]))


def decline(ctx, tx, data) -> None:
    _rows(tx, data, ("decline", data["amount"]))


def reverse(ctx, tx, data) -> None:
    """A reversal gives back the whole hold; nothing is posted."""
    _rows(tx, data, ("reversal", data["amount"]))


def expire(ctx, tx, data) -> None:
    """An unclaimed hold released by the issuer itself; nothing is posted."""
    _rows(tx, data, ("expired", data["amount"]))


register_effect("ledger.hold", in_tx=hold)
register_effect("ledger.post", in_tx=post)
register_effect("ledger.decline", in_tx=decline)
register_effect("ledger.reverse", in_tx=reverse)
register_effect("ledger.expire", in_tx=expire)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(microsecond=0).isoformat()


def _table(store, name: str) -> bool:
    return bool(store.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (name,)))


def _card(holder, last4, limit, currency, number, exp10, status) -> dict[str, Any]:
    return {"holder": holder, "pan_last4": last4, "limit": limit, "currency": currency,
            "currency_number": number, "amt_exp10": exp10, "status": status, "held": 0,
            "posted": 0, "entries": []}


def ledger_report(store) -> list[dict[str, Any]]:
    """Per card: holder, pan_last4, limit, currency (alphabetic, and ``currency_number``/
    ``amt_exp10``), status, held, posted, available (minor units) and its entries (oldest first:
    xid, kind, amount, code, at as ISO 8601 UTC).
    Cards the issuer does not know (declined 14) appear as holder "(unknown)" with limit 0."""
    from setmail.money import currency_code, currency_number
    cards: dict[str, dict[str, Any]] = {}
    if _table(store, "issuer_accounts"):
        for pan, holder, limit, currency, status in store.query(
                "SELECT pan, holder, credit_limit_minor, currency, status FROM issuer_accounts "
                "ORDER BY holder, pan"):
            number, exp10 = currency_number(currency)
            cards[pan] = _card(holder, pan[-4:], limit, currency, number, exp10, status)
    if _table(store, "issuer_ledger"):
        sign = {"hold": ("held", 1), "release": ("held", -1), "reversal": ("held", -1),
                "expired": ("held", -1), "post": ("posted", 1)}
        for pan, last4, xid, kind, amount, currency, code, at in store.query(
                "SELECT pan, pan_last4, xid, kind, amount, currency, code, at FROM issuer_ledger "
                "ORDER BY id"):
            card = cards.get(pan) or cards.setdefault(pan, _card(
                "(unknown)", last4, 0, currency_code(currency), currency, -2, "unknown"))
            if kind in sign:
                total, factor = sign[kind]
                card[total] += factor * amount
            card["entries"].append({"xid": xid, "kind": kind, "amount": amount, "code": code,
                                    "at": _iso(at)})
    for card in cards.values():
        card["available"] = card["limit"] - card["held"] - card["posted"]
    return list(cards.values())
