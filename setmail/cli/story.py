"""What a ``--wait`` tells as it happens: one sentence per step a party took.

The steps are read from the parties' own stores (``waiting.View``), never guessed: each time a
party's state of the watched transaction changes, ``steps`` says what that state means (the
message it received or sent), adding what is known by then (amounts, codes); a new refusal note
and a new answer of the gateway (the merchant's ``result``) are steps too.  States not named here
are shown by their name.
"""
from __future__ import annotations

from setmail.cli.show import explain, money

#: (kind, state) -> what the party did to get there
SENTENCES = {
    ("cardholder", "PINIT_SENT"): "PInitReq sent to the merchant",
    ("cardholder", "PREQ_SENT"): "PInitRes received and checked; PReq sent (the order for the "
                                 "merchant, the card sealed for the gateway)",
    ("cardholder", "APPROVED"): "PRes received: authorised",
    ("cardholder", "CAPTURED"): "PRes received: authorised and captured",
    ("cardholder", "DECLINED"): "PRes received: declined",
    ("cardholder", "REJECTED"): "PRes received: the order was rejected",
    ("cardholder", "FAILED"): "gave up",
    ("cardholder", "CANCELLED"): "cancelled",
    ("cardholder", "CINIT_SENT"): "CardCInitReq sent to the cardholder CA",
    ("cardholder", "FORM_REQ_SENT"): "CardCInitRes received; RegFormReq sent",
    ("cardholder", "CERT_REQ_SENT"): "registration form received; CertReq sent (new key pair)",
    ("cardholder", "PENDING"): "the CA pended the request: it answers a later CertInqReq",
    ("cardholder", "INQ_SENT"): "CertInqReq sent",
    ("cardholder", "DONE"): "CertRes received: certificate issued and stored",
    ("merchant", "ORDERED"): "order taken",
    ("merchant", "PARKED"): "PInitReq received before the order: parked",
    ("merchant", "PINIT_SENT"): "PInitReq received; PInitRes sent (signed, with the gateway's "
                                "certificate)",
    ("merchant", "AUTH_SENT"): "PReq received and checked; AuthReq sent to the gateway",
    ("merchant", "AUTHORIZED"): "AuthRes received: authorised",
    ("merchant", "CAP_SENT"): "CapReq sent to the gateway",
    ("merchant", "CAPTURED"): "captured",
    ("merchant", "DECLINED"): "AuthRes received: declined",
    ("merchant", "REJECTED"): "the gateway refused the request",
    ("merchant", "EXPIRED"): "expired",
    ("merchant", "CANCELLED"): "cancelled",
    ("merchant", "VOIDED"): "AuthRevRes received: authorisation cancelled",
    ("merchant", "REAUTH_SENT"): "AuthReq (a further authorisation) sent to the gateway",
    ("merchant", "AUTHREV_SENT"): "AuthRevReq sent to the gateway",
    ("merchant", "CRED_SENT"): "CredReq sent to the gateway",
    ("merchant", "CREDREV_SENT"): "CredRevReq sent to the gateway",
    ("merchant", "CAPREV_SENT"): "CapRevReq sent to the gateway",
    ("merchant", "PARTLY_REFUNDED"): "partly refunded",
    ("merchant", "REFUNDED"): "refunded",
    ("merchant", "INIT_SENT"): "Me-AqCInitReq sent to the CA",
    ("merchant", "CERT_REQ_SENT"): "CertReq sent (new key pairs)",
    ("merchant", "DONE"): "CertRes received: certificates issued and stored",
    ("gateway", "ISSUER_AUTH"): "AuthReq checked (dual signature, card); authorisation "
                                "request 0100 sent to the issuer",
    ("gateway", "AUTHORIZED"): "issuer approved; AuthRes sent to the merchant",
    ("gateway", "DECLINED"): "issuer declined; AuthRes sent to the merchant",
    ("gateway", "ISSUER_CAP"): "CapReq checked; capture 0220 sent to the issuer",
    ("gateway", "CAPTURED"): "issuer posted the capture; CapRes sent to the merchant",
    ("gateway", "ISSUER_REV"): "reversal 0400 sent to the issuer",
    ("gateway", "ISSUER_CRED"): "credit 0220 sent to the issuer",
    ("gateway", "ISSUER_CREDREV"): "credit reversal 0420 sent to the issuer",
    ("gateway", "ISSUER_CAPREV"): "capture reversal sent to the issuer",
    ("gateway", "ISSUER_REAUTH"): "further authorisation 0100 sent to the issuer",
    ("gateway", "VOIDED"): "authorisation reversed; AuthRevRes sent",
    ("issuer", "HELD"): "authorised: amount held on the card",
    ("issuer", "DECLINED"): "declined",
    ("issuer", "POSTED"): "capture posted to the card",
    ("issuer", "REVERSED"): "hold released",
}
#: what a party's state shows next to the sentence, when it has it
_DETAILS = (("auth_code", "auth code {}"), ("iso_code", "ISO {}"), ("iso_text", "{}"))


