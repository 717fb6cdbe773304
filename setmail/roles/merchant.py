"""The merchant's side of a SET purchase (docs/purchase.md), sans-I/O.

    order (shop front-end) + PInitReq -> PInitRes = S(M, PInitResData) + M's and P's certificates
    PReq (dual signature)             -> AuthReq  = EncB(M, P, AuthReqData, PI)  (PI unchanged)
    AuthRes = EncB(P, M, AuthResData, AuthResBaggage) -> PRes = S(M, PResData)  [+ CapReq]
    capture                           -> CapReq   = EncB(M, P, CapReqData, CapTokenSeq)
    CapRes  = Enc(P, M, CapResData)
    InqReq  = S(C, InqReqData)        -> InqRes   = S(M, PResData)
    authorize, void, refund, refund_reverse, capture_reverse, batch: the lifecycle after the
    authorisation (merchant_split.py, merchant_adjust.py, merchant_batch.py)

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
gateway's validated path and never go back (shared state "merchant", its "brand" part).  Purchases nobody continues
expire (``expire_after``), authorisations nobody captures too (``auth_expiry``).

Transaction key = XID hex, from the header (``xid``, else ``lid_m``: the XID doubles as LID-M,
D-131); commands name it in ``args["xid"]``; timers carry ``{"transaction": key}``.

Commands (amounts in minor units): ``order`` {xid, description, amount, currency (ISO 4217
numeric), amt_exp10 (default -2), cardholder (address, required), ship_now (optional: authorise
this much first), instalments N or recurring {days, until YYYYMMDD} (optional terms, in HOD)};
``capture`` {xid, amount (default: what is authorised and not captured)}; ``authorize`` {xid,
amount}; ``void`` {xid, amount (what stays authorised; 0/absent: all of it)}; ``refund`` {xid,
amount (default: what is still refundable)}; ``refund_reverse`` {xid}; ``capture_reverse`` {xid};
``batch`` {operation open|close|query, batch_id, ref} (transaction ``batches``); ``cancel``
{xid, reason} before the PReq (CANCELLED; ``merchant_status``).  world.toml
``sale``: every AuthReq is a sale (CaptureNow); ``auto_close``: close a batch that long after its
first item.

State (what ``setmail tx show`` prints): state, xid, cardholder, description, amount, currency,
amt_exp10, ship_now, terms, created, dates (per state entered), completion, auth_code, auth_amt
(authorised now, all parts), approval_code, iso_code/iso_text (ResponseData.logRefID),
auth_expires, cap_code, cap_amt = captured (now, all captures), captures / credits (each {rrpid,
amount, date, batch_id, seq, reversed}), credited, result (the last request's end: {request,
rrpid, code, amount, at}), advice, base (the state an ADJUSTING one returns to), failure,
expired {at, reason}, refusals (list of {at, by, message, code, reason}, bounded) and the protocol
values (offers, pinit_req, trans_ids, chall_m, preq_rrpid, card_thumb, oi_data, auth_req_data,
auth_res_payload, cap_token, auth_token, acq_card_msg: DER as hex; ``out``: the Exchange).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from functools import cached_property

from cryptography import x509

from setmail.asn1 import purchase as pu
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.asn1.codec.strict import decode_native
from setmail.crypto import dual
from setmail.crypto.cms import Identity
from setmail.crypto.operators import DD, EncB, S
from setmail.crypto.reader import Reader
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import DigestMismatch, ProtocolError
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.roles import merchant_msgs as msgs
from setmail.roles.base import START, Inbound, Outcome, Role, Send, SetTimer, TimerFired
from setmail.roles.certs import path_check
from setmail.roles.exchange import Exchange, pin
from setmail.roles.merchant_adjust import AdjustSide
from setmail.roles.merchant_batch import BATCH_LID, BATCHES, SHARED_KEY, BatchSide
from setmail.roles.merchant_gateway import GatewaySide
from setmail.roles.merchant_msgs import ADJUSTING, STANDING, enter, opened, record, utc
from setmail.roles.merchant_split import SplitSide
from setmail.roles.merchant_status import StatusSide
from setmail.roles.purchase_msgs import hod, trans_ids
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
    ``auth_expiry``: how long an authorisation may wait for its capture (the gateway's too);
    ``sale``: authorise and capture in one AuthReq (CaptureNow); ``auto_close``: close a batch
    that long after its first item (zero: never)."""

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
    sale: bool = False
    auto_close: dt.timedelta = dt.timedelta(0)

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
#: the gateway's answers (absorbed wherever nobody waits for them)
_ANSWERS = ("AuthRes", "CapRes", "AuthRevRes", "CredRes", "CredRevRes", "CapRevRes")
#: ADJUSTING state -> the answer it waits for (any of them may also end VOIDED)
_WAITS = {"CAP_SENT": "CapRes", "REAUTH_SENT": "AuthRes", "AUTHREV_SENT": "AuthRevRes",
          "CRED_SENT": "CredRes", "CREDREV_SENT": "CredRevRes", "CAPREV_SENT": "CapRevRes"}
#: what may be asked after the authorisation, in which states
_ASKS = {"AUTHORIZED": ("capture", "authorize", "void"),
         "CAPTURED": ("capture", "authorize", "void", "refund", "capture_reverse"),
         "PARTLY_REFUNDED": ("capture", "authorize", "refund", "refund_reverse"),
         "REFUNDED": ("capture", "authorize", "refund", "refund_reverse")}
_ASKED = {"capture": "CAP_SENT", "authorize": "REAUTH_SENT", "void": "AUTHREV_SENT",
          "refund": "CRED_SENT", "refund_reverse": "CREDREV_SENT",
          "capture_reverse": "CAPREV_SENT"}


