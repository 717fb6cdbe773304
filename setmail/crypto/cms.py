"""CMS SignedData and AuthEnvelopedData: build with ``der``, open strictly with asn1crypto.

Only the exact profile of D-1 is produced and accepted: SHA-256, RSASSA-PSS (MGF1-SHA-256, salt 32),
RSAES-OAEP-SHA-256 key transport (or rsaOAEPEncryptionSET for SET's extra-data block, D-11), AES-256
key wrap for provided keys (EncK), AES-256-GCM content encryption with a 16-octet tag.  Anything
else in a received structure is refused: strictness is what turns a flipped byte into a specific
error instead of a silent success.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from asn1crypto import cms as acms
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from setmail.asn1.base import check_der
from setmail.asn1.pkcs7plus import GCMParameters
from setmail.crypto import der
from setmail.crypto.suite import CEK_SIZE, GCM_NONCE_SIZE, GCM_TAG_SIZE, CryptoSuite, fresh
from setmail.errors import (DecryptionFailed, MalformedMessage, MissingCertificate, SetmailError,
                            SignatureInvalid, WrongContentType)

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
OID_CONTENT_TYPE_ATTR = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST_ATTR = "1.2.840.113549.1.9.4"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
OID_RSA_OAEP_SET = "1.2.840.113549.1.1.6"  # rsaOAEPEncryptionSET: block carries SET extra data
OID_AES256_GCM = "2.16.840.1.101.3.4.1.46"
OID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"

ALG_SHA256 = der.seq(der.oid(OID_SHA256))
_MGF1_SHA256 = der.seq(der.oid(OID_MGF1), ALG_SHA256)
ALG_PSS = der.seq(der.oid(OID_RSASSA_PSS),
                  der.seq(der.explicit(0, ALG_SHA256), der.explicit(1, _MGF1_SHA256),
                          der.explicit(2, der.integer(32))))
_OAEP_PARAMS = der.seq(der.explicit(0, ALG_SHA256), der.explicit(1, _MGF1_SHA256))
ALG_OAEP = der.seq(der.oid(OID_RSAES_OAEP), _OAEP_PARAMS)
ALG_OAEP_SET = der.seq(der.oid(OID_RSA_OAEP_SET), _OAEP_PARAMS)
ALG_AES256_WRAP = der.seq(der.oid(OID_AES256_WRAP))


@dataclass(frozen=True, eq=False)
class Identity:
    """A party's private key with its certificate (and the chain it sends along when asked)."""

    key: object
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = field(default=())

    @cached_property
    def issuer_and_serial(self) -> bytes:
        return issuer_and_serial(self.cert)

    @cached_property
    def cert_der(self) -> bytes:
        return cert_der(self.cert)


@lru_cache(maxsize=1024)
def _ias(cert: x509.Certificate) -> bytes:
    return der.seq(cert.issuer.public_bytes(), der.integer(cert.serial_number))


def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """DER IssuerAndSerialNumber naming ``cert`` (signer and recipient identifiers)."""
    return _ias(cert)


@lru_cache(maxsize=1024)
def cert_der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding
    return cert.public_bytes(Encoding.DER)


@lru_cache(maxsize=2048)
def load_cert(data: bytes) -> x509.Certificate:
    """Parse (and cache) a DER certificate taken from a message."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise MalformedMessage(f"embedded certificate does not parse: {exc}") from exc


def _load(data: bytes, what: str) -> acms.ContentInfo:
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    check_der(bytes(data), what)
    try:
        return acms.ContentInfo.load(bytes(data), strict=True)
    except Exception as exc:
        raise MalformedMessage(f"{what}: not a DER ContentInfo ({exc})") from exc


def _guard(what: str):
    """Decorator: asn1crypto's lazy parser may fail on first access deep inside; name it."""
    def wrap(fn):
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except SetmailError:
                raise
            except Exception as exc:
                raise MalformedMessage(f"{what}: malformed ({exc.__class__.__name__}: {exc})") from exc
        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner
    return wrap


# --- SignedData ---------------------------------------------------------------------------
def build_signed(suite: CryptoSuite, signer: Identity, content_type: str, content: bytes, *,
                 detached: bool, certs: tuple[x509.Certificate, ...] | None) -> bytes:
    """ContentInfo(SignedData) with content-type and message-digest signed attributes."""
    ct_oid = der.oid(content_type)
    attrs = [der.seq(der.oid(OID_CONTENT_TYPE_ATTR), der.set_of(ct_oid)),
             der.seq(der.oid(OID_MESSAGE_DIGEST_ATTR), der.set_of(der.octets(suite.digest(content))))]
    attrs_set = der.set_of(*attrs)
    signature = suite.sign(signer.key, attrs_set)
    signer_info = der.seq(der.integer(1), signer.issuer_and_serial, ALG_SHA256,
                          der.implicit_constructed(0, der.content_of(attrs_set)), ALG_PSS,
                          der.octets(signature))
    encap = der.seq(ct_oid) if detached else der.seq(ct_oid, der.explicit(0, der.octets(content)))
    parts = [der.integer(3), der.set_of(ALG_SHA256), encap]
    if certs is None:
        certs = (signer.cert, *signer.chain)
    if certs:
        parts.append(der.implicit_constructed(0, b"".join(sorted({cert_der(c) for c in certs}))))
    parts.append(der.set_of(signer_info))
    return der.seq(der.oid(OID_SIGNED_DATA), der.explicit(0, der.seq(*parts)))


