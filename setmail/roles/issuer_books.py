"""The issuer's books as the role keeps them: per-card totals, the pending postings and credits,
and the ledger effects (``setmail.agent.ledger`` writes their rows).

Shared state (``Issuer.shared_key = "ledger"``): ``{pan: {"held", "posted", "credited"}}`` in
minor units (``credited`` from the card's first credit on), and ``"pending"``: ``{"<purchase key>/<STAN>": {"kind": "capture"|"credit",
"amount", "currency", "amt_exp10", "pan", "xid"}}``, every posting and credit not yet settled.
A capture or credit reversal is possible only while its entry is pending; a clearing (0500) moves
entries out of it, to settled (D-176).  Why in the shared state: a clearing names items of many
purchases, and a role sees only one transaction's state and the shared one.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from setmail.roles.base import Effect

#: the shared state's key of the pending postings and credits (never a PAN: PANs are digits)
PENDING = "pending"


def pan_last4(pan: str) -> str:
    return pan[-4:]


def issuer_key(xid: bytes, gateway_thumb: bytes, mer_id: str) -> str:
    """``<XID hex>.<tag>``: one gateway's purchase of one merchant (``setmail tx show <xid>``
    finds it by the prefix); a clearing's key is its batch XID's."""
    tag = hashlib.sha256(gateway_thumb + b"\x00" + mer_id.encode()).digest()[:8]
    return f"{xid.hex()}.{tag.hex()}"


def fingerprint(data: Mapping) -> str:
    """What makes two requests the same request: every signed field but the transmission time
    (DE 7), hashed."""
    def plain(value):
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if isinstance(value, (int, str, type(None))) else str(value)
    body = {k: plain(v) for k, v in data.items() if k != "transmitted"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def available(limit: int, totals: Mapping) -> int:
    """The card's available credit: limit - held - posted + credited (the ledger's invariant)."""
    return (limit - totals.get("held", 0) - totals.get("posted", 0)
            + totals.get("credited", 0))


def cards(shared: Mapping) -> dict[str, Mapping]:
    """{pan: totals} of the shared state (without the pending entries)."""
    return {k: v for k, v in shared.items() if k != PENDING}


def moved(shared: Mapping, pan: str, *, held: int = 0, posted: int = 0,
          credited: int = 0) -> dict:
    """The shared totals with ``pan``'s held, posted and credited amounts moved by the given
    amounts (``credited`` appears once the card was first credited)."""
    totals = shared.get(pan, {})
    new = {"held": totals.get("held", 0) + held, "posted": totals.get("posted", 0) + posted}
    if credited or "credited" in totals:
        new["credited"] = totals.get("credited", 0) + credited
    return {**shared, pan: new}


def pending_id(key: str, stan: int) -> str:
    return f"{key}/{stan}"


def pend(shared: Mapping, key: str, stan: int, kind: str, amount: Mapping, pan: str,
         xid: str) -> dict:
    """``shared`` with a new pending posting or credit."""
    entry = {"kind": kind, "amount": amount["amount"], "currency": amount["currency"],
             "amt_exp10": amount["amt_exp10"], "pan": pan, "xid": xid}
    return {**shared, PENDING: {**shared.get(PENDING, {}), pending_id(key, stan): entry}}


def unpend(shared: Mapping, *ids: str) -> dict:
    """``shared`` without the pending entries ``ids``."""
    left = {k: v for k, v in shared.get(PENDING, {}).items() if k not in ids}
    out = {k: v for k, v in shared.items() if k != PENDING}
    if left:
        out[PENDING] = left
    return out


def is_pending(shared: Mapping, key: str, stan: int) -> bool:
    return pending_id(key, stan) in shared.get(PENDING, {})


def ledger_effect(kind: str, key: str, state: Mapping, code: str, **amounts) -> Effect:
    """The row data ``setmail.agent.ledger`` writes (XID, purchase key, merchant, card, code,
    amounts); the PAN only under ``secret``."""
    return Effect(kind, {"xid": state["xid"], "purchase": key, "pan_last4": state["pan_last4"],
                         "currency": state["currency"], "code": code,
                         "merchant_id": state.get("merchant_id"), **amounts,
                         "secret": {"pan": state["secret"]["pan"]}})
