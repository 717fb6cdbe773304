"""Amounts as SET carries them: ISO 4217 numeric currency, integer minor units, power of ten.

A leaf module (like ``errors``): the CLI parses what a user types, roles and reports format what a
message carries.  Decimal strings only, never floats: 0.1 + 0.2 must not reach a ledger.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from setmail.errors import SetmailError

#: alphabetic code -> (ISO 4217 numeric, minor-unit exponent as SET's amtExp10)
CURRENCIES: dict[str, tuple[int, int]] = {
    "USD": (840, -2), "EUR": (978, -2), "GBP": (826, -2), "CHF": (756, -2), "CAD": (124, -2),
    "AUD": (36, -2), "SEK": (752, -2), "JPY": (392, 0), "KWD": (414, -3),
}
_BY_NUMBER = {n: code for code, (n, _) in CURRENCIES.items()}
#: largest amount accepted from a user, in currency units (a guard against typos, not a limit)
MAX_UNITS = Decimal("1000000000")


class BadAmount(SetmailError):
    """An amount or currency a user typed that cannot be charged."""

    exit_code = 2


def currency_number(code: str) -> tuple[int, int]:
    """(ISO numeric, amtExp10) of an alphabetic code such as "USD"."""
    try:
        return CURRENCIES[code.strip().upper()]
    except KeyError:
        raise BadAmount(f"unknown currency {code!r} (known: {', '.join(CURRENCIES)})") from None


def currency_code(number: int) -> str:
    return _BY_NUMBER.get(number, str(number))


def parse_amount(text: str, currency: str) -> tuple[int, int, int]:
    """"12.34", "USD" -> (1234, 840, -2); refuses negative, zero, too many decimals, junk."""
    number, exp10 = currency_number(currency)
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise BadAmount(f"{text!r} is not an amount (e.g. 12.34)") from None
    if not value.is_finite() or value <= 0:
        raise BadAmount(f"amount must be positive, not {text!r}")
    if value > MAX_UNITS:
        raise BadAmount(f"amount {text} is implausibly large")
    minor = value.scaleb(-exp10)
    if minor != minor.to_integral_value():
        raise BadAmount(f"{currency.upper()} has {-exp10} decimal places; {text!r} has more")
    return int(minor), number, exp10


def format_amount(minor: int, currency: int, exp10: int = -2) -> str:
    """1234, 840, -2 -> "12.34 USD"."""
    value = Decimal(minor).scaleb(exp10)
    places = max(-exp10, 0)
    return f"{value:.{places}f} {currency_code(currency)}"
