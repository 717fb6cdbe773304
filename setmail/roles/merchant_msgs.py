"""The merchant's plaintexts (docs/purchase.md), built from its transaction state, and the
bookkeeping of that state.

Pure functions, plain values in, DER (or a new state) out, so ``roles/merchant.py`` keeps only the
protocol logic: PInitResData, AuthReqData, CapReqData and the PResData that PRes and InqRes share;
``opened``/``enter``/``record`` keep what ``setmail tx show`` prints (dates, completion,
refusals, expiry).  The status a PResData reports is a function of the merchant's state alone
(``COMPLETION``), which is why an InqRes can be answered in any state without asking anybody.

PInitReqs are *offers*: each different PInitReq the merchant answers keeps its own challenge
(``offer``/``find_offer``), so a forged PInitReq neither displaces a genuine one nor blocks it;
the dual-signed PReq says which offer the cardholder took.
"""
from __future__ import annotations

import datetime as dt

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.codec.fastder import Raw, encode
from setmail.asn1.issuer import RESPONSE_CODES
from setmail.crypto import der
from setmail.errors import ProtocolError
from setmail.roles.purchase_msgs import Order, install_recur_data, order_terms, ratio
from setmail.roles.wire import h, unh

#: merchant state -> the CompletionCode a PRes/InqRes reports in it; a state that waits for the
#: gateway after the authorisation (``ADJUSTING``) reports that of the state it left (``base``)
COMPLETION = {
    "PINIT_SENT": "orderNotReceived",
    "AUTH_SENT": "orderReceived",
    "AUTHORIZED": "authorizationPerformed",
    "CAPTURED": "capturePerformed",
    "DECLINED": "authorizationDeclined",
    "REJECTED": "orderRejected",
    "EXPIRED": "orderRejected",   # never authorised in time, or the authorisation lapsed
    "VOIDED": "orderRejected",    # the merchant cancelled the authorisation: nothing will ship
    "CANCELLED": "orderRejected",  # the merchant ended it before any PReq: nothing will ship
    "PARTLY_REFUNDED": "creditPerformed",
    "REFUNDED": "creditPerformed",
}
#: after the authorisation: what a purchase can be asked to do next in (capture, authorize more,
#: void, refund), and where an answer to such a request leaves it
POSTAUTH = ("AUTHORIZED", "CAPTURED", "PARTLY_REFUNDED", "REFUNDED")
STANDING = (*POSTAUTH, "EXPIRED")
#: waiting for the gateway's answer to a request made after the authorisation
ADJUSTING = ("CAP_SENT", "REAUTH_SENT", "AUTHREV_SENT", "CRED_SENT", "CREDREV_SENT",
             "CAPREV_SENT")
#: at most this many refusals are kept per purchase (a peer must not grow our state forever)
MAX_REFUSALS = 20
#: at most this many different PInitReqs are answered (or parked) per purchase
MAX_OFFERS = 4
#: a PRes/InqRes reports at most this many credits (the latest)
MAX_CRED_STATUS = 10
#: at most this many captures (or credits) per purchase: a bounded state
MAX_ENTRIES = 50


def utc(now: dt.datetime) -> dt.datetime:
    """SET dates: UTC, second precision."""
    return now.astimezone(dt.timezone.utc).replace(microsecond=0)


def iso(now: dt.datetime) -> str:
    return utc(now).isoformat()


def opened(state: dict, key: str, now: dt.datetime) -> dict:
    """The fields a purchase gets when it starts, by order or by PInitReq."""
    return {"xid": key, "created": iso(now), "refusals": [], **state}


def enter(state: dict, name: str, now: dt.datetime) -> dict:
    """``state`` moved to ``name``: its completion code and the date it was entered.  Entering an
    ``ADJUSTING`` state remembers the state it left (``base``), where a refusal returns."""
    if name in ADJUSTING:
        base = state.get("base") if state.get("state") in ADJUSTING else state.get("state")
        state = {**state, "base": base if base in STANDING else "AUTHORIZED"}
    else:
        state = {k: v for k, v in state.items() if k != "base"}
    state = {**state, "state": name,
             "completion": COMPLETION.get(name, COMPLETION.get(state.get("base", "")))}
    state["dates"] = {**state.get("dates", {}), name.lower(): iso(now)}
    return state


