"""A SET certificate authority as a role: Cardholder CA ("cca"), Merchant CA ("mca") or Payment
Gateway CA ("pca") answering registration requests (set-protocol.md §6).

    cca: CardCInitReq -> CardCInitRes; RegFormReq -> RegFormRes; CertReq -> CertRes (EncK);
    mca/pca: Me-AqCInitReq -> Me-AqCInitRes; CertReq -> CertRes (S, both certificates);
    all: CertInqReq -> CertInqRes while (or after) a request is pended.

**Whom it answers.**  Only members of the world's directory of the kind it certifies (cca:
cardholders, mca: merchants, pca: gateways), and always at the member's directory address: the
From picks *which* member a request claims to come from, never where the answer goes.  A
stranger's mail is refused without a reply (``Outcome.refused``).  The transaction key is
``member address|LID-EE hex``.  What a From-forger can and cannot do: docs/pki.md.

**What the Isabelle proofs rely on** (§9.2): a key is certified at most once (shared state
``certified``, SHA-256 of each SubjectPublicKeyInfo, ``shared_key = "ca"``); a CertReq carries a
Chall-CA issued to *its* registration and unused (``state["challenges"]``: Chall-CA hex ->
{"rrpid", "used"}; a request's re-sends, even with an altered clear header, get the same one; at
most ``MAX_CHALLENGES`` per registration); proof of possession: the CertReq is signed by the key it
asks to certify (D-302).  Whether this member may have this certificate: ``roles/ca_issue.py``;
renewals (the same messages, SET's renewal request types): ``roles/ca_renewal.py``.

**Refusals.** Malformed, inauthentic or stale input gets a SET Error signed by the CA, naming the
refused bytes (refusedHash, D-134), sent to the member's directory address, and leaves the
transaction as it was; an authentic, fresh request whose *content* is refused gets a CertRes with
a refusing CertStatusCode and ``eeMessage`` (D-305).  Errors are never answered.

**Expiry.** A registration still waiting (INIT_SENT, FORM_SENT, PENDING) ``expire_after`` after
it began (or was pended) becomes EXPIRED (timer ``expire``): its challenges and any pended
result (certificates, back key) go with it, and ``state["expired"]`` says why.  The back key and
NonceCCA of a pended request are kept under ``state["secret"]`` only until the certificate is
released (or the registration expires): the agent wipes them from its files then.

Configuration: ``CAConfig`` (``roles/ca_issue.py``).
"""
from __future__ import annotations

import datetime as dt
import functools

from setmail.asn1 import certmsgs as cm
from setmail.asn1.base import decode
from setmail.asn1.purchase import PANOnly
from setmail.crypto.operators import EncK, S, open_EXH, verify_S
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.pki import thumbprint
from setmail.roles.base import START, CancelTimer, Outcome, Role, Send, SetTimer, TimerFired
from setmail.roles.ca_issue import (CERTIFIES, MAX_CHALLENGES, REQUEST_TYPES, CAConfig, Refused,
                                    certify, challenge_for, who_may_ask)
from setmail.roles.ca_renewal import RENEWAL_TYPES, check_renewal, fields_for, open_cert_req
from setmail.roles.certs import check_pop, load_cert_hex, spki
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import check_header, h, header_ids, unh, unwrap, wrap


#: states in which a registration waits for the requester's next message (and may expire)
WAITING = ("INIT_SENT", "FORM_SENT", "PENDING")
_LATE = ("ISSUED", "PENDING", "REFUSED")
_AFTER_CERT_REQ = ("ISSUED", "PENDING", "REFUSED", "FORM_SENT")
_INITS = ("CardCInitReq", "Me-AqCInitReq")


def _expiring(table: dict) -> dict:
    """Every state takes Errors (absorbed) and the expiry timer (EXPIRED if still waiting)."""
    return {s: {**events, "Error": s, "timer:expire": "EXPIRED" if s in WAITING else s}
            for s, events in table.items()}


def _table(init: str, first: str, form: str, extra: dict) -> dict:
    """``init``: the first request; ``form``: the request a FORM_SENT registration repeats."""
    requests = (*dict.fromkeys((init, form)), "CertReq", "CertInqReq")
    return _expiring({
        START: {init: (first, START), "CertReq": START},
        **extra,
        "FORM_SENT": {form: "FORM_SENT", "CertReq": _AFTER_CERT_REQ},
        **{s: {"CertReq": s, "CertInqReq": tuple(dict.fromkeys(("ISSUED", s)))} for s in _LATE},
        "EXPIRED": dict.fromkeys(requests, "EXPIRED"),
    })


