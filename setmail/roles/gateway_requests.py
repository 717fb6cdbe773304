"""Opening and authenticating what a merchant asks the payment gateway (docs/purchase.md,
docs/lifecycle.md), kept apart from what each request means (``gateway_checks``,
``gateway_adjust``, ``gateway_batch``, ``gateway_split``).

Every merchant request is opened the same way, because the same attacker rules hold for all of
them (docs/threat-model.md): the envelope is opened with our key and the merchant's signature
verified once per event and without a clock (``open_request``), so the gateway can key the
transaction by the merchant and XID *as signed* before it reads any state; the signer's path, the
clear header's agreement with the signed RRPID and XID, and the merchant's own key-exchange
certificate (for the answer) are judged in the step (``authenticate``).

``_REQUESTS`` is the one table of what each request type is: its envelope (``EncB`` with baggage,
or ``Enc``), signed content, fields read as DER, and where its RRTags and TransIDs are.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from setmail.asn1 import capture as cap, gateway as gw
from setmail.asn1.codec.strict import decode_native
from setmail.crypto.cms import cert_der
from setmail.crypto.operators import open_Enc, open_EncB
from setmail.errors import ProtocolError, SetmailError
from setmail.pki.setext import read_merchant_data
from setmail.pki.thumbs import thumbprint
from setmail.pki.validate import validate_path
from setmail.roles.certs import cert_hex, path_check
from setmail.roles.network_msgs import once
from setmail.roles.wire import Parsed, h, unwrap, wire


@dataclass(frozen=True)
class MerchantRequest:
    """A merchant request opened with our key, its signature verified.  Who signed it is a claim
    until ``authenticate`` has validated the signer's path; ``xid`` and ``rrpid`` are read under
    that signature (the TransIDs' XID, the RRTags' RRPID), never from the clear header."""

    type: str
    data: dict              # the <X>Data as plain values, the ``_REQUESTS`` raw fields as DER
    baggage: bytes | None
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    mer_id: str
    thumb: bytes            # of the signature certificate (AuthResData.merThumb)
    trans_ids: Any          # DER of the TransIDs (its ``.native`` the values); None: BatchAdminReq
    rrpid: bytes
    kex: x509.Certificate | None = None  # the merchant's key-exchange certificate, once authenticated

    @property
    def xid(self) -> bytes:
        return self.trans_ids.native["xid"]


def merchant_facts(signer: x509.Certificate, known: dict) -> tuple[str, bytes]:
    """(merID, thumbprint) of a merchant signature certificate, read once per certificate."""
    der = cert_der(signer)
    facts = known.get(der)
    if facts is None:
        info = read_merchant_data(signer)
        if info is None:
            raise ProtocolError("merchant signature certificate has no merchantData",
                                "invalidCertificate")
        if len(known) >= 1024:
            known.clear()
        facts = known[der] = (info.mer_id, thumbprint(der))
    return facts


def _first(items: list, what: str):
    """The first item of a request's item sequence: it names the purchase (the step then
    insists on exactly one item: ``only_item``)."""
    if not items:
        raise ProtocolError(f"{what} names no item", "messageNotSupported")
    return items[0]


def only_item(items: list, what: str):
    """The one item of a request that carries an item sequence: setmail answers one purchase
    per request (a refused request gets Error messageNotSupported)."""
    if len(items) != 1:
        raise ProtocolError(f"a {what} carries exactly one item here", "messageNotSupported")
    return items[0]


def _cap_rev_or_cred(name: str) -> tuple:
    """CapRevReq, CredReq and CredRevReq: one layout (set-protocol.md §5.7), EncB with the
    purchase's CapTokenSeq as baggage (D-107)."""
    return (f"{name}TBE", f"{name}TBS", "CapTokenSeq", cap.CapRevOrCredReqData,
            ("cap_rev_or_cred_rr_tags", "cap_rev_or_cred_req_item_seq.*.trans_ids"),
            lambda data: data["cap_rev_or_cred_rr_tags"].native,
            lambda data: _first(data["cap_rev_or_cred_req_item_seq"], name)["trans_ids"])