def record(state: dict, now: dt.datetime, by: str, message: str, code: str | None,
           reason: str) -> dict:
    """``state`` with one more refusal (ours or a peer's) noted, the oldest dropped past 20."""
    entry = {"at": iso(now), "by": by, "message": message, "code": code, "reason": reason[:200]}
    return {**state, "refusals": [*state.get("refusals", []), entry][-MAX_REFUSALS:]}


def amount(state: dict, minor: int | None = None) -> dict:
    """CurrencyAmount in the order's currency (``minor`` defaults to the order amount)."""
    return {"currency": state["currency"], "amount": state["amount"] if minor is None else minor,
            "amt_exp10": state["amt_exp10"]}


def expired(state: dict, now: dt.datetime, reason: str) -> dict:
    """``state`` moved to EXPIRED, saying when and why (``setmail tx show`` prints it)."""
    return enter({**state, "expired": {"at": iso(now), "reason": reason}}, "EXPIRED", now)


def check_order(args) -> dict:
    """The order fields of an ``order`` command, checked (ProtocolError: the command fails).
    ``cardholder``: the address the shop front-end took the order from, where every answer of
    this purchase goes (never a mail's From); ``ship_now`` (optional): the part of the amount to
    authorise first (a split shipment, the rest with ``authorize``); ``instalments`` /
    ``recurring``: the terms the cardholder agreed (``purchase_msgs.order_terms``)."""
    description = args.get("description")
    cardholder = args.get("cardholder")
    if not isinstance(cardholder, str) or "@" not in cardholder.strip():
        raise ProtocolError("order needs the cardholder's address (from the shop front-end)")
    values = {k: args.get(k) for k in ("amount", "currency")}
    values["amt_exp10"] = args.get("amt_exp10", -2)
    if not isinstance(description, str) or not description.strip():
        raise ProtocolError("order needs a description")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in values.values()):
        raise ProtocolError("order amount, currency and amt_exp10 must be integers")
    if values["amount"] <= 0 or not 1 <= values["currency"] <= 999:
        raise ProtocolError("order amount must be positive and currency an ISO 4217 number")
    out = {"description": description, "cardholder": cardholder.strip(), **values}
    ship_now = args.get("ship_now")
    if ship_now is not None:
        if isinstance(ship_now, bool) or not isinstance(ship_now, int) \
                or not 0 < ship_now <= values["amount"]:
            raise ProtocolError("ship_now must be a positive amount no larger than the order's")
        out["ship_now"] = ship_now
    try:
        terms = order_terms(args)
    except ValueError as exc:
        raise ProtocolError(f"order terms: {exc}") from None
    if terms is not None:
        out["terms"] = list(terms)
    return out


def next_amount(state: dict) -> int:
    """What the next authorisation asks for by default: the first one ``ship_now`` or the order
    amount; with instalment terms an equal part (the last takes what is left); with recurring
    terms the order amount again (each payment's); else (a split) what is not yet authorised."""
    count, terms = state.get("auth_count", 0), state.get("terms")
    if count == 0 and state.get("ship_now"):
        return state["ship_now"]
    left = state["amount"] - state.get("auth_amt", 0)
    if terms and terms[0] == "instalments":
        return left if count >= terms[1] - 1 else state["amount"] // terms[1]
    if terms or count == 0:
        return state["amount"]
    return left


def order_of(state: dict) -> Order:
    """The order as agreed (description, amount, terms): what HOD is recomputed from."""
    terms = state.get("terms")
    return Order(state["description"], state["amount"], state["currency"], state["amt_exp10"],
                 tuple(terms) if terms else None)