@dataclass(frozen=True)
class Signed:
    """A verified signature: what was signed, under which SET content type, by whom."""

    content: bytes
    content_type: str
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]


@_guard("SignedData")
def open_signed(suite: CryptoSuite, data: bytes, content_type: str, *, detached_content=None,
                certs=(), validate=None) -> Signed:
    """Verify a SignedData of ``content_type``; ``validate(signer, certificates)`` checks the path."""
    ci = _load(data, "SignedData")
    if ci["content_type"].dotted != OID_SIGNED_DATA:
        raise WrongContentType(f"expected SignedData, found {ci['content_type'].dotted}")
    sd = ci["content"]
    if sd["version"].native != "v3" or sd["digest_algorithms"].dump() != der.set_of(ALG_SHA256):
        raise MalformedMessage("SignedData: unsupported version or digest algorithms")
    if not isinstance(sd["crls"], core.Void):
        raise MalformedMessage("SignedData: unexpected crls field")
    encap = sd["encap_content_info"]
    found = encap["content_type"].dotted
    if found != content_type:
        raise WrongContentType(f"signed content type is {found}, expected {content_type}")
    present = not isinstance(encap["content"], core.Void)
    if detached_content is None:
        if not present:
            raise MalformedMessage("SignedData: content missing")
        content = encap["content"].contents
    else:
        if present:
            raise MalformedMessage("SignedData: content present where it must be detached")
        content = detached_content
    infos = sd["signer_infos"]
    if len(infos) != 1:
        raise MalformedMessage(f"SignedData: {len(infos)} signer infos, expected 1")
    si = infos[0]
    if (si["version"].native != "v1" or si["sid"].name != "issuer_and_serial_number"
            or si["digest_algorithm"].dump() != ALG_SHA256 or si["signature_algorithm"].dump() != ALG_PSS):
        raise MalformedMessage("SignerInfo: unsupported version, identifier or algorithm")
    attrs = si["signed_attrs"]
    if isinstance(attrs, core.Void) or len(attrs) != 2:
        raise MalformedMessage("SignerInfo: signed attributes must be content-type and message-digest")
    seen = {}
    for attr in attrs:
        values = attr["values"]
        if len(values) != 1:
            raise MalformedMessage("SignerInfo: attribute with more than one value")
        seen[attr["type"].dotted] = values[0]
    if set(seen) != {OID_CONTENT_TYPE_ATTR, OID_MESSAGE_DIGEST_ATTR}:
        raise MalformedMessage("SignerInfo: signed attributes must be content-type and message-digest")
    if seen[OID_CONTENT_TYPE_ATTR].dotted != content_type:
        raise SignatureInvalid("signed content-type attribute does not match the content type")
    included = () if isinstance(sd["certificates"], core.Void) else tuple(
        load_cert(c.chosen.dump()) for c in sd["certificates"])
    signer_id = si["sid"].chosen.dump()
    signer = next((c for c in (*included, *certs) if issuer_and_serial(c) == signer_id), None)
    if signer is None:
        raise MissingCertificate("signer's certificate is neither in the message nor known")
    attrs_der = b"\x31" + attrs.dump()[1:]
    suite.verify(signer.public_key(), si["signature"].native, attrs_der)
    if seen[OID_MESSAGE_DIGEST_ATTR].native != suite.digest(content):
        raise SignatureInvalid("message digest does not match the signed content")
    if validate is not None:
        validate(signer, included)
    return Signed(content, content_type, signer, included)


# --- AuthEnvelopedData ----------------------------------------------------------------------
def ktri(suite: CryptoSuite, recipient: x509.Certificate, block: bytes, *, set_block: bool) -> bytes:
    """KeyTransRecipientInfo: OAEP(block) for ``recipient`` named by issuer and serial."""
    encrypted = suite.oaep_encrypt(recipient.public_key(), block)
    alg = ALG_OAEP_SET if set_block else ALG_OAEP
    return der.seq(der.integer(0), issuer_and_serial(recipient), alg, der.octets(encrypted))


def kek_id(key: bytes) -> bytes:
    """KEKIdentifier for a provided symmetric key: a digest, so the key itself never travels."""
    return hashlib.sha256(b"setmail EncK key id" + key).digest()[:16]


def kekri(cek: bytes, kek: bytes) -> bytes:
    """KEKRecipientInfo ([2] IMPLICIT): the CEK wrapped (RFC 3394) under a provided key."""
    body = der.seq(der.integer(4), der.seq(der.octets(kek_id(kek))), ALG_AES256_WRAP,
                   der.octets(aes_key_wrap(kek, cek)))
    return der.implicit_constructed(2, der.content_of(body))


