"""What must hold in every state the explorer reaches, and in the quiet state each one settles to.

In every state (``violations``):

* the issuer never holds or posts twice for one XID (these purchases make one authorisation and
  one capture each);
* the issuer's books balance: the ledger rows its effects write (``agent.ledger.rows_of``, the
  rows the agent inserts) pass ``agent.ledger_check.check_rows`` against its shared totals and
  purchase states, as ``setmail ledger --check`` checks a store;
* the cardholder's wallet, the merchant and the gateway never disagree about an outcome: none
  says approved while another says declined;
* no PAN in anything the merchant stores, no order description in anything the gateway stores.

In the quiet state (``unsettled``: every mail delivered, every timer fired): each party has come
to a final state of its table, and all agree on where the money is — the merchant, the gateway
and the issuer on authorised, captured or nothing; the cardholder approved exactly when money
moved (a FAILED wallet while the card was charged is a disagreement too).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from setmail.agent.ledger import rows_of
from setmail.agent.ledger_check import check_rows
from setmail.check.model import Local, System

#: states in which a party has decided approved / declined (the outcome it would tell)
APPROVED = {"wallet": {"APPROVED", "CAPTURED"},
            "merchant": {"AUTHORIZED", "CAP_SENT", "CAPTURED"},
            "gateway": {"AUTHORIZED", "ISSUER_CAP", "CAPTURED"}}
DECLINED = {"wallet": {"DECLINED", "REJECTED"},
            "merchant": {"DECLINED", "REJECTED"},
            "gateway": {"DECLINED", "REVERSING"}}
#: final states of each table (nothing outstanding, no timer of the purchase's own)
FINAL = {"wallet": {"APPROVED", "CAPTURED", "DECLINED", "REJECTED", "FAILED"},
         "merchant": {"AUTHORIZED", "CAPTURED", "DECLINED", "REJECTED", "EXPIRED", "VOIDED"},
         "gateway": {None, "AUTHORIZED", "CAPTURED", "DECLINED", "VOIDED", "EXPIRED"},
         "issuer": {None, "HELD", "POSTED", "DECLINED", "REVERSED", "EXPIRED"}}
#: where the money is, as each party sees it
MONEY = {"merchant": {"AUTHORIZED": "authorised", "CAPTURED": "captured"},
         "gateway": {"AUTHORIZED": "authorised", "CAPTURED": "captured"},
         "issuer": {"HELD": "authorised", "POSTED": "captured"}}


@dataclass(frozen=True)
class Purchase:
    """One purchase of the model: who buys where, its XID, and the secrets to look for."""

    holder: str      # cardholder address
    merchant: str    # merchant address
    gateway: str
    issuer: str
    xid: str
    pan: str
    description: str
    amount: int


def _one(local: Local, xid: str) -> str | None:
    """The state name of the purchase's transaction at a party (keys start with the XID)."""
    names = [name for tx, name in local.names.items() if tx.startswith(xid)]
    return names[0] if names else None


def outcome_states(system: System, index: dict[str, int], p: Purchase) -> dict[str, str | None]:
    return {"wallet": _one(system.parties[index[p.holder]], p.xid),
            "merchant": _one(system.parties[index[p.merchant]], p.xid),
            "gateway": _one(system.parties[index[p.gateway]], p.xid),
            "issuer": _one(system.parties[index[p.issuer]], p.xid)}


def ledger_rows(issuer: Local) -> list[dict]:
    """The rows the agent would have inserted for the issuer's effects (``at``: commit number)."""
    return [row for n, (kind, data) in enumerate(issuer.effects)
            for row in rows_of(kind, json.loads(data), float(n + 1))]


_BOOKS: dict[str, list[str]] = {}
_HOLDS: dict[tuple[str, str], bool] = {}


def _books(issuer: Local) -> list[str]:
    """What is wrong with the issuer's books (memoised: one issuer store, many global states)."""
    found = _BOOKS.get(issuer.key)
    if found is None:
        found = _BOOKS[issuer.key] = _check_books(issuer)
    return found


def _check_books(issuer: Local) -> list[str]:
    rows = ledger_rows(issuer)
    out = []
    for kind in ("hold", "post"):
        count = Counter(r["xid"] for r in rows if r["kind"] == kind)
        out += [f"issuer: {n} {kind} rows for XID {xid[:12]}…" for xid, n in count.items()
                if n > 1]
    shared = json.loads(issuer.shared) if issuer.shared else {}
    for v in check_rows(rows, shared, issuer.state):
        entries = ", ".join(f"{e['kind']} {e['amount']}" for e in v["entries"])
        out.append(f"ledger: {v['where']}: {v['problem']} ({entries})")
    return out


def _secrets(system: System, index: dict[str, int], purchases) -> list[str]:
    out = []
    for p in purchases:
        merchant = system.parties[index[p.merchant]]
        gateway = system.parties[index[p.gateway]]
        if _holds(merchant, p.pan):
            out.append(f"merchant {p.merchant} stores the PAN …{p.pan[-4:]}")
        if _holds(gateway, p.description):
            out.append(f"gateway {p.gateway} stores the order description of {p.xid[:12]}…")
    return out


def _holds(local: Local, secret: str) -> bool:
    found = _HOLDS.get((local.key, secret))
    if found is None:
        found = _HOLDS[(local.key, secret)] = _search(local, secret)
    return found


def _search(local: Local, secret: str) -> bool:
    text = " ".join((*local.states.values(), local.shared or "",
                     *(data for _, data in local.effects),
                     *(payload for _, payload in local.timers.values())))
    return secret in text or secret.encode().hex() in text


def violations(system: System, index: dict[str, int], purchases) -> list[str]:
    """Every safety invariant that fails in ``system`` ([] = none)."""
    out = []
    for issuer in {p.issuer for p in purchases}:
        out += _books(system.parties[index[issuer]])
    for p in purchases:
        states = outcome_states(system, index, p)
        said = {who: ("approved" if s in APPROVED[who] else "declined")
                for who, s in states.items() if who in APPROVED
                and (s in APPROVED[who] or s in DECLINED[who])}
        if len(set(said.values())) > 1:
            out.append(f"purchase {p.xid[:12]}…: parties disagree: "
                       + ", ".join(f"{who} {states[who]}" for who in said))
    return out + _secrets(system, index, purchases)


def unsettled(system: System, index: dict[str, int], purchases) -> list[str]:
    """What is wrong with a quiet state: a party not final, or no agreement on the money."""
    out = []
    for p in purchases:
        states = outcome_states(system, index, p)
        where = f"purchase {p.xid[:12]}… " + ", ".join(f"{k} {v}" for k, v in states.items())
        stuck = [who for who, s in states.items() if s not in FINAL[who]]
        if stuck:
            out.append(f"{where}: stuck at {', '.join(stuck)}")
            continue
        money = {who: MONEY[who].get(states[who], "nothing") for who in MONEY}
        if len(set(money.values())) > 1:
            out.append(f"{where}: the money is {money}")
        charged = money["merchant"] != "nothing"
        if charged != (states["wallet"] in APPROVED["wallet"]):
            out.append(f"{where}: the cardholder's wallet says {states['wallet']}, "
                       f"the merchant {states['merchant']}")
    return out
