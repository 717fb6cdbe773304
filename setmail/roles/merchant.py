"""The merchant's side of a SET purchase (docs/purchase.md), sans-I/O.

    order (shop front-end) + PInitReq -> PInitRes = S(M, PInitResData) + M's and P's certificates
    PReq (dual signature)             -> AuthReq  = EncB(M, P, AuthReqData, PI)  (PI unchanged)
    AuthRes = EncB(P, M, AuthResData, AuthResBaggage) -> PRes = S(M, PResData)  [+ CapReq]
    capture                           -> CapReq   = EncB(M, P, CapReqData, CapTokenSeq)
    CapRes  = Enc(P, M, CapResData)
    InqReq  = S(C, InqReqData)        -> InqRes   = S(M, PResData)

Why the checks: the merchant authorises only what it sold, once.  A PReq must carry the
TransIDs and Chall-M it signed in PInitRes and the PInitReq's Chall-C (freshness), and a HOD
recomputed from the merchant's *own* order record (the cardholder agreed to this description
and amount); after that the purchase is past PINIT_SENT and any further PReq is refused.  An
AuthRes must echo the AuthReq's tags and name our signature certificate (``mer_thumb``), so an
answer meant for another merchant changes nothing.  The merchant never holds PAN, expiry or
PANSecret: they travel sealed for the gateway inside the PI, which is kept and forwarded as
opaque DER; nothing here opens it.

Transaction key = XID hex, from the header (``xid``, else ``lid_m``: the XID doubles as LID-M,
D-131); commands name it in ``args["xid"]``; timers carry ``{"transaction": key}``.

Commands: ``order`` {xid, description, amount (minor units), currency (ISO 4217 numeric),
amt_exp10 (default -2), cardholder (address, optional)}; ``capture`` {xid, amount (optional, minor
units; default the authorised amount)}.  State (what ``setmail tx show`` prints): state, xid,
cardholder, description, amount, currency, amt_exp10, created, dates (per state entered),
completion, auth_code, auth_amt, approval_code, iso_code/iso_text (ResponseData.logRefID),
cap_code, cap_amt, failure, refusals (list of {at, by, message, code, reason}) and the protocol
values (trans_ids, chall_m, rrpids, oi_data, pi, cap_token, acq_card_msg: DER as hex).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from functools import cached_property

from cryptography import x509

from setmail.asn1 import capture as cap, gateway as gw, purchase as pu
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.asn1.strict import decode_native
from setmail.crypto import der, dual
from setmail.crypto.cms import Identity
from setmail.crypto.operators import DD, EncB, S, open_Enc, open_EncB, verify_S
from setmail.crypto.reader import Reader
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import DigestMismatch, ProtocolError, SetmailError
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.roles import merchant_msgs as msgs
from setmail.roles.base import START, CancelTimer, Inbound, Outcome, Send, TimerFired
from setmail.roles.certs import path_check
from setmail.roles.refusal import error_code, guarded, read_error, refusal
from setmail.roles.wire import check_echo, check_header, h, header_ids, unh, unwrap, wrap
from setmail.roles.merchant_msgs import enter, iso, opened, record, utc
from setmail.roles.purchase_msgs import Order, hod, trans_ids
from setmail.roles.requester import Requester


@dataclass(frozen=True)
class MerchantConfig:
    """``sig``/``kex``: the merchant's identities (chain = the MCA chain without the root);
    ``gateway_kex`` + ``gateway_chain`` (PCA chain without the root): sent in PInitRes and used
    to envelope AuthReq/CapReq; ``bci``: the brand's current BrandCRLIdentifier (None: omitted)."""

    name: str
    sig: Identity
    kex: Identity
    mer_id: str
    gateway: str
    gateway_kex: x509.Certificate
    trust: TrustStore
    gateway_chain: tuple[x509.Certificate, ...] = ()
    bci: BrandCRLIdentifier | None = None
    auto_capture: bool = False
    suite: CryptoSuite = DEFAULT_SUITE
    retry_after: dt.timedelta = dt.timedelta(minutes=30)
    max_retries: int = 3
    crls: tuple | None = None

    @cached_property
    def request_certs(self) -> tuple[x509.Certificate, ...]:
        """What AuthReq/CapReq carry: our signature and key-exchange certificates, MCA chain."""
        return (self.sig.cert, self.kex.cert, *self.sig.chain)

    @cached_property
    def pinit_certs(self) -> tuple[x509.Certificate, ...]:
        """PInitRes also carries the gateway's key-exchange certificate the wallet encrypts to."""
        return (*self.request_certs, self.gateway_kex, *self.gateway_chain)


