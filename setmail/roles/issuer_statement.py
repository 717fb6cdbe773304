"""The issuer mails a cardholder its statement (``roles/issuer.py`` composes it; D-173).

Command ``statement`` {statement_id (hex, fresh), holder (cardholder agent), statement (the JSON
form ``setmail statement`` computes from the issuer's ledger: ``agent/statement.py``)} ->
``Statement = S(I, StatementData)`` to the holder's *directory* address (``IssuerConfig.holders``,
never an address the command names), signed with the issuer's pinned signature certificate, which
travels in the SignedData; transaction ``stmt/<id>`` SENT keeps what was sent (without entries).
Why the statement comes in the command: a role never reads the store, and the ledger's rows are
the truth a statement reports; the issuer signs only its own name into it (``issuer``).
"""
from __future__ import annotations

from typing import Any

from setmail.asn1.codec.fastder import encode
from setmail.asn1.statement import StatementData
from setmail.crypto.operators import S
from setmail.errors import SetmailError
from setmail.roles.base import START, Command, Outcome, Send
from setmail.roles.network_msgs import when
from setmail.roles.statements import statement_fields
from setmail.roles.wire import wrap

#: key of a command that names no statement
NO_STATEMENT = "stmt/none"


class StatementLeg:
    """The ``statement`` command of ``Issuer`` (a mixin; transitions in ``Issuer.TRANSITIONS``)."""

    config: Any

    def command_key(self, event) -> str:
        if isinstance(event, Command) and event.name == "statement":
            ident = str(event.args.get("statement_id", ""))
            try:
                bytes.fromhex(ident)
            except ValueError:
                return NO_STATEMENT
            return f"stmt/{ident.lower()}" if ident else NO_STATEMENT
        return "unroutable"

    def on_statement(self, state, event, now, shared) -> Outcome:
        key, cfg = self.command_key(event), self.config
        if state["state"] != START:
            return Outcome(key, dict(state), refused="this statement was sent already")
        holder = str(event.args.get("holder", ""))
        to = cfg.holders.get(holder)
        if key == NO_STATEMENT or to is None:
            why = "no statement id" if key == NO_STATEMENT else (
                f"{holder!r} is no cardholder of this issuer in the directory")
            return Outcome(key, None, refused=why)
        try:
            fields = statement_fields({**event.args.get("statement", {}), "issuer": cfg.name,
                                       "holder": holder}, bytes.fromhex(key[5:]))
            der = encode(StatementData, fields)
        except (SetmailError, KeyError, TypeError, ValueError) as exc:
            return Outcome(key, None, refused=f"the statement does not encode: {exc}"[:300])
        body = S(cfg.signature, "StatementData", der, certs=(cfg.signature.cert,),
                 suite=cfg.suite)
        sent = {"state": "SENT", "holder": holder, "to": to, "sent_at": when(now),
                "issued": when(fields["issued"]), "cards": len(fields["cards"]),
                "entries": sum(len(c["entries"]) for c in fields["cards"])}
        return Outcome(key, sent, sends=(Send(to, "Statement", wrap("Statement", body, now=now)),),
                       peer=to)
