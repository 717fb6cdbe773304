"""PCertReq/PCertRes (set-protocol.md §5.8): a merchant fetches its gateway's certificates by mail.

    PCertReq = S(M, PCertReqData{PCertTags, [MThumbs], BrandAndBINSeq})
        -> PCertRes = S(P, PCertResTBS{PCertTags echoed, one item per brand/BIN, [BCIs]})
           with the gateway's signature and key-exchange certificates and PCA chain

Why by mail: the merchant must encrypt every AuthReq/CapReq to its acquirer's *current*
key-exchange certificate, and SET gives it this exchange to learn it; reading the gateway's key
files would only work on one machine.  Two sub-roles, composed by ``agent.factory`` into the
merchant's and the gateway's agents (``Dispatch``):

* ``PCertClient`` (merchant): command ``pcert`` (or the ``refresh`` timer) asks, through an
  ``Exchange`` pinned to the gateway the merchant is configured with: the answer must be signed
  by a certificate that validates as ``pgwy`` and carries the subject the PCA certifies that
  gateway under (``gateway_subject``, D-181).  The key-exchange certificate must validate too and
  belong to the signer.  Its BCI is checked on the signer's path and never rolls back (shared
  ``"brand"``).  Effects: ``pcert.gateway`` {peer, gateway, kex_pem, sig_pem, chain_pem} (the
  agent keeps them as its copy of the gateway's certificates) and, when that key-exchange
  certificate is not the one the merchant's role was built with, ``role.reload``.  One
  transaction, key ``pcert``: START → SENT → HAVE (or FAILED), asked again by a new ``pcert``
  command or the ``refresh`` timer (``refresh_after``, or ``renew_before`` the certificate
  expires, whichever is sooner; after a failure, ``retry_after``).
* ``PCertServer`` (gateway): answers a PCertReq signed by a merchant certificate (path ``mer``,
  CRLs) whose merID a merchant of the world has agreed (``merchants``: merID → address), at that
  address, never the From; the request's merchantID must be the certificate's.  Stateless: the
  agent's dedupe re-sends the stored answer to an exact repeat.  A stranger's request is refused
  without a reply; a merchant's malformed one gets a signed Error naming its bytes.

Errors: the client's requests carry ``lid-M`` = ``PCERT`` + 11 random octets, so ``Dispatch``
routes an Error naming one to the client (``claims_error``) and not to registration (whose
lid-M is 16 random octets) nor to the merchant (purchase messages carry an XID).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography import x509

from setmail.asn1 import capture as cap
from setmail.asn1.base import decode
from setmail.asn1.certext import BrandCRLIdentifier
from setmail.crypto.cms import Identity
from setmail.crypto.operators import S, verify_S
from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.setext import read_merchant_data
from setmail.pki.thumbs import thumbprint
from setmail.pki.trust import TrustStore
from setmail.pki.validate import validate_path
from setmail.roles import brand
from setmail.roles.base import START, Effect, Inbound, Outcome, Role, Send, SetTimer
from setmail.roles.certs import cert_pem, find_certificate, path_check
from setmail.roles.exchange import ENDS, NUDGE, Exchange
from setmail.roles.refusal import guarded, refusal
from setmail.roles.wire import check_echo, h, unh, unwrap, wrap

#: the first octets of every PCertReq's lid-M (how an Error naming one finds the client)
MARK = b"PCERT"
KEY = "pcert"


def _thumbs(certs) -> dict:
    return {"digest_algorithm": {"algorithm": "sha256"},
            "cert_thumbs": [thumbprint(c) for c in certs]}


def _present(value) -> list:
    """The elements of an OPTIONAL SEQUENCE OF (none when absent)."""
    return [] if value.native is None else list(value)


def _when(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


# --- the merchant's side --------------------------------------------------------------------------
@dataclass(frozen=True)
class PCertClientConfig:
    """``name`` (our address), ``sig`` (our signature identity, chain without the root),
    ``mer_id``, ``bin`` (our acquirer BIN), ``brand``; ``gateway`` (its address), ``gateway_subject``
    (DER of the subject name the PCA certifies it under) and ``peer`` (its agent name: where the
    agent keeps the copy); ``current`` (thumbprint of the key-exchange certificate the merchant's
    role was built with; None: none yet); ``held``: certificates we hold (their thumbs go in
    MThumbs so the gateway may leave them out)."""

    name: str
    sig: Identity
    mer_id: str
    gateway: str
    gateway_subject: bytes
    peer: str
    trust: TrustStore
    brand: str
    bin: str = "41111111"
    crls: tuple | None = None
    current: bytes | None = None
    held: tuple[x509.Certificate, ...] = ()
    suite: CryptoSuite = DEFAULT_SUITE
    retry_after: dt.timedelta = dt.timedelta(minutes=30)
    max_retries: int = 3
    refresh_after: dt.timedelta = dt.timedelta(days=1)
    renew_before: dt.timedelta = dt.timedelta(days=30)


_ANSWERED = ("HAVE", "FAILED", "SENT")


class PCertClient(Role):
    """The merchant's copy of its gateway's certificates, kept current by mail."""

    name = "pcert-client"
    shared_key = brand.SHARED_KEY
    TRANSITIONS = {
        START: {"pcert": "SENT", "PCertRes": START, "Error": START, "timer:refresh": "SENT",
                "timer:retry": START},
        "SENT": {"pcert": "SENT", "PCertRes": _ANSWERED, "Error": ("SENT", "FAILED"),
                 "timer:retry": ("SENT", "FAILED"), "timer:refresh": "SENT"},
        **{s: {"pcert": "SENT", "timer:refresh": "SENT", "PCertRes": s, "Error": s,
               "timer:retry": s} for s in ("HAVE", "FAILED")},
    }

    def __init__(self, config: PCertClientConfig):
        self.config = config
        self.exchange = Exchange(retry_after=config.retry_after, max_retries=config.max_retries)

    def transaction_key(self, event) -> str:
        return KEY

    @staticmethod
    def claims_error(ids: Mapping) -> bool:
        lid = ids.get("lid_m") or b""
        return bytes(lid).startswith(MARK) and not ids.get("xid")

    # -- asking ----------------------------------------------------------------------------------
    def _ask(self, state, now: dt.datetime) -> Outcome:
        c = self.config
        rrpid, lid = fresh(), MARK + fresh(11)
        data = cap.PCertReqData({
            "p_cert_rr_tags": {"rrpid": rrpid, "mer_term_ids": {"merchant_id": c.mer_id},
                               "date": now.astimezone(dt.timezone.utc).replace(microsecond=0)},
            "m_thumbs": _thumbs((*c.trust.roots, *c.held)),
            "brand_and_bin_seq": [{"brand_id": c.brand, "bin": c.bin}]})
        body = S(c.sig, "PCertReqData", data.dump(), suite=c.suite)
        der = wrap("PCertReq", body, now=now, rrpid=rrpid, lid_m=lid)
        state = {k: v for k, v in state.items() if k not in ("refused", "nudged_by")}
        state.update(state="SENT", lid=h(lid), asked=_when(now))
        return self.exchange.ask(state, KEY, to=c.gateway, type_name="PCertReq", der=der,
                                 rrpid=rrpid, expects=("PCertRes",),
                                 pin_={"subject": c.gateway_subject.hex()}, now=now,
                                 cancel=("refresh",))

    def on_pcert(self, state, event, now, shared) -> Outcome:
        if state["state"] == "SENT":  # already asking: the answer will do for this one too
            return Outcome(KEY, dict(state))
        return self._ask(dict(state), now)

    def on_timer_refresh(self, state, event, now, shared) -> Outcome:
        return self.on_pcert(state, event, now, shared)

    def _failed(self, state: dict, now: dt.datetime, reason: str, code: str | None = None,
                shared=None) -> Outcome:
        state, timers = self.exchange.settle(state)
        state.update(state="FAILED", reason=reason, error_code=code)
        return Outcome(KEY, state, shared=shared, timers=(*timers, SetTimer(
            "refresh", now + self.config.retry_after, {"transaction": KEY})))

    def on_timer_retry(self, state, event, now, shared) -> Outcome:
        return self.exchange.on_timer(state, KEY, now,
                                      lambda why: self._failed(dict(state), now, why))

    def on_Error(self, state, event, now, shared) -> Outcome:
        """Ends the request only when the pinned gateway signed it naming our exact bytes."""
        if state["state"] == START:
            return Outcome(KEY, None, refused="Error names no PCertReq of ours")
        verdict = self.exchange.judge(state, event, now, validate=self._check(now),
                                      suite=self.config.suite)
        if verdict.kind == ENDS:
            return self._failed(dict(state), now, verdict.why, verdict.code)
        state, timers = dict(state), ()
        if verdict.kind == NUDGE:
            state, timers = self.exchange.nudge(state, KEY, now)
            state["nudged_by"] = {"code": verdict.code, "why": verdict.why[:200]}
        return Outcome(KEY, state, timers=timers, refused=verdict.why)

    def _check(self, now, key_usage: str = "digital_signature"):
        return path_check(self.config.trust, now, "pgwy", key_usage, crls=self.config.crls)

    # -- the answer ------------------------------------------------------------------------------
    def refuse(self, state, event, exc, now) -> Outcome:
        return refusal(state, event, exc, now, transaction=KEY, suite=self.config.suite)

    @guarded
    def on_PCertRes(self, state, event, now, shared) -> Outcome:
        c, state = self.config, dict(state)
        parsed = unwrap(event, now)
        signed = verify_S(parsed.body, "PCertResTBS", validate=self._check(now), suite=c.suite)
        tbs = decode(cap.PCertResTBS, signed.content)
        rec = self.exchange.accept(state, parsed, signed.signer)
        rrpid = unh(rec["rrpid"])
        check_echo("RRPID", tbs["p_cert_rr_tags"]["rrpid"].native, rrpid)
        if parsed.message_id("lid_m") != unh(state["lid"]):
            raise ProtocolError("PCertRes names another request (lid-M)", "badMessageHeader")
        new_shared = None
        for bci in _present(tbs["brand_crl_identifier_seq"]):
            seq, seen = brand.check_bci(bci.dump(), signed.signer, signed.certificates,
                                        trust=c.trust, now=now, expected_type="pgwy",
                                        suite=c.suite, crls=c.crls, seen=new_shared or shared)
            new_shared = seen or new_shared
            state["bci_sequence"] = seq
        items = tbs["p_cert_res_item_seq"]
        if len(items) != 1:
            raise ProtocolError("PCertRes must answer our one brand and BIN", "unspecifiedFailure")
        code = items[0]["p_cert_code"].native
        if code != "success":
            return self._failed(state, now, f"the gateway answered {code}", code,
                                shared=new_shared)
        kex = self._key_exchange(signed, items[0]["m_thumbs"], now)
        chain = [x for x in signed.certificates if x not in (kex, signed.signer)
                 and x.subject != x.issuer]
        thumb = thumbprint(kex)
        effects = [Effect("pcert.gateway", {
            "peer": c.peer, "gateway": c.gateway, "kex_pem": cert_pem(kex),
            "sig_pem": cert_pem(signed.signer), "chain_pem": [cert_pem(x) for x in chain]})]
        if thumb != c.current:
            effects.append(Effect("role.reload", {"why": "the gateway's key-exchange "
                                                         "certificate arrived by PCertRes"}))
        state, timers = self.exchange.settle(state)
        for k in ("refused", "reason", "error_code", "nudged_by"):
            state.pop(k, None)
        end = kex.not_valid_after_utc
        due = max(min(now + c.refresh_after, end - c.renew_before), now + c.retry_after)
        state.update(state="HAVE", kex_thumb=thumb.hex(), serial=format(kex.serial_number, "x"),
                     not_after=_when(end), fetched=_when(now))
        return Outcome(KEY, state, effects=tuple(effects), shared=new_shared, peer=c.gateway,
                       timers=(*timers, SetTimer("refresh", due, {"transaction": KEY})))

    def _key_exchange(self, signed, item_thumbs, now) -> x509.Certificate:
        """The key-exchange certificate the item names: valid, and the signer's own."""
        for thumb in (item_thumbs.native or {}).get("cert_thumbs") or []:
            cert = find_certificate(signed.certificates, thumb)
            if cert == signed.signer:
                continue
            validate_path(cert, signed.certificates, self.config.trust, now=now,
                          expected_type="pgwy", key_usage="key_encipherment",
                          crls=self.config.crls)
            if cert.subject != signed.signer.subject:
                raise ProtocolError("key-exchange certificate belongs to another gateway",
                                    "invalidCertificate")
            return cert
        raise ProtocolError("PCertRes names no key-exchange certificate", "missingCertificate")


