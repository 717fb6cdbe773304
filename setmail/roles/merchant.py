"""The merchant's side of a SET purchase (docs/purchase.md), sans-I/O.

    order (shop front-end) + PInitReq -> PInitRes = S(M, PInitResData) + M's and P's certificates
    PReq (dual signature)             -> AuthReq  = EncB(M, P, AuthReqData, PI)  (PI unchanged)
    AuthRes = EncB(P, M, AuthResData, AuthResBaggage) -> PRes = S(M, PResData)  [+ CapReq]
    capture                           -> CapReq   = EncB(M, P, CapReqData, CapTokenSeq)
    CapRes  = Enc(P, M, CapResData)
    InqReq  = S(C, InqReqData)        -> InqRes   = S(M, PResData)

Why the checks: the merchant authorises only what it sold, once.  A PReq must carry the
TransIDs and Chall-M it signed in a PInitRes and that PInitReq's Chall-C (freshness), and a HOD
recomputed from the merchant's *own* order record; after that the purchase is past PINIT_SENT and
any other PInitReq or PReq is absorbed.  The merchant never holds PAN, expiry or PANSecret: they
travel sealed for the gateway inside the PI, forwarded as opaque DER.

Against the mail attacker (roles/base.py): every answer to the cardholder goes to the address of
the ``order`` (the shop front-end), never to a From; AuthReq/CapReq go to the configured gateway
through an ``Exchange`` pinned to *that* gateway (the subject of its key-exchange certificate), so
an AuthRes, CapRes or Error signed by any other gateway changes nothing, and only an Error signed
by it naming our exact bytes ends a request.  Each different PInitReq gets its own challenge
(at most ``MAX_OFFERS``; none displaces another, ``merchant_msgs.offer``), so a forged one cannot
take or block the purchase: the dual-signed PReq says which one the cardholder answered.  The
cardholder certificate that signed the PReq is pinned for InqReqs.  BCIs are verified on the
gateway's validated path and never go back (shared state "brand").  Purchases nobody continues
expire (``expire_after``), authorisations nobody captures too (``auth_expiry``).

Transaction key = XID hex, from the header (``xid``, else ``lid_m``: the XID doubles as LID-M,
D-131); commands name it in ``args["xid"]``; timers carry ``{"transaction": key}``.

Commands: ``order`` {xid, description, amount (minor units), currency (ISO 4217 numeric),
amt_exp10 (default -2), cardholder (address, required)}; ``capture`` {xid, amount (optional, minor
units; default the authorised amount)}.  State (what ``setmail tx show`` prints): state, xid,
cardholder, description, amount, currency, amt_exp10, created, dates (per state entered),
completion, auth_code, auth_amt, approval_code, iso_code/iso_text (ResponseData.logRefID),
auth_expires, cap_code, cap_amt, failure, expired {at, reason}, refusals (list of {at, by,
message, code, reason}, bounded) and the protocol values (offers, pinit_req, trans_ids, chall_m,
preq_rrpid, card_thumb, oi_data, cap_token, acq_card_msg: DER as hex; ``out``: the Exchange).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from functools import cached_property

from cryptography import x509

from setmail.asn1 import purchase as pu
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.asn1.strict import decode_native
from setmail.crypto import der, dual
from setmail.crypto.cms import Identity
from setmail.crypto.operators import DD, EncB, S, verify_S
from setmail.crypto.reader import Reader
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import DigestMismatch, ProtocolError
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.roles import merchant_msgs as msgs
from setmail.roles.base import START, Inbound, Outcome, Role, Send, SetTimer, TimerFired
from setmail.roles.brand import SHARED_KEY
from setmail.roles.certs import path_check
from setmail.roles.exchange import Exchange, pin
from setmail.roles.merchant_gateway import GatewaySide
from setmail.roles.merchant_msgs import enter, expired, opened, record, utc
from setmail.roles.purchase_msgs import Order, hod, trans_ids
from setmail.roles.refusal import error_code, guarded, refusal
from setmail.roles.wire import check_echo, check_header, h, header_ids, unh, unwrap, wrap

#: a refused request is answered with an Error at most this many times per purchase (a flood
#: of forgeries naming a genuine XID must not become a flood of signed mail to the cardholder)
MAX_ERRORS = 8


@dataclass(frozen=True)
class MerchantConfig:
    """``sig``/``kex``: the merchant's identities (chain = the MCA chain without the root);
    ``gateway`` (address) + ``gateway_kex`` + ``gateway_chain`` (PCA chain without the root): its
    acquirer's gateway, sent in PInitRes, used to envelope AuthReq/CapReq and the *only* gateway
    whose answers count; ``bci``: the brand's current BrandCRLIdentifier (None: omitted).
    ``expire_after``: how long an ORDERED/PARKED/PINIT_SENT purchase waits for the cardholder;
    ``auth_expiry``: how long an authorisation may wait for its capture (the gateway's too)."""

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
    expire_after: dt.timedelta = dt.timedelta(days=1)
    auth_expiry: dt.timedelta = dt.timedelta(days=7)
    nudge_after: dt.timedelta = dt.timedelta(seconds=60)

    @cached_property
    def request_certs(self) -> tuple[x509.Certificate, ...]:
        """What AuthReq/CapReq carry: our signature and key-exchange certificates, MCA chain."""
        return (self.sig.cert, self.kex.cert, *self.sig.chain)

    @cached_property
    def pinit_certs(self) -> tuple[x509.Certificate, ...]:
        """PInitRes also carries the gateway's key-exchange certificate the wallet encrypts to."""
        return (*self.request_certs, self.gateway_kex, *self.gateway_chain)


#: states a purchase is still taking its cardholder's first messages in
_OPEN = ("ORDERED", "PARKED", "PINIT_SENT")
_REQUESTS = ("PInitReq", "PReq", "InqReq")


def _quiet(state: str, **events) -> dict:
    """What every state absorbs: an answer nobody waits for (AuthRes, CapRes), an Error (judged
    against the outstanding request, if any), a stale timer."""
    return {"AuthRes": state, "CapRes": state, "Error": state, "timer:retry": state,
            "timer:expire": state, **events}


def _after_pinit(state: str, **events) -> dict:
    """Once PInitRes went out: InqReq (answered), PInitReq and PReq (absorbed unless taken)."""
    return _quiet(state, **{"InqReq": state, "PInitReq": state, "PReq": state, **events})


class Merchant(GatewaySide, Role):
    name = "merchant"
    shared_key = SHARED_KEY
    TRANSITIONS = {
        START: {"order": "ORDERED", "PInitReq": "PARKED", "AuthRes": START, "CapRes": START,
                "Error": START},
        "ORDERED": _quiet("ORDERED", PInitReq=("PINIT_SENT", "ORDERED"),
                          **{"timer:expire": "EXPIRED"}),
        "PARKED": _quiet("PARKED", order="PINIT_SENT", PInitReq="PARKED",
                         **{"timer:expire": "EXPIRED"}),
        "PINIT_SENT": _after_pinit("PINIT_SENT", PReq=("AUTH_SENT", "PINIT_SENT"),
                                   **{"timer:expire": "EXPIRED"}),
        "AUTH_SENT": _after_pinit("AUTH_SENT",
                                  AuthRes=("AUTHORIZED", "DECLINED", "CAP_SENT", "EXPIRED",
                                           "AUTH_SENT"),
                                  Error=("AUTH_SENT", "REJECTED"),
                                  **{"timer:retry": ("AUTH_SENT", "REJECTED")}),
        "AUTHORIZED": _after_pinit("AUTHORIZED", capture=("CAP_SENT", "AUTHORIZED"),
                                   **{"timer:expire": ("EXPIRED", "AUTHORIZED")}),
        "CAP_SENT": _after_pinit("CAP_SENT",
                                 CapRes=("CAPTURED", "AUTHORIZED", "EXPIRED", "CAP_SENT"),
                                 Error=("CAP_SENT", "AUTHORIZED", "EXPIRED"),
                                 **{"timer:retry": ("CAP_SENT", "AUTHORIZED", "EXPIRED")}),
        "EXPIRED": _after_pinit("EXPIRED", capture="EXPIRED"),
        **{s: _after_pinit(s) for s in ("DECLINED", "CAPTURED", "REJECTED")},
    }

    def __init__(self, config: MerchantConfig):
        self.config = config
        self.exchange = Exchange(retry_after=config.retry_after, max_retries=config.max_retries,
                                 nudge_after=config.nudge_after)
        self._gateway_pin = pin(subject=config.gateway_kex)
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
    @staticmethod
    def _ids(lid_c: str, key: str) -> dict:
        """Header message ids of every purchase message: {lid_c, lid_m, xid} (LID-M = XID)."""
        xid = unh(key)
        return {"lid_c": unh(lid_c), "lid_m": xid, "xid": xid}

    def _check(self, now: dt.datetime, cert_type: str):
        return path_check(self.config.trust, now, cert_type, crls=self.config.crls)

    def _expire_timer(self, key: str, due: dt.datetime) -> SetTimer:
        return SetTimer("expire", due, {"transaction": key})

    @staticmethod
    def _same_rrpid(parsed, rrpid: bytes) -> None:
        if parsed.rrpid != rrpid:
            raise ProtocolError("MessageHeader RRPID disagrees with the payload",
                                "badMessageHeader")

    def refuse(self, state, event, exc, now) -> Outcome:
        """The purchase stays where it was, the refusal noted.  A refused request is answered
        with a signed Error to the order's cardholder (never to the From; at most MAX_ERRORS per
        purchase); a refused response is never answered."""
        errors = state.get("errors_sent", 0)
        to = state.get("cardholder") if (event.message_type in _REQUESTS
                                         and errors < MAX_ERRORS) else None
        out = refusal(state, event, exc, now, transaction=self.transaction_key(event), to=to,
                      signer=self.config.sig, suite=self.config.suite)
        if out.state is None:
            return out
        new = record(dict(out.state), now, "merchant", event.message_type, error_code(exc),
                     str(exc))
        if out.sends:
            new["errors_sent"] = errors + 1
        return replace(out, state=new)

    @staticmethod
    def _absorb(state, key: str, why: str) -> Outcome:
        """Not accepted, not answered: a repeat, or input this purchase is past."""
        return Outcome(key, None if state["state"] == START else dict(state), refused=why)

    def _status(self, type_name: str, state: dict, key: str, now: dt.datetime, *, tids: bytes,
                lid_c: str, rrpid: bytes, chall_c: bytes, in_reply_to: str | None,
                answers: str | None = None) -> Send:
        """PRes or InqRes to the order's cardholder: S(M, PResData) with the state's status."""
        data = msgs.p_res_data(state, trans_ids=tids, rrpid=rrpid, chall_c=chall_c,
                               bci_der=self._bci_der)
        body = S(self.config.sig, "PResData", data, suite=self.config.suite)
        wrapper = wrap(type_name, body, now=now, rrpid=rrpid, **self._ids(lid_c, key))
        return Send(state["cardholder"], type_name, wrapper, in_reply_to or None, answers)

    def _pres(self, state: dict, key: str, now: dt.datetime) -> Send:
        """The PRes answering the PReq; it joins the PReq's dedupe record (``answers``), so a
        re-sent PReq gets it again."""
        pinit = state["pinit_req"]
        return self._status("PRes", state, key, now, tids=unh(state["trans_ids"]),
                            lid_c=pinit["lid_c"], rrpid=unh(state["preq_rrpid"]),
                            chall_c=unh(pinit["chall_c"]), in_reply_to=state.get("preq_mail_id"),
                            answers=state.get("preq_digest"))

    # -- order and PInitReq, in either order -------------------------------------------------------
    def on_order(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        msgs.xid_octets(key)
        state = opened({**state, **msgs.check_order(event.args)}, key, now)
        timers = (self._expire_timer(key, now + self.config.expire_after),)
        if state["state"] == "PARKED":  # the PInitReqs' own steps answered nothing: this does
            offers = [self._answered(o, key, now) for o in state["offers"]]
            state = enter({**state, "offers": offers}, "PINIT_SENT", now)
            sends = tuple(self._pinit_res(state, o, key, now, parked=True) for o in offers)
            return Outcome(key, state, sends=sends, timers=timers)
        return Outcome(key, enter(state, "ORDERED", now), timers=timers)

    @guarded
    def on_PInitReq(self, state, event, now, shared) -> Outcome:
        """Answered in ORDERED and PINIT_SENT (each different PInitReq its own challenge, none
        displacing another), parked before the order; absorbed once a PReq was taken."""
        key, current = self.transaction_key(event), state["state"]
        if current not in (START, *_OPEN) and "preq_rrpid" in state:
            return self._absorb(state, key, f"PInitReq for a purchase already {current}")
        parsed = unwrap(event, now)
        req = decode_native(pu.PInitReq, parsed.body)
        rrpid, lid_c, lid_m = (req[f] for f in ("rrpid", "local_id_c", "local_id_m"))
        if lid_m is None or lid_m.hex() != key:
            raise ProtocolError("PInitReq must name the purchase's XID as LID-M", "unknownXID")
        check_header(parsed, rrpid, lid_m, "lid_m")
        check_header(parsed, rrpid, lid_c, "lid_c")
        if current not in (START, *_OPEN):  # expired before any PReq: tell the cardholder
            raise ProtocolError(f"purchase {current.lower()}", "unknownXID")
        new, offers = msgs.offer(req, event.digest, event.mail_id), state.get("offers", [])
        if any(msgs.same_offer(new, o) for o in offers):
            return self._absorb(state, key, "repeat of a PInitReq already taken (other header)")
        if len(offers) >= msgs.MAX_OFFERS:
            return self._absorb(state, key, f"more than {msgs.MAX_OFFERS} different PInitReqs")
        if current in (START, "PARKED"):
            state = opened({**state, "offers": [*offers, new]}, key, now)
            timers = () if current == "PARKED" else (
                self._expire_timer(key, now + self.config.expire_after),)
            return Outcome(key, enter(state, "PARKED", now), timers=timers)
        new = self._answered(new, key, now)
        state = {**state, "offers": [*offers, new]}
        if current == "ORDERED":
            state = enter(state, "PINIT_SENT", now)
        return Outcome(key, state, sends=(self._pinit_res(state, new, key, now),))

    @staticmethod
    def _answered(offer: dict, key: str, now: dt.datetime) -> dict:
        """The offer with the TransIDs and Chall-M its PInitRes signs."""
        xid = unh(key)
        tids = trans_ids(lid_c=unh(offer["lid_c"]), lid_m=xid, xid=xid, p_req_date=utc(now),
                         language=offer["language"])
        return {**offer, "trans_ids": tids.hex(), "chall_m": h(fresh())}

    def _pinit_res(self, state: dict, offer: dict, key: str, now: dt.datetime, *,
                   parked: bool = False) -> Send:
        data = msgs.pinit_res_data(offer, chall_m=unh(offer["chall_m"]), pe_thumb=self._pe_thumb,
                                   bci_der=self._bci_der)
        body = S(self.config.sig, "PInitResData", data, certs=self.config.pinit_certs,
                 suite=self.config.suite)
        wrapper = wrap("PInitRes", body, now=now, rrpid=unh(offer["rrpid"]),
                       **self._ids(offer["lid_c"], key))
        # answered by the order's step: the PInitReq's dedupe record learns of this answer
        return Send(state["cardholder"], "PInitRes", wrapper, offer["mail_id"] or None,
                    offer["digest"] if parked else None)

    # -- PReq -> AuthReq ---------------------------------------------------------------------------
    @guarded
    def on_PReq(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        if state["state"] != "PINIT_SENT" and "preq_rrpid" in state:  # Chall-M is spent
            return self._absorb(state, key, f"PReq for a purchase already {state['state']}")
        parsed = unwrap(event, now)
        if state["state"] != "PINIT_SENT":  # expired before any PReq: tell the cardholder
            raise ProtocolError(f"purchase {state['state'].lower()}", "unknownXID")
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
        taken = msgs.find_offer(state.get("offers", []), oi["trans_ids"], oi["chall_m"])
        check_echo("Chall-M", oi["chall_m"], unh(taken["chall_m"]))
        check_echo("Chall-C", oi["chall_c"], unh(taken["chall_c"]))
        order = Order(state["description"], state["amount"], state["currency"], state["amt_exp10"])
        hod2 = hod(order, oi["od_salt"], cfg.suite)
        if oi["hod"] != hod2:
            raise DigestMismatch("HOD does not match our order (description or amount differ)")
        auth_rrpid = fresh()
        state = {k: v for k, v in state.items() if k != "offers"}  # the other offers are dead
        state.update(pinit_req=taken, trans_ids=taken["trans_ids"], chall_m=taken["chall_m"],
                     preq_rrpid=h(rrpid), preq_mail_id=event.mail_id,
                     preq_digest=event.digest.hex(),
                     card_thumb=thumbprint(view.signed.signer).hex(),
                     oi_data=view.oi_data.hex(), auth_rrpid=h(auth_rrpid))
        # the PI itself is not kept: it travels on in the AuthReq (whose bytes the exchange keeps
        # for re-sends) and the merchant can read nothing in it
        data = msgs.auth_req_data(state, rrpid=auth_rrpid, mer_id=cfg.mer_id, now=now,
                                  h_oi_data=DD("OIData", view.oi_data, cfg.suite), hod2=hod2)
        body = EncB(cfg.sig, cfg.gateway_kex, "AuthReqTBS", data, "PI", msgs.pi(pi_dual_signed),
                    "AuthReqTBE", certs=cfg.request_certs, suite=cfg.suite)
        wrapper = wrap("AuthReq", body, now=now, rrpid=auth_rrpid,
                       **self._ids(taken["lid_c"], key))
        out = self.exchange.ask(enter(state, "AUTH_SENT", now), key, to=cfg.gateway,
                                type_name="AuthReq", der=wrapper, rrpid=auth_rrpid,
                                expects=("AuthRes",), pin_=self._gateway_pin, now=now,
                                cancel=("expire",))
        return replace(out, peer=state["cardholder"])

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
        taken = state.get("pinit_req") if "trans_ids" in state else None
        if taken is None or data["trans_ids"] != unh(state["trans_ids"]):
            taken = msgs.find_offer(state.get("offers", []), data["trans_ids"], None)
        send = self._status("InqRes", state, key, now, tids=data["trans_ids"],
                            lid_c=taken["lid_c"], rrpid=rrpid, chall_c=data["chall_c2"],
                            in_reply_to=event.mail_id)
        return Outcome(key, {**state, "inquiries": state.get("inquiries", 0) + 1}, sends=(send,),
                       peer=state["cardholder"])

    # -- expiry ---------------------------------------------------------------------------------------
    def on_timer_expire(self, state, event, now, shared) -> Outcome:
        """Nobody continued this purchase in time: EXPIRED, with why (its challenges are gone);
        an authorisation nobody captured lapses.  In other states the timer is stale."""
        key, current, cfg = self.transaction_key(event), state["state"], self.config
        waited = f"{cfg.expire_after.total_seconds() / 3600:g} h"
        why = {"ORDERED": f"no PInitReq within {waited} of the order",
               "PARKED": f"no order within {waited} of the PInitReq",
               "PINIT_SENT": f"no PReq within {waited} of the order"}.get(current)
        if why is not None:
            return Outcome(key, expired({k: v for k, v in state.items() if k != "offers"},
                                        now, why))
        if current == "AUTHORIZED":
            state, timers = self._authorized(dict(state), key, now)
            return Outcome(key, state, timers=timers)
        return Outcome(key, dict(state))
