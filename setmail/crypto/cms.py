"""CMS SignedData and AuthEnvelopedData: build with ``der``, open strictly with ``reader``.

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

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from setmail.crypto.certparse import load_der_certificate
from setmail.crypto.reader import Reader
from setmail.crypto import der
from setmail.crypto.suite import CEK_SIZE, GCM_NONCE_SIZE, GCM_TAG_SIZE, CryptoSuite, fresh
from setmail.errors import (DecryptionFailed, MalformedCertificate, MalformedMessage,
                            MissingCertificate, SignatureInvalid, WrongContentType)

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
_DIGEST_ALGS = der.set_of(ALG_SHA256)
_OID_BODY_SIGNED_DATA = der.content_of(der.oid(OID_SIGNED_DATA))
_OID_BODY_AUTH_ENVELOPED = der.content_of(der.oid(OID_AUTH_ENVELOPED_DATA))
_OID_AES256_GCM_TLV = der.oid(OID_AES256_GCM)
_SIGNED_DATA_HEAD = der.integer(3) + _DIGEST_ALGS  # version and digestAlgorithms
_CONTENT_INFO_SIGNED = der.oid(OID_SIGNED_DATA)
_CONTENT_INFO_ENVELOPED = der.oid(OID_AUTH_ENVELOPED_DATA)
_GCM_TAG_LENGTH = der.integer(GCM_TAG_SIZE)


def _signed_attrs_generic(ct_oid: bytes, digest: bytes) -> bytes:
    return der.set_of(der.seq(der.oid(OID_CONTENT_TYPE_ATTR), der.set_of(ct_oid)),
                      der.seq(der.oid(OID_MESSAGE_DIGEST_ATTR), der.set_of(der.octets(digest))))


@lru_cache(maxsize=512)
def _attrs_frame(ct_oid: bytes, size: int) -> tuple[bytes, bytes] | None:
    """(before, after) the digest in the signed attributes of ``ct_oid``, or None if the SET OF
    order could depend on the digest.  It cannot for real OIDs: the two attributes differ in the
    attribute OID, before the digest, so one content type has one frame."""
    blank = _signed_attrs_generic(ct_oid, bytes(size))
    ct_attr = der.seq(der.oid(OID_CONTENT_TYPE_ATTR), der.set_of(ct_oid))
    md_head = der.seq(der.oid(OID_MESSAGE_DIGEST_ATTR), der.set_of(der.octets(bytes(size))))[:-size]
    common = min(len(ct_attr), len(md_head))
    if ct_attr[:common] == md_head[:common]:
        return None
    if ct_attr < md_head:
        return blank[:-size], b""
    return blank[:-size - len(ct_attr)], ct_attr


def _signed_attrs(ct_oid: bytes, digest: bytes) -> bytes:
    """DER SET OF the two signed attributes (what the signature covers)."""
    frame = _attrs_frame(ct_oid, len(digest))
    if frame is None:
        return _signed_attrs_generic(ct_oid, digest)
    return frame[0] + digest + frame[1]


@dataclass(frozen=True, eq=False)
class Identity:
    """A party's private key with its certificate (and the chain it sends along when asked).

    ``previous``: key-exchange identities this one replaced at a renewal, still accepted as the
    recipient of an envelope (mail encrypted to the old certificate may still be on its way);
    never used to encrypt or sign."""

    key: object
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = field(default=())
    previous: tuple["Identity", ...] = field(default=())

    @cached_property
    def issuer_and_serial(self) -> bytes:
        return issuer_and_serial(self.cert)

    @cached_property
    def cert_der(self) -> bytes:
        return cert_der(self.cert)

    @cached_property
    def signer_info_head(self) -> bytes:
        """SignerInfo's version, sid and digestAlgorithm: the same in every signature."""
        return der.integer(1) + self.issuer_and_serial + ALG_SHA256

    @cached_property
    def default_certificates(self) -> bytes:
        """The [0] certificates field of a SignedData that carries the signer's cert and chain."""
        return _certificates_field((self.cert, *self.chain))


