"""Shared, lazily built PKI world for the test_pki* modules (RSA keys are costly on 2 cores)."""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field

from setmail.crypto.suite import DEFAULT_SUITE
from setmail.pki import Hierarchy, MerchantInfo, MerName, create_hierarchy

SUITE = DEFAULT_SUITE
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
PAN = "4111111111111111"
EXPIRY = "202812"
CARD_SECRET = bytes(range(32))
MERCHANT = MerchantInfo("MER-0001", "12345678",
                        (MerName("en", "Bike Shop", "Oslo", "Norway", postal_code="0150"),), 578)


@dataclass
class World:
    h: Hierarchy
    keys: list = field(default_factory=list)
    certs: dict = field(default_factory=dict)

    def key(self):
        """A fresh RSA key: each key may be certified once per CA."""
        return self.keys.pop() if self.keys else SUITE.generate_key()

    def chain(self, ca):
        """The CA's chain up to the root, deliberately in reverse (root first) order."""
        return list(reversed(ca.chain))


@functools.lru_cache(maxsize=None)
def world() -> World:
    h = create_hierarchy(SUITE, NOW, "Visa", geo=True)
    w = World(h, keys=[SUITE.generate_key() for _ in range(8)])
    ch = h.issue_cardholder(w.key().public_key(), pan=PAN, expiry=EXPIRY,
                            card_secret=CARD_SECRET, now=NOW)
    w.certs["cardholder"] = ch
    w.certs["merchant"] = h.issue_merchant(w.key().public_key(), w.key().public_key(), MERCHANT,
                                           NOW)
    w.certs["gateway"] = h.issue_gateway(w.key().public_key(), w.key().public_key(), NOW,
                                         name="Acquirer Gateway", card_cert_required=True)
    return w


@functools.lru_cache(maxsize=None)
def foreign() -> Hierarchy:
    """A second tree with the same names but other keys (for foreign-root and mix-up tests)."""
    return create_hierarchy(SUITE, NOW, "Visa", geo=True)
