"""The cardholder wallet's side of SET cardholder registration (set-protocol.md §6.1).

    CardCInitReq (clear)            -> CardCInitRes   = S(CCA, CardCInitResTBS) + CA certificates
    RegFormReq = EXH(CCA, RegFormReqData, PANOnly) -> RegFormRes = S(CCA, RegFormResTBS)
    CertReq = EncX(new key, CCA, CertReqData, AcctInfo) -> CertRes = EncK(back key, CCA, CertResData)
    [pended: CertInqReq = S(new key, CertInqReqTBS) -> CertInqRes, until final]

Why each check: every answer passes ``Registration.answered`` (our RRPID, LID-EE and the challenge
of the request it answers echoed: freshness without session state, §4.4; signed by a certificate
that validates as "cca", the one that answered first from then on; its BrandCRLIdentifier
verified and not rolled back).  The certificate we finally accept must certify the key we
generated and name *this* card: its id is recomputed from PAN, expiry and PANSecret = CardSecret
XOR NonceCCA (§2.4).

``CardholderRegConfig``: the ``RegistrationConfig`` fields (roles/registration.py).

Command ``renew`` (same args): the same messages with ``cardRenewalSig``, the CertReq signed by
the card's current certificate (``config.current(pan_last4, brand)``) around the new key's proof
of possession, EEThumb naming it; the new certificate joins the wallet beside the old one.

Command ``register`` args: ``pan``, ``expiry`` ("YYYYMM"), ``ca`` (CCA address), ``brand``,
``fields`` (registration form values by field name, e.g. {"CardholderName": ..., "PostalCode": ...}),
optional ``lid`` (hex, 1..20 octets; it is the transaction key; default 16 fresh octets) and
``language``.
Effects: ``wallet.key`` {transaction, key_id, spki_sha256, secret: {private_key_pem}};
``wallet.certificate`` {transaction, key_id, brand, certificate_pem, chain_pem, cardholder_id,
not_after, pan_last4, secret: {pan_secret}}.  Anything under ``secret`` must never be logged; the
state keeps PAN, expiry, form values, CardSecret and the back key under ``state["secret"]`` and
drops them on DONE and FAILED.
"""
from __future__ import annotations

import hashlib

from setmail.asn1 import certmsgs as cm
from setmail.asn1.base import decode
from setmail.asn1.purchase import PANOnly
from setmail.crypto.operators import EXH, EncX, open_EncK
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.pki import validate_path
from setmail.pki.cardholder import cardholder_common_name, pan_secret, verify_cardholder_id
from setmail.pki.thumbs import thumbprint
from setmail.roles.base import Effect, Outcome
from setmail.roles.certs import (cert_hex, cert_pem, find_certificate, load_cert_hex, private_pem, public_key_info, spki)
from setmail.roles.forms import fill_form, luhn_ok
from setmail.roles.refusal import guarded
from setmail.roles.registration import CERTIFICATE_STATES, Registration, RegistrationConfig, waiting
from setmail.roles.wire import h, unh, unwrap, wrap


class CardholderRegConfig(RegistrationConfig):
    """The cardholder wallet's configuration: exactly the registration fields."""