def xid_octets(key: str) -> bytes:
    """The XID a transaction key names: 1..20 octets (it doubles as LID-M, a LocalID, D-131)."""
    try:
        xid = bytes.fromhex(key)
    except ValueError:
        xid = b""
    if not 1 <= len(xid) <= 20:
        raise ProtocolError(f"xid must be 1..20 octets in hex, not {key[:48]!r}", "unknownXID")
    return xid


def _bci(bci_der: bytes | None) -> dict:
    return {} if bci_der is None else {"brand_crl_identifier": Raw(bci_der)}


def rr_tags(rrpid: bytes, mer_id: str, now: dt.datetime) -> dict:
    return {"rrpid": rrpid, "mer_term_ids": {"merchant_id": mer_id}, "date": utc(now)}


def offer(req: dict, digest: bytes, mail_id: str) -> dict:
    """What the merchant keeps of a PInitReq (``decode_native``'d): enough to answer it, and to
    recognise the PReq that takes it (``trans_ids``/``chall_m`` are added when it is answered)."""
    return {"rrpid": h(req["rrpid"]), "lid_c": h(req["local_id_c"]), "chall_c": h(req["chall_c"]),
            "language": req["language"], "brand_id": req["brand_id"], "digest": digest.hex(),
            "mail_id": mail_id}


def same_offer(a: dict, b: dict) -> bool:
    """The same PInitReq content (RRPID, LID-C, Chall-C), whatever its clear header says."""
    return all(a[k] == b[k] for k in ("rrpid", "lid_c", "chall_c"))


def find_offer(offers: list, trans_ids: bytes, chall_m: bytes | None) -> dict:
    """The answered offer whose TransIDs a PReq (or InqReq) names, preferring the one whose
    Chall-M it echoes; ProtocolError unknownXID if it names none."""
    named = [o for o in offers if o.get("trans_ids") == trans_ids.hex()]
    if not named:
        raise ProtocolError("TransIDs differ from those signed in PInitRes", "unknownXID")
    return next((o for o in named if chall_m is not None and o["chall_m"] == chall_m.hex()),
                named[0])


def pinit_res_data(state: dict, *, chall_m: bytes, pe_thumb: bytes,
                   bci_der: bytes | None) -> bytes:
    """``state``: the answered offer (or a state whose ``pinit_req`` is that offer)."""
    pinit = state.get("pinit_req", state)
    return encode(pu.PInitResData, {
        "trans_ids": Raw(unh(state["trans_ids"])), "rrpid": unh(pinit["rrpid"]),
        "chall_c": unh(pinit["chall_c"]), "chall_m": chall_m, "pe_thumb": pe_thumb,
        **_bci(bci_der)})


def pi(pi_dual_signed: bytes) -> bytes:
    """PI ::= [1] IMPLICIT PIDualSigned, around the cardholder's bytes, unchanged."""
    return der.implicit_constructed(1, der.content_of(pi_dual_signed))


def auth_req_data(state: dict, *, rrpid: bytes, mer_id: str, now: dt.datetime,
                  minor: int | None = None, h_oi_data: bytes | None = None,
                  hod2: bytes | None = None, sale: bool = False) -> bytes:
    """AuthReqData asking for ``minor`` (default: the order amount): the first AuthReq carries
    CheckDigests (the PReq's);
    a later one (its PI the AuthToken) none, with SubsequentAuthInd; ``sale``: CaptureNow with
    a SaleDetail naming the order by its XID; the order's terms go in InstallRecurData."""
    payload: dict = {"subsequent_auth_ind": h_oi_data is None, "auth_req_amt": amount(state, minor),
                     "request_card_type_ind": False, "merch_data": {}}
    terms = install_recur_data(tuple(state["terms"]) if state.get("terms") else None)
    if terms is not None:
        payload["install_recur_data"] = terms
    item: dict = {"auth_tags": {"auth_rr_tags": rr_tags(rrpid, mer_id, now),
                                "trans_ids": Raw(unh(state["trans_ids"]))},
                  "auth_req_payload": payload}
    if h_oi_data is not None:
        item["check_digests"] = {"h_oi_data": Raw(h_oi_data), "hod2": Raw(hod2)}
    value: dict = {"auth_req_item": item}
    if sale:
        value.update(capture_now=True, sale_detail={"merchant_order_num": state["xid"][:32]})
    return encode(gw.AuthReqData, value)


