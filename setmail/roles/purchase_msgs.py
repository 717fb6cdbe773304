"""Builders for the purchase request's inner structures (set-protocol.md §3.3, §5.2).

Pure functions from plain values to DER, shared by the cardholder's wallet (which builds PReq),
the merchant (which recomputes HOD from its own order record) and the demo.  The dual signature
itself is ``setmail.crypto.dual``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from asn1crypto import algos

from setmail.asn1 import purchase as pu
from setmail.asn1.base import TransIDs
from setmail.asn1.codec.fastder import Raw, encode
from setmail.crypto.operators import DD, HMAC
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.roles.forms import luhn_ok


@dataclass(frozen=True)
class Order:
    """What cardholder and merchant agreed in the shopping phase, outside SET.  ``terms``: the
    instalment or recurring terms both agreed (``order_terms``), hashed into HOD with the order
    so the gateway's InstallRecurData is the one the cardholder signed for (D-105)."""

    description: str
    amount: int          # minor units, e.g. 1234 for 12.34
    currency: int = 840  # ISO 4217 numeric (840 = USD)
    amt_exp10: int = -2
    terms: tuple | None = None  # ("instalments", N) or ("recurring", days, "YYYYMMDD")

    @property
    def purch_amt(self) -> dict:
        return {"currency": self.currency, "amount": self.amount, "amt_exp10": self.amt_exp10}

    def display(self) -> str:
        return f"{self.amount / 10 ** -self.amt_exp10:.{-self.amt_exp10}f} ({self.currency})"


#: at most this many instalments, at most this many days between recurring payments
MAX_INSTALMENTS, MAX_FREQUENCY = 999, 3660


def order_terms(args) -> tuple | None:
    """The instalment/recurring terms of a ``buy`` or ``order`` command's arguments, checked
    (ValueError with the reason): ``instalments`` N (2..999) or ``recurring`` {days (1..3660),
    until (YYYYMMDD)}, not both; None without terms.  Wallet and merchant read them alike, so
    both hash the same HODInput."""
    instalments, recurring = args.get("instalments"), args.get("recurring")
    if instalments is not None and recurring is not None:
        raise ValueError("an order is either in instalments or recurring, not both")
    if instalments is not None:
        if isinstance(instalments, bool) or not isinstance(instalments, int) \
                or not 2 <= instalments <= MAX_INSTALMENTS:
            raise ValueError(f"instalments must be a whole number from 2 to {MAX_INSTALMENTS}")
        return ("instalments", instalments)
    if recurring is None:
        return None
    days, until = (recurring.get(k) for k in ("days", "until")) if isinstance(
        recurring, dict) else (None, None)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_FREQUENCY:
        raise ValueError(f"recurring payments need days between them (1..{MAX_FREQUENCY})")
    recurring_expiry(until)
    return ("recurring", days, until)


def recurring_expiry(until) -> dt.datetime:
    """The Date a recurring agreement ends: the end (23:59:59 UTC) of the day YYYYMMDD."""
    try:
        day = dt.datetime.strptime(str(until), "%Y%m%d")
    except ValueError:
        raise ValueError(f"recurring payments need an end date YYYYMMDD, not {until!r}") from None
    return day.replace(hour=23, minute=59, second=59, tzinfo=dt.timezone.utc)


def install_recur_data(terms: tuple | None) -> dict | None:
    """InstallRecurData (as ``encode`` takes it) for ``Order.terms``; None without terms."""
    if terms is None:
        return None
    if terms[0] == "instalments":
        return {"install_recur_ind": ("install_total_trans", terms[1])}
    return {"install_recur_ind": ("recurring", {"recurring_frequency": terms[1],
                                                "recurring_expiry": recurring_expiry(terms[2])})}


