"""The cardholder wallet's side of a purchase (set-protocol.md §5.1-5.3, docs/purchase.md).

    buy      -> PInitReq (clear)               <- PInitRes = S(M, PInitResData) + M and P certificates
    PInitRes -> PReq = [0] dual signature      <- PRes = S(M, PResData) [AcqCardMsg = EncK(back key, P)]
    inquire  -> InqReq = [0] S(C, InqReqData)  <- InqRes = S(M, PResData)

Why each check: PInitRes and every later answer must echo our RRPID and Chall-C (freshness without
sessions), name this purchase (TransIDs: our LID-C, the XID as LID-M and XID) and be signed by a
certificate that validates as ``mer`` to a pinned root; PRes/InqRes must come from the very
certificate that signed PInitRes, and repeat the TransIDs it signed byte for byte.  The gateway
we encrypt the PAN to is the one PInitRes names by PEThumb, validated as ``pgwy`` for key
encipherment: PIHead repeats that thumbprint under the dual signature (D-102), so a merchant
cannot divert the PAN afterwards.  Bad answers get an unsigned Error and change nothing.

``WalletConfig``: the requester fields (``name`` = our address, ``trust``, ``suite``,
``retry_after``/``max_retries`` for PInitReq, PReq and InqReq, ``language``, ``crls``) plus
``credentials(pan_last4, brand) -> WalletCard | None`` (the card's signature identity and
PANSecret, asked at each use), ``agent`` (our name in messages to the user) and ``sw_ident``.

Command ``buy`` args: ``xid`` (40 hex digits: the transaction key), ``merchant`` (address),
``pan``, ``expiry`` (YYYYMM), ``description``, ``amount`` (minor units), ``currency`` (ISO 4217
numeric), ``amt_exp10`` (default -2), ``brand``, optional ``language``.  Command ``inquire``
args: ``xid``; allowed once PInitRes arrived (a command in another state fails, unchanged).

State (what ``setmail tx show`` prints; keys starting with "_" are protocol bookkeeping it
hides): ``state``, ``xid``, ``merchant``, ``mer_id``, ``brand``, ``description``, ``amount``,
``currency``, ``amt_exp10``, ``pan_last4``, ``lid_c``, ``completion`` (CompletionCode),
``auth_code``, ``auth_amt``, ``cap_code``, ``cap_amt``, ``captured``, ``acq_card_code``,
``iso_code``/``iso_text`` (from AcqCardMsg), ``failure``/``error_code``, ``refused``,
``inquiries`` (InqReqs sent), ``inquiry_pending``, ``inquiry_error``, dates ``created``,
``p_req_date``, ``auth_date``, ``cap_date``, ``completed``, ``inquired``.
Secrets: PAN and expiry under ``state["secret"]`` until PReq is built (the re-sends reuse its
bytes), then only the AcqCardMsg back key until the purchase is answered.  The gateway writes
AcqCardMsg once, in its AuthRes, and the merchant relays it in PRes; an InqRes after that repeats
the same message, so the key is dropped when the purchase is answered (or failed) and a repeated
AcqCardMsg is not opened again.  PANSecret and the signature key never enter the state.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from setmail.asn1 import purchase as pu
from setmail.asn1.strict import decode_native
from setmail.crypto.cms import Identity
from setmail.crypto.dual import dual_sign
from setmail.crypto.operators import S, open_EncK, verify_S
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError, SetmailError
from setmail.pki import thumbprint, validate_path, verify_cardholder_id
from setmail.pki.setext import read_merchant_data
from setmail.roles.base import CancelTimer, Outcome, Send, SetTimer
from setmail.roles.certs import find_certificate, path_check
from setmail.roles.forms import luhn_ok
from setmail.roles.refusal import guarded, read_error
from setmail.roles.wire import check_echo, check_header, h, SW_IDENT, unh, unwrap, wrap
from setmail.roles.purchase_msgs import (Order, hod, inq_req, inq_req_data, iso_response, oi_data,
                                         p_req, pan_data, pi_head, pinit_req, status_fields,
                                         trans_stain)
from setmail.roles.requester import Requester, RequesterConfig, waiting


@dataclass(frozen=True)
class WalletCard:
    """A certified card: the signature identity (key, certificate, CA chain) and PANSecret."""

    identity: Identity
    pan_secret: bytes


@dataclass(frozen=True)
class WalletConfig(RequesterConfig):
    """The requester fields, plus where the card's credentials come from (see module docstring)."""

    credentials: Callable[[str, str], WalletCard | None] | None = None
    agent: str = ""
    sw_ident: str = SW_IDENT


