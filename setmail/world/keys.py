"""Keys and certificates of a world on disk: private keys 0600 in 0700 directories.

Layout (docs/runtime.md): ``pki/<ca>/`` for the Root and Brand CA (not agents), ``pki/trust/``
for the pinned root certificate everybody trusts, ``agents/<agent>/keys/`` for each agent's own
keys: ``sig.key.pem``/``sig.cert.pem``, ``kex.key.pem``/``kex.cert.pem``, ``chain.pem`` (the
issuing CAs up to the root) and, for CAs, ``crl.pem``.
"""
from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from setmail.errors import WorldError
from setmail.pki import profiles
from setmail.pki.ca import CertificateAuthority
from setmail.pki.parse import load_certificate, load_crl, to_pem
from setmail.world.files import write_private


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def save_identity(directory: Path, prefix: str, key, cert: x509.Certificate) -> None:
    write_private(directory / f"{prefix}.key.pem", key_pem(key))
    write_private(directory / f"{prefix}.cert.pem", to_pem(cert))


def load_key(path: Path):
    try:
        return serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise WorldError(f"cannot load private key {path}: {exc}") from exc


def load_cert(path: Path) -> x509.Certificate:
    try:
        return load_certificate(path.read_bytes())
    except OSError as exc:
        raise WorldError(f"cannot load certificate {path}: {exc}") from exc


def load_chain(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise WorldError(f"cannot load certificate chain {path}: {exc}") from exc


def save_chain(path: Path, certs) -> None:
    write_private(path, b"".join(to_pem(c) for c in certs))


def save_ca(directory: Path, ca: CertificateAuthority) -> None:
    save_identity(directory, "sig", ca.key, ca.certificate)
    if ca.key_exchange_key is not None:
        save_identity(directory, "kex", ca.key_exchange_key, ca.key_exchange_certificate)
    if ca.next_root_key is not None:
        write_private(directory / "next.key.pem", key_pem(ca.next_root_key))
    if ca.crl is not None:
        write_private(directory / "crl.pem", to_pem(ca.crl))
    if ca.bci is not None:
        write_private(directory / "bci.pem", to_pem(ca.bci))
    save_chain(directory / "chain.pem", ca.chain)


def load_ca(directory: Path, suite, profile, *, parent=None, brand=None) -> CertificateAuthority:
    """Rebuild a CA object from ``save_ca`` files.  Its revocation state (revoked serials, CRL
    number, BCI sequence) continues from the saved CRL and BCI (``CertificateAuthority.restore``);
    the issued-serial index is not kept (the CA role keeps its certified keys in its own store,
    and ``revoke`` accepts any certificate the CA's signature proves it issued).  Without
    ``sig.key.pem`` the CA is its certificate, CRL and BCI only: a bundle's view of the CAs above
    its own, which it names in its chain but cannot sign for."""
    next_key, own_key = directory / "next.key.pem", directory / "sig.key.pem"
    ca = CertificateAuthority(suite=suite, profile=profile,
                              key=load_key(own_key) if own_key.exists() else None,
                              certificate=load_cert(directory / "sig.cert.pem"),
                              brand=brand, parent=parent,
                              next_root_key=load_key(next_key) if next_key.exists() else None)
    if (directory / "kex.key.pem").exists():
        ca.key_exchange_key = load_key(directory / "kex.key.pem")
        ca.key_exchange_certificate = load_cert(directory / "kex.cert.pem")
    from setmail.pki.parse import load_bci
    crl = load_crl((directory / "crl.pem").read_bytes()) if (directory / "crl.pem").exists() else None
    bci = load_bci((directory / "bci.pem").read_bytes()) if (directory / "bci.pem").exists() else None
    ca.restore(crl, bci)
    if parent is not None:
        parent.children.append(ca)
    return ca


#: CA label -> (profile, parent label); the order builds parents first
CA_TREE = (("root", profiles.ROOT, None), ("brand", profiles.BRAND, "root"),
           ("cca", profiles.CCA, "brand"), ("mca", profiles.MCA, "brand"),
           ("pca", profiles.PCA, "brand"))
