"""The wallet's statements: a sub-role of the cardholder's ``Dispatch`` that takes the issuer's
signed Statement (D-173) and keeps it.

    Statement = S(I, StatementData)        issuer -> cardholder, never answered

Why a sub-role of its own: a statement is not part of any purchase (no XID, no exchange), and the
wallet's purchase table should stay the whole truth about purchases.  It is kept as a transaction
``stmt/<statement id hex>`` in state KEPT (``setmail statement CARDHOLDER --received`` lists them).

Against the mail attacker: a Statement is taken only when its signature verifies under the
*pinned* signature certificate of an issuer of this cardholder's cards (``StatementsConfig.
issuers``: directory address -> certificate, from the world's directory and the issuer's key
files), inside its validity, and names this cardholder; anything else changes nothing
(``Outcome.refused``) and is never answered (no Error: we asked nothing, and a forger's address
is no one we owe a reply).  A second Statement under a kept id changes nothing.

``statement_fields`` and ``statement_json`` convert between the JSON form (what ``setmail
statement --json`` prints and the issuer's ``statement`` command carries) and StatementData's
values; the issuer's side (``roles/issuer_statement.py``) uses them too.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from setmail.asn1.statement import StatementData
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.operators import verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.pinned import pinned_check
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import START, Inbound, Outcome, Role
from setmail.roles.network_msgs import once, when
from setmail.roles.wire import unwrap, wire

#: key of a Statement that does not even parse (nothing is ever stored under it)
UNREADABLE = "stmt/unreadable"
_CARD_INTS = ("currency", "amt_exp10", "limit", "held", "posted_pending", "posted_settled",
              "credited_pending", "credited_settled", "balance", "available")


def _date(value) -> dt.datetime:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0)


def statement_fields(doc: Mapping[str, Any], statement_id: bytes) -> dict[str, Any]:
    """StatementData values from the JSON form (dates ISO 8601, XIDs hex)."""
    cards = [{"pan_last4": str(c["pan_last4"]), **{k: int(c[k]) for k in _CARD_INTS},
              "entries": [{"xid": bytes.fromhex(e["xid"]), "kind": str(e["kind"]),
                           "amount": int(e["amount"]), "at": _date(e["at"]),
                           "merchant_id": e.get("merchant_id") or None}
                          for e in c.get("entries", [])]}
             for c in doc.get("cards", [])]
    out = {"statement_id": statement_id, "issuer": str(doc["issuer"]),
           "holder": str(doc["holder"]), "issued": _date(doc["issued"]), "cards": cards}
    for name in ("period_from", "period_to"):
        if doc.get(name):
            out[name] = _date(doc[name])
    return out


def statement_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form of decoded StatementData values."""
    cards = [{**{k: c[k] for k in ("pan_last4", *_CARD_INTS)},
              "entries": [{"xid": e["xid"].hex(), "kind": e["kind"], "amount": e["amount"],
                           "at": when(e["at"]), **({"merchant_id": e["merchant_id"]}
                                                   if e.get("merchant_id") else {})}
                          for e in c["entries"]]}
             for c in data["cards"]]
    return {"statement_id": data["statement_id"].hex(), "issuer": data["issuer"],
            "holder": data["holder"], "issued": when(data["issued"]),
            "period_from": when(data["period_from"]) if data.get("period_from") else None,
            "period_to": when(data["period_to"]) if data.get("period_to") else None,
            "cards": cards}


@dataclass(frozen=True)
class StatementsConfig:
    holder: str                                    # this cardholder's agent name
    #: directory address of each issuer of this cardholder's cards -> its pinned signature cert
    issuers: Mapping[str, x509.Certificate] = field(default_factory=dict)
    suite: CryptoSuite = DEFAULT_SUITE


class Statements(Role):
    name = "statements"
    TRANSITIONS = {START: {"Statement": "KEPT"}, "KEPT": {"Statement": "KEPT"}}

    def __init__(self, config: StatementsConfig):
        self.config = config

    def _verified(self, event: Inbound):
        """(StatementData values, Signed), the signature checked but not yet its signer."""
        def compute():
            signed = verify_S(wire(event).body, "StatementData", suite=self.config.suite)
            return decode_native(StatementData, signed.content), signed
        return once(event, "statement", compute)

    def transaction_key(self, event) -> str:
        if not isinstance(event, Inbound):
            return UNREADABLE
        try:
            data, _ = self._verified(event)
        except SetmailError:
            return UNREADABLE
        return "stmt/" + data["statement_id"].hex()

    def on_Statement(self, state, event, now, shared) -> Outcome:
        key, kept = self.transaction_key(event), None if state["state"] == START else dict(state)
        try:
            unwrap(event, now)
            data, signed = self._verified(event)
            pinned_check(self.config.issuers.values(), now)(signed.signer, signed.certificates)
            if data["holder"] != self.config.holder:
                raise ProtocolError(f"the statement is {data['holder']}'s, not ours")
        except SetmailError as exc:
            return Outcome(key, kept, refused=f"Statement refused: {exc}"[:300])
        issuer = next(a for a, c in self.config.issuers.items()
                      if thumbprint(c) == thumbprint(signed.signer))
        if kept is not None:
            return Outcome(key, kept, peer=issuer)  # kept already: nothing changes
        return Outcome(key, {"state": "KEPT", "issuer": issuer, "received_at": when(now),
                             "statement": statement_json(data)}, peer=issuer)