#: CompletionCode -> wallet state; any other code (orderReceived, ...) leaves the state as it is
STATUS = {"authorizationPerformed": "APPROVED", "capturePerformed": "CAPTURED",
          "authorizationDeclined": "DECLINED", "orderRejected": "REJECTED"}
ANSWERED = ("APPROVED", "CAPTURED", "DECLINED", "REJECTED")
_XID_HEX = frozenset("0123456789abcdef")
#: the merchant's fields read as their DER (``decode_native``'s raw paths): TransIDs, kept and
#: compared byte-wise, and the BrandCRLIdentifier, verified as signed
_RAW = ("trans_ids", "brand_crl_identifier")


def _answered(state: str) -> dict:
    """An answered purchase still takes inquiries (APPROVED -> CAPTURED), late Errors, old timers."""
    return {"inquire": state, "InqRes": ANSWERED, "Error": state, "timer:retry": state,
            "timer:inquiry": state}


def _when(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


def _names(err, rrpid: str | None, der: str | None) -> bool:
    """Does a received Error refuse the request with this RRPID (hex) / these bytes (hex)?"""
    return bool((err.rrpid is not None and h(err.rrpid) == rrpid) or (
        err.bad_wrapper is not None and der and der.startswith(err.bad_wrapper.hex())))


class Wallet(Requester):
    """The cardholder's purchase; transaction key = XID (hex), carried as LID-M and XID."""

    name = "wallet"
    LID_FIELD = "lid_m"
    TRANSITIONS = {
        "START": {"buy": ("PINIT_SENT", "FAILED")},
        "PINIT_SENT": {"PInitRes": ("PREQ_SENT", "PINIT_SENT", "FAILED"), **waiting("PINIT_SENT")},
        "PREQ_SENT": {"PRes": (*ANSWERED, "PREQ_SENT"), "InqRes": (*ANSWERED, "PREQ_SENT"),
                      "inquire": "PREQ_SENT", "timer:inquiry": "PREQ_SENT", **waiting("PREQ_SENT")},
        **{s: _answered(s) for s in ANSWERED},
        # failed for want of an answer, a late PRes (or an inquiry) can still tell the outcome
        "FAILED": {**_answered("FAILED"), "PRes": (*ANSWERED, "FAILED"),
                   "InqRes": (*ANSWERED, "FAILED")},
    }

    def __init__(self, config: WalletConfig):
        self.config = config

    def command_key(self, event) -> str:
        xid = str(event.args.get("xid", "")).strip().lower()
        if len(xid) != 40 or not set(xid) <= _XID_HEX:
            raise ProtocolError(f"{event.name}: xid must be 40 hex digits (20 octets)")
        return xid

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def agent(self) -> str:
        return self.config.agent or self.config.name.split("@")[0]

    def _card(self, state: dict) -> WalletCard | None:
        lookup = self.config.credentials
        return lookup(state["pan_last4"], state["brand"]) if lookup else None

    def _no_card(self, state: dict) -> str:
        return (f"{self.agent} has no certificate for card ending {state['pan_last4']}: "
                f"run `setmail register {self.agent}` first")

    def _signed(self, parsed, content_type: str, now: dt.datetime):
        """The merchant's signature on an answer, path ``mer`` to a pinned root."""
        return verify_S(parsed.body, content_type, suite=self.config.suite, validate=path_check(
            self.config.trust, now, "mer", crls=self.config.crls))

    def _echoed(self, state: dict, parsed, data, rrpid: bytes, chall: bytes | None,
                chall_field: str) -> None:
        xid = unh(state["xid"])
        check_echo("RRPID", data["rrpid"], rrpid)
        check_echo(chall_field, data[chall_field], chall)
        check_header(parsed, rrpid, xid, "lid_m")
        if parsed.message_id("xid") not in (None, xid):
            raise ProtocolError("MessageHeader XID is not this purchase's", "badMessageHeader")

    def fail(self, state: dict, key: str, reason: str, code: str | None = None, *,
             sends=(), effects=()) -> Outcome:
        state.update(state=self.FAILED, failure=reason, error_code=code, inquiry_pending=False)
        state.pop("last", None)
        self.forget_secrets(state)
        return Outcome(key, state, sends=tuple(sends), effects=tuple(effects),
                       timers=(CancelTimer("retry"), CancelTimer("inquiry")))

    @staticmethod
    def _order_problem(a, pan: str, expiry: str) -> str | None:
        def integer(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)
        checks = (
            (luhn_ok(pan), "PAN is not a valid card number"),
            (len(expiry) == 6 and expiry.isdigit() and 1 <= int(expiry[4:]) <= 12,
             "expiry must be YYYYMM"),
            (bool(a.get("merchant")) and bool(a.get("brand")), "merchant and brand are required"),
            (isinstance(a.get("description"), str) and a["description"].strip() != "",
             "description is required"),
            (integer(a.get("amount")) and a["amount"] > 0, "amount must be a positive integer "
             "(minor units)"),
            (integer(a.get("currency")) and 0 < a["currency"] < 1000,
             "currency must be an ISO 4217 numeric code"),
            (integer(a.get("amt_exp10", -2)), "amt_exp10 must be an integer"))
        return next((why for ok, why in checks if not ok), None)

    # -- 1. buy -> PInitReq -----------------------------------------------------------------------
    def on_buy(self, state, event, now, shared) -> Outcome:
        key, a = self.transaction_key(event), event.args
        pan, expiry = str(a.get("pan", "")), str(a.get("expiry", ""))
        state = {"state": "PINIT_SENT", "xid": key, "merchant": a.get("merchant"),
                 "brand": a.get("brand"), "language": a.get("language") or self.config.language,
                 "description": a.get("description"), "amount": a.get("amount"),
                 "currency": a.get("currency"), "amt_exp10": a.get("amt_exp10", -2),
                 "pan_last4": pan[-4:], "created": _when(now)}
        problem = self._order_problem(a, pan, expiry)
        if problem:
            return self.fail(state, key, problem)
        card = self._card(state)
        if card is None:
            return self.fail(state, key, self._no_card(state))
        try:
            verify_cardholder_id(card.identity.cert, card.pan_secret, pan, expiry, self.config.suite)
        except SetmailError:
            return self.fail(state, key, f"the certificate for card ending {pan[-4:]} does not "
                             "certify this card number and expiry")
        lid_c, chall_c, rrpid, xid = fresh(16), fresh(), fresh(), unh(key)
        msg = pinit_req(rrpid=rrpid, language=state["language"], lid_c=lid_c, xid=xid,
                        chall_c=chall_c, brand_id=state["brand"], bin_=pan[:6])
        state.update(lid_c=h(lid_c), _chall_c=h(chall_c), secret={"pan": pan, "expiry": expiry})
        der = wrap("PInitReq", msg, now=now, rrpid=rrpid, lid_c=lid_c, lid_m=xid)
        return self.request(state, key, state["merchant"], "PInitReq", der, now, rrpid)

    # -- 2. PInitRes -> PReq ----------------------------------------------------------------------
    @guarded
    def on_PInitRes(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        parsed = unwrap(event, now)
        signed = self._signed(parsed, "PInitResData", now)
        data = decode_native(pu.PInitResData, signed.content, raw=_RAW)
        chall_c, xid = unh(state["_chall_c"]), unh(state["xid"])
        self._echoed(state, parsed, data, unh(state["rrpid"]), chall_c, "chall_c")
        self.take_bci(state, data, signed, now)  # the brand's CRL list, before trusting a gateway
        ids_der, ids = bytes(data["trans_ids"]), data["trans_ids"].native
        if (ids["lid_c"], ids["lid_m"], ids["xid"]) != (unh(state["lid_c"]), xid, xid):
            raise ProtocolError("PInitRes TransIDs name another purchase", "unknownXID")
        pe_thumb = data["pe_thumb"]
        gateway = find_certificate(signed.certificates, pe_thumb)
        validate_path(gateway, signed.certificates, self.config.trust, now=now, expected_type="pgwy",
                      key_usage="key_encipherment", crls=self.config.crls)
        merchant = read_merchant_data(signed.signer)
        if merchant is None:
            raise ProtocolError("merchant certificate carries no merchant data", "invalidCertificate")
        card = self._card(state)
        if card is None:
            return self.fail(state, key, self._no_card(state))
        suite, secret = self.config.suite, state["secret"]
        order = Order(state["description"], state["amount"], state["currency"], state["amt_exp10"])
        rrpid, od_salt, back_key = fresh(), fresh(), fresh(32)
        hod_dd = hod(order, od_salt, suite)
        oi = oi_data(trans_ids_der=ids_der, rrpid=rrpid, chall_c=chall_c, hod_dd=hod_dd,
                     od_salt=od_salt, brand_id=state["brand"], bin_=secret["pan"][:6],
                     chall_m=data["chall_m"])
        head = pi_head(trans_ids_der=ids_der, hod_dd=hod_dd, order=order, merchant_id=merchant.mer_id,
                       trans_stain_=trans_stain(xid, card.pan_secret, suite),
                       sw_ident=self.config.sw_ident, pe_thumb=pe_thumb, acq_back_key=back_key)
        pan = pan_data(pan=secret["pan"], expiry=secret["expiry"], pan_secret=card.pan_secret,
                       ex_nonce=fresh())
        signed_pi = dual_sign(card.identity, gateway, head, oi, pan, suite=suite)
        msg = p_req(signed_pi.p_req_dual_signed)
        der = wrap("PReq", msg, now=now, rrpid=rrpid, lid_c=unh(state["lid_c"]), lid_m=xid, xid=xid)
        state.update(state="PREQ_SENT", mer_id=merchant.mer_id,
                     p_req_date=_when(ids["p_req_date"]),
                     _merchant_cert=thumbprint(signed.signer).hex(), _trans_ids=ids_der.hex(),
                     secret={"back_key": back_key.hex()})
        state.pop("refused", None)
        return self.request(state, key, state["merchant"], "PReq", der, now, rrpid, cancel=("retry",))

    # -- 3. PRes / InqRes -> the purchase's status ------------------------------------------------
    @guarded
    def on_PRes(self, state, event, now, shared) -> Outcome:
        return self._status(dict(state), event, now, unh(state.get("rrpid")),
                            unh(state.get("_chall_c")), "chall_c")

    @guarded
    def on_InqRes(self, state, event, now, shared) -> Outcome:
        inquiry = state.get("_inquiry")
        if not inquiry:
            raise ProtocolError("InqRes, but no InqReq was sent", "challengeMismatch")
        return self._status(dict(state), event, now, unh(inquiry["rrpid"]), unh(inquiry["chall"]),
                            "chall_c")

    def _status(self, state: dict, event, now: dt.datetime, rrpid: bytes, chall: bytes | None,
                chall_field: str) -> Outcome:
        key = self.transaction_key(event)
        parsed = unwrap(event, now)
        signed = self._signed(parsed, "PResData", now)
        if thumbprint(signed.signer).hex() != state.get("_merchant_cert"):
            raise ProtocolError("signed by another certificate than PInitRes", "invalidCertificate")
        data = decode_native(pu.PResData, signed.content, raw=_RAW)
        self._echoed(state, parsed, data, rrpid, chall, chall_field)
        if data["trans_ids"].hex() != state.get("_trans_ids"):
            raise ProtocolError("TransIDs differ from the ones PInitRes signed", "unknownXID")
        payloads = data["p_res_payload_seq"]
        if len(payloads) != 1:
            raise ProtocolError("PResData must carry exactly one PResPayload")
        fields = {**status_fields(payloads[0], state["amount"]),
                  **self._acq_card(payloads[0], state, now)}
        current = state["state"]
        new = STATUS.get(fields["completion"], current)
        timers: list = []
        if event.message_type == "InqRes":
            inquiry = {k: v for k, v in state["_inquiry"].items() if k != "der"}
            state.update(_inquiry=inquiry, inquiry_pending=False)
            state.pop("inquiry_error", None)
            timers.append(CancelTimer("inquiry"))
        if new in ANSWERED or event.message_type == "PRes":
            state.pop("last", None)  # the merchant has our PReq: re-sending it is pointless
            timers.append(CancelTimer("retry"))
        if new in ANSWERED:
            self.forget_secrets(state)
            for gone in ("failure", "error_code", "refused"):
                state.pop(gone, None)
            state.setdefault("completed", _when(now))
        state.update(fields, state=new)
        state["captured"] = new == "CAPTURED" or bool(fields.get("captured"))
        return Outcome(key, state, timers=tuple(timers))

    def _acq_card(self, payload, state: dict, now: dt.datetime) -> dict:
        """The gateway's AcqCardMsg, opened with our back key (signer path ``pgwy``)."""
        results = payload["results"]
        if results is None or results["acq_card_msg"] is None:
            return {}
        back_key = (state.get("secret") or {}).get("back_key")
        if back_key is None:
            return {}  # read when the purchase was answered; a repeat says nothing new
        opened = open_EncK(results["acq_card_msg"], unh(back_key), "AcqCardCodeMsgTBE",
                           "AcqCardCodeMsg", suite=self.config.suite, validate=path_check(
                               self.config.trust, now, "pgwy", crls=self.config.crls))
        msg = decode_native(pu.AcqCardCodeMsg, opened.content)
        iso_code, iso_text = iso_response(msg["acq_card_msg_data"]["acq_card_text"])
        return {"acq_card_code": msg["acq_card_code"], "iso_code": iso_code,
                "iso_text": iso_text}

    # -- 4. inquire -> InqReq ---------------------------------------------------------------------
    def on_inquire(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        if not state.get("_trans_ids"):
            raise ProtocolError(f"purchase {key[:16]}… never got a PInitRes: nothing to inquire about")
        card = self._card(state)
        if card is None:
            raise ProtocolError(self._no_card(state))
        rrpid, chall, xid = fresh(), fresh(), unh(key)
        data = inq_req_data(trans_ids_der=unh(state["_trans_ids"]), rrpid=rrpid, chall_c2=chall)
        msg = inq_req(S(card.identity, "InqReqData", data, suite=self.config.suite))
        der = wrap("InqReq", msg, now=now, rrpid=rrpid, lid_c=unh(state["lid_c"]), lid_m=xid, xid=xid)
        state.update(inquiries=state.get("inquiries", 0) + 1, inquiry_pending=True,
                     inquired=_when(now), _inquiry={"rrpid": h(rrpid), "chall": h(chall),
                                                    "der": der.hex(), "attempts": 0})
        state.pop("inquiry_error", None)
        return Outcome(key, state, sends=(Send(state["merchant"], "InqReq", der),),
                       timers=(SetTimer("inquiry", now + self.config.retry_after, {"transaction": key}),))

    def on_timer_inquiry(self, state, event, now, shared) -> Outcome:
        """Re-send the same InqReq bytes; give up (the purchase itself unchanged) after max_retries."""
        key, state = self.transaction_key(event), dict(state)
        inquiry = dict(state.get("_inquiry") or {})
        if not state.get("inquiry_pending") or "der" not in inquiry:
            return Outcome(key, state)  # a stale timer
        if inquiry["attempts"] >= self.config.max_retries:
            del inquiry["der"]
            state.update(_inquiry=inquiry, inquiry_pending=False,
                         inquiry_error=f"no answer to InqReq after {inquiry['attempts']} re-sends")
            return Outcome(key, state)
        inquiry["attempts"] += 1
        state["_inquiry"] = inquiry
        return Outcome(key, state, sends=(Send(state["merchant"], "InqReq", unh(inquiry["der"])),),
                       timers=(SetTimer("inquiry", now + self.config.retry_after, {"transaction": key}),))

    # -- SET Error --------------------------------------------------------------------------------
    def on_Error(self, state, event, now, shared) -> Outcome:
        """An Error naming our InqReq ends the inquiry; one naming the PInitReq or PReq we wait on
        fails the purchase; any other Error (late, forged, unrelated) changes nothing."""
        key, state = self.transaction_key(event), dict(state)
        try:
            err = read_error(unwrap(event, now), suite=self.config.suite)
        except SetmailError:
            return Outcome(key, state)  # never answer an Error with an Error
        inquiry = state.get("_inquiry") or {}
        if state.get("inquiry_pending") and _names(err, inquiry.get("rrpid"), inquiry.get("der")):
            state.update(_inquiry={k: v for k, v in inquiry.items() if k != "der"},
                         inquiry_pending=False, inquiry_error=f"InqReq refused: {err.code}")
            return Outcome(key, state, timers=(CancelTimer("inquiry"),))
        last = state.get("last") or {}
        if last and _names(err, state.get("rrpid"), last.get("der")):
            return self.fail(state, key, f"{last['type']} refused by the merchant", err.code)
        return Outcome(key, state)