class _CertFacts:
    """What the operators need of one certificate object, computed once (cached by identity)."""

    __slots__ = ("cert", "ias", "der")

    def __init__(self, cert: x509.Certificate):
        self.cert = cert
        self.ias = der.seq(cert.issuer.public_bytes(), der.integer(cert.serial_number))
        self.der = cert.public_bytes(Encoding.DER)


#: id(cert) -> facts.  Why by identity: hashing or comparing a Certificate hashes its whole DER
#: (~5 us), and pki.parse hands out one object per distinct certificate.  An entry holds its
#: certificate, so the id cannot be reused while it is here.
_FACTS: dict[int, _CertFacts] = {}
_FACTS_MAX = 4096


def _facts(cert: x509.Certificate) -> _CertFacts:
    facts = _FACTS.get(id(cert))
    if facts is None or facts.cert is not cert:
        facts = _CertFacts(cert)
        if len(_FACTS) >= _FACTS_MAX:
            _FACTS.clear()  # atomic, unlike evicting one entry while another thread inserts
        _FACTS[id(cert)] = facts
    return facts


def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """DER IssuerAndSerialNumber naming ``cert`` (signer and recipient identifiers)."""
    return _facts(cert).ias


def cert_der(cert: x509.Certificate) -> bytes:
    return _facts(cert).der


def _certificates_field(certs) -> bytes:
    """[0] IMPLICIT SET OF Certificate: each distinct certificate once, in DER SET OF order."""
    return der.implicit_constructed(0, b"".join(sorted({_facts(c).der for c in certs})))


def load_cert(data: bytes) -> x509.Certificate:
    """A DER certificate taken from a message, parsed in full and cached (``certparse``):
    cryptography parses lazily, so a bad name, key or extension would otherwise escape later,
    mid-validation, as a library exception.  Raises MalformedMessage, like any other bad byte of
    the message."""
    try:
        return load_der_certificate(data)
    except MalformedCertificate as exc:
        raise MalformedMessage(f"embedded certificate: {exc}") from exc


def _content(data: bytes, oid_body: bytes, what: str) -> Reader:
    """A reader over the SEQUENCE inside ``ContentInfo { contentType, [0] EXPLICIT content }``."""
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    ci = Reader(bytes(data), what).only(0x30)
    if ci.value(0x06) != oid_body:
        raise WrongContentType(f"expected a {what} ContentInfo")
    return ci.only(0xA0).only(0x30)


# --- SignedData ---------------------------------------------------------------------------
def build_signed(suite: CryptoSuite, signer: Identity, content_type: str, content: bytes, *,
                 detached: bool, certs: tuple[x509.Certificate, ...] | None) -> bytes:
    """ContentInfo(SignedData) with content-type and message-digest signed attributes."""
    ct_oid = der.oid(content_type)
    attrs_set = _signed_attrs(ct_oid, suite.digest(content))
    signature = suite.sign(signer.key, attrs_set)
    # signedAttrs is [0] IMPLICIT: the SET's own bytes under another tag
    signer_info = der.tlv(0x30, b"".join((signer.signer_info_head, b"\xa0", attrs_set[1:], ALG_PSS,
                                          der.header(0x04, len(signature)), signature)))
    if detached:
        encap = der.tlv(0x30, ct_oid)
    else:
        encap = der.tlv(0x30, ct_oid + der.tlv(0xA0, der.tlv(0x04, content)))
    if certs is None:
        included = signer.default_certificates
    else:
        included = _certificates_field(certs) if certs else b""
    body = b"".join((_SIGNED_DATA_HEAD, encap, included, der.tlv(0x31, signer_info)))
    return der.tlv(0x30, _CONTENT_INFO_SIGNED + der.tlv(0xA0, der.tlv(0x30, body)))


