"""Certificate renewal at a CA (SET's ``cardRenewalSig``, ``merRenewalBoth``, ``pgwyRenewalBoth``).

A renewal is a registration of new keys by a member who holds a certificate of this CA that has
not expired.  What changes is what authenticates the request: instead of the registration code
agreed out of band, the **certificate being renewed**.  SET signs a renewal's CertReqData twice,
with the new key (proof of possession) and with the key being renewed; our CMS layer makes one
signature per SignedData, so a renewal's CertReq nests them (D-182):

    CertReq = Enc(EE-current, CA, S(EE-new, CertReqData))            merchant, gateway
    CertReq = EncX(EE-current, CA, S(EE-new, CertReqData), PANData0)  cardholder

The outer signer must validate as the member's certificate type *with the CA's current CRLs*
(``CAConfig.crls``): a revoked certificate is not renewed (CertRes ``rejectByCA``, eeMessage
"... is revoked: a revoked certificate cannot be renewed"), nor an expired one.  It must be this
CA's, be the one CertReqData's EEThumb names, and be the member's own: the agreed merID (MCA),
the name the PCA certifies the member under (PCA); a cardholder's card is checked as at
registration (``who_may_ask``).  The CA does not revoke the old certificate: it stays valid until
it expires, so mail signed or encrypted under it before the renewal still counts.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from setmail.asn1 import certmsgs as cm
from setmail.asn1.base import decode
from setmail.crypto.operators import open_Enc, open_EncX, verify_S
from setmail.errors import Expired, NotYetValid, ProtocolError, Revoked
from setmail.pki.ca import set_name
from setmail.pki.setext import read_certificate_type, read_merchant_data
from setmail.pki.thumbs import thumbprint
from setmail.pki.validate import validate_path
from setmail.roles.ca_issue import CODE_FIELD, Refused
from setmail.roles.directory import Party

#: CA kind -> the renewal RequestType it handles, and the certificate type it renews
RENEWAL_TYPES = {"cca": "cardRenewalSig", "mca": "merRenewalBoth", "pca": "pgwyRenewalBoth"}
OWN_TYPES = {"cca": "card", "mca": "mer", "pca": "pgwy"}


@dataclass(frozen=True)
class Opened:
    """A CertReq opened: ``data`` (CertReqData), ``acct`` (PANData0, cardholders), ``pop``
    (the signer of CertReqData: must be the new key) and ``renewing`` (the certificate a
    renewal is signed with; None: a first registration)."""

    data: object
    acct: object
    pop: x509.Certificate
    renewing: x509.Certificate | None
    certificates: tuple


def open_cert_req(config, body: bytes, suite) -> Opened:
    """Open a CertReq in either form (registration or renewal)."""
    card = config.kind == "cca"
    if card:
        opened = open_EncX(body, config.key_exchange, "CertReqTBEX", "CertReqTBS", "PANData",
                           suite=suite)
        acct = decode(cm.PANData0, opened.extra)  # D-303: PANData0, not the AcctInfo CHOICE
    else:
        opened = open_Enc(body, config.key_exchange, "CertReqTBE", "CertReqData", suite=suite)
        acct = None
    outer = opened.signed
    if not read_certificate_type(outer.signer):  # the proof-of-possession carrier: registration
        return Opened(decode(cm.CertReqData, opened.content), acct, outer.signer, None,
                      outer.certificates)
    inner = verify_S(opened.content, "CertReqData", suite=suite)
    return Opened(decode(cm.CertReqData, inner.content), acct, inner.signer, outer.signer,
                  outer.certificates)


def fields_for(config, renewal: bool) -> tuple:
    """The form: a renewal needs no registration code (the certificate authenticates it)."""
    return tuple(f for f in config.fields if not (renewal and f == CODE_FIELD))


def check_renewal(config, opened: Opened, member: Party, now: dt.datetime) -> None:
    """Refused unless the renewed certificate is a valid, unrevoked certificate of this CA that
    the member holds, and the one the request names."""
    old, data = opened.renewing, opened.data
    serial = format(old.serial_number, "x")
    try:
        validate_path(old, list(opened.certificates), config.trust, now=now,
                      expected_type=OWN_TYPES[config.kind], key_usage="digital_signature",
                      crls=config.crls)
    except Revoked:
        raise Refused("rejectByCA", f"certificate {serial} is revoked: a revoked certificate "
                      "cannot be renewed (register anew)") from None
    except (Expired, NotYetValid):
        raise Refused("rejectByCA", f"certificate {serial} is not valid now: only a valid "
                      "certificate is renewed (register anew)") from None
    if old.issuer != config.ca.certificate.subject:
        raise Refused("rejectByCA", f"certificate {serial} was not issued by this CA")
    if data["ee_thumb"].native != thumbprint(old):
        raise ProtocolError("EEThumb does not name the certificate the renewal is signed with",
                            "invalidCertificate")
    if config.kind == "mca":
        info = read_merchant_data(old)
        if info is None or info.mer_id != member.mer_id:
            raise Refused("rejectByCA", f"certificate {serial} is not {member.name}'s")
    if config.kind == "pca" and old.subject != gateway_subject(config.ca.brand, member.name):
        raise Refused("rejectByCA", f"certificate {serial} is not {member.name}'s")


def gateway_subject(brand: str | None, name: str) -> x509.Name:
    """The subject name the PCA certifies gateway ``name`` under (D-181)."""
    return set_name(name, organization=brand, unit="pgwy")
