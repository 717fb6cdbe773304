"""The TrustStore: pinned SET roots, root rollover through hashedRootKey, and the path cache.

Roots are pinned by SHA-256 of their SubjectPublicKeyInfo rather than by certificate, so a
re-issued root certificate for the same key stays trusted.  A root is replaced the SET way: the
pinned root's hashedRootKey commits to the next root's key, so a self-signed certificate whose key
hashes to that commitment is accepted and pinned without any out-of-band step (§2.3).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

from cryptography import x509

from setmail.crypto.suite import DEFAULT_SUITE, CryptoSuite
from setmail.errors import BadChain, UntrustedRoot
from setmail.pki import setext
from setmail.pki.parse import load_certificate
from setmail.pki.signatures import check_certificate_signature


class PathCache:
    """LRU of validated paths; an entry is only served inside the window it was validated for."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self.hits = 0

    def get(self, key, now: datetime):
        entry = self._entries.get(key)
        if entry is None:
            return None
        result, valid_from, valid_until = entry
        if not valid_from <= now <= valid_until:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return result

    def put(self, key, result, valid_from: datetime, valid_until: datetime) -> None:
        self._entries[key] = (result, valid_from, valid_until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class TrustStore:
    """Pinned root keys (and the root certificates seen for them) plus the validated-path cache."""

    def __init__(self, roots: Iterable = (), *, suite: CryptoSuite = DEFAULT_SUITE,
                 cache_size: int = 1024):
        self.suite = suite
        self._pins: set[bytes] = set()
        self._roots: dict[bytes, x509.Certificate] = {}
        self.cache = PathCache(cache_size)
        for root in roots:
            self.add_root(root)

    def key_hash(self, cert: x509.Certificate) -> bytes:
        return self.suite.digest(setext.spki_der(cert.public_key()))

    def add_root(self, root) -> bytes:
        """Pin a root certificate's key (after checking it is a self-signed SET root)."""
        root = load_certificate(root)
        self._check_root(root)
        pin = self.key_hash(root)
        self._pins.add(pin)
        self._roots[pin] = root
        return pin

    def pin(self, spki_sha256: bytes) -> None:
        """Pin a root key by hash alone (its certificate will arrive in chains)."""
        self._pins.add(bytes(spki_sha256))

    def unpin(self, spki_sha256: bytes) -> None:
        """Stop trusting a root key; cached paths are dropped since some may end there."""
        self._pins.discard(bytes(spki_sha256))
        self._roots.pop(bytes(spki_sha256), None)
        self.cache.clear()

    def is_pinned(self, cert: x509.Certificate) -> bool:
        return self.key_hash(cert) in self._pins

    @property
    def roots(self) -> list[x509.Certificate]:
        return list(self._roots.values())

    def accept_root(self, root: x509.Certificate) -> None:
        """Trust the top of a path: a pinned key, or a rollover root committed to by one."""
        if root.subject != root.issuer:
            raise BadChain("the top certificate of the path is not self-issued")
        key_hash = self.key_hash(root)
        if key_hash in self._pins:
            self._check_root(root)
            self._roots.setdefault(key_hash, root)
            return
        for old in list(self._roots.values()):
            if setext.read_hashed_root_key(old) == key_hash:
                self._check_root(root)
                self._pins.add(key_hash)
                self._roots[key_hash] = root
                return
        raise UntrustedRoot(f"root {root.subject.rfc4514_string()} has a key that is neither "
                            "pinned nor committed to by a pinned root's hashedRootKey")

    def _check_root(self, root: x509.Certificate) -> None:
        if "rca" not in setext.read_certificate_type(root):
            raise UntrustedRoot("a trusted root must carry certificateType rca")
        if root.subject != root.issuer:
            raise UntrustedRoot("a trusted root must be self-issued")
        check_certificate_signature(root, root, self.suite)
