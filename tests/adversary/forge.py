"""The attacker's certificates and forged SET messages (no I/O but reading the world's files).

Identities come from the world's own CA tree (loaded as ``setmail.world.trees`` does), so every
forgery is *validly signed*: the roles must refuse it for who signed it or for what it says, never
because it is malformed.  ``Forge.party(name)`` is a world agent using its keys on disk (the
legitimate-but-malicious shop2, gateway2, bob); ``evilshop``, ``evilgw`` and ``evilcard`` are
certified by the world's MCA, PCA and CCA but belong to nobody in world.toml; ``expired`` re-issues
a party's own key with a certificate that expired yesterday.

The message builders are ``messages.Messages``; what is done to wrappers on the wire is
``wire``.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from functools import cached_property

from cryptography import x509

from setmail.asn1 import oids
from setmail.crypto.cms import Identity
from setmail.crypto.suite import fresh, get_suite
from setmail.pki import profiles
from setmail.pki.bci import build_bci
from setmail.pki.ca import CertificateAuthority, set_name
from setmail.pki.hierarchy import create_hierarchy
from setmail.pki.parse import load_bci, to_pem
from setmail.pki.setext import MerchantInfo, MerName, read_merchant_data
from setmail.world.keys import load_cert, load_chain, load_key
from setmail.world.trees import ca_directory, load_ca_tree
from tests.adversary.messages import Messages
from tests.adversary.wire import utcnow

#: the attacker's own card: an account at the world's issuer (tests add it as "mallory-visa")
MALLORY_PAN, MALLORY_EXPIRY = "4000056655665556", "203001"


#: extensions ``CertificateAuthority`` writes into every certificate itself: key usage, basic
#: constraints, subject/authority key ids, certificate policies
_ADDED_BY_CA = {"2.5.29.15", "2.5.29.19", "2.5.29.14", "2.5.29.35", "2.5.29.32"}


# --- identities ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Party:
    """A signing party: signature identity, key-exchange identity (None for a cardholder), its
    merID (merchants)."""

    name: str
    sig: Identity
    kex: Identity | None = None

    @property
    def mer_id(self) -> str | None:
        info = read_merchant_data(self.sig.cert)
        return info.mer_id if info else None

    @property
    def certs(self) -> list[x509.Certificate]:
        """What its requests carry: signature and key-exchange certificates and the CA chain."""
        return [self.sig.cert, *([self.kex.cert] if self.kex else []), *self.sig.chain]


@dataclass(frozen=True)
class Card:
    """A certified card: the cardholder's signature identity, PAN, expiry and PANSecret."""

    identity: Identity
    pan: str
    expiry: str
    pan_secret: bytes


def _no_root(chain) -> tuple:
    return tuple(c for c in chain if c.subject != c.issuer)