CCA_TRANSITIONS = _table("CardCInitReq", "INIT_SENT", "RegFormReq", {"INIT_SENT": {
    "CardCInitReq": "INIT_SENT", "RegFormReq": ("FORM_SENT", "INIT_SENT")}})
# Merchant and Payment Gateway CAs: no RegForm round (the form is in the init)
EE_TRANSITIONS = _table("Me-AqCInitReq", "FORM_SENT", "Me-AqCInitReq", {})


def members_only(handler):
    """A request from an address that is no member of the kind this CA certifies, one for a
    registration that does not exist (anything but an init at START) and one for an expired
    registration are refused without a reply; a member's bad input in a registration gets a
    signed Error at its directory address (``guarded``)."""
    guarded_handler = guarded(handler)

    @functools.wraps(handler)
    def inner(self, state, event, now, shared):
        current = state["state"]
        why = None
        if self.config.member(event.sender) is None:
            why = (f"{event.sender!r} is no {CERTIFIES[self.config.kind]} of this CA's "
                   "directory: not answered")
        elif current == START and event.message_type not in _INITS:
            why = f"{event.message_type} for no registration: not answered"
        elif current == "EXPIRED":
            why = "this registration has expired: not answered"
        if why is not None:
            return Outcome(self.transaction_key(event), None if current == START
                           else dict(state), refused=why)
        return guarded_handler(self, state, event, now, shared)
    return inner


