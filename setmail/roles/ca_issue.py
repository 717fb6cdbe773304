"""The CA's configuration and policy: what it certifies and for whom (forms, member checks).

Split from ``roles/ca.py`` (the messages) because these are the CA's *policy*: given an authentic,
fresh CertReq, may this member have this certificate?

* **Whose request it is.**  Nothing in a mail header is evidence, and SET's first messages are
  clear, so anyone can start a registration in a member's name (the CA answers only that member's
  directory address, never the From).  What the CA certifies must therefore be bound to the member
  by something a From-forger lacks (``who_may_ask``, checked before a Chall-CA is spent, so a
  forger's CertReq cannot use up the member's challenge):
  - Cardholder CA: a PAN the world's directory says this cardholder holds (``cards``: address ->
    PANs; the PAN travels only encrypted to the CA, as SET's authenticator of a cardholder).
  - Merchant CA: the merID agreed with this merchant (``Party.mer_id``), and
  - Merchant and Payment Gateway CAs: the registration code agreed with the member out of band
    (``codes``: address -> SHA-256 hex; form field ``RegistrationCode``, encrypted to the CA).
    A member without one is not certified by mail (its certificates come out of band).  A
    renewal is authenticated by the certificate it renews instead (``roles.ca_renewal``).
  - Payment Gateway CA: the gateway is certified under the name agreed with it, its name in the
    world (form field ``GatewayName``): merchants recognise their gateway by that subject.
* **Challenges** (``challenge_for``): one per request, kept per registration, never evicted.
* **What may be certified** (``certify``): keys certified at most once (shared ``certified``),
  the form as the template says, a valid unexpired card; ``Refused`` carries the CertStatusCode.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives.serialization import load_der_public_key

from setmail.crypto.cms import Identity
from setmail.crypto.suite import fresh
from setmail.errors import SetmailError
from setmail.pki.ca import CertificateAuthority
from setmail.pki.setext import MerchantInfo, MerName
from setmail.pki.trust import TrustStore
from setmail.roles.certs import cert_hex
from setmail.roles.directory import Directory, Party
from setmail.roles.forms import luhn_ok
from setmail.roles.wire import h, unh


@dataclass(frozen=True)
class FormField:
    name: str
    length: int
    required: bool = True


CODE_FIELD = FormField("RegistrationCode", 64)
DEFAULT_FORMS = {
    "cca": (FormField("CardholderName", 60), FormField("PostalCode", 10)),
    "mca": (FormField("MerchantName", 60), FormField("City", 40), FormField("CountryName", 40),
            FormField("CountryCode", 3), CODE_FIELD),
    "pca": (FormField("GatewayName", 60), CODE_FIELD),
}
REQUEST_TYPES = {"cca": "cardInitialSig", "mca": "merInitialBoth", "pca": "pgwyInitialBoth"}
#: Chall-CAs one registration may be issued (each init/form request with a new RRPID gets one)
MAX_CHALLENGES = 8
#: CA kind -> the directory kind of the parties it certifies
CERTIFIES = {"cca": "cardholder", "mca": "merchant", "pca": "gateway"}


@dataclass(frozen=True)
class CAConfig:
    """``ca`` (pki CertificateAuthority: its signature and key-exchange keys and chain are the
    identities used), ``kind``, ``address``, ``trust``, ``form`` (FormFields of the regTemplate;
    default per kind), ``reg_form_id``, ``policy``, ``pend_first_request`` (pend every CertReq;
    the certificate is released on the first CertInqReq, D-306), ``directory`` (the world's
    directory; parties of other kinds are ignored), ``cards`` (cca: member address, lower case
    -> the PANs it holds), ``codes`` (mca/pca: member address, lower case -> ``code_digest`` of
    its registration code), ``expire_after`` (a registration still waiting then expires),
    ``crls`` (what a certificate to renew is checked against)."""

    ca: CertificateAuthority
    kind: str  # "cca" | "mca" | "pca"
    address: str
    trust: TrustStore
    form: tuple[FormField, ...] | None = None
    reg_form_id: int = 1
    policy: str = "SET certificate policy: you keep your private key secret."
    pend_first_request: bool = False
    directory: Directory = field(default_factory=Directory)
    cards: Mapping[str, frozenset] = field(default_factory=dict)
    codes: Mapping[str, str] = field(default_factory=dict)
    expire_after: dt.timedelta = dt.timedelta(days=1)
    #: the CRLs a renewed certificate is checked against (None: none)
    crls: tuple | None = None

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

    def member(self, address: str | None) -> Party | None:
        """The party of the kind this CA certifies whose directory address this is, or None."""
        party = self.directory.by_address(address)
        return party if party is not None and party.kind == CERTIFIES[self.kind] else None


class Refused(Exception):
    """An authentic, fresh request whose content the CA refuses (answered with a CertRes status)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def code_digest(code: str) -> str:
    """What a CA keeps of a registration code: its SHA-256, hex."""
    return hashlib.sha256(code.encode()).hexdigest()