def _quiet(state: str, **events) -> dict:
    """What every purchase state absorbs: an answer nobody waits for, an Error (judged against
    the outstanding request, if any), a stale timer, and the batch timers that only borrow the
    purchase's transaction (merchant_batch.py)."""
    return {**{a: state for a in _ANSWERS}, "Error": state, "timer:retry": state,
            "timer:expire": state, "timer:auto_close": state, "timer:batch_retry": state,
            **events}


def _after_pinit(state: str, **events) -> dict:
    """Once PInitRes went out: InqReq (answered), PInitReq and PReq (absorbed unless taken)."""
    return _quiet(state, **{"InqReq": state, "PInitReq": state, "PReq": state, **events})


def _adjusting(state: str) -> dict:
    """An ADJUSTING state: its answer, an Error or the end of the re-sends leaves it for where
    the purchase's amounts (or the refusal) say."""
    ends = (state, *STANDING, *(("VOIDED",) if state == "AUTHREV_SENT" else ()))
    return _after_pinit(state, **{_WAITS[state]: ends, "Error": ends, "timer:retry": ends})


class Merchant(StatusSide, GatewaySide, AdjustSide, SplitSide, BatchSide, Role):
    name = "merchant"
    shared_key = SHARED_KEY
    shared_parts = ("batches/*/items",)
    BATCHES = BATCHES
    TRANSITIONS = {
        START: {"order": "ORDERED", "PInitReq": "PARKED", **{a: START for a in _ANSWERS},
                "Error": (START, "BATCHES"), "batch": "BATCHES",
                "BatchAdminRes": (START, "BATCHES")},
        "ORDERED": _quiet("ORDERED", PInitReq=("PINIT_SENT", "ORDERED"), cancel="CANCELLED",
                          **{"timer:expire": "EXPIRED"}),
        "PARKED": _quiet("PARKED", order="PINIT_SENT", PInitReq="PARKED", cancel="CANCELLED",
                         **{"timer:expire": "EXPIRED"}),
        "PINIT_SENT": _after_pinit("PINIT_SENT", PReq=("AUTH_SENT", "PINIT_SENT"),
                                   cancel="CANCELLED", **{"timer:expire": "EXPIRED"}),
        "CANCELLED": _after_pinit("CANCELLED", cancel="CANCELLED"),
        "AUTH_SENT": _after_pinit("AUTH_SENT", cancel="AUTH_SENT",
                                  AuthRes=("AUTHORIZED", "DECLINED", "CAP_SENT", "CAPTURED",
                                           "EXPIRED", "AUTH_SENT"),
                                  Error=("AUTH_SENT", "REJECTED"),
                                  **{"timer:retry": ("AUTH_SENT", "REJECTED")}),
        **{s: _after_pinit(s, **{c: (_ASKED[c], s) for c in cs}) for s, cs in _ASKS.items()},
        **{s: _adjusting(s) for s in ADJUSTING},
        "EXPIRED": _after_pinit("EXPIRED", capture="EXPIRED",
                                authorize=("REAUTH_SENT", "EXPIRED")),
        **{s: _after_pinit(s) for s in ("DECLINED", "REJECTED", "VOIDED")},
        "BATCHES": {"batch": "BATCHES", "BatchAdminRes": "BATCHES", "Error": "BATCHES",
                    "timer:batch_retry": "BATCHES"},
    }
    TRANSITIONS["AUTHORIZED"]["timer:expire"] = ("EXPIRED", "AUTHORIZED")

    def __init__(self, config: MerchantConfig):
        self.config = config
        common = {"retry_after": config.retry_after, "max_retries": config.max_retries,
                  "nudge_after": config.nudge_after}
        self.exchange = Exchange(**common)  # the purchase's requests, one at a time
        self.admin = Exchange(**common, slot="admin", timer="batch_retry")  # BatchAdminReq
        self._gateway_pin = pin(subject=config.gateway_kex)
        self._mer_thumb = thumbprint(config.sig.cert)
        self._pe_thumb = thumbprint(config.gateway_kex)
        self._bci_der = None if config.bci is None else config.bci.dump()

    def transaction_key(self, event) -> str:
        if isinstance(event, Inbound):
            if event.message_type == "BatchAdminRes":
                return BATCHES
            ids = header_ids(event)
            if ids.get("lid_m") == BATCH_LID and not ids.get("xid"):
                return BATCHES  # an Error repeating a BatchAdminReq's header
            xid = ids.get("xid") or ids.get("lid_m")
            return xid.hex() if xid else "unroutable"  # START refuses it; nothing is stored
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        if event.name == "batch":
            return BATCHES
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
        hod2 = hod(msgs.order_of(state), oi["od_salt"], cfg.suite)
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
                                  minor=msgs.next_amount(state),
                                  h_oi_data=DD("OIData", view.oi_data, cfg.suite), hod2=hod2,
                                  sale=cfg.sale)
        state["auth_req_data"] = data.hex()  # what a void names (AuthRevReqData)
        body = EncB(cfg.sig, cfg.gateway_kex, "AuthReqTBS", data, "PI", msgs.pi(pi_dual_signed),
                    "AuthReqTBE", certs=cfg.request_certs, suite=cfg.suite)
        wrapper = wrap("AuthReq", body, now=now, rrpid=auth_rrpid,
                       **self._ids(taken["lid_c"], key))
        out = self.exchange.ask(enter(state, "AUTH_SENT", now), key, to=cfg.gateway,
                                type_name="AuthReq", der=wrapper, rrpid=auth_rrpid,
                                expects=("AuthRes",), pin_=self._gateway_pin, now=now,
                                cancel=("expire",))
        return replace(out, peer=state["cardholder"])
