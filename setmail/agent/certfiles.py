"""The files a merchant's or gateway's agent keeps of the certificates it obtains by mail.

Effects of ``roles.ee_reg`` (registration and renewal) and ``roles.pcert``, applied after the
commit (``agent.effects``: journaled, re-applied after a crash, so each handler is idempotent):

* ``ee.key``: a new private key, before its certificate exists: ``keys/pending/<key_id>.key.pem``.
  It does not replace the key in use: a renewal keeps signing with the old key until the new
  certificate is there.
* ``ee.certificate``: installs both certificates with their keys as ``keys/{sig,kex}.{key,cert}.pem``
  and the CA chain as ``keys/chain.pem`` (the layout ``setmail init`` writes and the factories
  read).  The certificates they replace stay, as ``keys/old-<serial>.{sig,kex}.cert.pem`` (still
  valid until they expire: ``setmail revoke`` revokes them too), with the old key-exchange key
  (``old-<serial>.kex.key.pem``: mail encrypted to the old certificate may still be on its way).
* ``pcert.gateway``: the merchant's copy of its gateway's certificates,
  ``peers/<gateway>/{kex,sig}.cert.pem`` and ``chain.pem``: what the merchant encrypts to.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from setmail.agent.effects import EffectContext, register_effect
from setmail.crypto.cms import Identity
from setmail.pki.parse import load_certificate
from setmail.world.files import write_private
from setmail.world.peers import peer_dir

PENDING = "pending"


def _safe(name: Any) -> str:
    return "".join(c for c in str(name) if c.isalnum() or c in "-_.")[:64] or "x"


def _pem(value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _public(key_pem: bytes | None):
    if key_pem is None:
        return None
    key = serialization.load_pem_private_key(key_pem, None)
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_public(cert_pem: bytes) -> bytes:
    return load_certificate(cert_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def previous_key_exchange(keys: Path, now=None) -> tuple[Identity, ...]:
    """The archived key-exchange identities of ``keys`` (``old-<serial>.kex.{key,cert}.pem``)
    whose certificates have not expired: what a renewed party still decrypts with."""
    import datetime as dt
    from setmail.world.keys import load_cert, load_key
    now = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for key_file in sorted(keys.glob("old-*.kex.key.pem")):
        cert_file = key_file.with_name(key_file.name.replace(".key.pem", ".cert.pem"))
        if cert_file.exists():
            cert = load_cert(cert_file)
            if cert.not_valid_after_utc > now:
                out.append(Identity(load_key(key_file), cert))
    return tuple(out)


def ee_key(ctx: EffectContext, data: Mapping[str, Any]) -> None:
    write_private(ctx.keys_dir / PENDING / f"{_safe(data['key_id'])}.key.pem",
                  _pem(data["secret"]["private_key_pem"]))


def _archive(keys: Path, prefix: str, new_pem: bytes) -> None:
    """Keep the certificate ``prefix`` is about to replace (and an old key-exchange key)."""
    current = _read(keys / f"{prefix}.cert.pem")
    if current is None or current == new_pem:
        return
    serial = format(load_certificate(current).serial_number, "x")
    archived = keys / f"old-{serial}.{prefix}.cert.pem"
    if archived.exists():
        return  # archived before a crash; the key on disk may be the new one already
    key = _read(keys / f"{prefix}.key.pem")
    if prefix == "kex" and key is not None and _public(key) == _cert_public(current):
        write_private(keys / f"old-{serial}.kex.key.pem", key)
    write_private(archived, current)


def ee_certificate(ctx: EffectContext, data: Mapping[str, Any]) -> None:
    keys = ctx.keys_dir
    installs = []  # archive, then chain, kex, sig: a new sig.cert.pem means all is in place
    for usage, prefix in (("key_exchange", "kex"), ("signature", "sig")):
        entry = data.get(usage)
        if not entry:
            continue
        cert = _pem(entry["certificate_pem"])
        pending = keys / PENDING / f"{_safe(entry['key_id'])}.key.pem"
        installs.append((prefix, cert, pending))
        _archive(keys, prefix, cert)
    chain = data.get("chain_pem") or []
    if chain:
        write_private(keys / "chain.pem", b"".join(_pem(c) for c in chain))
    for prefix, cert, pending in installs:
        key = _read(pending)
        if key is None:  # installed before a crash (the pending key goes last)
            if _read(keys / f"{prefix}.cert.pem") != cert:
                raise FileNotFoundError(f"no private key {pending} for the new certificate")
            continue
        if _public(key) != _cert_public(cert):
            raise ValueError(f"{pending} does not hold the key the new certificate certifies")
        write_private(keys / f"{prefix}.key.pem", key)
        write_private(keys / f"{prefix}.cert.pem", cert)
    for _, _, pending in installs:
        pending.unlink(missing_ok=True)


def pcert_gateway(ctx: EffectContext, data: Mapping[str, Any]) -> None:
    folder = peer_dir(ctx.home, data["peer"])
    write_private(folder / "sig.cert.pem", _pem(data["sig_pem"]))
    write_private(folder / "chain.pem", b"".join(_pem(c) for c in data.get("chain_pem") or []))
    write_private(folder / "kex.cert.pem", _pem(data["kex_pem"]))  # last: what the factory waits for


register_effect("ee.key", after_commit=ee_key)
register_effect("ee.certificate", after_commit=ee_certificate)
register_effect("pcert.gateway", after_commit=pcert_gateway)
