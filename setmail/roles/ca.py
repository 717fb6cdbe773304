"""A SET certificate authority as a role: Cardholder CA ("cca"), Merchant CA ("mca") or Payment
Gateway CA ("pca") answering registration requests (set-protocol.md §6).

    cca: CardCInitReq -> CardCInitRes; RegFormReq -> RegFormRes; CertReq -> CertRes (EncK);
    mca/pca: Me-AqCInitReq -> Me-AqCInitRes; CertReq -> CertRes (S, both certificates);
    all: CertInqReq -> CertInqRes while (or after) a request is pended.

What the Isabelle proofs rely on (§9.2) is enforced here, across transactions, in shared state
(``shared_key = "ca"``): ``certified`` (SHA-256 of every SubjectPublicKeyInfo certified: a key is
certified at most once) and ``challenges`` (every Chall-CA issued, with its transaction and whether
it was used: a CertReq must carry the Chall-CA issued to *its* LID-EE, unused).  Proof of
possession: the CertReq must be signed by the key it asks to certify (D-302).

Refusals: input that is malformed, not authentic, or not fresh gets a SET Error signed by the CA
(code from the exception's ``set_error_code``) and leaves the transaction as it was; an authentic,
fresh request whose *content* is refused (key already certified, bad form, bad PAN, expired card)
gets a CertRes with a refusing CertStatusCode and ``eeMessage`` (D-305).  Errors are never answered.

``CAConfig`` fields: ``ca`` (pki CertificateAuthority; its signature and key-exchange keys and
chain are the identities used), ``kind``, ``address``, ``trust``, ``form`` (FormFields of the
regTemplate; default per kind), ``reg_form_id``, ``policy``, ``pend_first_request`` (pend every
CertReq; the certificate is released on the first CertInqReq, D-306).
Transaction key: ``sender|LID-EE hex`` (LID-EE from the header's lid-C or lid-M).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from setmail.asn1 import certmsgs as cm
from setmail.asn1.base import decode
from setmail.asn1.purchase import PANOnly
from setmail.crypto.cms import Identity
from setmail.crypto.operators import S, EncK, open_Enc, open_EncX, open_EXH, verify_S
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError, SetmailError
from setmail.pki import thumbprint
from setmail.pki.ca import CertificateAuthority
from setmail.pki.setext import MerchantInfo, MerName
from setmail.pki.trust import TrustStore
from setmail.roles.base import START, Outcome, Role, Send
from setmail.roles.certs import cert_hex, check_pop, load_cert_hex
from setmail.roles.forms import luhn_ok
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import check_header, h, unh, unwrap, wrap


@dataclass(frozen=True)
class FormField:
    name: str
    length: int
    required: bool = True


DEFAULT_FORMS = {
    "cca": (FormField("CardholderName", 60), FormField("PostalCode", 10)),
    "mca": (FormField("MerchantName", 60), FormField("City", 40), FormField("CountryName", 40),
            FormField("CountryCode", 3)),
    "pca": (FormField("GatewayName", 60),),
}
REQUEST_TYPES = {"cca": "cardInitialSig", "mca": "merInitialBoth", "pca": "pgwyInitialBoth"}


@dataclass(frozen=True)
class CAConfig:
    ca: CertificateAuthority
    kind: str  # "cca" | "mca" | "pca"
    address: str
    trust: TrustStore
    form: tuple[FormField, ...] | None = None
    reg_form_id: int = 1
    policy: str = "SET certificate policy: you keep your private key secret."
    pend_first_request: bool = False

    @cached_property
    def signature(self) -> Identity:
        return Identity(self.ca.key, self.ca.certificate, tuple(self.ca.chain[1:]))

    @cached_property
    def key_exchange(self) -> Identity:
        return Identity(self.ca.key_exchange_key, self.ca.key_exchange_certificate, ())

    @property
    def bci(self):
        """The brand's current BrandCRLIdentifier, carried in every response (None: no brand)."""
        return next((ca.bci for ca in self.ca.ancestors() if ca.profile.cert_type == "bca"), None)

    @property
    def fields(self) -> tuple[FormField, ...]:
        return self.form if self.form is not None else DEFAULT_FORMS[self.kind]