@dataclass(frozen=True)
class Signed:
    """A verified signature: what was signed, under which SET content type, by whom."""

    content: bytes
    content_type: str
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]


def open_signed(suite: CryptoSuite, data: bytes, content_type: str, *, detached_content=None,
                certs=(), validate=None) -> Signed:
    """Verify a SignedData of ``content_type``; ``validate(signer, certificates)`` checks the path."""
    sd = _content(data, _OID_BODY_SIGNED_DATA, "SignedData")
    if sd.integer() != 3:
        raise MalformedMessage("SignedData: unsupported version")
    sd.expect(_DIGEST_ALGS)
    encap = sd.enter(0x30)
    found = encap.raw(0x06)
    ct_oid = der.oid(content_type)
    if found != ct_oid:
        raise WrongContentType(f"signed content type is not {content_type}")
    if encap.peek() is None:
        if detached_content is None:
            raise MalformedMessage("SignedData: content missing")
        content = detached_content
    else:
        if detached_content is not None:
            raise MalformedMessage("SignedData: content present where it must be detached")
        wrapped = encap.enter(0xA0)
        content = wrapped.value(0x04)
        wrapped.done()
    encap.done()
    included = ()
    if sd.peek() == 0xA0:
        pool, found, previous = sd.enter(0xA0), [], b""
        while pool.peek() is not None:
            cert = pool.raw(0x30)
            if cert < previous:  # bytes order is DER's SET OF order for whole TLVs (X.690 11.6)
                raise MalformedMessage("SignedData: certificates are not in DER SET OF order")
            found.append(load_cert(cert))
            previous = cert
        included = tuple(found)
    if sd.peek() == 0xA1:
        raise MalformedMessage("SignedData: unexpected crls field")
    si = sd.only(0x31).only(0x30)  # exactly one SignerInfo
    if si.integer() != 1:
        raise MalformedMessage("SignerInfo: unsupported version")
    signer_id = si.raw(0x30)
    si.expect(ALG_SHA256)
    attrs = si.raw(0xA0)
    si.expect(ALG_PSS)
    signature = si.value(0x04)
    si.done()
    try:
        signer = next((c for c in (*included, *certs) if _facts(c).ias == signer_id), None)
        public_key = None if signer is None else signer.public_key()
    except Exception as exc:  # cryptography parses certificates lazily
        raise MalformedMessage(f"SignedData: an embedded certificate is malformed ({exc})") from exc
    if signer is None:
        raise MissingCertificate("signer's certificate is neither in the message nor known")
    attrs_der = b"\x31" + attrs[1:]
    suite.verify(public_key, signature, attrs_der)
    if attrs_der != _signed_attrs(ct_oid, suite.digest(content)):
        raise SignatureInvalid("signed attributes do not match the content type and content")
    if validate is not None:
        validate(signer, included)
    return Signed(content, content_type, signer, included)


# --- AuthEnvelopedData ----------------------------------------------------------------------
def ktri(suite: CryptoSuite, recipient: x509.Certificate, block: bytes, *, set_block: bool) -> bytes:
    """KeyTransRecipientInfo: OAEP(block) for ``recipient`` named by issuer and serial."""
    encrypted = suite.oaep_encrypt(recipient.public_key(), block)
    alg = ALG_OAEP_SET if set_block else ALG_OAEP
    return der.tlv(0x30, b"".join((b"\x02\x01\x00", _facts(recipient).ias, alg,
                                   der.header(0x04, len(encrypted)), encrypted)))


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
    alg = der.tlv(0x30, _OID_AES256_GCM_TLV + der.tlv(0x30, der.tlv(0x04, nonce) + _GCM_TAG_LENGTH))
    eci = der.tlv(0x30, b"".join((der.oid(content_type), alg, der.header(0x80, len(ciphertext)),
                                  ciphertext)))
    aed = der.tlv(0x30, b"".join((b"\x02\x01\x00", der.tlv(0x31, recipient_info), eci,
                                  der.tlv(0x04, tag))))
    return der.tlv(0x30, _CONTENT_INFO_ENVELOPED + der.tlv(0xA0, aed))


