"""The SET cryptographic operators (SetPKCS7Plus, set-protocol.md §3.2) as pure functions over bytes.

Naming follows the spec: ``S``, ``SO``, ``Enc`` (the spec's E), ``EncK``, ``EncX``, ``EH``, ``EX``,
``EXH``, ``EncB``, ``EncBX``, ``DD``, ``L``, ``H``, ``HMAC`` build; ``open_*``/``verify_*`` are the
receiver's side.  Every data argument is DER and every structure is named by its SET content-type
name (``"PI-TBS"``, ``"AuthReqTBE"``, keys of ``asn1.oids.CONTENT_TYPES``).

================  ===========================================================================
operator          construction (content = what AES-GCM encrypts; block = what RSA-OAEP carries)
================  ===========================================================================
S(s,t)            SignedData(t), content attached
SO(s,t)           SignedData(t), content detached
Enc(s,r,t)        content = S(s,t); block = key (plain OAEP: OpenSSL opens it)
EncK(k,s,t)       content = S(s,t); CEK wrapped under the provided key k (KEKRecipientInfo)
EncX(s,r,t,p)     content = S(s, L(t,p)); block = key + p
EH(r,t)           content = t; block = key + H(t)
EX(r,t,p)         content = L(t,p); block = key + p
EXH(r,t,p)        content = L(t,p); block = key + H(L(t,p)) + p
EncB(s,r,t,b)     SEQUENCE { Enc(s,r,L(t,b)), b }
EncBX(s,r,t,b,p)  SEQUENCE { EncX(s,r,L(t,b),p), b }
================  ===========================================================================

Receivers always check what the sender bound: DD(p) inside L against the p from the OAEP block,
H(t) from the block against the decrypted t, DD(b) inside the signature against the baggage.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509

from setmail.asn1.base import check_der
from setmail.asn1.oids import CONTENT_TYPES
from setmail.crypto import der
from setmail.crypto.reader import Reader, split_pair
from setmail.crypto.cms import (ALG_SHA256, Identity, Signed, build_enveloped, build_signed, decrypt_content,
                                kekri, ktri, open_signed, parse_enveloped, unwrap_kekri, unwrap_ktri)
from setmail.crypto.suite import CEK_SIZE, DEFAULT_SUITE, CryptoSuite, fresh
from setmail.errors import DecryptionFailed, DigestMismatch, MalformedMessage

__all__ = ["H", "HMAC", "DD", "check_DD", "L", "open_L", "S", "SO", "verify_S", "verify_SO",
           "Enc", "open_Enc", "EncK", "open_EncK", "EncX", "open_EncX", "EH", "open_EH", "EX",
           "open_EX", "EXH", "open_EXH", "EncB", "open_EncB", "EncBX", "open_EncBX", "Identity",
           "Signed", "Opened"]

_KEY_AND_HASH, _KEY_AND_EXTRA, _KEY_HASH_AND_EXTRA = 1, 2, 3


def _oid(name: str) -> str:
    try:
        return CONTENT_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown SET content type {name!r}") from None


def H(data: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """H(t): the suite's hash of DER bytes."""
    return suite.digest(data)