class CARole(Role):
    name = "ca"
    shared_key = "ca"

    def __init__(self, config: CAConfig):
        if config.kind not in REQUEST_TYPES:
            raise ValueError(f"CA kind must be cca, mca or pca, not {config.kind!r}")
        self.config = config
        self.suite = config.ca.suite
        self.lid_field = "lid_c" if config.kind == "cca" else "lid_m"
        self.TRANSITIONS = CCA_TRANSITIONS if config.kind == "cca" else EE_TRANSITIONS

    def transaction_key(self, event) -> str:
        if isinstance(event, TimerFired):
            return str(event.payload.get("transaction", ""))
        lid = header_ids(event).get(self.lid_field)
        member = self.config.member(event.sender)
        return f"{member.address if member else '-'}|{lid.hex() if lid else 'unroutable'}"

    def refuse(self, state, event, exc, now) -> Outcome:
        member = self.config.member(event.sender)
        return refusal(state, event, exc, now, transaction=self.transaction_key(event),
                       to=member.address if member else None, signer=self.config.signature,
                       suite=self.suite)

    def on_Error(self, state, event, now, shared) -> Outcome:
        """Kept in the agent's log only; never answered (no Error loops): a CA asks nothing."""
        return Outcome(self.transaction_key(event), None if state["state"] == START
                       else dict(state), refused="Error absorbed: a CA waits for no answer")

    def on_timer_expire(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        if state["state"] not in WAITING:  # decided meanwhile (or gone): a stale timer
            return Outcome(key, None if state["state"] == START else dict(state))
        kept = {k: state[k] for k in ("lid", "lid_ca", "member", "created") if k in state}
        return Outcome(key, {**kept, "state": "EXPIRED", "expired": {
            "at": _when(now), "reason": f"no request for {self.config.expire_after} in state "
                                        f"{state['state']}"}})

    # -- helpers -----------------------------------------------------------------------------------
    def _reply(self, event, type_name: str, body: bytes, now, rrpid: bytes, lid: bytes) -> Send:
        """An answer goes to the member's directory address, never to the From."""
        der = wrap(type_name, body, now=now, rrpid=rrpid, **{self.lid_field: lid})
        return Send(self.config.member(event.sender).address, type_name, der,
                    event.mail_id or None)

    def _sign(self, content_type: str, value, held=frozenset()) -> bytes:
        sig = self.config.signature
        certs = self._certs(held, sig.cert, self.config.ca.key_exchange_certificate, *sig.chain)
        return S(sig, content_type, value.dump(), certs=certs, suite=self.suite)

    def _certs(self, held, *certs) -> list:
        """``certs`` less the pinned roots (every requester holds them) and those the request
        listed in its Thumbs (that request's answer only: nothing is kept of an unsigned list)."""
        held = set(held) | {thumbprint(r) for r in self.config.trust.roots}
        return [c for c in certs if thumbprint(c) not in held]

    @staticmethod
    def _held(thumbs) -> frozenset:
        """The certificate thumbprints a request's Thumbs lists."""
        if thumbs.native is None:
            return frozenset()
        return frozenset((thumbs["cert_thumbs"].native or [])[:32])

    def _with_bci(self, value: dict) -> dict:
        bci = self.config.bci
        return {**value, "brand_crl_identifier": bci} if bci is not None else value

    def _form(self, renewal: bool = False):
        fields = [{"field_name": f.name, "field_len": f.length, "field_required": f.required}
                  for f in fields_for(self.config, renewal)]
        return cm.RegFormOrReferral(name="reg_form_data", value={
            "reg_template": {"reg_form_id": self.config.reg_form_id, "reg_field_seq": fields},
            "policy": self.config.policy})

    def _begin(self, state, event, now, lid: bytes) -> tuple[dict, tuple]:
        """The state of a registration (a new one: with its expiry timer)."""
        if state["state"] != START:
            return dict(state), ()
        key = self.transaction_key(event)
        return ({"state": START, "lid": lid.hex(), "lid_ca": fresh(16).hex(),
                 "member": self.config.member(event.sender).name, "created": _when(now)},
                (SetTimer("expire", now + self.config.expire_after, {"transaction": key}),))

    # -- CardCInitReq / Me-AqCInitReq ----------------------------------------------------------------
    @members_only
    def on_CardCInitReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        req = decode(cm.CardCInitReq, parsed.body)
        rrpid, lid = req["rrpid"].native, req["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        if req["brand_id"].native.split(":")[0] != self.config.ca.brand:
            raise ProtocolError(f"this CA serves brand {self.config.ca.brand}", "unspecifiedFailure")
        new, timers = self._begin(state, event, now, lid)
        tbs = cm.CardCInitResTBS(self._with_bci({
            "rrpid": rrpid, "lid_ee": lid, "chall_ee": req["chall_ee"].native,
            "lid_ca": unh(new["lid_ca"]),
            "cae_thumb": thumbprint(self.config.ca.key_exchange_certificate)}))
        send = self._reply(event, "CardCInitRes",
                           self._sign("CardCInitResTBS", tbs, self._held(req["thumbs"])), now,
                           rrpid, lid)
        return Outcome(key, {**new, "state": "INIT_SENT"}, sends=(send,), timers=timers)

    @members_only
    def on_Me_AqCInitReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        req = decode(cm.MeAqCInitReq, parsed.body)
        rrpid, lid = req["rrpid"].native, req["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        wanted = req["request_type"].native
        renewal = wanted == RENEWAL_TYPES[self.config.kind]
        if wanted != REQUEST_TYPES[self.config.kind] and not renewal:
            raise ProtocolError(f"this CA handles {REQUEST_TYPES[self.config.kind]} and "
                                f"{RENEWAL_TYPES[self.config.kind]} only", "messageNotSupported")
        if state["state"] != START and renewal != state.get("renewal", False):
            raise ProtocolError("a registration does not become a renewal", "challengeMismatch")
        id_data = req["id_data"]
        expected_id = "merchant_acquirer_id" if self.config.kind == "mca" else "acquirer_id"
        bin_ = id_data.chosen[id_data.chosen._fields[0][0]].native
        if id_data.name != expected_id or not (len(bin_) == 8 and bin_.isdigit()):
            raise ProtocolError(f"IDData must be {expected_id} with an 8-digit BIN",
                                "unspecifiedFailure")
        new, timers = self._begin(state, event, now, lid)
        chall_ca, challenges = challenge_for(new, rrpid)
        if chall_ca is None:
            return _too_many(key, state)
        tbs = cm.MeAqCInitResTBS(self._with_bci({
            "rrpid": rrpid, "lid_ee": lid, "chall_ee": req["chall_ee"].native,
            "lid_ca": unh(new["lid_ca"]), "chall_ca": chall_ca, "request_type": wanted,
            "reg_form_or_referral": self._form(renewal),
            "cae_thumb": thumbprint(self.config.ca.key_exchange_certificate)}))
        send = self._reply(event, "Me-AqCInitRes",
                           self._sign("MeAqCInitResTBS", tbs, self._held(req["thumbs"])), now,
                           rrpid, lid)
        return Outcome(key, {**new, "state": "FORM_SENT", "challenges": challenges,
                             "renewal": renewal}, sends=(send,), timers=timers)

    # -- RegFormReq (cardholders) -------------------------------------------------------------------
    @members_only
    def on_RegFormReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        opened = open_EXH(parsed.body, self.config.key_exchange, "RegFormReqTBE", "PANOnly",
                          suite=self.suite)
        data = decode(cm.RegFormReqData, opened.content)
        pan = decode(PANOnly, opened.extra)["pan"].native
        rrpid, lid = data["rrpid"].native, data["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        asked = data["request_type"].native
        if asked not in ("cardInitialSig", "cardRenewalSig"):
            raise ProtocolError("this CA handles cardInitialSig and cardRenewalSig only",
                                "messageNotSupported")
        member = self.config.member(event.sender)
        theirs = pan in self.config.cards.get(member.address.lower(), ())
        new, refused = dict(state), None
        if theirs:  # a Chall-CA only for a card the member holds: a forger gets none
            chall_ca, new["challenges"] = challenge_for(state, rrpid)
            if chall_ca is None:
                return _too_many(key, state)
            new["state"], form = "FORM_SENT", self._form()
            new["renewal"] = asked == "cardRenewalSig"
        else:
            chall_ca, refused = fresh(), f"RegFormReq for a card {member.name} does not hold"
            form = cm.RegFormOrReferral(name="referral_data", value={
                "reason": "card number not recognised for this cardholder; ask your bank"})
        tbs = cm.RegFormResTBS(self._with_bci({
            "rrpid": rrpid, "lid_ee": lid, "chall_ee2": data["chall_ee2"].native,
            "lid_ca": unh(state["lid_ca"]), "chall_ca": chall_ca, "request_type": asked,
            "reg_form_or_referral": form}))
        send = self._reply(event, "RegFormRes",
                           self._sign("RegFormResTBS", tbs, self._held(data["thumbs"])), now,
                           rrpid, lid)
        return Outcome(key, new, sends=(send,), refused=refused)

    # -- CertReq ----------------------------------------------------------------------------------------
    @members_only
    def on_CertReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        card = self.config.kind == "cca"
        opened = open_cert_req(self.config, parsed.body, self.suite)
        data, acct, renewal = opened.data, opened.acct, opened.renewing is not None
        rrpid, lid = data["rrpid"].native, data["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        chall = data["chall_ca"].native
        challenges = state.get("challenges") or {}
        record = challenges.get(h(chall) or "")
        if record is None or record["used"]:
            raise ProtocolError("Chall-CA was not issued to this registration or was used",
                                "challengeMismatch")
        keys = data["public_key_sor_e"]
        public_s = keys["public_key_s"]
        if public_s.native is None:
            raise ProtocolError("CertReq carries no signature key", "unspecifiedFailure")
        check_pop(opened.pop, public_s.untag().dump())
        wanted = (RENEWAL_TYPES if renewal else REQUEST_TYPES)[self.config.kind]
        if data["request_type"].native != wanted or renewal != state.get("renewal", False):
            raise ProtocolError("request type not the one of this registration, or not signed "
                                "as one (a renewal by the certificate it renews)",
                                "messageNotSupported")
        back_key = None
        if card:
            back = data["ca_back_key_data"]
            if back.native is None or len(back["back_key"].native) != 32:
                raise ProtocolError("cardholder CertReq needs a 32-octet CABackKeyData",
                                    "unspecifiedFailure")
            back_key = back["back_key"].native
        reply = dict(rrpid=rrpid, lid=lid, chall_ee3=data["chall_ee3"].native, back_key=back_key,
                     held=self._held(data["thumbs"]))
        member = self.config.member(event.sender)
        try:  # is it the member's to ask?  If not, the challenge stays unspent
            if renewal:
                check_renewal(self.config, opened, member, now)
            who_may_ask(self.config.kind, member, data, acct["pan"].native if card else None,
                        cards=self.config.cards, codes=self.config.codes, renewal=renewal)
        except Refused as refused:
            send = self._cert_res(event, "CertRes", now, reply, refused.status,
                                  message=str(refused))
            return Outcome(key, {**state, "refused": {"type": "CertReq", "code": refused.status,
                                                      "reason": str(refused)}},
                           sends=(send,), refused=f"{refused.status}: {refused}")
        # the registration is decided: every challenge of it is gone, whatever the outcome
        decided = {k: v for k, v in state.items() if k not in ("challenges", "refused")}
        try:
            result, shared = certify(self.config, data, acct, shared, now,
                                     fields=fields_for(self.config, renewal))
        except Refused as refused:
            send = self._cert_res(event, "CertRes", now, reply, refused.status,
                                  message=str(refused))
            return Outcome(key, {**decided, "state": "REFUSED", "reason": str(refused)},
                           sends=(send,), timers=(CancelTimer("expire"),))
        new = {**decided, "result": {"certs": result["certs"]}}
        if self.config.pend_first_request:  # what releasing needs, until it is released
            new.update(state="PENDING", secret={"back_key": h(back_key),
                                                "nonce_cca": result["nonce_cca"]})
            status = "requestPended"
            timers = (SetTimer("expire", now + self.config.expire_after, {"transaction": key}),)
        else:
            new["state"], status, timers = "ISSUED", "requestComplete", (CancelTimer("expire"),)
        send = self._cert_res(event, "CertRes", now, reply, status, result)
        return Outcome(key, new, sends=(send,), shared=shared, timers=timers)

    def _cert_res(self, event, type_name, now, reply, status, result=None, message=None) -> Send:
        certs = [load_cert_hex(c) for c in (result or {}).get("certs", [])] if status == \
            "requestComplete" else []
        value = {"rrpid": reply["rrpid"], "lid_ee": reply["lid"], "chall_ee3": reply["chall_ee3"],
                 "cert_status": {"cert_status_code": status}}
        if certs:
            value["cert_thumbs"] = [thumbprint(c) for c in certs]
            if result.get("nonce_cca"):
                value["cert_status"]["nonce_cca"] = unh(result["nonce_cca"])
        if message:
            value["cert_status"]["ee_message"] = message
        tbs = cm.CertResData(self._with_bci(value))
        sig = self.config.signature
        all_certs = (*certs, *self._certs(reply["held"], sig.cert, *sig.chain))
        if reply["back_key"] is not None:
            body = EncK(reply["back_key"], sig, "CertResData", tbs.dump(), "CertResTBE",
                        certs=all_certs, suite=self.suite)
        else:
            body = S(sig, "CertResData", tbs.dump(), certs=all_certs, suite=self.suite)
        return self._reply(event, type_name, body, now, reply["rrpid"], reply["lid"])

    # -- CertInqReq ---------------------------------------------------------------------------------
    @members_only
    def on_CertInqReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        signed = verify_S(parsed.body, "CertInqReqTBS", suite=self.suite)
        tbs = decode(cm.CertInqReqTBS, signed.content)
        rrpid, lid = tbs["rrpid"].native, tbs["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        result, secret = state.get("result"), state.get("secret") or {}
        if result is None:
            raise ProtocolError("no certificate request to inquire about", "unspecifiedFailure")
        if self.config.kind == "cca" and not secret.get("back_key"):
            raise ProtocolError("the certificate was released already", "unspecifiedFailure")
        check_pop(signed.signer, spki(load_cert_hex(result["certs"][0]).public_key()))
        reply = dict(rrpid=rrpid, lid=lid, chall_ee3=tbs["chall_ee3"].native,
                     back_key=unh(secret.get("back_key")), held=frozenset())
        send = self._cert_res(event, "CertInqRes", now, reply, "requestComplete",
                              {**result, "nonce_cca": secret.get("nonce_cca")})
        released = {k: v for k, v in state.items() if k != "secret"}  # the CA keeps no secret
        return Outcome(key, {**released, "state": "ISSUED"}, sends=(send,),
                       timers=(CancelTimer("expire"),))


def _too_many(key: str, state) -> Outcome:
    return Outcome(key, dict(state), refused=f"this registration has had {MAX_CHALLENGES} "
                   "challenges: not answered")


def _when(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()