def who_may_ask(kind: str, member: Party, data, pan: str | None, *,
                cards: Mapping[str, frozenset], codes: Mapping[str, str],
                renewal: bool = False) -> None:
    """Refused unless the CertReq binds to ``member`` by what a From-forger lacks (module doc);
    a ``renewal`` was authenticated by the certificate it renews (``ca_renewal``), not a code."""
    address = member.address.lower()
    if kind == "cca":
        if pan not in cards.get(address, ()):
            raise Refused("rejectByIssuer", f"this card is not held by {member.name} "
                          "(the world's directory)")
        return
    if kind == "mca":
        id_data = data["id_data"]
        mer_id = (id_data.chosen["merchant_id"].native
                  if id_data.native is not None and id_data.name == "merchant_acquirer_id" else None)
        if not member.mer_id or mer_id != member.mer_id:
            raise Refused("rejectByCA", f"merID {mer_id!r} is not the one agreed with "
                          f"{member.name}")
    if kind == "pca" and _form_value(data, "GatewayName") != member.name:
        raise Refused("rejectByCA", f"GatewayName must be {member.name!r}, the name agreed "
                      "with this gateway")
    if renewal:
        return
    agreed = codes.get(address)
    if agreed is None:
        raise Refused("rejectByCA", f"no registration code agreed with {member.name}: its "
                      "certificates are issued out of band")
    if not hmac.compare_digest(code_digest(_form_value(data, CODE_FIELD.name)), agreed):
        raise Refused("rejectByCA", "the registration code does not match")


def _form_value(data, name: str) -> str:
    return next((item["field_value"] for item in (data["reg_form"].native or [])
                 if item["field_name"] == name), "")


def challenge_for(state, rrpid: bytes) -> tuple[bytes | None, dict]:
    """(Chall-CA, challenges) for the request with ``rrpid``: the one it was given before
    (a re-send, maybe with an altered clear header), else a new one; (None, ...) once the
    registration had MAX_CHALLENGES (never evicting one: a flood must not take a genuine one
    away; the request is then ignored, which is no more than an attacker dropping it)."""
    challenges = dict(state.get("challenges") or {})
    for chall, record in challenges.items():
        if record["rrpid"] == rrpid.hex():
            return unh(chall), challenges
    if len(challenges) >= MAX_CHALLENGES:
        return None, challenges
    chall = fresh()
    challenges[chall.hex()] = {"rrpid": rrpid.hex(), "used": False}
    return chall, challenges


def certify(config, data, acct, shared: Mapping, now, *, fields=None) -> tuple[dict, dict]:
    """Check the request's content and issue: ({"certs": [hex], "nonce_cca": hex}, new shared
    state), or Refused if the CA will not certify it.  ``fields``: the form (default: the
    CA's)."""
    keys = data["public_key_sor_e"]
    wanted = [keys["public_key_s"]] + ([] if config.kind == "cca" else [keys["public_key_e"]])
    if any(k.native is None for k in wanted):
        raise Refused("invalidCertRequestType", "a 'Both' request needs both public keys")
    spkis = [k.untag().dump() for k in wanted]
    hashes = [hashlib.sha256(s).hexdigest() for s in spkis]
    certified = shared.get("certified", [])
    if len(set(hashes)) != len(hashes) or any(x in certified for x in hashes):
        raise Refused("rejectByCA", "public key already certified")
    if data["reg_form_id"].native != config.reg_form_id:
        raise Refused("invalidRegFormID", "unknown registration form")
    form = check_form(config.fields if fields is None else fields,
                      data["reg_form"].native or [])
    publics = [load_der_public_key(s) for s in spkis]
    ca = config.ca
    try:
        nonce_cca = None
        if config.kind == "cca":
            cert, nonce_cca = _issue_card(ca, publics[0], acct, now)
            certs = [cert]
        elif config.kind == "mca":
            certs = list(ca.issue_merchant(publics[0], publics[1], _merchant_info(data, form),
                                           now))
        else:
            certs = list(ca.issue_gateway(publics[0], publics[1], now, name=form["GatewayName"]))
    except SetmailError as exc:
        raise Refused("rejectByCA", str(exc)[:200]) from exc
    shared = {k: v for k, v in shared.items() if k != "challenges"}  # kept per transaction now
    shared["certified"] = [*certified, *hashes]
    return {"certs": [cert_hex(c) for c in certs], "nonce_cca": h(nonce_cca)}, shared


def _issue_card(ca, public, acct, now):
    pan, expiry = acct["pan"].native, acct["card_expiry"].native
    if not luhn_ok(pan):
        raise Refused("rejectByIssuer", "card number is not valid")
    if not (len(expiry) == 6 and expiry.isdigit() and 1 <= int(expiry[4:]) <= 12):
        raise Refused("rejectByIssuer", "card expiry is not YYYYMM")
    if expiry < f"{now:%Y%m}":
        raise Refused("rejectByIssuer", "card has expired")
    issued = ca.issue_cardholder(public, pan=pan, expiry=expiry,
                                 card_secret=acct["card_secret"].native, nonce_cca=fresh(),
                                 now=now)
    return issued.certificate, issued.nonce_cca


def _merchant_info(data, form) -> MerchantInfo:
    id_data = data["id_data"]
    if id_data.native is None or id_data.name != "merchant_acquirer_id":
        raise Refused("rejectByCA", "merchant request without merchantAcquirerID")
    mid = id_data.chosen
    if not form["CountryCode"].isdigit() or not 1 <= int(form["CountryCode"]) <= 999:
        raise Refused("rejectByCA", "CountryCode must be an ISO 3166 numeric code")
    return MerchantInfo(mid["merchant_id"].native, mid["merchant_bin"].native,
                        (MerName("en", form["MerchantName"], form["City"], form["CountryName"]),),
                        int(form["CountryCode"]))


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