def build_enveloped(suite: CryptoSuite, recipient_info: bytes, content_type: str, cek: bytes,
                    plaintext: bytes) -> bytes:
    nonce = fresh(GCM_NONCE_SIZE)
    ciphertext, tag = suite.aead_encrypt(cek, nonce, plaintext)
    alg = der.seq(der.oid(OID_AES256_GCM), der.seq(der.octets(nonce), der.integer(GCM_TAG_SIZE)))
    eci = der.seq(der.oid(content_type), alg, der.implicit_primitive(0, ciphertext))
    aed = der.seq(der.integer(0), der.set_of(recipient_info), eci, der.octets(tag))
    return der.seq(der.oid(OID_AUTH_ENVELOPED_DATA), der.explicit(0, aed))


@dataclass(frozen=True)
class Envelope:
    """A parsed, not yet opened AuthEnvelopedData."""

    content_type: str
    recipient: acms.RecipientInfo
    nonce: bytes
    ciphertext: bytes
    tag: bytes


@_guard("AuthEnvelopedData")
def parse_enveloped(data: bytes, content_type: str) -> Envelope:
    ci = _load(data, "AuthEnvelopedData")
    if ci["content_type"].dotted != OID_AUTH_ENVELOPED_DATA:
        raise WrongContentType(f"expected AuthEnvelopedData, found {ci['content_type'].dotted}")
    aed = ci["content"]
    if aed["version"].native != "v0" or not isinstance(aed["originator_info"], core.Void):
        raise MalformedMessage("AuthEnvelopedData: unsupported version or originator info")
    if not (isinstance(aed["auth_attrs"], core.Void) and isinstance(aed["unauth_attrs"], core.Void)):
        raise MalformedMessage("AuthEnvelopedData: unexpected attributes")
    if len(aed["recipient_infos"]) != 1:
        raise MalformedMessage("AuthEnvelopedData: exactly one recipient expected")
    eci = aed["auth_encrypted_content_info"]
    found = eci["content_type"].dotted
    if found != content_type:
        raise WrongContentType(f"enveloped content type is {found}, expected {content_type}")
    alg = eci["content_encryption_algorithm"]
    if alg["algorithm"].dotted != OID_AES256_GCM:
        raise MalformedMessage("AuthEnvelopedData: content encryption is not AES-256-GCM")
    params = GCMParameters.load(alg["parameters"].dump(), strict=True)
    nonce = params["aes_nonce"].native
    if len(nonce) != GCM_NONCE_SIZE or params["aes_icv_len"].native != GCM_TAG_SIZE:
        raise MalformedMessage("AuthEnvelopedData: unsupported GCM nonce or tag length")
    ciphertext = eci["encrypted_content"].native
    if ciphertext is None:
        raise MalformedMessage("AuthEnvelopedData: encrypted content missing")
    return Envelope(found, aed["recipient_infos"][0], nonce, ciphertext, aed["mac"].native)


@_guard("KeyTransRecipientInfo")
def unwrap_ktri(suite: CryptoSuite, env: Envelope, recipient: Identity, *, set_block: bool) -> bytes:
    """The OAEP block addressed to ``recipient`` (DecryptionFailed if it is someone else's)."""
    if env.recipient.name != "ktri":
        raise DecryptionFailed("envelope is not addressed to a key-exchange certificate")
    ri = env.recipient.chosen
    if ri["version"].native != "v0" or ri["rid"].name != "issuer_and_serial_number":
        raise MalformedMessage("KeyTransRecipientInfo: unsupported version or identifier")
    if ri["rid"].chosen.dump() != recipient.issuer_and_serial:
        raise DecryptionFailed("envelope is addressed to another certificate")
    if ri["key_encryption_algorithm"].dump() != (ALG_OAEP_SET if set_block else ALG_OAEP):
        raise MalformedMessage("KeyTransRecipientInfo: unexpected key encryption algorithm")
    return suite.oaep_decrypt(recipient.key, ri["encrypted_key"].native)


@_guard("KEKRecipientInfo")
def unwrap_kekri(env: Envelope, kek: bytes) -> bytes:
    if env.recipient.name != "kekri":
        raise DecryptionFailed("envelope is not addressed to a provided symmetric key")
    ri = env.recipient.chosen
    if (ri["version"].native != "v4" or ri["kekid"]["key_identifier"].native != kek_id(kek)
            or ri["key_encryption_algorithm"].dump() != ALG_AES256_WRAP):
        raise DecryptionFailed("envelope is addressed to another key")
    try:
        cek = aes_key_unwrap(kek, ri["encrypted_key"].native)
    except (InvalidUnwrap, ValueError) as exc:
        raise DecryptionFailed("content key does not unwrap with the provided key") from exc
    if len(cek) != CEK_SIZE:
        raise DecryptionFailed("content key has the wrong size")
    return cek


def decrypt_content(suite: CryptoSuite, env: Envelope, cek: bytes) -> bytes:
    return suite.aead_decrypt(cek, env.nonce, env.ciphertext, env.tag)