def sentence(kind: str, state: dict) -> str:
    name = state.get("state") or "?"
    text = SENTENCES.get((kind, name), name)
    extra = [fmt.format(state[k]) for k, fmt in _DETAILS if state.get(k) not in (None, "")]
    for key, label in (("auth_amt", "authorised"), ("cap_amt", "captured")):
        if name in ("AUTHORIZED", "APPROVED", "CAPTURED") and isinstance(state.get(key), int) \
                and state[key] > 0:
            extra.append(f"{label} {money(state[key], state.get('currency'), state.get('amt_exp10', -2))}")
    if name in ("FAILED", "REJECTED") and state.get("failure"):
        extra.append(str(state["failure"]))
    if name == "EXPIRED" and isinstance(state.get("expired"), dict):
        extra.append(str(state["expired"].get("reason", "")))
    return text + (f" ({', '.join(e for e in extra if e)})" if extra else "")


#: kind -> (the states a purchase passes through in this order, the states reached from them):
#: a party quicker than our reads went through the ones between, which are told too
LEAD_IN = {
    "cardholder": (("PINIT_SENT", "PREQ_SENT"), {"APPROVED", "CAPTURED", "DECLINED", "REJECTED"}),
    "merchant": (("PINIT_SENT", "AUTH_SENT"), {"AUTHORIZED", "CAP_SENT", "CAPTURED", "DECLINED",
                                               "REJECTED"}),
    "gateway": (("ISSUER_AUTH",), {"AUTHORIZED", "DECLINED", "ISSUER_CAP", "CAPTURED"}),
    "issuer": (("HELD",), {"POSTED"}),
}


def passed(kind: str, old: str | None, new: str | None) -> list[str]:
    """The lead-in states a party went through between two reads (``LEAD_IN``)."""
    lead, reached = LEAD_IN.get(kind, ((), set()))
    if new not in reached and new not in lead:
        return []
    if old is not None and old not in lead and old not in ("ORDERED", "PARKED"):
        return []
    start = lead.index(old) + 1 if old in lead else 0
    return list(lead[start:lead.index(new) if new in lead else len(lead)])


def steps(kind: str, old: dict, new: dict) -> list[str]:
    """What happened between two reads of one party's state of a transaction."""
    out = []
    if new.get("state") != old.get("state") and new.get("state"):
        out.extend(SENTENCES.get((kind, s), s)
                   for s in passed(kind, old.get("state"), new["state"]))
        out.append(sentence(kind, new))
    refused = new.get("refused")
    if isinstance(refused, dict) and refused != old.get("refused"):
        out.append(f"refused a {refused.get('type', 'message')}: "
                   f"{explain(refused.get('code'))}")
    for entry in new_refusals(old, new):
        by, what, code = entry.get("by"), entry.get("message"), explain(entry.get("code"))
        out.append(f"refused a {what}: {code}" if by == "merchant" else
                   f"the gateway's {what} says {code}" if by == "gateway" else
                   f"an unauthenticated Error about the {what} ({code}): ignored")
    result = new.get("result") or {}
    if result and result != (old.get("result") or {}):
        out.append(f"{result.get('request')} answered: {result.get('code')}")
    return out


def new_refusals(old: dict, new: dict) -> list[dict]:
    """The merchant's refusal notes added since ``old`` (the list keeps the latest 20)."""
    before, after = old.get("refusals") or [], new.get("refusals") or []
    seen = {(e.get("at"), e.get("message"), e.get("reason")) for e in before}
    return [e for e in after if (e.get("at"), e.get("message"), e.get("reason")) not in seen]
