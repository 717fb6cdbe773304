"""The issuer's ledger: the effects ``ledger.*`` of the issuer role and the report ``setmail
ledger`` prints.

Why rows as well as the role's shared totals: the totals decide (they are small and travel with
every step), the rows explain — one row per change, written by the effect handlers inside the
agent's single store transaction, so a row exists exactly when the state that caused it was
committed.  Each row keeps the XID, the purchase key (``<XID>.<gateway+merchant tag>``: two
merchants may use one XID), the merchant, the card, the STAN of the request that caused it and,
for reversals, the original's.  Kinds (``KINDS``), with what they move on the card:

* ``hold`` +held: an approved authorisation (or an incremental one, or the hold a capture
  reversal reinstates); ``decline``: a refused authorisation, moves nothing;
* ``release`` -held: the rest of the hold given back when a capture posts; ``partial_release``
  -held: part of the hold given back, the rest still held (a capture with ``remaining_hold``, a
  partial reversal); ``reversal`` -held: the hold given back because the gateway reversed the
  authorisation (0400); ``expired`` -held: given back after the issuer's ``hold_days``;
* ``post`` +posted: a captured amount; ``capture_reversal`` -posted: a posting undone (0420);
* ``credit`` +credited: a refund (0220, DE 3 200000); ``credit_reversal`` -credited;
* ``settle``: a posting or credit (``item``: capture|credit) moved from pending to settled by the
  clearing of batch ``batch_id`` (0500); it changes no total.

Per card: held, posted and credited are those sums; available = limit - held - posted + credited,
the numbers the issuer role keeps in its shared state (``setmail.agent.ledger_check`` checks that
and the per-purchase invariant).  The issuer's store already holds full PANs (``issuer_accounts``);
rows keep the PAN too, to join them to the account, and ``pan_last4`` for display.  Nothing here
logs a PAN.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from setmail.agent.effects import register_effect

LEDGER_DDL = ("CREATE TABLE IF NOT EXISTS issuer_ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, "
              "xid TEXT NOT NULL, kind TEXT NOT NULL, pan TEXT NOT NULL, pan_last4 TEXT NOT NULL, "
              "amount INTEGER NOT NULL, currency INTEGER, code TEXT NOT NULL, at REAL NOT NULL, "
              "purchase TEXT, merchant_id TEXT, stan INTEGER, original_stan INTEGER, item TEXT, "
              "batch_id INTEGER)")
#: columns added since the first ledger (a store written before gets them on the next row)
_ADDED = ("purchase TEXT", "merchant_id TEXT", "stan INTEGER", "original_stan INTEGER",
          "item TEXT", "batch_id INTEGER")
#: row kind -> (the card total it moves, sign); ``decline`` and ``settle`` move none
KINDS: dict[str, tuple[str, int] | None] = {
    "hold": ("held", 1), "release": ("held", -1), "partial_release": ("held", -1),
    "reversal": ("held", -1), "expired": ("held", -1), "post": ("posted", 1),
    "capture_reversal": ("posted", -1), "credit": ("credited", 1),
    "credit_reversal": ("credited", -1), "decline": None, "settle": None}
_COLUMNS = ("xid", "kind", "pan", "pan_last4", "amount", "currency", "code", "at", "purchase",
            "merchant_id", "stan", "original_stan", "item", "batch_id")


def _table(tx) -> None:
    tx.execute(LEDGER_DDL)
    have = {r[1] for r in tx.execute("PRAGMA table_info(issuer_ledger)").fetchall()}
    for column in _ADDED:
        if column.split()[0] not in have:
            tx.execute(f"ALTER TABLE issuer_ledger ADD COLUMN {column}")


def _insert(tx, row: Mapping[str, Any]) -> None:
    tx.execute(f"INSERT INTO issuer_ledger ({', '.join(_COLUMNS)}) VALUES "
               f"({', '.join('?' * len(_COLUMNS))})", tuple(row.get(c) for c in _COLUMNS))


def _moves(data: Mapping[str, Any], at: float, *moves: tuple[str, int]) -> list[dict[str, Any]]:
    pan = str((data.get("secret") or {}).get("pan", ""))
    return [{"xid": data["xid"], "kind": kind, "pan": pan, "pan_last4": data["pan_last4"],
             "amount": int(amount), "currency": data.get("currency"), "code": data["code"],
             "at": at, "purchase": data.get("purchase"), "merchant_id": data.get("merchant_id"),
             "stan": data.get("stan"), "original_stan": data.get("original_stan")}
            for kind, amount in moves]


def _post(data, at):
    """The capture posts its amount and gives back the hold: all of it, or all but
    ``remaining`` (a partial completion)."""
    release = "partial_release" if data.get("remaining") else "release"
    return _moves(data, at, (release, data["released"]), ("post", data["amount"]))


def _settle(data, at):
    """One ``settle`` row per item of a cleared batch (its PAN from ``secret["pans"]``)."""
    pans = (data.get("secret") or {}).get("pans", [])
    return [{"xid": item["xid"], "kind": "settle", "pan": pan, "pan_last4": item["pan_last4"],
             "amount": int(item["amount"]), "currency": item["currency"], "code": data["code"],
             "at": at, "purchase": item["purchase"], "merchant_id": data["merchant_id"],
             "stan": item["stan"], "item": item["kind"], "batch_id": data["batch_id"]}
            for item, pan in zip(data["items"], pans)]


#: effect kind (after ``ledger.``) -> the rows it writes, from its data and the commit's time:
#: hold/decline/credit/credit_reversal one row of that kind; reverse gives back the whole hold
#: (``reversal``), expire an unclaimed one (``expired``); a capture reversal undoes the posting
#: and holds again what that capture had released
ROWS = {
    "hold": lambda d, at: _moves(d, at, ("hold", d["amount"])),
    "post": _post,
    "decline": lambda d, at: _moves(d, at, ("decline", d["amount"])),
    "reverse": lambda d, at: _moves(d, at, ("reversal", d["amount"])),
    "partial_release": lambda d, at: _moves(d, at, ("partial_release", d["amount"])),
    "expire": lambda d, at: _moves(d, at, ("expired", d["amount"])),
    "credit": lambda d, at: _moves(d, at, ("credit", d["amount"])),
    "credit_reversal": lambda d, at: _moves(d, at, ("credit_reversal", d["amount"])),
    "capture_reversal": lambda d, at: _moves(d, at, ("capture_reversal", d["amount"]),
                                             ("hold", d["reinstated"])),
    "settle": _settle,
}


def rows_of(kind: str, data: Mapping[str, Any], at: float) -> list[dict[str, Any]]:
    """The rows effect ``kind`` (``ledger.hold`` …) writes, as ``ledger_rows`` reads them back
    (no ``id``); [] for a kind that is not the ledger's.  Pure: what the handlers insert, and
    what a model of the issuer (``setmail.check``) books without a store."""
    rows = ROWS.get(kind.removeprefix("ledger.")) if kind.startswith("ledger.") else None
    return [] if rows is None else [{**dict.fromkeys(_COLUMNS), **r} for r in rows(data, at)]


def _handler(kind: str):
    def in_tx(ctx, tx, data) -> None:
        _table(tx)
        for row in rows_of(kind, data, tx.now):
            _insert(tx, row)
    return in_tx


for _kind in ROWS:
    register_effect("ledger." + _kind, in_tx=_handler("ledger." + _kind))


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(microsecond=0).isoformat()


def has_table(store, name: str) -> bool:
    return bool(store.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (name,)))


def ledger_rows(store) -> list[dict[str, Any]]:
    """Every ledger row, oldest first, as a dict of its columns (``id`` too; ``at`` as epoch).
    Carries the full PAN: for reports and checks, never for a log."""
    if not has_table(store, "issuer_ledger"):
        return []
    have = {r[1] for r in store.query("PRAGMA table_info(issuer_ledger)")}
    columns = ["id", *(c for c in _COLUMNS if c in have)]
    rows = store.query(f"SELECT {', '.join(columns)} FROM issuer_ledger ORDER BY id")
    return [{**dict.fromkeys(_COLUMNS), **dict(zip(columns, r))} for r in rows]


def accounts(store) -> dict[str, dict[str, Any]]:
    """{pan: {holder, limit, currency (alphabetic), currency_number, amt_exp10, status}}."""
    from setmail.money import currency_number
    out: dict[str, dict[str, Any]] = {}
    if has_table(store, "issuer_accounts"):
        for pan, holder, limit, currency, status in store.query(
                "SELECT pan, holder, credit_limit_minor, currency, status FROM issuer_accounts "
                "ORDER BY holder, pan"):
            number, exp10 = currency_number(currency)
            out[pan] = {"holder": holder, "limit": limit, "currency": currency,
                        "currency_number": number, "amt_exp10": exp10, "status": status}
    return out


def _card(holder, last4, limit, currency, number, exp10, status) -> dict[str, Any]:
    return {"holder": holder, "pan_last4": last4, "limit": limit, "currency": currency,
            "currency_number": number, "amt_exp10": exp10, "status": status, "held": 0,
            "posted": 0, "credited": 0, "entries": []}


def entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as a report shows it (no PAN)."""
    out = {"xid": row["xid"], "kind": row["kind"], "amount": row["amount"], "code": row["code"],
           "at": iso(row["at"])}
    for extra in ("merchant_id", "stan", "original_stan", "item", "batch_id"):
        if row.get(extra) is not None:
            out[extra] = row[extra]
    return out


def ledger_report(store, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per card: holder, pan_last4, limit, currency (alphabetic, and ``currency_number``/
    ``amt_exp10``), status, held, posted, credited, available (minor units) and its entries
    (oldest first: xid, kind, amount, code, at as ISO 8601 UTC, and merchant_id, stan,
    original_stan, item, batch_id where known).  Cards the issuer does not know (declined 14)
    appear as holder "(unknown)" with limit 0."""
    from setmail.money import currency_code
    cards = {pan: _card(a["holder"], pan[-4:], a["limit"], a["currency"], a["currency_number"],
                        a["amt_exp10"], a["status"]) for pan, a in accounts(store).items()}
    for row in ledger_rows(store) if rows is None else rows:
        card = cards.get(row["pan"]) or cards.setdefault(row["pan"], _card(
            "(unknown)", row["pan_last4"], 0, currency_code(row["currency"]), row["currency"],
            -2, "unknown"))
        moves = KINDS.get(row["kind"])
        if moves is not None:
            card[moves[0]] += moves[1] * row["amount"]
        card["entries"].append(entry(row))
    for card in cards.values():
        card["available"] = card["limit"] - card["held"] - card["posted"] + card["credited"]
    return list(cards.values())
