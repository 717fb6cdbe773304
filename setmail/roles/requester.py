"""The requesting side of registration (cardholder, merchant, gateway): ``Requester``.

A party that sends a request and waits re-sends the same bytes on ``timer:retry``, fails after
``max_retries``, polls a pended CA with CertInqReq, and takes a SET Error naming its outstanding
request.  ``CERTIFICATE_STATES`` is the part of the transition table every registration role
shares, from CertReq sent to done or failed.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Callable

from asn1crypto import core

from setmail.asn1.base import decode
from setmail.asn1.certmsgs import CertInqReqTBS
from setmail.crypto.operators import S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.bci import verify_bci
from setmail.pki.setext import read_certificate_type
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.pki.validate import validate_path
from setmail.roles.base import CancelTimer, Effect, Inbound, Outcome, Role, Send, SetTimer
from setmail.roles.certs import find_certificate, pop_identity
from setmail.roles.refusal import read_error, refusal
from setmail.roles.wire import check_echo, check_header, h, header_ids, unh, unwrap, wrap


# --- the requesting side (cardholder, merchant, gateway) -----------------------------------------
@dataclass(frozen=True)
class RequesterConfig:
    """Configuration every requesting registration role shares (cardholder, merchant, gateway)."""

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


#: events every state that waits for an answer takes: a re-send is due, or the peer sent an Error
WAIT_EVENTS = ("timer:retry", "Error")


def waiting(state: str) -> dict:
    """Table entries of a waiting state: re-send (stay) or give up / take the Error (FAILED)."""
    return {e: (state, "FAILED") for e in WAIT_EVENTS}


_ANSWERED = ("DONE", "PENDING", "FAILED")
#: the end of every registration table: CertReq sent, pended and polled, done or failed
CERTIFICATE_STATES = {
    "CERT_REQ_SENT": {"CertRes": (*_ANSWERED, "CERT_REQ_SENT"), **waiting("CERT_REQ_SENT")},
    "PENDING": {"timer:poll": ("INQ_SENT", "FAILED")},
    "INQ_SENT": {"CertInqRes": (*_ANSWERED, "INQ_SENT"), "CertRes": (*_ANSWERED, "INQ_SENT"),
                 **waiting("INQ_SENT")},
    "DONE": {"timer:retry": "DONE", "timer:poll": "DONE"},      # stale timers
    "FAILED": {"timer:retry": "FAILED", "timer:poll": "FAILED"},
}


class Requester(Role):
    """Retry, poll and Error handling shared by every party that sends requests and waits.

    Every request is remembered as sent (``state["last"]``: type, recipient, DER hex) with a
    ``retry`` timer; ``timer:retry`` re-sends the *same bytes* (same RRPID, so the responder's
    dedupe returns its stored answer) up to ``config.max_retries`` times, then FAILED.  A SET Error
    naming our outstanding request (by RRPID, or by its bytes) moves the transaction to FAILED with
    the code; any other Error is ignored.  Bad responses are answered with an unsigned Error and do
    not change the state (a forgery must not end a genuine exchange).
    Timer payloads carry ``{"transaction": key}`` so ``transaction_key`` can route them.
    """

    config: Any
    FAILED = "FAILED"
    DONE = "DONE"

    def transaction_key(self, event) -> str:
        if isinstance(event, Inbound):
            value = header_ids(event).get(self.LID_FIELD)
            # unroutable input gets a throw-away key: START refuses it, nothing is stored
            return value.hex() if value else "unroutable"
        if hasattr(event, "payload"):
            return str(event.payload.get("transaction", ""))
        return self.command_key(event)

    def command_key(self, event) -> str:
        """The LID-EE (hex) a command names, or one derived from what identifies the request."""
        a = event.args
        if a.get("lid"):
            return str(a["lid"])
        seed = "|".join(["setmail-lid", *(str(part) for part in self.lid_seed(a))])
        return hashlib.sha256(seed.encode()).hexdigest()[:32]

    def lid_seed(self, args) -> tuple:
        raise NotImplementedError

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

    LID_FIELD = "lid_c"

    # -- sending --------------------------------------------------------------------------------
    def request(self, state: dict, key: str, to: str, type_name: str, der: bytes, now: dt.datetime,
                rrpid: bytes, *, effects=(), cancel=()) -> Outcome:
        state.update(rrpid=h(rrpid), attempts=0,
                     last={"type": type_name, "to": to, "der": der.hex()})
        timers = (*[CancelTimer(n) for n in cancel],
                  SetTimer("retry", now + self.config.retry_after, {"transaction": key}))
        return Outcome(key, state, sends=(Send(to, type_name, der),), effects=tuple(effects),
                       timers=timers)

    def fail(self, state: dict, key: str, reason: str, code: str | None = None, *,
             sends=(), effects=()) -> Outcome:
        state.update(state=self.FAILED, reason=reason, error_code=code)
        self.forget_secrets(state)
        return Outcome(key, state, sends=tuple(sends), effects=tuple(effects),
                       timers=(CancelTimer("retry"), CancelTimer("poll")))

    def forget_secrets(self, state: dict) -> None:
        """Drop what must not outlive the transaction (PAN, CardSecret, back key)."""
        state.pop("secret", None)

    def refuse(self, state, event, exc, now) -> Outcome:
        return refusal(state, event, exc, now, transaction=self.transaction_key(event),
                       suite=self.config.suite)

    # -- handlers shared by every waiting state ---------------------------------------------------
    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        state = dict(state)
        if state["state"] in (self.DONE, self.FAILED) or "last" not in state:
            return Outcome(key, state)  # a stale timer
        if state["attempts"] >= self.config.max_retries:
            return self.fail(state, key, f"no answer to {state['last']['type']} after "
                             f"{state['attempts']} re-sends")
        state["attempts"] += 1
        last = state["last"]
        return Outcome(key, state, sends=(Send(last["to"], last["type"], bytes.fromhex(last["der"])),),
                       timers=(SetTimer("retry", now + self.config.retry_after, {"transaction": key}),))

    def on_Error(self, state, event, now, shared) -> Outcome:
        key = self.transaction_key(event)
        try:
            err = read_error(unwrap(event, now), suite=self.config.suite)
        except SetmailError:
            return Outcome(key, dict(state))  # never answer an Error with an Error
        last = state.get("last") or {}
        ours = (err.rrpid is not None and h(err.rrpid) == state.get("rrpid")) or (
            err.bad_wrapper is not None and last.get("der", "").startswith(err.bad_wrapper.hex()))
        if not ours:
            return Outcome(key, dict(state))
        return self.fail(dict(state), key, f"{last.get('type')} refused by peer", err.code)

    def signed_by_ca(self, state, event, now: dt.datetime, tbs_type: str, cls, chall_field: str,
                     *, same_ca: bool = True):
        """(parsed, signed, tbs) of a CA response signed with S(CA, <tbs_type>): the signature
        validates to a CA of our kind, comes from the CA that answered first (``same_ca``) and the
        content answers our outstanding request (``answered``)."""
        parsed = unwrap(event, now)
        signed = verify_S(parsed.body, tbs_type, validate=self._validate_ca(now),
                          suite=self.config.suite)
        if same_ca:
            self.same_ca(state, signed)
        tbs = decode(cls, signed.content)
        self.answered(state, parsed, tbs, chall_field, signed, now)
        return parsed, signed, tbs

    def answered(self, state, parsed, tbs, chall_field, signed, now: dt.datetime) -> None:
        """A response must echo our RRPID, LID-EE and challenge, in the payload and the header;
        the brand's BrandCRLIdentifier it may carry is checked and noted (``take_bci``)."""
        check_echo("RRPID", tbs["rrpid"].native, unh(state["rrpid"]))
        check_echo("LID-EE", tbs["lid_ee"].native, unh(state["lid"]))
        check_echo(chall_field, tbs[chall_field].native, unh(state["chall"]))
        check_header(parsed, unh(state["rrpid"]), unh(state["lid"]), self.LID_FIELD)
        self.take_bci(state, tbs, signed, now)

    def held_thumbs(self) -> dict:
        """Thumbs for a request: the pinned roots we hold, so the CA need not send them."""
        return {"digest_algorithm": {"algorithm": "sha256"},
                "cert_thumbs": [thumbprint(r) for r in self.config.trust.roots]}

    def take_bci(self, state: dict, tbs, signed, now: dt.datetime) -> None:
        """Check the BrandCRLIdentifier a response carries (signed by the brand CA on the signer's
        validated path, in force now) and note its sequence number: the CRLs the brand says are
        current (D-213).  ``tbs``: an asn1crypto value, or a ``decode_native`` dict with the BCI
        read raw (its DER)."""
        if isinstance(tbs, dict):
            der = tbs.get("brand_crl_identifier")
        elif "brand_crl_identifier" not in tbs._field_map or isinstance(
                tbs["brand_crl_identifier"], core.Void):
            der = None
        else:
            der = tbs["brand_crl_identifier"].untag().dump()
        if der is None:
            return
        brand = [c for c in signed.certificates if "bca" in read_certificate_type(c)]
        if not brand:
            raise ProtocolError("BrandCRLIdentifier without the brand CA certificate",
                                "missingCertificate")
        bci = verify_bci(der, brand[0], now=now, suite=self.config.suite)
        state["bci_sequence"] = bci["tbs"]["sequence_num"].native

    def same_ca(self, state, signed) -> None:
        if thumbprint(signed.signer).hex() != state["ca_sig"]:
            raise ProtocolError("signed by another CA certificate than CardCInitRes", "invalidCertificate")

    def ca_key_exchange(self, signed, thumb: bytes, now: dt.datetime, ca_type: str):
        """The CA's key-exchange certificate named by CAEThumb: valid, and the signer's own."""
        kex = find_certificate(signed.certificates, thumb)
        validate_path(kex, signed.certificates, self.config.trust, now=now, expected_type=ca_type,
                      key_usage="key_encipherment", crls=self.config.crls)
        if kex.subject != signed.signer.subject:
            raise ProtocolError("key-exchange certificate belongs to another CA", "invalidCertificate")
        return kex

    def certificate_status(self, state: dict, key: str, data, now: dt.datetime) -> Outcome | None:
        """The outcome a CertRes status decides by itself (pended, refused); None when issued."""
        status = data["cert_status"]
        code = status["cert_status_code"].native
        if code in ("requestPended", "requestInProgress"):
            return self.pended(state, key, now)
        if code != "requestComplete":
            return self.fail(state, key, f"CA refused: {code} {status['ee_message'].native or ''}".strip(),
                             code)
        return None

    def finish(self, state: dict, key: str, effect: Effect, **fields) -> Outcome:
        """Certificate received: DONE, nothing outstanding, secrets dropped."""
        state.update(state=self.DONE, **fields)
        for k in ("last", "refused"):
            state.pop(k, None)
        self.forget_secrets(state)
        return Outcome(key, state, effects=(effect,), timers=(CancelTimer("retry"),))

    def pended(self, state: dict, key: str, now: dt.datetime) -> Outcome:
        """CertRes said pending: stop re-sending, poll with CertInqReq after ``poll_after``."""
        state.update(state="PENDING")
        state.pop("last", None)
        return Outcome(key, state, timers=(CancelTimer("retry"), SetTimer(
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
        der = wrap("CertInqReq", body, now=now, rrpid=rrpid, **{self.LID_FIELD: unh(state["lid"])})
        return self.request(state, key, state["ca"], "CertInqReq", der, now, rrpid)

