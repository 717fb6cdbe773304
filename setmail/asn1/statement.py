"""The issuer's statement of a cardholder's cards: setmail's own message (D-173), not SET's.

    Statement = S(I, StatementData)

Signed, not enveloped: it says nothing a cardholder's mailbox must hide beyond what SET's own
purchase messages already show (last four digits, amounts, XIDs), and the wallet must be able to
keep it and verify it later against the issuer's certificate from the world's directory.  Amounts
are INTEGERs in minor units of the card's ``currency``/``amt_exp10``.
"""
from __future__ import annotations

from asn1crypto import cms, core

from .base import Date, SETString, XID


class StatementEntry(core.Sequence):
    """One ledger row of the card: what happened to which purchase, when."""

    _fields = [
        ("xid", XID),
        ("kind", core.PrintableString),               # a ledger row kind (agent/ledger.py)
        ("amount", core.Integer),                     # minor units of the card's currency
        ("at", Date),
        ("merchant_id", SETString, {"implicit": 0, "optional": True}),
    ]


class StatementEntries(core.SequenceOf):
    _child_spec = StatementEntry


class StatementCard(core.Sequence):
    """One card of the holder: its totals (minor units) and its entries in the period."""

    _fields = [
        ("pan_last4", core.NumericString),
        ("currency", core.Integer),
        ("amt_exp10", core.Integer),
        ("limit", core.Integer),
        ("held", core.Integer),
        ("posted_pending", core.Integer),
        ("posted_settled", core.Integer),
        ("credited_pending", core.Integer),
        ("credited_settled", core.Integer),
        ("balance", core.Integer),                    # posted - credited: what the holder owes
        ("available", core.Integer),                  # limit - held - posted + credited
        ("entries", StatementEntries),
    ]


class StatementCards(core.SequenceOf):
    _child_spec = StatementCard


class StatementData(core.Sequence):
    """The issuer's statement of one cardholder (setmail's own, D-173): signed by the issuer."""

    _fields = [
        ("statement_id", core.OctetString),           # fresh: names the statement
        ("issuer", SETString),
        ("holder", SETString),
        ("issued", Date),
        ("cards", StatementCards),
        ("period_from", Date, {"implicit": 0, "optional": True}),
        ("period_to", Date, {"implicit": 1, "optional": True}),
    ]


class Statement(cms.ContentInfo):
    """S(I, StatementData): a SignedData carrying the issuer's signature certificate."""