#: fields of the gateway's answers read as their DER (``decode_native``'s raw paths): TransIDs are
#: compared byte-wise with ours, the BrandCRLIdentifier is verified as signed (or not read at all)
_AUTH_RES_RAW = ("auth_tags.trans_ids", "brand_crl_identifier")
_CAP_RES_RAW = ("cap_res_item_seq.*.trans_ids", "brand_crl_identifier")


def _after_pinit(state: str, **events) -> dict:
    """What every state after PInitRes takes: InqReq (answered), PReq (refused unless it is the
    first), Error (recorded), timer:retry (re-send, or stale)."""
    return {"InqReq": state, "PReq": state, "Error": state, "timer:retry": state, **events}


class Merchant(Requester):
    name = "merchant"
    TRANSITIONS = {
        START: {"order": "ORDERED", "PInitReq": "PARKED", "Error": START},
        "ORDERED": {"PInitReq": ("PINIT_SENT", "ORDERED"), "Error": "ORDERED"},
        "PARKED": {"order": "PINIT_SENT", "PInitReq": "PARKED", "Error": "PARKED"},
        "PINIT_SENT": _after_pinit("PINIT_SENT", PReq=("AUTH_SENT", "PINIT_SENT")),
        "AUTH_SENT": _after_pinit("AUTH_SENT",
                                  AuthRes=("AUTHORIZED", "DECLINED", "CAP_SENT", "AUTH_SENT"),
                                  Error=("AUTH_SENT", "REJECTED"),
                                  **{"timer:retry": ("AUTH_SENT", "REJECTED")}),
        "AUTHORIZED": _after_pinit("AUTHORIZED", capture="CAP_SENT"),
        "CAP_SENT": _after_pinit("CAP_SENT", CapRes=("CAPTURED", "AUTHORIZED", "CAP_SENT"),
                                 Error=("CAP_SENT", "AUTHORIZED"),
                                 **{"timer:retry": ("CAP_SENT", "AUTHORIZED")}),
        **{s: _after_pinit(s) for s in ("DECLINED", "CAPTURED", "REJECTED")},
    }

    def __init__(self, config: MerchantConfig):
        self.config = config
        self._mer_thumb = thumbprint(config.sig.cert)
        self._pe_thumb = thumbprint(config.gateway_kex)
        self._bci_der = None if config.bci is None else config.bci.dump()

    def transaction_key(self, event) -> str:
        if isinstance(event, Inbound):
            ids = header_ids(event)
            xid = ids.get("xid") or ids.get("lid_m")
            return xid.hex() if xid else "unroutable"  # START refuses it; nothing is stored
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        return str(event.args.get("xid", "")).strip().lower()

    # -- helpers -----------------------------------------------------------------------------------
    def _ids(self, state: dict, key: str) -> dict:
        """Header message ids of every purchase message: {lid_c, lid_m, xid} (LID-M = XID)."""
        xid = unh(key)
        return {"lid_c": unh(state["pinit_req"]["lid_c"]), "lid_m": xid, "xid": xid}

    def _check(self, now: dt.datetime, cert_type: str):
        return path_check(self.config.trust, now, cert_type, crls=self.config.crls)

    @staticmethod
    def _same_rrpid(parsed, rrpid: bytes) -> None:
        if parsed.rrpid != rrpid:
            raise ProtocolError("MessageHeader RRPID disagrees with the payload",
                                "badMessageHeader")

    @staticmethod
    def _same_trans_ids(state: dict, found: bytes) -> None:
        """``found``: the TransIDs' DER (read raw) must be the one we signed in PInitRes."""
        if found != unh(state["trans_ids"]):
            raise ProtocolError("TransIDs differ from those signed in PInitRes", "unknownXID")

    def refuse(self, state, event, exc, now) -> Outcome:
        """A signed SET Error to the sender; the purchase stays where it was, the refusal noted."""
        out = refusal(state, event, exc, now, transaction=self.transaction_key(event),
                      signer=self.config.sig, suite=self.config.suite)
        if out.state is None:
            return out
        return replace(out, state=record(dict(out.state), now, "merchant", event.message_type,
                                         error_code(exc), str(exc)))

    def _status(self, type_name: str, state: dict, key: str, now: dt.datetime, *, to: str,
                rrpid: bytes, chall_c: bytes, in_reply_to: str | None) -> Send:
        """PRes or InqRes: S(M, PResData) with the status the state records."""
        data = msgs.p_res_data(state, rrpid=rrpid, chall_c=chall_c, bci_der=self._bci_der)
        body = S(self.config.sig, "PResData", data, suite=self.config.suite)
        wrapper = wrap(type_name, body, now=now, rrpid=rrpid, **self._ids(state, key))
        return Send(to, type_name, wrapper, in_reply_to or None)

    def _pres(self, state: dict, key: str, now: dt.datetime) -> Send:
        return self._status("PRes", state, key, now, to=state["cardholder"],
                            rrpid=unh(state["preq_rrpid"]),
                            chall_c=unh(state["pinit_req"]["chall_c"]),
                            in_reply_to=state.get("preq_mail_id"))

    # -- order and PInitReq, in either order -------------------------------------------------------
    def on_order(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        msgs.xid_octets(key)
        state = opened({**state, **msgs.check_order(event.args)}, key, now)
        if event.args.get("cardholder") and not state.get("cardholder"):
            state["cardholder"] = str(event.args["cardholder"])
        if state["state"] == "PARKED":  # the PInitReq's own step answered nothing: this does
            return self._answer_pinit(state, key, now, parked=True)
        return Outcome(key, enter(state, "ORDERED", now))

    @guarded
    def on_PInitReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        req = decode_native(pu.PInitReq, parsed.body)
        rrpid, lid_c, lid_m = (req[f] for f in ("rrpid", "local_id_c", "local_id_m"))
        if lid_m is None or lid_m.hex() != key:
            raise ProtocolError("PInitReq must name the purchase's XID as LID-M", "unknownXID")
        check_header(parsed, rrpid, lid_m, "lid_m")
        check_header(parsed, rrpid, lid_c, "lid_c")
        state = {**state, "cardholder": event.sender, "pinit_req": {
            "rrpid": h(rrpid), "lid_c": h(lid_c), "chall_c": h(req["chall_c"]),
            "language": req["language"], "brand_id": req["brand_id"],
            "mail_id": event.mail_id}}
        if state["state"] == "ORDERED":
            return self._answer_pinit(state, key, now)
        return Outcome(key, enter(opened(state, key, now), "PARKED", now))

    def _answer_pinit(self, state: dict, key: str, now: dt.datetime, *,
                      parked: bool = False) -> Outcome:
        pinit, xid, chall_m = state["pinit_req"], unh(key), fresh()
        tids = trans_ids(lid_c=unh(pinit["lid_c"]), lid_m=xid, xid=xid, p_req_date=utc(now),
                         language=pinit["language"])
        state = enter({**state, "trans_ids": tids.hex(), "chall_m": h(chall_m)}, "PINIT_SENT", now)
        data = msgs.pinit_res_data(state, chall_m=chall_m, pe_thumb=self._pe_thumb,
                                   bci_der=self._bci_der)
        body = S(self.config.sig, "PInitResData", data, certs=self.config.pinit_certs,
                 suite=self.config.suite)
        wrapper = wrap("PInitRes", body, now=now, rrpid=unh(pinit["rrpid"]),
                       **self._ids(state, key))
        answers = (state["cardholder"], unh(pinit["rrpid"]), "PInitReq") if parked else None
        return Outcome(key, state, sends=(Send(state["cardholder"], "PInitRes", wrapper,
                                               pinit["mail_id"] or None, answers),))

    # -- PReq -> AuthReq ---------------------------------------------------------------------------
    @guarded
    def on_PReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        if state["state"] != "PINIT_SENT":  # Chall-M is spent: never authorise twice
            raise ProtocolError(f"purchase is already {state['state']}; PReq refused",
                                "challengeMismatch")
        cfg = self.config
        outer = Reader(parsed.body, "PReq")
        if outer.peek() != 0xA0:
            raise ProtocolError("only dual-signed PReqs are accepted", "signatureRequired")
        pair = outer.enter(0xA0)
        outer.done()
        pi_dual_signed, oi_dual_signed = pair.raw(0x30), pair.raw(0x30)
        pair.done()
        view = dual.merchant_verify(pi_dual_signed, oi_dual_signed,
                                    validate=self._check(now, "card"), suite=cfg.suite)
        oi = decode_native(pu.OIData, view.oi_data, raw=("trans_ids", "hod"))
        rrpid = oi["rrpid"]
        self._same_rrpid(parsed, rrpid)
        self._same_trans_ids(state, oi["trans_ids"])
        check_echo("Chall-M", oi["chall_m"], unh(state["chall_m"]))
        check_echo("Chall-C", oi["chall_c"], unh(state["pinit_req"]["chall_c"]))
        order = Order(state["description"], state["amount"], state["currency"], state["amt_exp10"])
        hod2 = hod(order, oi["od_salt"], cfg.suite)
        if oi["hod"] != hod2:
            raise DigestMismatch("HOD does not match our order (description or amount differ)")
        auth_rrpid = fresh()
        state = {**state, "cardholder": event.sender, "preq_rrpid": h(rrpid),
                 "preq_mail_id": event.mail_id, "card_thumb": thumbprint(view.signed.signer).hex(),
                 "oi_data": view.oi_data.hex(), "auth_rrpid": h(auth_rrpid)}
        # the PI itself is not kept: it travels on in the AuthReq (whose bytes ``request`` keeps
        # for re-sends) and the merchant can read nothing in it (9.6 KB less per state write)
        data = msgs.auth_req_data(state, rrpid=auth_rrpid, mer_id=cfg.mer_id, now=now,
                                  h_oi_data=DD("OIData", view.oi_data, cfg.suite), hod2=hod2)
        body = EncB(cfg.sig, cfg.gateway_kex, "AuthReqTBS", data, "PI", msgs.pi(pi_dual_signed),
                    "AuthReqTBE", certs=cfg.request_certs, suite=cfg.suite)
        wrapper = wrap("AuthReq", body, now=now, rrpid=auth_rrpid, **self._ids(state, key))
        return self.request(enter(state, "AUTH_SENT", now), key, cfg.gateway, "AuthReq",
                            wrapper, now, auth_rrpid)

    # -- AuthRes -> PRes (+ CapReq) ----------------------------------------------------------------
    @guarded
    def on_AuthRes(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        cfg = self.config
        env = open_EncB(parsed.body, cfg.kex, "AuthResTBE", "AuthResTBS", "AuthResBaggage",
                        validate=self._check(now, "pgwy"), suite=cfg.suite)
        data = decode_native(gw.AuthResData, env.content, raw=_AUTH_RES_RAW)
        auth_rrpid = unh(state["auth_rrpid"])
        self._same_rrpid(parsed, auth_rrpid)
        check_echo("AuthTags RRPID", data["auth_tags"]["auth_rr_tags"]["rrpid"], auth_rrpid)
        self._same_trans_ids(state, data["auth_tags"]["trans_ids"])
        if data["mer_thumb"] != self._mer_thumb:
            raise ProtocolError("AuthRes names another merchant certificate", "thumbsMismatch")
        baggage = decode_native(gw.AuthResBaggage, env.baggage)
        state = {**state, **msgs.auth_result(data), "auth_date": iso(now)}
        self.take_bci(state, data, env.signed, now)
        state.pop("last", None)
        for name in ("cap_token", "acq_card_msg"):  # opaque: only the gateway/cardholder opens them
            if baggage[name] is not None:  # (their DER, untagged)
                state[name] = baggage[name].hex()
        approved = state["auth_code"] == "approved"
        state = enter(state, "AUTHORIZED" if approved else "DECLINED", now)
        pres = self._pres(state, key, now)
        if approved and cfg.auto_capture and state.get("cap_token"):
            out = self._capture(state, key, now, state["auth_amt"], cancel=("retry",))
            return replace(out, sends=(pres, *out.sends))
        return Outcome(key, state, sends=(pres,), timers=(CancelTimer("retry"),))

    # -- capture -> CapReq; CapRes -----------------------------------------------------------------
    def on_capture(self, state, event, now, shared) -> Outcome:
        minor = event.args.get("amount")
        minor = state["auth_amt"] if minor is None else minor
        if isinstance(minor, bool) or not isinstance(minor, int) or minor <= 0:
            raise ProtocolError("capture amount must be a positive integer in minor units")
        if not state.get("cap_token"):
            raise ProtocolError("the gateway sent no CapToken with this authorisation")
        return self._capture(dict(state), self.transaction_key(event), now, minor)

    def _capture(self, state: dict, key: str, now: dt.datetime, minor: int, cancel=()) -> Outcome:
        cfg, rrpid = self.config, fresh()
        state = {**state, "cap_rrpid": h(rrpid), "cap_req_amt": minor}
        data = msgs.cap_req_data(state, rrpid=rrpid, mer_id=cfg.mer_id, now=now, minor=minor)
        body = EncB(cfg.sig, cfg.gateway_kex, "CapReqTBS", data, "CapTokenSeq",
                    msgs.cap_token_seq(unh(state["cap_token"])), "CapReqTBE",
                    certs=cfg.request_certs, suite=cfg.suite)
        wrapper = wrap("CapReq", body, now=now, rrpid=rrpid, **self._ids(state, key))
        return self.request(enter(state, "CAP_SENT", now), key, cfg.gateway, "CapReq",
                            wrapper, now, rrpid, cancel=cancel)

    @guarded
    def on_CapRes(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        env = open_Enc(parsed.body, self.config.kex, "CapResTBE", "CapResData",
                       validate=self._check(now, "pgwy"), suite=self.config.suite)
        data = decode_native(cap.CapResData, env.content, raw=_CAP_RES_RAW)
        cap_rrpid = unh(state["cap_rrpid"])
        self._same_rrpid(parsed, cap_rrpid)
        check_echo("CapRRTags RRPID", data["cap_rr_tags"]["rrpid"], cap_rrpid)
        mine = unh(state["trans_ids"])
        item = next((i for i in data["cap_res_item_seq"] if i["trans_ids"] == mine), None)
        if item is None or item["auth_rrpid"] != unh(state["auth_rrpid"]):
            raise ProtocolError("CapRes has no item for this purchase", "unknownXID")
        payload = item["cap_res_payload"]
        code = payload["cap_code"]
        state = {**state, "cap_code": code, "cap_amt": payload["cap_amt"]["amount"]}
        state.pop("last", None)
        if code == "success":
            state = enter({**state, "cap_date": iso(now)}, "CAPTURED", now)
        else:
            state = enter(record(state, now, "gateway", "CapRes", code, f"capture refused: {code}"),
                          "AUTHORIZED", now)
        return Outcome(key, state, timers=(CancelTimer("retry"),))

    # -- InqReq -> InqRes --------------------------------------------------------------------------
    @guarded
    def on_InqReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        outer = Reader(parsed.body, "InqReq")
        if outer.peek() != 0xA0:
            raise ProtocolError("InqReq must be signed by the cardholder", "signatureRequired")
        signed = verify_S(der.seq(outer.value(0xA0)), "InqReqData",
                          validate=self._check(now, "card"), suite=self.config.suite)
        outer.done()
        if state.get("card_thumb") not in (None, thumbprint(signed.signer).hex()):
            raise ProtocolError("InqReq signed by another cardholder than the PReq",
                                "invalidCertificate")
        data = decode_native(pu.InqReqData, signed.content, raw=("trans_ids",))
        rrpid = data["rrpid"]
        self._same_rrpid(parsed, rrpid)
        self._same_trans_ids(state, data["trans_ids"])
        send = self._status("InqRes", state, key, now, to=event.sender, rrpid=rrpid,
                            chall_c=data["chall_c2"], in_reply_to=event.mail_id)
        return Outcome(key, {**state, "inquiries": state.get("inquiries", 0) + 1}, sends=(send,))

    # -- Error, retries ----------------------------------------------------------------------------
    def on_Error(self, state, event, now, shared) -> Outcome:
        """An Error naming our outstanding AuthReq/CapReq settles it; any other is recorded."""
        key = self.transaction_key(event)
        if state["state"] == START:
            return Outcome(key, None)
        try:
            err = read_error(unwrap(event, now), suite=self.config.suite)
        except SetmailError:
            return Outcome(key, dict(state))  # never answer an Error with an Error
        last = state.get("last") or {}
        if last and ((err.rrpid is not None and h(err.rrpid) == state.get("rrpid")) or (
                err.bad_wrapper is not None and last["der"].startswith(err.bad_wrapper.hex()))):
            return self._give_up(dict(state), key, now, f"{last['type']} refused by the gateway",
                                 err.code, by=event.sender)
        named = {state.get(f): m for f, m in (("auth_rrpid", "AuthReq"), ("cap_rrpid", "CapReq"),
                                              ("preq_rrpid", "PRes"))}
        about = named.get(h(err.rrpid), "?") if err.rrpid is not None else "?"
        return Outcome(key, record(dict(state), now, event.sender, about, err.code,
                                   f"{about} refused"))

    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        last = state.get("last")
        if last and state["attempts"] >= self.config.max_retries:
            return self._give_up(dict(state), self.transaction_key(event), now,
                                 f"no answer to {last['type']} after {state['attempts']} re-sends",
                                 "noReply", by="merchant")
        return super().on_timer_retry(state, event, now, shared)

    def _give_up(self, state: dict, key: str, now: dt.datetime, reason: str, code: str, *,
                 by: str) -> Outcome:
        """No authorisation: PRes orderRejected to the cardholder.  No capture: AUTHORIZED again
        (the merchant may ask again with ``capture``)."""
        message = state.pop("last")["type"]
        state = record({**state, "failure": reason}, now, by, message, code, reason)
        timers = (CancelTimer("retry"),)
        if message == "CapReq":
            return Outcome(key, enter(state, "AUTHORIZED", now), timers=timers)
        state = enter(state, "REJECTED", now)
        return Outcome(key, state, sends=(self._pres(state, key, now),), timers=timers)