def pi_auth_token(auth_token: bytes) -> bytes:
    """PI ::= [2] IMPLICIT AuthToken: a later authorisation's payment instruction."""
    return der.implicit_constructed(2, der.content_of(auth_token))


def cap_req_data(state: dict, *, rrpid: bytes, mer_id: str, now: dt.datetime, minor: int) -> bytes:
    return encode(cap.CapReqData, {
        "cap_rr_tags": rr_tags(rrpid, mer_id, now),
        "cap_item_seq": [{"trans_ids": Raw(unh(state["trans_ids"])),
                          "auth_rrpid": unh(state["auth_rrpid"]),
                          "cap_payload": {"cap_date": utc(now),
                                          "cap_req_amt": amount(state, minor)}}]})


def cap_token_seq(cap_token: bytes) -> bytes:
    return encode(gw.CapTokenSeq, [Raw(cap_token)])


def p_res_data(state: dict, *, rrpid: bytes, chall_c: bytes, bci_der: bytes | None,
               trans_ids: bytes | None = None) -> bytes:
    """PResData for PRes and InqRes: the purchase's status as the merchant's state records it;
    ``trans_ids`` (DER): the ones the request named (default: those of the PReq taken)."""
    results: dict = {}
    if state.get("acq_card_msg"):
        results["acq_card_msg"] = Raw(unh(state["acq_card_msg"]))
    if state.get("auth_code"):
        results["auth_status"] = {"auth_date": dt.datetime.fromisoformat(state["auth_date"]),
                                  "auth_code": state["auth_code"],
                                  "auth_ratio": ratio(state["auth_amt"], state["amount"])}
    captured = captured_total(state)
    if captured > 0:
        results["cap_status"] = {"cap_date": dt.datetime.fromisoformat(state["cap_date"]),
                                 "cap_code": "success", "cap_ratio": ratio(captured,
                                                                          state["amount"])}
    credits = [c for c in state.get("credits", []) if not c.get("reversed")]
    if credits:
        results["cred_status_seq"] = [{"credit_date": dt.datetime.fromisoformat(c["date"]),
                                       "credit_code": "success",
                                       "credit_ratio": ratio(c["amount"], state["amount"])}
                                      for c in credits[-MAX_CRED_STATUS:]]
    payload: dict = {"completion_code": state.get("completion") or COMPLETION[state["state"]]}
    if results:
        payload["results"] = results
    trans_ids = unh(state["trans_ids"]) if trans_ids is None else trans_ids
    return encode(pu.PResData, {"trans_ids": Raw(trans_ids), "rrpid": rrpid,
                                "chall_c": chall_c, "p_res_payload_seq": [payload],
                                **_bci(bci_der)})


def captured_total(state: dict) -> int:
    """What is captured now (captures minus reversed ones; a state from before several captures
    were possible: its one capture)."""
    if "captured" in state:
        return state["captured"]
    return state.get("cap_amt", 0) if state["state"] == "CAPTURED" else 0


def auth_result(data: dict) -> dict:
    """What the merchant records of an AuthRes (its AuthResData as ``decode_native`` gives it):
    AuthCode, amount, ISO code and its meaning."""
    header = data["auth_res_payload"]["auth_header"]
    response = header["response_data"]
    codes = response["auth_val_codes"]
    log_ref = response["log_ref_id"]
    iso_code = log_ref.decode("ascii", "replace") if log_ref is not None else None
    return {"auth_code": header["auth_code"], "auth_amt": header["auth_amt"]["amount"],
            "approval_code": None if codes is None else codes["approval_code"],
            "iso_code": iso_code, "iso_text": RESPONSE_CODES.get(iso_code or "")}