#: message type -> (envelope type, signed type, baggage type (None: Enc, no baggage), data class,
#: the fields read as DER (``decode_native``'s raw paths: echoed in the answer or compared
#: byte-wise), where its RRTags are, where the TransIDs that name the purchase are (None: none))
_REQUESTS = {
    "AuthReq": ("AuthReqTBE", "AuthReqTBS", "PI", gw.AuthReqData,
                ("auth_req_item.auth_tags", "auth_req_item.auth_tags.trans_ids",
                 "auth_req_item.check_digests.h_oi_data", "auth_req_item.check_digests.hod2",
                 "auth_req_item.auth_req_payload.install_recur_data"),
                lambda data: data["auth_req_item"]["auth_tags"].native["auth_rr_tags"],
                lambda data: data["auth_req_item"]["auth_tags"].native["trans_ids"]),
    "CapReq": ("CapReqTBE", "CapReqTBS", "CapTokenSeq", cap.CapReqData,
               ("cap_rr_tags", "cap_item_seq.*.trans_ids"),
               lambda data: data["cap_rr_tags"].native,
               lambda data: _first(data["cap_item_seq"], "CapReq")["trans_ids"]),
    "AuthRevReq": ("AuthRevReqTBE", "AuthRevReqTBS", "AuthRevReqBaggage", gw.AuthRevReqData,
                   ("auth_rev_tags", "auth_rev_tags.trans_ids",
                    "auth_req_data.auth_req_item.auth_tags.trans_ids"),
                   lambda data: data["auth_rev_tags"].native["auth_rev_rr_tags"],
                   lambda data: data["auth_rev_tags"].native["trans_ids"]),
    "CapRevReq": _cap_rev_or_cred("CapRevReq"),
    "CredReq": _cap_rev_or_cred("CredReq"),
    "CredRevReq": _cap_rev_or_cred("CredRevReq"),
    "BatchAdminReq": ("BatchAdminReqTBE", "BatchAdminReqData", None, cap.BatchAdminReqData,
                      ("batch_admin_rr_tags",), lambda data: data["batch_admin_rr_tags"].native,
                      lambda data: None),
}
#: the merchant requests the gateway takes
REQUEST_TYPES = tuple(_REQUESTS)


def open_request(cfg, event, known: dict) -> MerchantRequest:
    """The merchant request ``event`` opened with our key and its signature verified, once per
    event: pure (no clock, no path validation), so ``Gateway.transaction_key`` can read the
    merchant and the XID from it before any state is read."""
    def compute() -> MerchantRequest:
        tbe, tbs, baggage, cls, raw, rr_tags, trans_ids = _REQUESTS[event.message_type]
        body = wire(event).body
        if baggage is None:
            opened = open_Enc(body, cfg.key_exchange, tbe, tbs, suite=cfg.suite)
        else:
            opened = open_EncB(body, cfg.key_exchange, tbe, tbs, baggage, suite=cfg.suite)
        signer = opened.signed.signer
        mer_id, thumb = merchant_facts(signer, known)
        data = decode_native(cls, opened.content, raw=raw)
        return MerchantRequest(event.message_type, data, opened.baggage, signer,
                               opened.signed.certificates, mer_id, thumb, trans_ids(data),
                               rr_tags(data)["rrpid"])
    return once(event, "merchant", compute)


def authenticate(cfg, event, now: dt.datetime, known: dict) -> tuple[Parsed, MerchantRequest]:
    """(parsed, request) of a request from an authenticated merchant, once per event: framing
    (``unwrap``), the signer's path ``mer`` (and CRLs), the clear header's RRPID and XID equal to
    the signed ones (a replay with a changed header is refused, never taken for another request),
    and the merchant's own key-exchange certificate among the certificates (for the answer).  Any
    failure is a SetmailError."""
    def compute() -> tuple[Parsed, MerchantRequest]:
        parsed = unwrap(event, now)
        req = open_request(cfg, event, known)
        certs = req.certificates
        path_check(cfg.trust, now, "mer", crls=cfg.crls)(req.signer, certs)
        if parsed.rrpid != req.rrpid:
            raise ProtocolError("MessageHeader RRPID disagrees with the request's RRTags",
                                "badMessageHeader")
        if req.trans_ids is not None and parsed.message_id("xid") != req.xid:
            raise ProtocolError("MessageHeader XID disagrees with the request's TransIDs",
                                "badMessageHeader")
        for cert in certs:
            if cert == req.signer or cert.subject != req.signer.subject:
                continue
            try:
                validate_path(cert, certs, cfg.trust, now=now, expected_type="mer",
                              key_usage="key_encipherment", crls=cfg.crls)
            except SetmailError:
                continue
            return parsed, replace(req, kex=cert)
        raise ProtocolError("no key-exchange certificate of the signing merchant",
                            "missingCertificate")
    return once(event, "authenticated", compute)


def authenticated(event) -> MerchantRequest | None:
    """The request ``authenticate`` accepted for this event, if it did."""
    found = event.__dict__.get("_once", {}).get("authenticated")
    return None if found is None or isinstance(found, Exception) else found[1]


def claimed(event) -> MerchantRequest | None:
    """The request as opened, if it opened: the merchant it *claims* to come from."""
    found = event.__dict__.get("_once", {}).get("merchant")
    return None if found is None or isinstance(found, Exception) else found


def reply_to(event, to: str, req: MerchantRequest, **fields) -> dict:
    """What answering a merchant request later needs, as JSON-able state: the directory
    address ``to``, the RRPID and the purchase's ids as the merchant signed them (the clear
    header's ids for a request without TransIDs)."""
    if req.trans_ids is not None:
        ids = {k: v for k, v in req.trans_ids.native.items()
               if k in ("lid_c", "lid_m", "xid") and v}
    else:
        ids = {k: v for k, v in (wire(event).header["message_ids"] or {}).items() if v}
    return {"to": to, "mail": event.mail_id or None, "rrpid": h(req.rrpid),
            "ids": {k: h(v) for k, v in ids.items()}, "mer_kex": cert_hex(req.kex), **fields}