_LATE = ("ISSUED", "PENDING", "REFUSED")
_AFTER_CERT_REQ = ("ISSUED", "PENDING", "REFUSED", "FORM_SENT")
CCA_TRANSITIONS = {
    START: {"CardCInitReq": "INIT_SENT", "CertReq": START, "Error": START},
    "INIT_SENT": {"CardCInitReq": "INIT_SENT", "RegFormReq": ("FORM_SENT", "INIT_SENT"),
                  "Error": "INIT_SENT"},
    "FORM_SENT": {"RegFormReq": "FORM_SENT", "CertReq": _AFTER_CERT_REQ, "Error": "FORM_SENT"},
    **{s: {"CertReq": s, "CertInqReq": ("ISSUED", s), "Error": s} for s in _LATE},
}
EE_TRANSITIONS = {  # Merchant and Payment Gateway CAs: no RegForm round (the form is in the init)
    START: {"Me-AqCInitReq": "FORM_SENT", "CertReq": START, "Error": START},
    "FORM_SENT": {"Me-AqCInitReq": "FORM_SENT", "CertReq": _AFTER_CERT_REQ, "Error": "FORM_SENT"},
    **{s: {"CertReq": s, "CertInqReq": ("ISSUED", s), "Error": s} for s in _LATE},
}