@dataclass(frozen=True)
class Envelope:
    """A parsed, not yet opened AuthEnvelopedData."""

    content_type: str
    recipient_tag: int    # 0x30 KeyTransRecipientInfo, 0xA2 KEKRecipientInfo
    recipient: bytes      # its whole TLV
    nonce: bytes
    ciphertext: bytes
    tag: bytes


def parse_enveloped(data: bytes, content_type: str) -> Envelope:
    aed = _content(data, _OID_BODY_AUTH_ENVELOPED, "AuthEnvelopedData")
    if aed.integer() != 0:
        raise MalformedMessage("AuthEnvelopedData: unsupported version")
    infos = aed.enter(0x31)
    kind = infos.peek()
    if kind not in (0x30, 0xA2):
        raise MalformedMessage("AuthEnvelopedData: unsupported recipient info")
    recipient = infos.raw(kind)
    infos.done()
    eci = aed.enter(0x30)
    if eci.raw(0x06) != der.oid(content_type):
        raise WrongContentType(f"enveloped content type is not {content_type}")
    alg = eci.enter(0x30)
    alg.expect(_OID_AES256_GCM_TLV)
    params = alg.enter(0x30)
    alg.done()
    nonce = params.value(0x04)
    if len(nonce) != GCM_NONCE_SIZE or params.integer() != GCM_TAG_SIZE:
        raise MalformedMessage("AuthEnvelopedData: unsupported GCM nonce or tag length")
    params.done()
    ciphertext = eci.value(0x80)
    eci.done()
    mac = aed.value(0x04)
    aed.done()
    return Envelope(content_type, kind, recipient, nonce, ciphertext, mac)


def unwrap_ktri(suite: CryptoSuite, env: Envelope, recipient: Identity, *, set_block: bool) -> bytes:
    """The OAEP block addressed to ``recipient`` (DecryptionFailed if it is someone else's)."""
    if env.recipient_tag != 0x30:
        raise DecryptionFailed("envelope is not addressed to a key-exchange certificate")
    ri = Reader(env.recipient, "KeyTransRecipientInfo").only(0x30)
    if ri.integer() != 0:
        raise MalformedMessage("KeyTransRecipientInfo: unsupported version")
    rid = ri.raw(0x30)
    holder = next((i for i in (recipient, *recipient.previous) if i.issuer_and_serial == rid), None)
    if holder is None:
        raise DecryptionFailed("envelope is addressed to another certificate")
    ri.expect(ALG_OAEP_SET if set_block else ALG_OAEP)
    encrypted = ri.value(0x04)
    ri.done()
    return suite.oaep_decrypt(holder.key, encrypted)


def unwrap_kekri(env: Envelope, kek: bytes) -> bytes:
    if env.recipient_tag != 0xA2:
        raise DecryptionFailed("envelope is not addressed to a provided symmetric key")
    ri = Reader(env.recipient, "KEKRecipientInfo").only(0xA2)
    if ri.integer() != 4:
        raise MalformedMessage("KEKRecipientInfo: unsupported version")
    kekid = ri.enter(0x30)
    key_id = kekid.value(0x04)
    kekid.done()
    ri.expect(ALG_AES256_WRAP)
    wrapped = ri.value(0x04)
    ri.done()
    if key_id != kek_id(kek):
        raise DecryptionFailed("envelope is addressed to another key")
    try:
        cek = aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError) as exc:
        raise DecryptionFailed("content key does not unwrap with the provided key") from exc
    if len(cek) != CEK_SIZE:
        raise DecryptionFailed("content key has the wrong size")
    return cek


def decrypt_content(suite: CryptoSuite, env: Envelope, cek: bytes) -> bytes:
    return suite.aead_decrypt(cek, env.nonce, env.ciphertext, env.tag)