def HMAC(key: bytes, data: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    return suite.hmac(key, data)


def DD(content_type: str, data: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """DD(t): DigestedData naming t's content type, with t itself omitted."""
    digest = suite.digest(data)
    return _dd_head(content_type, len(digest)) + digest


@lru_cache(maxsize=256)
def _dd_head(content_type: str, size: int) -> bytes:
    """DD's DER up to the digest: the same for every t of one content type."""
    return der.seq(der.integer(2), ALG_SHA256, der.seq(der.oid(_oid(content_type))),
                   der.octets(bytes(size)))[:-size]


def check_DD(dd: bytes, content_type: str, data: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> None:
    """Raise DigestMismatch unless ``dd`` is exactly DD(content_type, data) (canonical DER)."""
    if dd != DD(content_type, data, suite):
        raise DigestMismatch(f"detached digest of {content_type} does not match its data")


def L(t1: bytes, t2_type: str, t2: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """L(t1, t2) = SEQUENCE { t1, DD(t2) }."""
    return der.seq(t1, DD(t2_type, t2, suite))


def open_L(linkage: bytes, t2_type: str, t2: bytes, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """t1 from L(t1,t2), after checking the digest against the t2 the receiver holds."""
    t1, dd = split_pair(linkage, "L(t1,t2)")
    check_DD(dd, t2_type, t2, suite)
    return t1


# --- signatures ----------------------------------------------------------------------------
def S(signer: Identity, content_type: str, t: bytes, *, certs=None,
      suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """S(s,t). ``certs``: certificates to include (default: signer's cert and chain; () for none)."""
    return build_signed(suite, signer, _oid(content_type), t, detached=False, certs=certs)


def SO(signer: Identity, content_type: str, t: bytes, *, certs=None,
       suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """SO(s,t): signature only; t travels elsewhere (or is rebuilt by the verifier)."""
    return build_signed(suite, signer, _oid(content_type), t, detached=True, certs=certs)


def verify_S(data: bytes, content_type: str, *, certs=(), validate=None,
             suite: CryptoSuite = DEFAULT_SUITE) -> Signed:
    """Check S(s,t); ``certs`` are known certificates (Thumbs cache), ``validate`` the PKI check."""
    return open_signed(suite, data, _oid(content_type), certs=certs, validate=validate)


def verify_SO(data: bytes, content_type: str, t: bytes, *, certs=(), validate=None,
              suite: CryptoSuite = DEFAULT_SUITE) -> Signed:
    return open_signed(suite, data, _oid(content_type), detached_content=t, certs=certs,
                       validate=validate)


# --- envelopes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Opened:
    """What a receiver learns from an envelope: content, extra data, baggage, signature."""

    content: bytes
    extra: bytes | None = None
    baggage: bytes | None = None
    signed: Signed | None = None


def _block(contents: int, key: bytes, digest: bytes | None = None, extra: bytes | None = None) -> bytes:
    parts = [der.integer(contents), der.octets(key)]
    if digest is not None:
        parts.append(der.implicit_primitive(0, digest))
    if extra is not None:
        parts.append(der.explicit(1, extra))
    return der.seq(*parts)


def _read_block(block: bytes, contents: int) -> tuple[bytes, bytes | None, bytes | None]:
    """(key, hash, extra) of a SETOAEPBlock (asn1.pkcs7plus) whose contents byte is ``contents``.

    The block is DER-checked whole (extra's insides too), then read field by field: exactly
    {INTEGER, OCTET STRING, [0] IMPLICIT OCTET STRING?, [1] EXPLICIT one value?} and nothing
    after; the hash and the extra data are present exactly when ``contents`` says so."""
    check_der(block, "OAEP block")
    fields = Reader(block, "OAEP block").only(0x30)
    if fields.integer() != contents:
        raise DecryptionFailed("OAEP block carries other contents than this operator expects")
    key = fields.value(0x04)
    digest = fields.value(0x80) if fields.peek() == 0x80 else None
    extra = None
    if fields.peek() == 0xA1:
        wrapped = fields.enter(0xA1)
        extra = wrapped.any()
        wrapped.done()
    fields.done()
    if len(key) != CEK_SIZE or (digest is None) == (contents in (_KEY_AND_HASH, _KEY_HASH_AND_EXTRA)):
        raise MalformedMessage("OAEP block: wrong key size or hash presence")
    if (extra is None) == (contents in (_KEY_AND_EXTRA, _KEY_HASH_AND_EXTRA)):
        raise MalformedMessage("OAEP block: extra data missing or unexpected")
    return key, digest, extra


def _ktri_envelope(suite, recipient: x509.Certificate, env_type: str, content: bytes,
                   contents: int | None, digest: bytes | None = None, extra: bytes | None = None) -> bytes:
    cek = fresh(CEK_SIZE)
    if contents is None:
        ri = ktri(suite, recipient, cek, set_block=False)
    else:
        ri = ktri(suite, recipient, _block(contents, cek, digest, extra), set_block=True)
    return build_enveloped(suite, ri, _oid(env_type), cek, content)


def _open_ktri(suite, data: bytes, recipient: Identity, env_type: str, contents: int | None):
    env = parse_enveloped(data, _oid(env_type))
    block = unwrap_ktri(suite, env, recipient, set_block=contents is not None)
    if contents is None:
        if len(block) != CEK_SIZE:
            raise DecryptionFailed("content key has the wrong size")
        return decrypt_content(suite, env, block), None, None
    key, digest, extra = _read_block(block, contents)
    return decrypt_content(suite, env, key), digest, extra


def Enc(signer: Identity, recipient: x509.Certificate, tbs_type: str, t: bytes, tbe_type: str, *,
        certs=None, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """Enc(s,r,t) (the spec's E): sign, then envelope for r's key-exchange certificate."""
    return _ktri_envelope(suite, recipient, tbe_type, S(signer, tbs_type, t, certs=certs, suite=suite), None)


def open_Enc(data: bytes, recipient: Identity, tbe_type: str, tbs_type: str, *, certs=(),
             validate=None, suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    content, _, _ = _open_ktri(suite, data, recipient, tbe_type, None)
    signed = verify_S(content, tbs_type, certs=certs, validate=validate, suite=suite)
    return Opened(signed.content, signed=signed)


def EncK(key: bytes, signer: Identity, tbs_type: str, t: bytes, tbe_type: str, *, certs=None,
         suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """EncK(kd,s,t): sign, then encrypt under a symmetric key the recipient supplied earlier."""
    if len(key) != CEK_SIZE:
        raise ValueError("EncK needs a 32-octet AES-256 key")
    cek = fresh(CEK_SIZE)
    content = S(signer, tbs_type, t, certs=certs, suite=suite)
    return build_enveloped(suite, kekri(cek, key), _oid(tbe_type), cek, content)


def open_EncK(data: bytes, key: bytes, tbe_type: str, tbs_type: str, *, certs=(), validate=None,
              suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    env = parse_enveloped(data, _oid(tbe_type))
    content = decrypt_content(suite, env, unwrap_kekri(env, key))
    signed = verify_S(content, tbs_type, certs=certs, validate=validate, suite=suite)
    return Opened(signed.content, signed=signed)


def EncX(signer: Identity, recipient: x509.Certificate, tbs_type: str, t: bytes, p_type: str,
         p: bytes, tbex_type: str, *, certs=None, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """EncX(s,r,t,p): the signature covers t and p; p travels only inside the OAEP block."""
    signed = S(signer, tbs_type, L(t, p_type, p, suite), certs=certs, suite=suite)
    return _ktri_envelope(suite, recipient, tbex_type, signed, _KEY_AND_EXTRA, extra=p)


def open_EncX(data: bytes, recipient: Identity, tbex_type: str, tbs_type: str, p_type: str, *,
              certs=(), validate=None, suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    content, _, p = _open_ktri(suite, data, recipient, tbex_type, _KEY_AND_EXTRA)
    signed = verify_S(content, tbs_type, certs=certs, validate=validate, suite=suite)
    return Opened(open_L(signed.content, p_type, p, suite), extra=p, signed=signed)


def EH(recipient: x509.Certificate, tbe_type: str, t: bytes, *, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """EH(r,t): integrity without a signature — H(t) rides in the OAEP block."""
    return _ktri_envelope(suite, recipient, tbe_type, t, _KEY_AND_HASH, digest=suite.digest(t))


def open_EH(data: bytes, recipient: Identity, tbe_type: str, *, suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    content, digest, _ = _open_ktri(suite, data, recipient, tbe_type, _KEY_AND_HASH)
    if digest != suite.digest(content):
        raise DigestMismatch("hash in the OAEP block does not match the decrypted content")
    return Opened(content)


def EX(recipient: x509.Certificate, tbex_type: str, t: bytes, p_type: str, p: bytes, *,
       suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """EX(r,t,p): L(t,p) under the content key; p (e.g. PANData) inside the OAEP block."""
    return _ktri_envelope(suite, recipient, tbex_type, L(t, p_type, p, suite), _KEY_AND_EXTRA, extra=p)


def open_EX(data: bytes, recipient: Identity, tbex_type: str, p_type: str, *,
            suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    content, _, p = _open_ktri(suite, data, recipient, tbex_type, _KEY_AND_EXTRA)
    return Opened(open_L(content, p_type, p, suite), extra=p)


def EXH(recipient: x509.Certificate, tbex_type: str, t: bytes, p_type: str, p: bytes, *,
        suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """EXH(r,t,p): EX plus H(L(t,p)) in the OAEP block (integrity where nobody signs)."""
    content = L(t, p_type, p, suite)
    return _ktri_envelope(suite, recipient, tbex_type, content, _KEY_HASH_AND_EXTRA,
                          digest=suite.digest(content), extra=p)


def open_EXH(data: bytes, recipient: Identity, tbex_type: str, p_type: str, *,
             suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    content, digest, p = _open_ktri(suite, data, recipient, tbex_type, _KEY_HASH_AND_EXTRA)
    if digest != suite.digest(content):
        raise DigestMismatch("hash in the OAEP block does not match the decrypted content")
    return Opened(open_L(content, p_type, p, suite), extra=p)


def EncB(signer: Identity, recipient: x509.Certificate, tbs_type: str, t: bytes, b_type: str,
         b: bytes, tbe_type: str, *, certs=None, suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """EncB(s,r,t,b): baggage b travels outside the envelope, bound by DD(b) in the signature."""
    return der.seq(Enc(signer, recipient, tbs_type, L(t, b_type, b, suite), tbe_type, certs=certs,
                       suite=suite), b)


def open_EncB(data: bytes, recipient: Identity, tbe_type: str, tbs_type: str, b_type: str, *,
              certs=(), validate=None, suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    enc, b = split_pair(data, "EncB")
    opened = open_Enc(enc, recipient, tbe_type, tbs_type, certs=certs, validate=validate, suite=suite)
    return Opened(open_L(opened.content, b_type, b, suite), baggage=b, signed=opened.signed)


def EncBX(signer: Identity, recipient: x509.Certificate, tbs_type: str, t: bytes, b_type: str,
          b: bytes, p_type: str, p: bytes, tbex_type: str, *, certs=None,
          suite: CryptoSuite = DEFAULT_SUITE) -> bytes:
    """EncBX(s,r,t,b,p): EncB whose envelope also carries p in the OAEP block."""
    inner = EncX(signer, recipient, tbs_type, L(t, b_type, b, suite), p_type, p, tbex_type,
                 certs=certs, suite=suite)
    return der.seq(inner, b)


def open_EncBX(data: bytes, recipient: Identity, tbex_type: str, tbs_type: str, b_type: str,
               p_type: str, *, certs=(), validate=None, suite: CryptoSuite = DEFAULT_SUITE) -> Opened:
    enc, b = split_pair(data, "EncB")
    opened = open_EncX(enc, recipient, tbex_type, tbs_type, p_type, certs=certs, validate=validate,
                       suite=suite)
    return Opened(open_L(opened.content, b_type, b, suite), extra=opened.extra, baggage=b,
                  signed=opened.signed)
