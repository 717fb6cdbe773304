"""The world's directory as the roles see it: who is who, and where their mail goes.

Why it exists: a mail header proves nothing, so a role never answers the From address.  It
answers the party its configuration names, or the party a *verified certificate* identifies, looked
up here: merchants by the merID their certificate's merchantData carries (certified by the Merchant
CA), gateways, issuers and CAs by the subject name of their certificates.  Cardholder certificates
name nobody (SET keeps them unlinkable), so cardholders are found by address only: the merchant
learns its customer's address from the order (the shop front-end), never from a mail.

``setmail.world.directory.load_directory`` builds one from a world on disk; each role gets the
slice it needs in its configuration.  Addresses compare case-insensitively, as mail does.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509

from setmail.pki.setext import read_merchant_data


@dataclass(frozen=True)
class Party:
    """One agent of the world: ``kind`` (cardholder, merchant, gateway, issuer, ca), its mail
    address, and the certificate identities that are its: ``mer_id`` (merchants) and
    ``subjects`` (DER of the subject names of its certificates; empty for cardholders)."""

    name: str
    kind: str
    address: str
    mer_id: str | None = None
    subjects: frozenset[bytes] = field(default_factory=frozenset)


class Directory:
    """Look-ups from a verified identity to a party (None: not a party of this world)."""

    def __init__(self, parties: Iterable[Party] = ()):
        self.parties = tuple(parties)
        self._by_address = {p.address.lower(): p for p in self.parties}
        self._by_mer_id = {p.mer_id: p for p in self.parties if p.mer_id}
        self._by_subject = {(p.kind, s): p for p in self.parties for s in p.subjects}

    def __repr__(self) -> str:
        return f"Directory({len(self.parties)} parties)"

    def by_address(self, address: str | None) -> Party | None:
        return self._by_address.get((address or "").lower())

    def merchant(self, mer_id: str | None) -> Party | None:
        """The merchant whose certificates carry ``mer_id``."""
        return self._by_mer_id.get(mer_id) if mer_id else None

    def holder_of(self, cert: x509.Certificate, kind: str) -> Party | None:
        """The party of ``kind`` a *verified* certificate belongs to: merchants by merID, every
        other kind by subject name."""
        if kind == "merchant":
            info = read_merchant_data(cert)
            return self.merchant(info.mer_id if info else None)
        return self._by_subject.get((kind, cert.subject.public_bytes()))

    def of_kind(self, kind: str) -> tuple[Party, ...]:
        return tuple(p for p in self.parties if p.kind == kind)