def order_problem(args, pan: str, expiry: str) -> str | None:
    """Why a ``buy`` command cannot start a purchase (None: it can), checked before anything is
    sent: card number, expiry, merchant, brand, description, amount and terms."""
    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    checks = (
        (luhn_ok(pan), "PAN is not a valid card number"),
        (len(expiry) == 6 and expiry.isdigit() and 1 <= int(expiry[4:]) <= 12,
         "expiry must be YYYYMM"),
        (bool(args.get("merchant")) and bool(args.get("brand")),
         "merchant and brand are required"),
        (isinstance(args.get("description"), str) and args["description"].strip() != "",
         "description is required"),
        (integer(args.get("amount")) and args["amount"] > 0,
         "amount must be a positive integer (minor units)"),
        (integer(args.get("currency")) and 0 < args["currency"] < 1000,
         "currency must be an ISO 4217 numeric code"),
        (integer(args.get("amt_exp10", -2)), "amt_exp10 must be an integer"))
    why = next((why for ok, why in checks if not ok), None)
    if why is None:
        try:
            order_terms(args)
        except ValueError as exc:
            why = str(exc)
    return why


def trans_ids(*, lid_c: bytes, xid: bytes, p_req_date: dt.datetime, lid_m: bytes | None = None,
              language: str = "en") -> bytes:
    value = {"lid_c": lid_c, "xid": xid, "p_req_date": p_req_date.replace(microsecond=0),
             "language": language}
    if lid_m is not None:
        value["lid_m"] = lid_m
    return encode(TransIDs, value)


def hod_input(order: Order, od_salt: bytes) -> bytes:
    """HODInput DER: the order description and amount (and its instalment or recurring terms),
    salted against dictionary attacks."""
    value = {"od": order.description.encode(), "purch_amt": order.purch_amt, "od_salt": od_salt}
    terms = install_recur_data(order.terms)
    if terms is not None:
        value["install_recur_data"] = terms
    return encode(pu.HODInput, value)


