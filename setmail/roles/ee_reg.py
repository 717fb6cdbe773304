"""Merchant and payment-gateway registration (set-protocol.md §6.2): four messages, two keys.

    Me-AqCInitReq (clear: IDData, merInitialBoth | pgwyInitialBoth)
        -> Me-AqCInitRes = S(CA, MeAqCInitResTBS): registration form, Chall-CA, CA certificates
    CertReq = Enc(new signature key, CA key exchange, CertReqData{both public keys, form, IDData})
        -> CertRes = S(CA, CertResData) with the signature and key-exchange certificates

The merchant has no certificate yet, so the CertReq is signed with the *new signature key* through a
self-signed carrier certificate (D-302); the CA compares the signer's key with publicKeyS.  The
key-exchange key proves nothing at registration, as in SET 1.0 (D-307).  Every answer passes
``Registration.answered``: our request's RRPID, LID-EE and challenge echoed, the CA pinned by its
first answer, its BrandCRLIdentifier verified.  Nothing in the clear Me-AqCInitReq authenticates
the merchant, so the MCA/PCA asks, in the (encrypted) form, for the registration code the member
agreed with its acquirer out of band (``RegistrationCode``, docs/pki.md).

``EERegConfig``: the ``RegistrationConfig`` fields and the keyword-only ``kind`` ("merchant" |
"gateway").

Command ``renew`` (same args; the form needs no RegistrationCode): the same messages with
``merRenewalBoth`` / ``pgwyRenewalBoth``, the CertReq signed by the certificate being renewed
(``config.current()``) around the new signature key's proof of possession, EEThumb naming it.

Command ``register`` args: ``ca`` (MCA/PCA address), ``bin`` (8-digit acquirer BIN),
``merchant_id`` (merchants: agreed with the acquirer) or ``acquirer_business_id`` (gateways,
optional), ``fields`` (form values: MerchantName/City/CountryName/CountryCode, or GatewayName, and
RegistrationCode; kept under ``state["secret"]`` until done), optional ``lid`` (hex; the
transaction key, carried as lid-M in headers; default 16 fresh octets).
Effects: ``ee.key`` {transaction, kind, usage "signature"|"key_exchange", key_id, spki_sha256,
secret: {private_key_pem}} (two of them); ``ee.certificate`` {transaction, kind, signature:
{key_id, certificate_pem}, key_exchange: {key_id, certificate_pem}, chain_pem, mer_id}, then
``role.reload`` (the agent rebuilds its role on the new certificates, ``agent.reload``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from setmail.asn1 import certmsgs as cm
from setmail.crypto.operators import Enc
from setmail.crypto.suite import fresh
from setmail.errors import ProtocolError
from setmail.pki import validate_path
from setmail.pki.setext import read_merchant_data
from setmail.roles.base import Effect, Outcome
from setmail.roles.certs import (cert_hex, cert_pem, find_certificate, private_pem,
                                 public_key_info, spki)
from setmail.roles.forms import fill_form
from setmail.roles.refusal import guarded
from setmail.pki.thumbs import thumbprint
from setmail.roles.registration import CERTIFICATE_STATES, Registration, RegistrationConfig, waiting
from setmail.roles.wire import h, unh, wrap

KINDS = {  # kind -> (CA certificate type, our certificate type, RequestType, renewal RequestType)
    "merchant": ("mca", "mer", "merInitialBoth", "merRenewalBoth"),
    "gateway": ("pca", "pgwy", "pgwyInitialBoth", "pgwyRenewalBoth"),
}


@dataclass(frozen=True)
class EERegConfig(RegistrationConfig):
    """The registration fields plus which end entity registers."""

    kind: str = field(kw_only=True)  # "merchant" | "gateway"


class EERegistration(Registration):
    """Merchant or gateway registration; transaction key = LID-EE (hex), lid-M in headers."""

    name = "ee-registration"
    LID_FIELD = "lid_m"
    TRANSITIONS = {
        "START": {"register": ("INIT_SENT", "FAILED"), "renew": ("INIT_SENT", "FAILED"),
                  "Error": "START"},
        "INIT_SENT": {"Me-AqCInitRes": ("CERT_REQ_SENT", "INIT_SENT", "FAILED"),
                      **waiting("INIT_SENT")},
        **CERTIFICATE_STATES,
    }

    def __init__(self, config: EERegConfig):
        if config.kind not in KINDS:
            raise ValueError(f"kind must be merchant or gateway, not {config.kind!r}")
        super().__init__(config)
        self.ca_type, self.own_type, self.initial_type, self.renewal_type = KINDS[config.kind]

    @staticmethod
    def claims_error(ids) -> bool:
        """An Error naming a lid-M of the length registration draws (16 octets, D-145) and no XID
        is registration's; purchase messages carry an XID, the issuer leg a merchant tag."""
        lid = ids.get("lid_m") or b""
        return len(lid) == 16 and not ids.get("xid")

    # -- register / renew -> Me-AqCInitReq ---------------------------------------------------------
    def on_register(self, state, event, now, shared) -> Outcome:
        return self._start(event, now, self.initial_type)

    def on_renew(self, state, event, now, shared) -> Outcome:
        current = self.config.current() if self.config.current else None
        problem = self.renewing(current, now)
        if problem:
            key = self.transaction_key(event)
            return self.fail({"state": "INIT_SENT", "lid": key, "ca": event.args.get("ca"),
                              "kind": self.config.kind}, key, problem)
        return self._start(event, now, self.renewal_type, thumbprint(current.cert).hex())

    def _start(self, event, now, request_type: str, renewing: str | None = None) -> Outcome:
        key, a = self.transaction_key(event), event.args
        state = {"state": "INIT_SENT", "lid": key, "ca": a.get("ca"), "kind": self.config.kind,
                 "request_type": request_type, "secret": {"fields": dict(a.get("fields") or {})}}
        if renewing:
            state["renewing"] = renewing
        bin_ = str(a.get("bin", ""))
        problem = None if len(bin_) == 8 and bin_.isdigit() else "bin must be 8 digits"
        if self.config.kind == "merchant":
            id_data = cm.IDData(name="merchant_acquirer_id", value={
                "merchant_bin": bin_, "merchant_id": str(a.get("merchant_id") or "")})
            problem = problem or (None if a.get("merchant_id") else "merchant_id is required")
        else:
            value = {"acquirer_bin": bin_}
            if a.get("acquirer_business_id"):
                value["acquirer_business_id"] = str(a["acquirer_business_id"])
            id_data = cm.IDData(name="acquirer_id", value=value)
        lid, lid_problem = self.lid_octets(key)
        problem = problem or lid_problem
        if problem or not state["ca"]:
            return self.fail(state, key, problem or "ca is required")
        rrpid, chall = fresh(), fresh()
        state.update(chall=h(chall), id_data=id_data.dump().hex(), mer_id=a.get("merchant_id"))
        msg = cm.MeAqCInitReq({"rrpid": rrpid, "lid_ee": lid, "chall_ee": chall,
                               "request_type": request_type, "id_data": id_data,
                               "language": a.get("language") or self.config.language,
                               "thumbs": self.held_thumbs()})
        der = wrap("Me-AqCInitReq", msg, now=now, rrpid=rrpid, lid_m=lid)
        return self.ask(state, key, "Me-AqCInitReq", der, rrpid, now, answered=False)

    # -- Me-AqCInitRes -> CertReq -------------------------------------------------------------------
    @guarded
    def on_Me_AqCInitRes(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        _, signed, tbs, shared = self.ca_answer(state, event, now, shared, "MeAqCInitResTBS",
                                                cm.MeAqCInitResTBS, "chall_ee")
        request_type = state.get("request_type", self.initial_type)
        if tbs["request_type"].native != request_type:
            raise ProtocolError("Me-AqCInitRes answers another request type", "challengeMismatch")
        kex = self.ca_key_exchange(signed, tbs["cae_thumb"].native, now)
        state["lid_ca"] = h(tbs["lid_ca"].native)
        form = tbs["reg_form_or_referral"]
        if form.name == "referral_data":
            return self.fail(state, key, "referred elsewhere: "
                             f"{form.chosen.native.get('reason') or ''}", "referral",
                             shared=shared)
        items, reg_form_id, problem = fill_form(form.chosen, state["secret"]["fields"])
        if problem:
            return self.fail(state, key, problem, shared=shared)
        suite = self.config.suite
        keys = {"signature": suite.generate_key(), "key_exchange": suite.generate_key()}
        publics = {u: spki(k.public_key()) for u, k in keys.items()}
        rrpid, chall = fresh(), fresh()
        data = {"rrpid": rrpid, "lid_ee": unh(state["lid"]), "chall_ee3": chall,
                "chall_ca": tbs["chall_ca"].native, "request_type": request_type,
                "request_date": now.replace(microsecond=0),
                "id_data": cm.IDData.load(unh(state["id_data"])),
                "public_key_sor_e": {"public_key_s": public_key_info(publics["signature"]),
                                     "public_key_e": public_key_info(publics["key_exchange"])},
                "thumbs": self.held_thumbs()}
        if state.get("lid_ca"):
            data["lid_ca"] = unh(state["lid_ca"])
        if reg_form_id is not None:
            data.update(reg_form_id=reg_form_id, reg_form=items)
        current = self.config.current() if state.get("renewing") and self.config.current else None
        if current is not None:
            data["ee_thumb"] = thumbprint(current.cert)
        signer, content = self.renewal_signer(state, keys["signature"],
                                              cm.CertReqData(data).dump(), now, current)
        if signer is None:
            return self.fail(state, key, content, shared=shared)
        body = Enc(signer, kex, "CertReqData", content, "CertReqTBE", suite=suite)
        key_ids = {u: hashlib.sha256(p).hexdigest()[:32] for u, p in publics.items()}
        state.update(state="CERT_REQ_SENT", chall=h(chall), polls=0, key_id=key_ids["signature"],
                     key_ids=key_ids, spkis={u: p.hex() for u, p in publics.items()})
        effects = [Effect("ee.key", {"transaction": key, "kind": self.config.kind, "usage": u,
                                     "key_id": key_ids[u],
                                     "spki_sha256": hashlib.sha256(publics[u]).hexdigest(),
                                     "secret": {"private_key_pem": private_pem(k)}})
                   for u, k in keys.items()]
        der = wrap("CertReq", body, now=now, rrpid=rrpid, lid_m=unh(state["lid"]))
        return self.ask(state, key, "CertReq", der, rrpid, now, effects=effects, shared=shared)

    # -- CertRes / CertInqRes ----------------------------------------------------------------------------
    @guarded
    def on_CertRes(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        _, signed, data, shared = self.ca_answer(state, event, now, shared, "CertResData",
                                                 cm.CertResData, "chall_ee3")
        decided = self.certificate_status(state, key, data, now, shared)
        if decided is not None:
            return decided
        certs = signed.certificates
        thumbs = data["cert_thumbs"].native or []
        if len(thumbs) != 2:
            raise ProtocolError("CertRes must name two certificates", "invalidCertificate")
        found = {}
        for thumb in thumbs:
            cert = find_certificate(certs, thumb)
            usage = next((u for u, p in state["spkis"].items()
                          if p == spki(cert.public_key()).hex()), None)
            if usage is None or usage in found:
                raise ProtocolError("a certificate does not certify one of our keys",
                                    "invalidCertificate")
            validate_path(cert, certs, self.config.trust, now=now, expected_type=self.own_type,
                          key_usage="digital_signature" if usage == "signature"
                          else "key_encipherment", crls=self.config.crls)
            found[usage] = cert
        mer_id = None
        if self.config.kind == "merchant":
            info = read_merchant_data(found["signature"])
            if info is None or info.mer_id != state["mer_id"]:
                raise ProtocolError("merchantData does not carry our merID", "invalidCertificate")
            mer_id = info.mer_id
        effect = Effect("ee.certificate", {
            "transaction": key, "kind": self.config.kind, "mer_id": mer_id,
            **{u: {"key_id": state["key_ids"][u], "certificate_pem": cert_pem(c)}
               for u, c in found.items()},
            "chain_pem": [cert_pem(c) for c in certs if c not in found.values()]})
        reload = Effect("role.reload", {"why": f"{self.config.kind} certificates issued"})
        return self.finish(state, key, effect, reload, shared=shared,
                           certificates={u: cert_hex(c) for u, c in found.items()})

    on_CertInqRes = on_CertRes
