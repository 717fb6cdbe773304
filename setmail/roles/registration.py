"""What the two registration requesters share (cardholder, merchant/gateway), and nobody else.

A registration asks one CA a chain of questions (init, [form,] CertReq, CertInqReq while pended);
a renewal (command ``renew``) asks the same ones with SET's renewal request type, and its CertReq
is signed by the certificate being renewed around the new key's proof of possession
(``renewal_signer``, ``roles.ca_renewal``);
each waits in an ``Exchange`` (``roles.exchange``: re-sends of the same bytes, Error verdicts).
What only registration adds lives here: the LID-EE that keys the transaction, the CA pin, the
checks every CA answer passes, polling a pended CA, and the tail of the transition table
(``CERTIFICATE_STATES``).

The CA is pinned as the exchange rules say: the command names its address; the first answer must
validate as the CA type we asked (``cca``, ``mca``, ``pca``), and then its certificate's
thumbprint is pinned (``Exchange.repin``, kept in ``state["ca_pin"]``): every later answer, and
every Error that may end a request, must come from that very certificate.  Each answer's
BrandCRLIdentifier is verified on the CA's validated path and may not roll the brand's sequence
back (``roles.brand``, shared state ``"brand"``).

State: ``lid`` (hex), ``ca`` (address), ``ca_pin``, ``chall`` (the challenge the next answer
echoes), ``polls``, ``key_id``, ``bci_sequence``, the exchange's ``out`` record, ``reason`` /
``error_code`` once FAILED, ``refused`` (the last answer refused), ``nudged_by`` (the last Error
that brought a re-send forward), and under ``secret`` what must not outlive the registration
(form values, PAN, CardSecret, back key): dropped on DONE and FAILED.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asn1crypto import core

from setmail.asn1.base import decode
from setmail.asn1.certmsgs import CertInqReqTBS
from setmail.crypto.operators import S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.pki.validate import validate_path
from setmail.roles import brand
from setmail.roles.base import START, CancelTimer, Effect, Inbound, Outcome, Role, SetTimer
from setmail.roles.certs import find_certificate, path_check, pop_identity
from setmail.roles.exchange import ENDS, NUDGE, Exchange
from setmail.roles.refusal import refusal
from setmail.roles.wire import check_echo, check_header, h, header_ids, unh, unwrap, wrap


@dataclass(frozen=True)
class RegistrationConfig:
    """``name`` (our address), ``trust``, ``suite``, ``retry_after``/``max_retries`` (re-send the
    same bytes), ``poll_after``/``max_polls`` (CertInqReq while pended), ``language``, ``crls``
    (None: no revocation check of the CA), ``key_lookup`` (key_id -> the private key the agent
    stored from our key effect; needed only to sign CertInqReq), ``current`` (the signature
    identity a renewal renews: ``current()`` for a merchant or gateway, ``current(pan_last4,
    brand)`` for a cardholder; None: nothing to renew)."""

    name: str
    trust: TrustStore
    suite: CryptoSuite = DEFAULT_SUITE
    retry_after: dt.timedelta = dt.timedelta(minutes=30)
    max_retries: int = 3
    poll_after: dt.timedelta = dt.timedelta(hours=1)
    max_polls: int = 5
    language: str = "en"
    crls: tuple | None = None
    key_lookup: Callable[[str], Any] | None = None
    current: Callable[..., Any] | None = None


def waiting(state: str) -> dict:
    """Table entries of a waiting state: re-send (stay) or give up, and an Error that ends the
    request (FAILED) or does not (stay)."""
    return {"timer:retry": (state, "FAILED"), "Error": (state, "FAILED")}


_ANSWERED = ("DONE", "PENDING", "FAILED")
_STALE = ("timer:retry", "timer:poll", "Error")
#: the end of every registration table: CertReq sent, pended and polled, done or failed
CERTIFICATE_STATES = {
    "CERT_REQ_SENT": {"CertRes": (*_ANSWERED, "CERT_REQ_SENT"), **waiting("CERT_REQ_SENT")},
    "PENDING": {"timer:poll": ("INQ_SENT", "FAILED"), "timer:retry": "PENDING",
                "Error": "PENDING"},
    "INQ_SENT": {"CertInqRes": (*_ANSWERED, "INQ_SENT"), "CertRes": (*_ANSWERED, "INQ_SENT"),
                 **waiting("INQ_SENT")},
    "DONE": dict.fromkeys(_STALE, "DONE"),
    "FAILED": dict.fromkeys(_STALE, "FAILED"),
}
#: what each request waits for
EXPECTS = {"CardCInitReq": ("CardCInitRes",), "RegFormReq": ("RegFormRes",),
           "Me-AqCInitReq": ("Me-AqCInitRes",), "CertReq": ("CertRes",),
           "CertInqReq": ("CertInqRes", "CertRes")}


def bci_der(tbs) -> bytes | None:
    """The DER of the BrandCRLIdentifier an asn1crypto response value carries, or None."""
    if "brand_crl_identifier" not in tbs._field_map or isinstance(
            tbs["brand_crl_identifier"], core.Void):
        return None
    return tbs["brand_crl_identifier"].untag().dump()


class Registration(Role):
    """Base of ``CardholderRegistration`` and ``EERegistration`` only: the exchange with one CA.

    Subclasses set ``name``, ``LID_FIELD`` (lid_c or lid_m), ``ca_type`` and ``TRANSITIONS``
    (their START and first rounds, then ``CERTIFICATE_STATES``)."""

    shared_key = brand.SHARED_KEY
    LID_FIELD = "lid_c"
    ca_type = "cca"
    FAILED, DONE = "FAILED", "DONE"

    def __init__(self, config):
        self.config = config
        self.exchange = Exchange(retry_after=config.retry_after, max_retries=config.max_retries)

    # -- keys ------------------------------------------------------------------------------------
    def transaction_key(self, event) -> str:
        if isinstance(event, Inbound):
            value = header_ids(event).get(self.LID_FIELD)
            # unroutable input gets a throw-away key: START refuses it, nothing is stored
            return value.hex() if value else "unroutable"
        if hasattr(event, "payload"):
            return str(event.payload.get("transaction", ""))
        return self.command_key(event)

    @staticmethod
    def command_key(event) -> str:
        """The LID-EE (hex) a command names, else 16 fresh octets: unpredictable, so nobody can
        prepare the CA's side of a registration before it starts, and a new ``register`` after a
        failed one is a new registration.  Drawn once per command event (the agent asks for the
        key, then steps the same event)."""
        if event.args.get("lid"):
            return str(event.args["lid"])
        key = event.__dict__.get("_lid")
        if key is None:
            key = event.__dict__["_lid"] = fresh(16).hex()
        return key

    @staticmethod
    def lid_octets(key: str) -> tuple[bytes | None, str | None]:
        """(LID-EE, None) for a valid transaction key, else (None, why not)."""
        try:
            lid = bytes.fromhex(key)
        except ValueError:
            lid = b""
        if 1 <= len(lid) <= 20:
            return lid, None
        return None, "lid must be 1..20 octets in hex"

    def validate_ca(self, now: dt.datetime) -> Callable:
        return path_check(self.config.trust, now, self.ca_type, crls=self.config.crls)

    # -- asking and ending -----------------------------------------------------------------------
    def ask(self, state: dict, key: str, type_name: str, der: bytes, rrpid: bytes,
            now: dt.datetime, *, effects=(), shared=None, answered: bool = True) -> Outcome:
        """Send a request to the CA the command named; the answer must come from the pinned CA
        certificate (none pinned yet: any that validates as ``ca_type``).  ``answered``: this
        step took the CA's answer (the agent may compare its From with the CA's address)."""
        state.pop("refused", None)
        state.pop("nudged_by", None)  # about the request answered
        out = self.exchange.ask(state, key, to=state["ca"], type_name=type_name, der=der,
                                rrpid=rrpid, expects=EXPECTS[type_name],
                                pin_=state.get("ca_pin") or {}, now=now, effects=effects,
                                cancel=("retry",))
        return dataclasses.replace(out, shared=shared, peer=state["ca"] if answered else None)

    def fail(self, state: dict, key: str, reason: str, code: str | None = None, *,
             shared=None) -> Outcome:
        state, _ = self.exchange.settle(state)
        state.update(state=self.FAILED, reason=reason, error_code=code)
        state.pop("secret", None)
        return Outcome(key, state, timers=(CancelTimer("retry"), CancelTimer("poll")),
                       shared=shared)

    def finish(self, state: dict, key: str, *effects: Effect, shared=None, **fields) -> Outcome:
        """Certificate received: DONE, nothing outstanding, secrets dropped."""
        state, timers = self.exchange.settle(state)
        state.update(state=self.DONE, **fields)
        for k in ("refused", "secret"):
            state.pop(k, None)
        return Outcome(key, state, effects=effects, timers=timers, shared=shared,
                       peer=state["ca"])

    # -- renewal ---------------------------------------------------------------------------------
    def renewing(self, current, now: dt.datetime) -> str | None:
        """Why the certificate ``current`` (an Identity, or None) cannot be renewed, else None."""
        if current is None:
            return "no certificate to renew"
        if current.cert.not_valid_after_utc <= now:
            return "the certificate has expired: register anew"
        return None

    def renewal_signer(self, state: dict, new_key, data_der: bytes, now: dt.datetime, current):
        """(signer, content) of a CertReq: the new key's proof of possession over CertReqData,
        inside a signature by the certificate being renewed for a renewal (D-182); (None, why)
        when that certificate is no longer the one the renewal began with."""
        pop = pop_identity(new_key, now, self.config.suite)
        renewing = state.get("renewing")
        if not renewing:
            return pop, data_der
        if current is None or thumbprint(current.cert).hex() != renewing:
            return None, "the certificate being renewed is gone or was replaced meanwhile"
        return current, S(pop, "CertReqData", data_der, suite=self.config.suite)

    def refuse(self, state, event, exc, now) -> Outcome:
        """A refused answer changes nothing but a note, and is never answered (a response)."""
        return refusal(state, event, exc, now, transaction=self.transaction_key(event),
                       suite=self.config.suite)

    # -- the checks every CA answer passes -------------------------------------------------------
    def ca_answer(self, state: dict, event: Inbound, now: dt.datetime, shared, tbs_type: str,
                  cls, chall_field: str):
        """(parsed, signed, tbs, new brand shared state) of a CA answer S(CA, <tbs_type>)."""
        parsed = unwrap(event, now)
        signed = verify_S(parsed.body, tbs_type, validate=self.validate_ca(now),
                          suite=self.config.suite)
        tbs = decode(cls, signed.content)
        return parsed, signed, tbs, self.answered(state, parsed, tbs, chall_field, signed, now,
                                                  shared)

    def answered(self, state: dict, parsed, tbs, chall_field: str, signed, now: dt.datetime,
                 shared) -> dict | None:
        """The answer is to our outstanding request (type, RRPID, the pinned CA: the exchange),
        echoes our RRPID, LID-EE and challenge in the signed payload and the clear header, and
        its BrandCRLIdentifier verifies and is not older than one seen (returns the new brand
        shared state, None: unchanged).  Pins the CA on its first answer."""
        self.exchange.accept(state, parsed, signed.signer)
        rrpid = unh(self.exchange.pending(state)["rrpid"])
        check_echo("RRPID", tbs["rrpid"].native, rrpid)
        check_echo("LID-EE", tbs["lid_ee"].native, unh(state["lid"]))
        check_echo(chall_field, tbs[chall_field].native, unh(state["chall"]))
        check_header(parsed, rrpid, unh(state["lid"]), self.LID_FIELD)
        sequence, new_shared = brand.check_bci(
            bci_der(tbs), signed.signer, signed.certificates, trust=self.config.trust, now=now,
            expected_type=self.ca_type, suite=self.config.suite, crls=self.config.crls,
            seen=shared)
        if sequence is not None:
            state["bci_sequence"] = sequence
        if not state.get("ca_pin"):
            state["ca_pin"] = self.exchange.repin(state, signed.signer)[self.exchange.slot]["pin"]
        return new_shared

    def ca_key_exchange(self, signed, thumb: bytes, now: dt.datetime):
        """The CA's key-exchange certificate named by CAEThumb: valid, and the signer's own."""
        kex = find_certificate(signed.certificates, thumb)
        validate_path(kex, signed.certificates, self.config.trust, now=now,
                      expected_type=self.ca_type, key_usage="key_encipherment",
                      crls=self.config.crls)
        if kex.subject != signed.signer.subject:
            raise ProtocolError("key-exchange certificate belongs to another CA",
                                "invalidCertificate")
        return kex

    def held_thumbs(self) -> dict:
        """Thumbs for a request: the pinned roots we hold, so the CA need not send them."""
        return {"digest_algorithm": {"algorithm": "sha256"},
                "cert_thumbs": [thumbprint(r) for r in self.config.trust.roots]}

    def certificate_status(self, state: dict, key: str, data, now: dt.datetime,
                           shared) -> Outcome | None:
        """The outcome a CertRes status decides by itself (pended, refused); None when issued."""
        status = data["cert_status"]
        code = status["cert_status_code"].native
        if code in ("requestPended", "requestInProgress"):
            return self.pended(state, key, now, shared)
        if code != "requestComplete":
            message = status["ee_message"].native or ""
            return self.fail(state, key, f"CA refused: {code} {message}".strip(), code,
                             shared=shared)
        return None

    # -- waiting ---------------------------------------------------------------------------------
    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        return self.exchange.on_timer(state, key, now,
                                      lambda why: self.fail(dict(state), key, why))

    def on_Error(self, state, event, now, shared) -> Outcome:
        """Ends the request only on ENDS (signed by the pinned CA, naming our exact bytes); a
        NUDGE brings the re-send forward once per attempt; nothing else changes anything, and
        no Error is ever answered."""
        key = self.transaction_key(event)
        if state["state"] == START:
            return Outcome(key, None, refused="Error names no registration of ours")
        verdict = self.exchange.judge(state, event, now, validate=self.validate_ca(now),
                                      suite=self.config.suite)
        if verdict.kind == ENDS:
            return self.fail(dict(state), key, verdict.why, verdict.code)
        state = dict(state)
        timers = ()
        if verdict.kind == NUDGE:
            state, timers = self.exchange.nudge(state, key, now)
            state["nudged_by"] = {"code": verdict.code, "why": verdict.why[:200]}
        return Outcome(key, state, timers=timers, refused=verdict.why)

    def pended(self, state: dict, key: str, now: dt.datetime, shared) -> Outcome:
        """CertRes said pending: nothing outstanding, poll with CertInqReq after ``poll_after``."""
        state, timers = self.exchange.settle(state)
        state.update(state="PENDING")
        return Outcome(key, state, shared=shared, peer=state["ca"], timers=(*timers, SetTimer(
            "poll", now + self.config.poll_after, {"transaction": key})))

    def on_timer_poll(self, state, event, now, shared) -> Outcome:
        key, state = self.transaction_key(event), dict(state)
        if state["state"] != "PENDING":
            return Outcome(key, state)
        if state["polls"] >= self.config.max_polls:
            return self.fail(state, key, f"still pending after {state['polls']} inquiries")
        signer = self.config.key_lookup(state["key_id"]) if self.config.key_lookup else None
        if signer is None:
            return self.fail(state, key, "pended, but no key_lookup to sign CertInqReq")
        rrpid, chall = fresh(), fresh()
        tbs = {"rrpid": rrpid, "lid_ee": unh(state["lid"]), "chall_ee3": chall}
        if state.get("lid_ca"):
            tbs["lid_ca"] = unh(state["lid_ca"])
        body = S(pop_identity(signer, now, self.config.suite), "CertInqReqTBS",
                 CertInqReqTBS(tbs).dump(), suite=self.config.suite)
        state.update(state="INQ_SENT", chall=h(chall), polls=state["polls"] + 1)
        der = wrap("CertInqReq", body, now=now, rrpid=rrpid,
                   **{self.LID_FIELD: unh(state["lid"])})
        return self.ask(state, key, "CertInqReq", der, rrpid, now, answered=False)