class Refused(Exception):
    """An authentic, fresh request whose content the CA refuses (answered with a CertRes status)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


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
        try:
            ids = event.wrapper["message_header"]["message_ids"].native or {}
        except SetmailError:
            ids = {}
        lid = ids.get(self.lid_field)
        return f"{event.sender}|{lid.hex() if lid else 'unroutable'}"

    def refuse(self, state, event, exc, now) -> Outcome:
        return refusal(state, event, exc, now, transaction=self.transaction_key(event),
                       signer=self.config.signature, suite=self.suite)

    def on_Error(self, state, event, now, shared) -> Outcome:
        """Recorded by the agent's log only; never answered (no Error loops)."""
        return Outcome(self.transaction_key(event), None if state["state"] == START else dict(state))

    # -- helpers -----------------------------------------------------------------------------------
    def _reply(self, event, type_name: str, body: bytes, now, rrpid: bytes, lid: bytes) -> Send:
        der = wrap(type_name, body, now=now, rrpid=rrpid, **{self.lid_field: lid})
        return Send(event.sender, type_name, der, event.mail_id or None)

    def _sign(self, content_type: str, value, held=()) -> bytes:
        sig = self.config.signature
        certs = self._certs(held, sig.cert, self.config.ca.key_exchange_certificate, *sig.chain)
        return S(sig, content_type, value.dump(), certs=certs, suite=self.suite)

    @staticmethod
    def _certs(held, *certs) -> list:
        """``certs`` less those the requester listed in its Thumbs (it holds them already)."""
        held = set(held or ())
        return [c for c in certs if thumbprint(c).hex() not in held]

    @staticmethod
    def _peer_thumbs(thumbs) -> list[str]:
        """The certificate thumbprints a request's Thumbs lists (hex, for the state)."""
        if thumbs.native is None:
            return []
        return [t.hex() for t in (thumbs["cert_thumbs"].native or [])][:32]

    def _with_bci(self, value: dict) -> dict:
        bci = self.config.bci
        return {**value, "brand_crl_identifier": bci} if bci is not None else value

    def _form(self):
        fields = [{"field_name": f.name, "field_len": f.length, "field_required": f.required}
                  for f in self.config.fields]
        return cm.RegFormOrReferral(name="reg_form_data", value={
            "reg_template": {"reg_form_id": self.config.reg_form_id, "reg_field_seq": fields},
            "policy": self.config.policy})

    def _new_challenge(self, shared, key) -> tuple[bytes, dict]:
        chall = fresh()
        shared = {**shared, "challenges": {**shared.get("challenges", {}),
                                           chall.hex(): {"tx": key, "used": False}}}
        return chall, shared

    # -- CardCInitReq / Me-AqCInitReq ----------------------------------------------------------------
    @guarded
    def on_CardCInitReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        req = decode(cm.CardCInitReq, parsed.body)
        rrpid, lid = req["rrpid"].native, req["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        if req["brand_id"].native.split(":")[0] != self.config.ca.brand:
            raise ProtocolError(f"this CA serves brand {self.config.ca.brand}", "unspecifiedFailure")
        lid_ca = unh(state["lid_ca"]) if state.get("lid_ca") else fresh(16)
        tbs = cm.CardCInitResTBS(self._with_bci({
            "rrpid": rrpid, "lid_ee": lid, "chall_ee": req["chall_ee"].native, "lid_ca": lid_ca,
            "cae_thumb": thumbprint(self.config.ca.key_exchange_certificate)}))
        thumbs = self._peer_thumbs(req["thumbs"])
        new = {"state": "INIT_SENT", "lid": lid.hex(), "lid_ca": lid_ca.hex(),
               "peer_thumbs": thumbs}
        send = self._reply(event, "CardCInitRes", self._sign("CardCInitResTBS", tbs, thumbs), now,
                           rrpid, lid)
        return Outcome(key, new, sends=(send,))

    @guarded
    def on_Me_AqCInitReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        req = decode(cm.MeAqCInitReq, parsed.body)
        rrpid, lid = req["rrpid"].native, req["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        wanted = REQUEST_TYPES[self.config.kind]
        if req["request_type"].native != wanted:
            raise ProtocolError(f"this CA handles {wanted} only", "messageNotSupported")
        id_data = req["id_data"]
        expected_id = "merchant_acquirer_id" if self.config.kind == "mca" else "acquirer_id"
        bin_ = id_data.chosen[id_data.chosen._fields[0][0]].native
        if id_data.name != expected_id or not (len(bin_) == 8 and bin_.isdigit()):
            raise ProtocolError(f"IDData must be {expected_id} with an 8-digit BIN", "unspecifiedFailure")
        chall_ca, shared = self._new_challenge(shared, key)
        lid_ca = unh(state["lid_ca"]) if state.get("lid_ca") else fresh(16)
        tbs = cm.MeAqCInitResTBS(self._with_bci({
            "rrpid": rrpid, "lid_ee": lid, "chall_ee": req["chall_ee"].native, "lid_ca": lid_ca,
            "chall_ca": chall_ca, "request_type": wanted, "reg_form_or_referral": self._form(),
            "cae_thumb": thumbprint(self.config.ca.key_exchange_certificate)}))
        thumbs = self._peer_thumbs(req["thumbs"])
        send = self._reply(event, "Me-AqCInitRes", self._sign("MeAqCInitResTBS", tbs, thumbs), now,
                           rrpid, lid)
        new = {"state": "FORM_SENT", "lid": lid.hex(), "lid_ca": lid_ca.hex(),
               "chall_ca": chall_ca.hex(), "id_data": id_data.dump().hex(), "peer_thumbs": thumbs}
        return Outcome(key, new, sends=(send,), shared=shared)

    # -- RegFormReq (cardholders) -------------------------------------------------------------------
    @guarded
    def on_RegFormReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        opened = open_EXH(parsed.body, self.config.key_exchange, "RegFormReqTBE", "PANOnly",
                          suite=self.suite)
        data = decode(cm.RegFormReqData, opened.content)
        pan = decode(PANOnly, opened.extra)["pan"].native
        rrpid, lid = data["rrpid"].native, data["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        if data["request_type"].native != "cardInitialSig":
            raise ProtocolError("this CA handles cardInitialSig only", "messageNotSupported")
        chall_ca, shared = self._new_challenge(shared, key)
        form = self._form() if luhn_ok(pan) else cm.RegFormOrReferral(
            name="referral_data", value={"reason": "card number not recognised; ask your bank"})
        tbs = cm.RegFormResTBS(self._with_bci({
            "rrpid": rrpid, "lid_ee": lid, "chall_ee2": data["chall_ee2"].native,
            "lid_ca": unh(state["lid_ca"]), "chall_ca": chall_ca, "request_type": "cardInitialSig",
            "reg_form_or_referral": form}))
        send = self._reply(event, "RegFormRes",
                           self._sign("RegFormResTBS", tbs, state.get("peer_thumbs")), now,
                           rrpid, lid)
        return Outcome(key, {**state, "state": "FORM_SENT", "chall_ca": chall_ca.hex()},
                       sends=(send,), shared=shared)

    # -- CertReq ----------------------------------------------------------------------------------------
    @guarded
    def on_CertReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        card = self.config.kind == "cca"
        if card:
            opened = open_EncX(parsed.body, self.config.key_exchange, "CertReqTBEX", "CertReqTBS",
                               "PANData", suite=self.suite)
            acct = decode(cm.PANData0, opened.extra)  # D-303: PANData0, not the AcctInfo CHOICE
        else:
            opened = open_Enc(parsed.body, self.config.key_exchange, "CertReqTBE", "CertReqData",
                              suite=self.suite)
            acct = None
        data = decode(cm.CertReqData, opened.content)
        rrpid, lid = data["rrpid"].native, data["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        chall = data["chall_ca"].native
        record = shared.get("challenges", {}).get(h(chall) or "")
        if (chall is None or record is None or record["tx"] != key or record["used"]
                or state.get("chall_ca") != chall.hex()):
            raise ProtocolError("Chall-CA was not issued to this request or was used", "challengeMismatch")
        keys = data["public_key_sor_e"]
        public_s = keys["public_key_s"]
        if public_s.native is None:
            raise ProtocolError("CertReq carries no signature key", "unspecifiedFailure")
        check_pop(opened.signed.signer, public_s.untag().dump())
        if data["request_type"].native != REQUEST_TYPES[self.config.kind]:
            raise ProtocolError("request type not handled by this CA", "messageNotSupported")
        back_key = None
        if card:
            back = data["ca_back_key_data"]
            if back.native is None or len(back["back_key"].native) != 32:
                raise ProtocolError("cardholder CertReq needs a 32-octet CABackKeyData", "unspecifiedFailure")
            back_key = back["back_key"].native
        # authentic and fresh from here on: the challenge is spent whatever the outcome
        shared = {**shared, "challenges": {**shared["challenges"], chall.hex(): {**record, "used": True}}}
        reply = dict(rrpid=rrpid, lid=lid, chall_ee3=data["chall_ee3"].native, back_key=back_key,
                     peer_thumbs=state.get("peer_thumbs"))
        try:
            result, shared = self._certify(data, acct, shared, now)
        except Refused as refused:
            send = self._cert_res(event, "CertRes", now, reply, refused.status, message=str(refused))
            return Outcome(key, {**state, "state": "REFUSED", "reason": str(refused)},
                           sends=(send,), shared=shared)
        new = {**state, "result": {**result, "back_key": h(back_key)}}
        status = "requestPended" if self.config.pend_first_request else "requestComplete"
        new["state"] = "PENDING" if self.config.pend_first_request else "ISSUED"
        send = self._cert_res(event, "CertRes", now, reply, status, new["result"])
        return Outcome(key, new, sends=(send,), shared=shared)

    def _certify(self, data, acct, shared, now) -> tuple[dict, dict]:
        """Check the request's content and issue; Refused if the CA will not certify it."""
        cfg = self.config
        keys = data["public_key_sor_e"]
        wanted = [keys["public_key_s"]] + ([] if cfg.kind == "cca" else [keys["public_key_e"]])
        if any(k.native is None for k in wanted):
            raise Refused("invalidCertRequestType", "a 'Both' request needs both public keys")
        spkis = [k.untag().dump() for k in wanted]
        hashes = [hashlib.sha256(s).hexdigest() for s in spkis]
        certified = shared.get("certified", [])
        if len(set(hashes)) != len(hashes) or any(x in certified for x in hashes):
            raise Refused("rejectByCA", "public key already certified")
        if data["reg_form_id"].native != cfg.reg_form_id:
            raise Refused("invalidRegFormID", "unknown registration form")
        form = check_form(cfg.fields, data["reg_form"].native or [])
        from cryptography.hazmat.primitives.serialization import load_der_public_key
        publics = [load_der_public_key(s) for s in spkis]
        try:
            nonce_cca = None
            if cfg.kind == "cca":
                cert, nonce_cca = self._issue_card(publics[0], acct, now)
                certs = [cert]
            elif cfg.kind == "mca":
                certs = list(cfg.ca.issue_merchant(publics[0], publics[1],
                                                   self._merchant_info(data, form), now))
            else:
                certs = list(cfg.ca.issue_gateway(publics[0], publics[1], now,
                                                  name=form["GatewayName"]))
        except SetmailError as exc:
            raise Refused("rejectByCA", str(exc)[:200]) from exc
        shared = {**shared, "certified": [*certified, *hashes]}
        return {"certs": [cert_hex(c) for c in certs], "nonce_cca": h(nonce_cca)}, shared

    def _issue_card(self, public, acct, now):
        pd = acct
        pan, expiry = pd["pan"].native, pd["card_expiry"].native
        if not luhn_ok(pan):
            raise Refused("rejectByIssuer", "card number is not valid")
        if not (len(expiry) == 6 and expiry.isdigit() and 1 <= int(expiry[4:]) <= 12):
            raise Refused("rejectByIssuer", "card expiry is not YYYYMM")
        if expiry < f"{now:%Y%m}":
            raise Refused("rejectByIssuer", "card has expired")
        issued = self.config.ca.issue_cardholder(public, pan=pan, expiry=expiry,
                                                 card_secret=pd["card_secret"].native,
                                                 nonce_cca=fresh(), now=now)
        return issued.certificate, issued.nonce_cca

    def _merchant_info(self, data, form) -> MerchantInfo:
        id_data = data["id_data"]
        if id_data.native is None or id_data.name != "merchant_acquirer_id":
            raise Refused("rejectByCA", "merchant request without merchantAcquirerID")
        mid = id_data.chosen
        if not form["CountryCode"].isdigit() or not 1 <= int(form["CountryCode"]) <= 999:
            raise Refused("rejectByCA", "CountryCode must be an ISO 3166 numeric code")
        return MerchantInfo(mid["merchant_id"].native, mid["merchant_bin"].native,
                            (MerName("en", form["MerchantName"], form["City"], form["CountryName"]),),
                            int(form["CountryCode"]))

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
        all_certs = (*certs, *self._certs(reply["peer_thumbs"], sig.cert, *sig.chain))
        if reply["back_key"] is not None:
            body = EncK(reply["back_key"], sig, "CertResData", tbs.dump(), "CertResTBE",
                        certs=all_certs, suite=self.suite)
        else:
            body = S(sig, "CertResData", tbs.dump(), certs=all_certs, suite=self.suite)
        return self._reply(event, type_name, body, now, reply["rrpid"], reply["lid"])

    # -- CertInqReq ---------------------------------------------------------------------------------
    @guarded
    def on_CertInqReq(self, state, event, now, shared) -> Outcome:
        key, parsed = self.transaction_key(event), unwrap(event, now)
        signed = verify_S(parsed.body, "CertInqReqTBS", suite=self.suite)
        tbs = decode(cm.CertInqReqTBS, signed.content)
        rrpid, lid = tbs["rrpid"].native, tbs["lid_ee"].native
        check_header(parsed, rrpid, lid, self.lid_field)
        result = state.get("result")
        if result is None:
            raise ProtocolError("no certificate request to inquire about", "unspecifiedFailure")
        check_pop(signed.signer, _spki_of(result["certs"][0]))
        reply = dict(rrpid=rrpid, lid=lid, chall_ee3=tbs["chall_ee3"].native,
                     back_key=unh(result.get("back_key")), peer_thumbs=state.get("peer_thumbs"))
        send = self._cert_res(event, "CertInqRes", now, reply, "requestComplete", result)
        return Outcome(key, {**state, "state": "ISSUED"}, sends=(send,))


def _spki_of(cert_hex_value: str) -> bytes:
    from setmail.roles.certs import spki
    return spki(load_cert_hex(cert_hex_value).public_key())


def check_form(fields, items) -> dict[str, str]:
    """The filled-in form: only known fields, each once, required ones present, within length."""
    values: dict[str, str] = {}
    known = {f.name: f for f in fields}
    for item in items:
        name, value = item["field_name"], item["field_value"]
        if name not in known or name in values:
            raise Refused("rejectByCA", f"unexpected or repeated form field {name!r}")
        if not value.strip() or len(value) > known[name].length or not value.isprintable():
            raise Refused("rejectByCA", f"form field {name!r} is empty, too long or unprintable")
        values[name] = value
    missing = [f.name for f in fields if f.required and f.name not in values]
    if missing:
        raise Refused("rejectByCA", f"form fields missing: {', '.join(missing)}")
    return values