class Forge(Messages):
    """Identities and message builders for one world (``setmail.world.config.World``)."""

    def __init__(self, world):
        self.world = world
        self.suite = get_suite(world.suite)
        self._expired: dict = {}

    # -- the world's CAs and parties --------------------------------------------------------------
    @cached_property
    def cas(self) -> dict[str, CertificateAuthority]:
        return load_ca_tree(self.world)

    def party(self, name: str) -> Party:
        keys = self.world.keys_dir(name)
        chain = _no_root(load_chain(keys / "chain.pem")) if (keys / "chain.pem").exists() else ()
        sig = Identity(load_key(keys / "sig.key.pem"), load_cert(keys / "sig.cert.pem"), chain)
        kex = (Identity(load_key(keys / "kex.key.pem"), load_cert(keys / "kex.cert.pem"), chain)
               if (keys / "kex.key.pem").exists() else None)
        return Party(name, sig, kex)

    def card(self, holder: str, card: str | None = None) -> Card:
        """A registered cardholder's card as its wallet files hold it (newest certificate)."""
        spec = self.world.cards[card] if card else self.world.cards_of(holder)[0]
        home = self.world.agent_home(holder)
        index = json.loads((home / "wallet.json").read_text())
        names = sorted((str(e.get("not_after", "")), n) for n, e in index.items()
                       if e.get("pan_last4") == spec.pan[-4:])
        name = names[-1][1]
        keys = home / "keys"
        chain = _no_root(load_chain(keys / f"{name}.chain.pem"))
        identity = Identity(load_key(keys / f"{name}.key.pem"),
                            load_cert(keys / f"{name}.cert.pem"), chain)
        secret = bytes.fromhex((keys / f"{name}.pansecret").read_text().strip())
        return Card(identity, spec.pan, spec.expiry, secret)

    # -- the attacker's own, certified by the world's CAs -----------------------------------------
    @cached_property
    def evilshop(self) -> Party:
        mca, key, kex = self.cas["mca"], self.suite.generate_key(), self.suite.generate_key()
        info = MerchantInfo("EVIL-0001", "41111111", (MerName("en", "Evil Shop", "Nowhere", "US"),),
                            840)
        sig_cert, kex_cert = mca.issue_merchant(key.public_key(), kex.public_key(), info, utcnow())
        chain = _no_root(mca.chain)
        return Party("evilshop", Identity(key, sig_cert, chain), Identity(kex, kex_cert, chain))

    @cached_property
    def evilgw(self) -> Party:
        pca, key, kex = self.cas["pca"], self.suite.generate_key(), self.suite.generate_key()
        sig_cert, kex_cert = pca.issue_gateway(key.public_key(), kex.public_key(), utcnow(),
                                               name="evilgw")
        chain = _no_root(pca.chain)
        return Party("evilgw", Identity(key, sig_cert, chain), Identity(kex, kex_cert, chain))

    @cached_property
    def evilcard(self) -> Card:
        cca, key = self.cas["cca"], self.suite.generate_key()
        issued = cca.issue_cardholder(key.public_key(), pan=MALLORY_PAN, expiry=MALLORY_EXPIRY,
                                      card_secret=fresh(32), now=utcnow())
        return Card(Identity(key, issued.certificate, _no_root(cca.chain)), MALLORY_PAN,
                    MALLORY_EXPIRY, issued.pan_secret)

    def expired(self, who: Party | Card) -> Party | Card:
        """The same keys, subjects and extensions, certified for two days that ended yesterday."""
        name = who.name if isinstance(who, Party) else who.pan
        if name not in self._expired:
            self._expired[name] = self._expire(who)
        return self._expired[name]

    def _expire(self, who: Party | Card) -> Party | Card:
        def again(identity: Identity, label: str) -> Identity:
            cert, ca = identity.cert, self.cas[label]
            profile = {("mer", True): profiles.MERCHANT_SIGNATURE,
                       ("mer", False): profiles.MERCHANT_KEY_EXCHANGE,
                       ("pgwy", True): profiles.GATEWAY_SIGNATURE,
                       ("pgwy", False): profiles.GATEWAY_KEY_EXCHANGE,
                       ("card", True): profiles.CARDHOLDER_SIGNATURE}
            kind = {"mca": "mer", "pca": "pgwy", "cca": "card"}[label]
            signing = cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
            skip = _ADDED_BY_CA | {oids.CERTIFICATE_TYPE, oids.SET_QUALIFIER}
            extra = [(e.value, e.critical) for e in cert.extensions
                     if e.oid.dotted_string not in skip]
            start = utcnow() - dt.timedelta(days=3)
            new = ca.issue(profile[(kind, signing)], cert.subject, cert.public_key(), start,
                           extensions=extra, not_after=start + dt.timedelta(days=2))
            return replace(identity, cert=new)
        if isinstance(who, Card):
            return replace(who, identity=again(who.identity, "cca"))
        label = "mca" if who.mer_id else "pca"
        return replace(who, sig=again(who.sig, label),
                       kex=again(who.kex, label) if who.kex else None)

    # -- CRLs and BCIs ----------------------------------------------------------------------------
    def revoke_ca(self, label: str) -> None:
        """The Brand CA revokes the certificate of CA ``label`` (cca, mca, pca): a new brand CRL
        and BCI on disk, as ``setmail revoke`` writes them; agents read them when they start."""
        brand, ca = self.cas["brand"], self.cas[label]
        brand.revoke(ca.certificate, utcnow())
        if ca.key_exchange_certificate is not None:
            brand.revoke(ca.key_exchange_certificate, utcnow())
        from setmail.agent.effects import write_private
        write_private(ca_directory(self.world, "brand") / "crl.pem", to_pem(brand.crl))
        write_private(ca_directory(self.world, "brand") / "bci.pem", to_pem(brand.bci))

    def publish_bci(self, bci: bytes) -> None:
        """Make ``bci`` the brand's current BrandCRLIdentifier on disk (agents read it when they
        start), as the Brand CA does after every CRL it re-signs."""
        from setmail.agent.effects import write_private
        write_private(ca_directory(self.world, "brand") / "bci.pem", to_pem(load_bci(bci)))

    @staticmethod
    def bci_sequence(bci: bytes) -> int:
        return int(load_bci(bci)["tbs"]["sequence_num"].native)

    def current_bci(self) -> bytes:
        return load_bci((ca_directory(self.world, "brand") / "bci.pem").read_bytes()).dump()

    def bci(self, *, sequence: int, brand: str = "world", brand_id: str | None = None) -> tuple:
        """(BCI DER, certificates to send along): signed by the world's Brand CA (``brand=
        "world"``), by another brand certified by the world's Root (``"sibling"``), or by a brand
        of the attacker's own root (``"foreign"``)."""
        now = utcnow()
        if brand == "world":
            signer, extra = self.cas["brand"], []
        elif brand == "sibling":
            signer = self.cas["root"].create_subordinate(
                profiles.BRAND, set_name("MasterCard Brand CA", organization="MasterCard",
                                         unit="bca"), now, brand="MasterCard")
            extra = [signer.certificate]
        else:
            signer = create_hierarchy(self.suite, now, brand="Visa").brand
            extra = [signer.certificate, signer.parent.certificate]
        crls = [ca.crl for ca in self.cas.values() if ca.crl is not None]
        value = build_bci(suite=self.suite, brand_key=signer.key, brand_cert=signer.certificate,
                          brand_id=brand_id or self.world.brand, sequence_num=sequence, crls=crls,
                          now=now - dt.timedelta(minutes=5), not_after=now + dt.timedelta(days=7))
        return value.dump(), extra