def hod(order: Order, od_salt: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """HOD = DD(HODInput): what the merchant recomputes and the gateway compares."""
    return DD("HODInput", hod_input(order, od_salt), suite)


def oi_data(*, trans_ids_der: bytes, rrpid: bytes, chall_c: bytes, hod_dd: bytes, od_salt: bytes,
            brand_id: str, bin_: str, chall_m: bytes | None = None) -> bytes:
    value = {"trans_ids": Raw(trans_ids_der), "rrpid": rrpid, "chall_c": chall_c,
             "hod": Raw(hod_dd), "od_salt": od_salt, "brand_id": brand_id, "bin": bin_}
    if chall_m is not None:
        value["chall_m"] = chall_m
    return encode(pu.OIData, value)


def trans_stain(xid: bytes, card_secret: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """TransStain = HMAC(CardSecret, XID): ties the PI to this cardholder's secret and XID."""
    return HMAC(card_secret, xid, suite)


def pi_head(*, trans_ids_der: bytes, hod_dd: bytes, order: Order, merchant_id: str,
            trans_stain_: bytes, sw_ident: str, pe_thumb: bytes,
            acq_back_key: bytes | None = None) -> bytes:
    """PIHead DER; ``pe_thumb`` names the gateway the cardholder chose (hardening, D-102);
    ``acq_back_key`` (AES-256 key wrap) lets that gateway answer us through the merchant
    (AcqCardMsg); the order's instalment/recurring terms, signed for the gateway, which holds
    the merchant's InstallRecurData to them."""
    value = {"trans_ids": Raw(trans_ids_der),
             "inputs": {"hod": Raw(hod_dd), "purch_amt": order.purch_amt},
             "merchant_id": merchant_id, "trans_stain": trans_stain_, "sw_ident": sw_ident,
             "pe_thumb": pe_thumb}
    terms = install_recur_data(order.terms)
    if terms is not None:
        value["install_recur_data"] = terms
    if acq_back_key is not None:
        value["acq_back_key_data"] = {"back_alg_id": _AES256_WRAP, "back_key": acq_back_key}
    return encode(pu.PIHead, value)


#: AlgorithmIdentifier of AES-256 key wrap (an OID-dependent type fastder leaves to asn1crypto)
_AES256_WRAP = Raw(algos.EncryptionAlgorithm({"algorithm": "aes256_wrap"}).dump())


def pan_data(*, pan: str, expiry: str, pan_secret: bytes, ex_nonce: bytes) -> bytes:
    return encode(pu.PANData, {"pan": pan, "card_expiry": expiry, "pan_secret": pan_secret,
                               "ex_nonce": ex_nonce})


def pinit_req(*, rrpid: bytes, language: str, lid_c: bytes, xid: bytes, chall_c: bytes,
              brand_id: str, bin_: str) -> bytes:
    """PInitReq (clear): the purchase's XID doubles as LID-M (D-131)."""
    return encode(pu.PInitReq, {"rrpid": rrpid, "language": language, "local_id_c": lid_c,
                                "local_id_m": xid, "chall_c": chall_c, "brand_id": brand_id,
                                "bin": bin_})


def p_req(p_req_dual_signed: bytes) -> bytes:
    """PReq ::= [0] IMPLICIT PReqDualSigned, around the dual signature's bytes."""
    return encode(pu.PReq, ("p_req_dual_signed", Raw(p_req_dual_signed)))


def inq_req_data(*, trans_ids_der: bytes, rrpid: bytes, chall_c2: bytes) -> bytes:
    return encode(pu.InqReqData, {"trans_ids": Raw(trans_ids_der), "rrpid": rrpid,
                                  "chall_c2": chall_c2})


def inq_req(signed: bytes) -> bytes:
    """InqReq ::= [0] IMPLICIT S(C, InqReqData) (the signed form, D-106)."""
    return encode(pu.InqReq, ("inq_req_signed", Raw(signed)))


def ratio(part: int, whole: int) -> dict:
    """Ratio (D-104) of ``part`` to ``whole``, e.g. AuthRatio = auth_amt / purch_amt."""
    return {"numerator": part, "denominator": whole}


def ratio_of(value, whole: int) -> int | None:
    """The amount a Ratio (native dict) of ``whole`` stands for; None if it is meaningless."""
    if not value or not value.get("denominator"):
        return None
    return whole * value["numerator"] // value["denominator"]


def iso_response(text: str | None) -> tuple[str | None, str | None]:
    """("05", "do not honour") from an AcqCardMsg text "<ISO code> <meaning>" (purchase.md);
    (None, text) when the text does not start with a two-character code."""
    if not text:
        return None, None
    code, _, meaning = text.strip().partition(" ")
    if len(code) == 2 and code.isalnum():
        return code, meaning.strip() or None
    return None, text.strip()


def status_fields(payload: dict, purch_amount: int) -> dict:
    """What the cardholder records of one PResPayload (PRes or InqRes; as ``decode_native``
    gives it), JSON-ready: completion code, authorisation and capture codes, dates and the
    amounts their ratios stand for."""
    out: dict = {"completion": payload["completion_code"]}
    results = payload["results"]
    if results is None:
        return out
    auth, cap = results["auth_status"], results["cap_status"]
    if auth is not None:
        out.update(auth_code=auth["auth_code"], auth_date=_iso(auth["auth_date"]),
                   auth_amt=ratio_of(auth["auth_ratio"], purch_amount))
    if cap is not None:
        out.update(cap_code=cap["cap_code"], cap_date=_iso(cap["cap_date"]),
                   cap_amt=ratio_of(cap["cap_ratio"], purch_amount),
                   captured=cap["cap_code"] == "success")
    return out


def _iso(when: dt.datetime) -> str:
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).isoformat()


def mask_pan(pan: str) -> str:
    """What may be shown or logged of a card number: the last four digits."""
    return "•" * max(len(pan) - 4, 0) + pan[-4:]
