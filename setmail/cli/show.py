"""How the command line names and shows things, in one place.

* XIDs: any unique prefix in (``txview.resolve_xid``), one short form out (``short_xid``: the
  first 12 hex digits, no ellipsis, so what a listing shows can be typed back); ``--json`` always
  has the whole XID.
* Amounts: ``12.34 EUR`` in text, ``{"amount": "12.34", "currency": "EUR", "minor": 1234}`` in
  JSON (``money_json``; ``with_amounts`` turns every amount of a stored state or report into
  that form, ``currency`` into its alphabetic code).
* Refusals in a person's words: SET's codes with a sentence (``CODES``), an agent's reason
  without the exception class or role name it was recorded with (``human``).
"""
from __future__ import annotations

import re

from setmail.money import currency_code, format_amount
from setmail.txview import short_xid  # noqa: F401  (re-export: one short form everywhere)

#: the keys whose integer values are amounts in minor units, in every state and report we show
AMOUNT_KEYS = frozenset({
    "amount", "auth_amt", "cap_amt", "cap_req_amt", "rev_amt", "late_amt", "captured",
    "credited", "ship_now", "reauth_amt", "authorized", "held", "limit", "posted", "available",
    "balance", "posted_pending", "posted_settled", "credited_pending", "credited_settled",
    "debit_total", "credit_total", "net"})


def money(minor, currency, exp10: int = -2) -> str:
    """1234, 978 (or "EUR") -> "12.34 EUR"; "-" when it is not an amount."""
    number = _number(currency)
    if not isinstance(minor, int) or isinstance(minor, bool) or number is None:
        return "-"
    return format_amount(minor, number, exp10)


def money_json(minor, currency, exp10: int = -2) -> dict | None:
    """1234, 978 -> {"amount": "12.34", "currency": "EUR", "minor": 1234} (None: no amount)."""
    text = money(minor, currency, exp10)
    if text == "-":
        return None
    value, code = text.split()
    return {"amount": value, "currency": code, "minor": minor}


def _number(currency) -> int | None:
    from setmail.money import CURRENCIES
    if isinstance(currency, int) and not isinstance(currency, bool):
        return currency
    if isinstance(currency, str) and currency.upper() in CURRENCIES:
        return CURRENCIES[currency.upper()][0]
    return None


def with_amounts(value, currency=None, exp10: int = -2):
    """A copy of a state or report with every amount (``AMOUNT_KEYS``) as ``money_json``, in
    the currency the nearest enclosing ``currency``/``currency_number`` names; ``currency`` is
    shown by its alphabetic code and ``amt_exp10``/``currency_number`` go (the amounts say it)."""
    if isinstance(value, list):
        return [with_amounts(v, currency, exp10) for v in value]
    if not isinstance(value, dict):
        return value
    number = _number(value.get("currency_number", value.get("currency")))
    currency = number if number is not None else currency
    exp10 = value.get("amt_exp10", exp10) if isinstance(value.get("amt_exp10"), int) else exp10
    out = {}
    for key, item in value.items():
        if key in ("amt_exp10", "currency_number") and currency is not None:
            continue
        if key == "currency" and _number(item) is not None:
            out[key] = currency_code(_number(item))
        elif key in AMOUNT_KEYS and isinstance(item, int) and not isinstance(item, bool) \
                and currency is not None:
            out[key] = money_json(item, currency, exp10)
        elif key == "amount" and isinstance(item, dict) and "amount" in item:  # CurrencyAmount
            out[key] = money_json(item.get("amount"), item.get("currency", currency),
                                  item.get("amt_exp10", exp10)) or item
        else:
            out[key] = with_amounts(item, currency, exp10)
    return out


def a_kind(kind: str) -> str:
    """"an issuer", "a merchant": an agent kind with its article."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


#: SET codes (ErrorCode, CertStatusCode, the result codes of the lifecycle) in a sentence
CODES = {
    "revokedCertificate": "the certificate that signed it has been revoked",
    "expiredCertificate": "the certificate that signed it has expired",
    "invalidCertificate": "the certificate that signed it is not valid for this",
    "missingCertificate": "a certificate it needs was not sent",
    "signatureFailure": "its signature does not verify",
    "signatureRequired": "it must be signed",
    "unknownXID": "the other party knows no such purchase (or no longer: cancelled, expired)",
    "challengeMismatch": "it answers no request outstanding",
    "badMessageHeader": "its header disagrees with its signed content",
    "messageNotSupported": "the other party does not take this message now",
    "decodingFailure": "it is not well-formed SET",
    "unspecifiedFailure": "the other party refused it without saying why",
    "amountTooLarge": "the amount is more than what may be taken (authorised, captured or "
                      "still refundable)",
    "alreadyCaptured": "the purchase is captured already (refund instead)",
    "originalProcessed": "the original is settled already (refund instead)",
    "authExpired": "the authorisation has expired",
    "recurringTooSoon": "the next recurring payment is not due yet",
    "batchIDUnavailable": "that batch is closed or unknown",
    "batchAlreadyOpen": "a batch is open already",
    "piPreviouslyUsed": "these payment instructions were used before",
    "rejectByCA": "the certificate authority refused it",
    "rejectByIssuer": "the card's issuer refused it",
    "orderRejected": "the merchant rejected the order",
}


def explain(code: str | None) -> str:
    """``code`` with its sentence: "revokedCertificate (the certificate that signed it ...)"."""
    if not code:
        return ""
    sentence = CODES.get(str(code))
    return f"{code} ({sentence})" if sentence else str(code)


_CLASS = re.compile(r"^(?:[A-Z][A-Za-z]*(?:Error|Failed|Mismatch|Invalid|Refused)|Refused|"
                    r"Decline)[a-zA-Z]*: ")
_ROLE = re.compile(r"^(?:merchant|wallet|gateway|issuer|ca|cardholder|registration|"
                   r"ee_registration|cardholder_registration|dispatch): ")


def human(detail: str | None) -> str:
    """An agent's recorded reason for refusing a command, in the user's words: without the
    exception class ("ProtocolError: ") and role name ("merchant: ") it was recorded with, and
    "X is not expected in state S" said as "X is not possible while the purchase is S"."""
    text = (detail or "refused").strip()
    for _ in range(3):
        text = _CLASS.sub("", _ROLE.sub("", text))
    match = re.match(r"^(\S+) is not expected in state (\S+)$", text)
    if match:
        return f"{match[1].replace('_', ' ')} is not possible while it is {match[2]}"
    return text