# --- the gateway's side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PCertServerConfig:
    """``name`` (our address), ``sig`` (signature identity, PCA chain without the root),
    ``kex`` (our key-exchange certificate), ``brand``, ``bins`` (the acquirer BINs we serve),
    ``bci`` (carried in every answer; None: none), ``merchants`` (merID → the address the world
    agreed with that merchant; None: no such merchant)."""

    name: str
    sig: Identity
    kex: x509.Certificate
    trust: TrustStore
    brand: str
    merchants: Callable[[str], str | None]
    bins: tuple[str, ...] = ("41111111",)
    bci: BrandCRLIdentifier | None = None
    crls: tuple | None = None
    suite: CryptoSuite = DEFAULT_SUITE


class PCertServer(Role):
    """Answers PCertReq with our current certificates; keeps no state."""

    name = "pcert-server"
    TRANSITIONS = {START: {"PCertReq": START}}

    def __init__(self, config: PCertServerConfig):
        self.config = config

    def transaction_key(self, event) -> str:
        return "pcert-req"

    def on_PCertReq(self, state, event: Inbound, now, shared) -> Outcome:
        c, to = self.config, None
        try:
            parsed = unwrap(event, now)
            signed = verify_S(parsed.body, "PCertReqData", suite=c.suite,
                              validate=path_check(c.trust, now, "mer", crls=c.crls))
            info = read_merchant_data(signed.signer)
            to = c.merchants(info.mer_id) if info is not None else None
            if to is None:
                return Outcome("pcert-req", None, refused="PCertReq from a merchant certificate "
                               "no merchant of this world holds: not answered")
            data = decode(cap.PCertReqData, signed.content)
            tags = data["p_cert_rr_tags"]
            if parsed.rrpid != tags["rrpid"].native:
                raise ProtocolError("MessageHeader RRPID disagrees with the payload",
                                    "badMessageHeader")
            if tags["mer_term_ids"]["merchant_id"].native != info.mer_id:
                raise ProtocolError("merchantID is not the signer's merID", "invalidCertificate")
            return self._answer(event, parsed, signed, data, to, now)
        except SetmailError as exc:
            return refusal({}, event, exc, now, transaction="pcert-req", to=to,
                           signer=c.sig if to else None, suite=c.suite)

    def _answer(self, event, parsed, signed, data, to: str, now) -> Outcome:
        c = self.config
        items = [{"p_cert_code": self._code(item), "m_thumbs": _thumbs((c.sig.cert, c.kex))}
                 for item in data["brand_and_bin_seq"]][:8]
        if not items:
            raise ProtocolError("PCertReq names no brand", "unspecifiedFailure")
        tbs = {"p_cert_rr_tags": data["p_cert_rr_tags"], "p_cert_res_item_seq": items}
        if c.bci is not None:
            tbs["brand_crl_identifier_seq"] = [c.bci]
        held = set((data["m_thumbs"].native or {}).get("cert_thumbs") or [])
        held |= {thumbprint(r) for r in c.trust.roots}
        certs = (c.sig.cert, c.kex, *[x for x in c.sig.chain if thumbprint(x) not in held])
        body = S(c.sig, "PCertResTBS", cap.PCertResTBS(tbs).dump(), certs=certs, suite=c.suite)
        der = wrap("PCertRes", body, now=now, rrpid=parsed.rrpid,
                   lid_m=parsed.message_id("lid_m"))
        send = Send(to, "PCertRes", der, event.mail_id or None)
        return Outcome("pcert-req", None, sends=(send,), peer=to)

    def _code(self, item) -> str:
        if item["brand_id"].native.split(":")[0].lower() != self.config.brand.lower():
            return "brandNotSupported"
        bin_ = item["bin"].native
        return "success" if bin_ is None or bin_ in self.config.bins else "unknownBIN"


def with_current(config: PCertClientConfig, kex: x509.Certificate | None) -> PCertClientConfig:
    """``config`` knowing the key-exchange certificate the merchant's role was built with."""
    return dataclasses.replace(config, current=None if kex is None else thumbprint(kex),
                               held=() if kex is None else (kex,))


