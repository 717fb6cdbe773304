"""The cardholder wallet's side of a purchase (set-protocol.md §5.1-5.3, docs/purchase.md).

    buy      -> PInitReq (clear)               <- PInitRes = S(M, PInitResData) + M and P certificates
    PInitRes -> PReq = [0] dual signature      <- PRes = S(M, PResData) [AcqCardMsg = EncK(back key, P)]
    inquire  -> InqReq = [0] S(C, InqReqData)  <- InqRes = S(M, PResData)

Why each check: every answer must echo our RRPID and Chall-C (freshness without sessions), name
this purchase (TransIDs: our LID-C, the XID as LID-M and XID) and be signed by a certificate that
validates as ``mer`` to a pinned root.  The counterparts are pinned (``roles/exchange.py``): the
PInitReq goes to the merchant address of the ``buy`` command and only a PInitRes signed by a
certificate carrying *that* merchant's merID (the world's directory, ``WalletConfig.merchants``)
is taken; from then on exactly that certificate must sign PRes, InqRes and any Error that ends a
request, and the AcqCardMsg must be signed by the gateway PInitRes named by PEThumb (same subject
as that key-exchange certificate).  PIHead repeats the PEThumb under the dual signature (D-102), so
a merchant cannot divert the PAN afterwards.  BCIs are verified on the merchant's validated path
and never go back (shared state "brand").  Everything the wallet receives is a response: it never
answers anything, a refused mail only leaves a note (``refused``).

``WalletConfig``: ``name`` (our address), ``trust``, ``suite``, ``retry_after``/``max_retries``
(PInitReq, PReq, InqReq), ``expire_after`` (how long a PReq the merchant said it received may wait
for its outcome), ``abandon_after`` (how long a purchase may wait for its PInitRes before it is
given up, whatever the re-sends: world.toml ``[world] purchase_expiry``), ``language``, ``crls``, ``merchants`` (merchant address -> merID: the world's
directory), ``credentials(pan_last4, brand) -> WalletCard | None`` (the card's signature identity
and PANSecret, asked at each use), ``agent`` (our name in messages to the user), ``sw_ident``.

Command ``buy`` args: ``xid`` (40 hex digits: the transaction key), ``merchant`` (address),
``pan``, ``expiry`` (YYYYMM), ``description``, ``amount`` (minor units), ``currency`` (ISO 4217
numeric), ``amt_exp10`` (default -2), ``brand``, optional ``language``, optional terms agreed
with the merchant (``instalments`` N, or ``recurring`` {days, until YYYYMMDD}, hashed into
HODInput.installRecurData as the merchant's order is: ``purchase_msgs.order_terms``).
Command ``inquire`` args: ``xid``; allowed once PInitRes arrived (a command in another state
fails, unchanged).  Command ``cancel`` args: ``xid``: the cardholder gives up before the PReq
(CANCELLED, secrets and re-sends gone; a late PInitRes is absorbed); after it, only the merchant
can stop the purchase (``wallet_status.on_cancel``).

State (what ``setmail tx show`` prints; keys starting with "_" are protocol bookkeeping it
hides): ``state``, ``xid``, ``merchant``, ``mer_id``, ``brand``, ``description``, ``amount``,
``currency``, ``amt_exp10``, ``terms``, ``pan_last4``, ``lid_c``, ``completion`` (CompletionCode),
``auth_code``, ``auth_amt``, ``cap_code``, ``cap_amt``, ``captured``, ``acq_card_code``,
``iso_code``/``iso_text`` (from AcqCardMsg), ``failure``/``error_code``, ``expired`` {at, reason},
``refused``, ``inquiries`` (InqReqs sent), ``inquiry_pending``, ``inquiry_error``, dates
``created``, ``p_req_date``, ``auth_date``, ``cap_date``, ``completed``, ``inquired``; the
exchanges ``out`` (PInitReq/PReq) and ``inq`` (InqReq).
Secrets: PAN and expiry under ``state["secret"]`` until PReq is built (the re-sends reuse its
bytes), then only the AcqCardMsg back key until the purchase is answered or fails; a repeated
AcqCardMsg is not opened again.  PANSecret and the signature key never enter the state.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable

from setmail.asn1 import purchase as pu
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.cms import Identity
from setmail.crypto.dual import dual_sign
from setmail.crypto.operators import verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError, SetmailError
from setmail.pki import thumbprint, validate_path, verify_cardholder_id
from setmail.pki.setext import read_merchant_data
from setmail.pki.trust import TrustStore
from setmail.roles.base import START, CancelTimer, Inbound, Outcome, Role, SetTimer, TimerFired
from setmail.roles.brand import SHARED_KEY, check_bci
from setmail.roles.certs import find_certificate, path_check
from setmail.roles.exchange import ENDS, NUDGE, Exchange, pin, subject_hex
from setmail.roles.purchase_msgs import (Order, hod, oi_data, order_problem, order_terms, p_req,
                                         pan_data, pi_head, pinit_req, trans_stain)
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wallet_status import ANSWERED, RAW, StatusSide, when
from setmail.roles.wire import SW_IDENT, check_echo, check_header, h, header_ids, unh, unwrap, wrap


@dataclass(frozen=True)
class WalletCard:
    """A certified card: the signature identity (key, certificate, CA chain) and PANSecret."""

    identity: Identity
    pan_secret: bytes


@dataclass(frozen=True)
class WalletConfig:
    """See the module docstring."""

    name: str
    trust: TrustStore
    suite: CryptoSuite = DEFAULT_SUITE
    retry_after: dt.timedelta = dt.timedelta(minutes=30)
    max_retries: int = 3
    language: str = "en"
    crls: tuple | None = None
    credentials: Callable[[str, str], WalletCard | None] | None = None
    agent: str = ""
    sw_ident: str = SW_IDENT
    merchants: Mapping[str, str] = field(default_factory=dict)
    expire_after: dt.timedelta = dt.timedelta(days=1)
    abandon_after: dt.timedelta = dt.timedelta(days=1)
    nudge_after: dt.timedelta = dt.timedelta(seconds=60)


_XID_HEX = frozenset("0123456789abcdef")


def _quiet(state: str, **events) -> dict:
    """What every state takes without moving: an answer nobody waits for (absorbed), an Error
    (judged against what is outstanding), a stale timer."""
    return {"PInitRes": state, "PRes": state, "InqRes": state, "Error": state,
            "timer:retry": state, "timer:inquiry": state, "timer:expire": state,
            "timer:abandon": state, **events}


class Wallet(StatusSide, Role):
    """The cardholder's purchase; transaction key = XID (hex), carried as LID-M and XID."""

    name = "wallet"
    shared_key = SHARED_KEY
    LID_FIELD = "lid_m"  # how ``Dispatch`` routes an Error to us
    TRANSITIONS = {
        START: {"buy": ("PINIT_SENT", "FAILED"), "PInitRes": START, "PRes": START,
                "InqRes": START, "Error": START},
        "PINIT_SENT": _quiet("PINIT_SENT", PInitRes=("PREQ_SENT", "PINIT_SENT", "FAILED"),
                             Error=("PINIT_SENT", "FAILED"), cancel="CANCELLED",
                             **{"timer:retry": ("PINIT_SENT", "FAILED"),
                                "timer:abandon": ("PINIT_SENT", "FAILED")}),
        "PREQ_SENT": _quiet("PREQ_SENT", PRes=(*ANSWERED, "PREQ_SENT"),
                            InqRes=(*ANSWERED, "PREQ_SENT"), inquire="PREQ_SENT",
                            cancel="PREQ_SENT",
                            Error=("PREQ_SENT", "FAILED"),
                            **{"timer:retry": ("PREQ_SENT", "FAILED"),
                               "timer:expire": ("PREQ_SENT", "FAILED")}),
        # an answered purchase still takes inquiries (APPROVED -> CAPTURED)
        **{s: _quiet(s, inquire=s, InqRes=ANSWERED) for s in ANSWERED},
        # the cardholder gave up before sending the PReq: nothing can be authorised
        "CANCELLED": _quiet("CANCELLED", cancel="CANCELLED"),
        # failed for want of an answer, a late PRes (or an inquiry) can still tell the outcome
        "FAILED": _quiet("FAILED", inquire="FAILED", PRes=(*ANSWERED, "FAILED"),
                         InqRes=(*ANSWERED, "FAILED")),
    }

    def __init__(self, config: WalletConfig):
        self.config = config
        common = {"retry_after": config.retry_after, "max_retries": config.max_retries,
                  "nudge_after": config.nudge_after}
        self.purchase = Exchange(**common)                                # PInitReq, then PReq
        self.inquiry = Exchange(**common, slot="inq", timer="inquiry")   # InqReq

    def transaction_key(self, event) -> str:
        if isinstance(event, Inbound):
            value = header_ids(event).get(self.LID_FIELD)
            return value.hex() if value else "unroutable"  # START refuses it; nothing is stored
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        xid = str(event.args.get("xid", "")).strip().lower()
        if len(xid) != 40 or not set(xid) <= _XID_HEX:
            raise ProtocolError(f"{event.name}: xid must be 40 hex digits (20 octets)")
        return xid

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def agent(self) -> str:
        return self.config.agent or self.config.name.split("@")[0]

    def _mer_id(self, address: str) -> str | None:
        """The merID the world's directory binds to a merchant address (None: no merchant)."""
        known = self.config.merchants
        return known.get(address) or known.get(address.lower())

    def _card(self, state: dict) -> WalletCard | None:
        lookup = self.config.credentials
        return lookup(state["pan_last4"], state["brand"]) if lookup else None

    def _no_card(self, state: dict) -> str:
        return (f"{self.agent} has no certificate for card ending {state['pan_last4']}: "
                f"run `setmail register {self.agent}` first")

    def _path(self, now: dt.datetime, cert_type: str):
        return path_check(self.config.trust, now, cert_type, crls=self.config.crls)

    def _signed(self, parsed, content_type: str, now: dt.datetime):
        """The merchant's signature on an answer, path ``mer`` to a pinned root."""
        return verify_S(parsed.body, content_type, suite=self.config.suite,
                        validate=self._path(now, "mer"))

    def _bci(self, data, signed, now: dt.datetime, shared) -> dict | None:
        """The new shared "brand" state after the answer's BCI (None: unchanged)."""
        _, seen = check_bci(data.get("brand_crl_identifier"), signed.signer, signed.certificates,
                            trust=self.config.trust, now=now, expected_type="mer",
                            suite=self.config.suite, crls=self.config.crls, seen=shared)
        return seen

    def _echoed(self, state: dict, parsed, data, rrpid: bytes, chall: bytes | None) -> None:
        xid = unh(state["xid"])
        check_echo("RRPID", data["rrpid"], rrpid)
        check_echo("Chall-C", data["chall_c"], chall)
        check_header(parsed, rrpid, xid, "lid_m")
        if parsed.message_id("xid") not in (None, xid):
            raise ProtocolError("MessageHeader XID is not this purchase's", "badMessageHeader")

    def refuse(self, state, event, exc, now) -> Outcome:
        """Everything we receive is a response: noted, never answered."""
        return refusal(state, event, exc, now, transaction=self.transaction_key(event),
                       suite=self.config.suite)

    def fail(self, state: dict, key: str, reason: str, code: str | None = None, *,
             now: dt.datetime | None = None) -> Outcome:
        """FAILED, secrets gone, nothing outstanding; ``now``: it was abandoned for want of an
        answer (``expired``).  A PReq's record stays (``_late``): a late PRes still counts."""
        rec = self.purchase.pending(state)
        state, _ = self.purchase.settle(state)
        state, _ = self.inquiry.settle(state)
        if rec is not None and rec["type"] == "PReq":
            state["_late"] = {k: v for k, v in rec.items() if k != "der"}
        state.update(state="FAILED", failure=reason, error_code=code, inquiry_pending=False)
        if now is not None:
            state["expired"] = {"at": when(now), "reason": reason}
        state.pop("secret", None)
        return Outcome(key, state, timers=tuple(CancelTimer(n) for n in (
            "retry", "inquiry", "expire", "abandon")))

    # -- 1. buy -> PInitReq -----------------------------------------------------------------------
    def on_buy(self, state, event, now, shared) -> Outcome:
        key, a = self.transaction_key(event), event.args
        pan, expiry = str(a.get("pan", "")), str(a.get("expiry", ""))
        merchant = str(a.get("merchant") or "")
        state = {"state": "PINIT_SENT", "xid": key, "merchant": merchant,
                 "mer_id": self._mer_id(merchant) if merchant else None,
                 "brand": a.get("brand"), "language": a.get("language") or self.config.language,
                 "description": a.get("description"), "amount": a.get("amount"),
                 "currency": a.get("currency"), "amt_exp10": a.get("amt_exp10", -2),
                 "pan_last4": pan[-4:], "created": when(now)}
        problem = order_problem(a, pan, expiry)
        if problem:
            return self.fail(state, key, problem)
        terms = order_terms(a)
        if terms is not None:  # agreed with the merchant: hashed into HOD with the order
            state["terms"] = list(terms)
        card = self._card(state)
        if card is None:
            return self.fail(state, key, self._no_card(state))
        if state["mer_id"] is None:
            return self.fail(state, key, f"{merchant} is no merchant of this world's directory")
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
        out = self.purchase.ask(state, key, to=merchant, type_name="PInitReq", der=der,
                                rrpid=rrpid, expects=("PInitRes",),
                                pin_=pin(mer_id=state["mer_id"]), now=now)
        abandon = SetTimer("abandon", now + self.config.abandon_after, {"transaction": key})
        return replace(out, timers=(*out.timers, abandon))

    # -- 2. PInitRes -> PReq ----------------------------------------------------------------------
    @guarded
    def on_PInitRes(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        parsed = unwrap(event, now)
        rec = self.purchase.pending(state)
        if rec is None or rec["type"] != "PInitReq":
            raise ProtocolError("PInitRes answers no PInitReq outstanding", "challengeMismatch")
        signed = self._signed(parsed, "PInitResData", now)
        self.purchase.accept(state, parsed, signed.signer)  # the merchant we chose, our RRPID
        data = decode_native(pu.PInitResData, signed.content, raw=RAW)
        chall_c, xid = unh(state["_chall_c"]), unh(state["xid"])
        self._echoed(state, parsed, data, unh(rec["rrpid"]), chall_c)
        seen = self._bci(data, signed, now, shared)  # the brand's CRL list, before trusting a gateway
        ids_der, ids = bytes(data["trans_ids"]), data["trans_ids"].native
        if (ids["lid_c"], ids["lid_m"], ids["xid"]) != (unh(state["lid_c"]), xid, xid):
            raise ProtocolError("PInitRes TransIDs name another purchase", "unknownXID")
        pe_thumb = data["pe_thumb"]
        gateway = find_certificate(signed.certificates, pe_thumb)
        validate_path(gateway, signed.certificates, self.config.trust, now=now, expected_type="pgwy",
                      key_usage="key_encipherment", crls=self.config.crls)
        merchant = read_merchant_data(signed.signer)
        card = self._card(state)
        if card is None:
            return self.fail(state, key, self._no_card(state))
        suite, secret = self.config.suite, state["secret"]
        order = Order(state["description"], state["amount"], state["currency"], state["amt_exp10"],
                      tuple(state["terms"]) if state.get("terms") else None)
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
        state.update(state="PREQ_SENT", p_req_date=when(ids["p_req_date"]),
                     _merchant_cert=thumbprint(signed.signer).hex(), _trans_ids=ids_der.hex(),
                     _gateway=subject_hex(gateway), secret={"back_key": back_key.hex()})
        state.pop("refused", None)
        out = self.purchase.ask(state, key, to=state["merchant"], type_name="PReq", der=der,
                                rrpid=rrpid, expects=("PRes",), pin_=pin(thumb=signed.signer),
                                now=now)
        return replace(out, shared=seen, peer=state["merchant"],
                       timers=(*out.timers, CancelTimer("abandon")))

    # -- timers -----------------------------------------------------------------------------------
    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        return self.purchase.on_timer(state, key, now,
                                      lambda why: self.fail(dict(state), key, why, now=now))

    def on_timer_abandon(self, state, event, now, shared) -> Outcome:
        """No PInitRes within ``abandon_after`` of the buy: FAILED (expired), whatever re-sends
        are left; later in the purchase the timer is stale."""
        key = self.transaction_key(event)
        if state["state"] != "PINIT_SENT":
            return Outcome(key, dict(state))
        hours = self.config.abandon_after.total_seconds() / 3600
        return self.fail(dict(state), key, f"expired: no PInitRes within {hours:g} h",
                         now=now)

    def on_timer_expire(self, state, event, now, shared) -> Outcome:
        """The merchant said it has our PReq, and no outcome came in ``expire_after``: FAILED
        (secrets dropped); a late PRes or an inquiry can still tell the outcome."""
        key = self.transaction_key(event)
        if state["state"] != "PREQ_SENT":
            return Outcome(key, dict(state))  # stale
        hours = self.config.expire_after.total_seconds() / 3600
        return self.fail(dict(state), key, f"no outcome of the PReq within {hours:g} h of "
                         "orderReceived", now=now)

    # -- SET Error --------------------------------------------------------------------------------
    def on_Error(self, state, event, now, shared) -> Outcome:
        """Only an Error signed by the pinned merchant naming the exact bytes of what we wait for
        ends it (an InqReq: the inquiry; a PInitReq or PReq: the purchase fails); one that merely
        names its RRPID brings the re-send forward once per attempt; the rest changes nothing."""
        key = self.transaction_key(event)
        if state["state"] == START:
            return Outcome(key, None, refused="Error about no purchase of ours")
        state, validate = dict(state), self._path(now, "mer")
        for exchange in (self.inquiry, self.purchase):
            rec = exchange.pending(state)
            if rec is None:
                continue
            verdict = exchange.judge(state, event, now, validate=validate, suite=self.config.suite)
            if verdict.kind == ENDS and exchange is self.inquiry:
                state, timers = exchange.settle(state)
                state.update(inquiry_pending=False, inquiry_error=verdict.why)
                state.pop("_inq_chall", None)
                return Outcome(key, state, timers=timers, peer=state["merchant"])
            if verdict.kind == ENDS:
                out = self.fail(state, key, f"{rec['type']} refused by the merchant", verdict.code)
                return replace(out, peer=state["merchant"])
            if verdict.kind == NUDGE:
                state["refused"] = {"type": "Error", "code": verdict.code,
                                    "reason": verdict.why[:200]}
                state, timers = exchange.nudge(state, key, now)
                return Outcome(key, state, timers=timers, refused=verdict.why)
        return Outcome(key, state, refused="Error names no request outstanding here")