class CardholderRegistration(Registration):
    """Cardholder registration; transaction key = LID-EE (hex), carried as lid-C in headers."""

    name = "cardholder-registration"
    LID_FIELD = "lid_c"
    ca_type = "cca"
    TRANSITIONS = {
        "START": {"register": ("CINIT_SENT", "FAILED"), "renew": ("CINIT_SENT", "FAILED"),
                  "Error": "START"},
        "CINIT_SENT": {"CardCInitRes": ("FORM_REQ_SENT", "CINIT_SENT"), **waiting("CINIT_SENT")},
        "FORM_REQ_SENT": {"RegFormRes": ("CERT_REQ_SENT", "FORM_REQ_SENT", "FAILED"),
                          **waiting("FORM_REQ_SENT")},
        **CERTIFICATE_STATES,
    }

    # -- 1. register -> CardCInitReq --------------------------------------------------------------
    def on_register(self, state, event, now, shared) -> Outcome:
        return self._start(event, now, "cardInitialSig")

    def on_renew(self, state, event, now, shared) -> Outcome:
        a = event.args
        current = (self.config.current(str(a.get("pan", ""))[-4:], a.get("brand"))
                   if self.config.current else None)
        problem = self.renewing(current, now)
        if problem:
            key = self.transaction_key(event)
            return self.fail({"state": "CINIT_SENT", "lid": key, "ca": a.get("ca"),
                              "brand": a.get("brand")}, key, problem)
        return self._start(event, now, "cardRenewalSig", thumbprint(current.cert).hex())

    def _start(self, event, now, request_type: str, renewing: str | None = None) -> Outcome:
        key, a = self.transaction_key(event), event.args
        state = {"state": "CINIT_SENT", "lid": key, "ca": a.get("ca"), "brand": a.get("brand"),
                 "language": a.get("language") or self.config.language,
                 "request_type": request_type}
        if renewing:
            state["renewing"] = renewing
        pan, expiry = str(a.get("pan", "")), str(a.get("expiry", ""))
        problem = (None if luhn_ok(pan) else "PAN is not a valid card number") or (
            None if len(expiry) == 6 and expiry.isdigit() and 1 <= int(expiry[4:]) <= 12
            else "expiry must be YYYYMM") or (None if state["ca"] and state["brand"]
                                              else "ca and brand are required")
        lid, lid_problem = self.lid_octets(key)
        problem = problem or lid_problem
        if problem:
            return self.fail(state, key, problem)
        state["secret"] = {"pan": pan, "expiry": expiry, "fields": dict(a.get("fields") or {})}
        rrpid, chall = fresh(), fresh()
        state["chall"] = h(chall)
        msg = cm.CardCInitReq({"rrpid": rrpid, "lid_ee": lid, "chall_ee": chall,
                               "brand_id": state["brand"], "thumbs": self.held_thumbs()})
        der = wrap("CardCInitReq", msg, now=now, rrpid=rrpid, lid_c=lid)
        return self.ask(state, key, "CardCInitReq", der, rrpid, now, answered=False)

    # -- 2. CardCInitRes -> RegFormReq -------------------------------------------------------------
    @guarded
    def on_CardCInitRes(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        _, signed, tbs, shared = self.ca_answer(state, event, now, shared, "CardCInitResTBS",
                                                cm.CardCInitResTBS, "chall_ee")
        kex = self.ca_key_exchange(signed, tbs["cae_thumb"].native, now)
        state.update(state="FORM_REQ_SENT", ca_kex=cert_hex(kex), lid_ca=h(tbs["lid_ca"].native))
        rrpid, chall = fresh(), fresh()
        state["chall"] = h(chall)
        data = cm.RegFormReqData({"rrpid": rrpid, "lid_ee": unh(state["lid"]), "chall_ee2": chall,
                                  "request_type": state.get("request_type", "cardInitialSig"),
                                  "language": state["language"],
                                  "thumbs": self.held_thumbs()})
        pan_only = PANOnly({"pan": state["secret"]["pan"], "ex_nonce": fresh()})
        body = EXH(kex, "RegFormReqTBE", data.dump(), "PANOnly", pan_only.dump(), suite=self.config.suite)
        der = wrap("RegFormReq", body, now=now, rrpid=rrpid, lid_c=unh(state["lid"]))
        return self.ask(state, key, "RegFormReq", der, rrpid, now, shared=shared)

    # -- 3. RegFormRes -> CertReq ------------------------------------------------------------------
    @guarded
    def on_RegFormRes(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        _, _, tbs, shared = self.ca_answer(state, event, now, shared, "RegFormResTBS",
                                           cm.RegFormResTBS, "chall_ee2")
        form = tbs["reg_form_or_referral"]
        if form.name == "referral_data":
            ref = form.chosen.native
            return self.fail(state, key, f"referred elsewhere: {ref.get('reason') or ''} "
                             f"{' '.join(ref.get('referral_urls') or [])}".strip(), "referral",
                             shared=shared)
        items, reg_form_id, problem = fill_form(form.chosen, state["secret"]["fields"])
        if problem:
            return self.fail(state, key, problem, shared=shared)
        new_key = self.config.suite.generate_key()
        public = spki(new_key.public_key())
        key_id = hashlib.sha256(public).hexdigest()[:32]
        back_key, card_secret, chall = fresh(), fresh(), fresh()
        rrpid = fresh()
        data = {"rrpid": rrpid, "lid_ee": unh(state["lid"]), "chall_ee3": chall,
                "chall_ca": tbs["chall_ca"].native,
                "request_type": state.get("request_type", "cardInitialSig"),
                "request_date": now.replace(microsecond=0),
                "ca_back_key_data": {"back_alg_id": {"algorithm": "aes256_wrap"}, "back_key": back_key},
                "public_key_sor_e": {"public_key_s": public_key_info(public)},
                "thumbs": self.held_thumbs()}
        if state.get("lid_ca"):
            data["lid_ca"] = unh(state["lid_ca"])
        if reg_form_id is not None:
            data.update(reg_form_id=reg_form_id, reg_form=items)
        secret = state["secret"]
        # the OAEP block carries PANData0 itself, not the AcctInfo CHOICE around it (D-303)
        acct = cm.PANData0({"pan": secret["pan"], "card_expiry": secret["expiry"],
                            "card_secret": card_secret, "ex_nonce": fresh()})
        current = (self.config.current(secret["pan"][-4:], state["brand"])
                   if state.get("renewing") and self.config.current else None)
        if current is not None:
            data["ee_thumb"] = thumbprint(current.cert)
        signer, content = self.renewal_signer(state, new_key, cm.CertReqData(data).dump(), now,
                                              current)
        if signer is None:
            return self.fail(state, key, content, shared=shared)
        body = EncX(signer, load_cert_hex(state["ca_kex"]), "CertReqTBS", content, "PANData",
                    acct.dump(), "CertReqTBEX", suite=self.config.suite)
        state.update(state="CERT_REQ_SENT", chall=h(chall), spki=public.hex(), key_id=key_id, polls=0,
                     secret={**secret, "back_key": back_key.hex(), "card_secret": card_secret.hex()})
        der = wrap("CertReq", body, now=now, rrpid=rrpid, lid_c=unh(state["lid"]))
        effect = Effect("wallet.key", {"transaction": key, "key_id": key_id,
                                       "spki_sha256": hashlib.sha256(public).hexdigest(),
                                       "secret": {"private_key_pem": private_pem(new_key)}})
        return self.ask(state, key, "CertReq", der, rrpid, now, effects=(effect,), shared=shared)

    # -- 4. CertRes / CertInqRes -> certificate, pending, or refusal ---------------------------------
    @guarded
    def on_CertRes(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        parsed = unwrap(event, now)
        secret = state["secret"]
        opened = open_EncK(parsed.body, unh(secret["back_key"]), "CertResTBE", "CertResData",
                           validate=self.validate_ca(now), suite=self.config.suite)
        data = decode(cm.CertResData, opened.content)
        shared = self.answered(state, parsed, data, "chall_ee3", opened.signed, now, shared)
        decided = self.certificate_status(state, key, data, now, shared)
        if decided is not None:
            return decided
        status = data["cert_status"]
        certs = opened.signed.certificates
        thumbs = data["cert_thumbs"].native or []
        if len(thumbs) != 1:
            raise ProtocolError("CertRes must name exactly one certificate", "invalidCertificate")
        cert = find_certificate(certs, thumbs[0])
        validate_path(cert, certs, self.config.trust, now=now, expected_type="card",
                      key_usage="digital_signature", crls=self.config.crls)
        if spki(cert.public_key()).hex() != state["spki"]:
            raise ProtocolError("certificate does not certify our new key", "invalidCertificate")
        nonce_cca = status["nonce_cca"].native
        if nonce_cca is None:
            raise ProtocolError("CertRes lacks NonceCCA", "unspecifiedFailure")
        secret_value = pan_secret(unh(secret["card_secret"]), nonce_cca)
        verify_cardholder_id(cert, secret_value, secret["pan"], secret["expiry"], self.config.suite)
        chain = [c for c in certs if c is not cert]
        effect = Effect("wallet.certificate", {
            "transaction": key, "key_id": state["key_id"], "brand": state["brand"],
            "certificate_pem": cert_pem(cert), "chain_pem": [cert_pem(c) for c in chain],
            "cardholder_id": cardholder_common_name(secret_value, secret["pan"], secret["expiry"],
                                                    self.config.suite),
            "not_after": cert.not_valid_after_utc.isoformat(), "pan_last4": secret["pan"][-4:],
            "secret": {"pan_secret": secret_value.hex()}})
        return self.finish(state, key, effect, shared=shared, certificate=cert_hex(cert))

    on_CertInqRes = on_CertRes
