"""Every exception setmail raises on purpose, in one leaf module.

Why one module: each layer (asn1, crypto, pki, roles, mail) reports failures that the layers above
must tell apart and map to a SET ``ErrorCode`` (Book 2 table 4.6.2.16 names). Keeping the classes in
a leaf module with no imports lets ``asn1`` (which imports nothing else of setmail) and everything
above it share one hierarchy.  Rule: library exceptions (``ValueError`` from asn1crypto,
``InvalidSignature``/``InvalidTag`` from cryptography, ...) never escape a public function; they are
translated into one of these, chained with ``raise ... from``.

``set_error_code`` names the SET ErrorCode a receiver should put in an Error message.
"""
from __future__ import annotations


class SetmailError(Exception):
    """Base of every error setmail raises deliberately."""

    set_error_code = "unspecifiedFailure"


# --- decoding -------------------------------------------------------------------------------
class MalformedMessage(SetmailError):
    """Bytes that are not the DER structure expected (truncated, wrong tag, trailing data, ...)."""

    set_error_code = "decodingFailure"


class MessageTooLarge(MalformedMessage):
    """Input over the size limit; refused before any parsing is attempted."""

    set_error_code = "messageTooBig"


class UnsupportedMessage(MalformedMessage):
    """A well-formed message of a type or version this party does not implement."""

    set_error_code = "messageNotSupported"


# --- cryptographic operators ----------------------------------------------------------------
class CryptoError(SetmailError):
    """Base for failures of the SET cryptographic operators."""


class SignatureInvalid(CryptoError):
    """A signature (S, SO, the dual signature, a CA signature) does not verify."""

    set_error_code = "signatureFailure"


class DecryptionFailed(CryptoError):
    """An envelope cannot be opened: wrong key, wrong recipient, or tampered ciphertext/tag."""


class DigestMismatch(CryptoError):
    """A detached digest (DD, the hash in an OAEP block, baggage binding) does not match its data."""


class WrongContentType(CryptoError):
    """A CMS layer carries a SET content type other than the one the operator expects."""

    set_error_code = "wrapperMsgMismatch"


class BadKey(CryptoError):
    """Unusable key material (wrong size, wrong type, unparsable PEM)."""


# --- PKI --------------------------------------------------------------------------------------
class CertificateError(SetmailError):
    """Base for certificate and path-validation failures."""

    set_error_code = "invalidCertificate"


class MalformedCertificate(CertificateError):
    """Certificate or CRL bytes that do not parse as X.509."""


class Expired(CertificateError):
    set_error_code = "expiredCertificate"


class NotYetValid(CertificateError):
    pass


class Revoked(CertificateError):
    set_error_code = "revokedCertificate"


class WrongCertificateType(CertificateError):
    """The SET certificateType extension does not allow the role the key is used in."""


class WrongKeyUsage(CertificateError):
    """keyUsage does not allow the operation (e.g. a key-exchange key used to sign)."""


class UntrustedRoot(CertificateError):
    """The chain ends in a root whose key hash is not pinned (and no valid rollover)."""


class BadSignature(CertificateError):
    """A certificate or CRL signature does not verify under its issuer's key."""


class ChainTooLong(CertificateError):
    pass


class MissingCertificate(CertificateError):
    """A needed certificate is neither in the message nor in the thumbprint cache."""

    set_error_code = "missingCertificate"


class BadChain(CertificateError):
    """Chain order or issuer/subject linkage is wrong, or a CRL comes from the wrong issuer."""


# --- protocol -----------------------------------------------------------------------------
class ProtocolError(SetmailError):
    """A well-formed, authentic message that the state machine must refuse."""

    def __init__(self, message: str, set_error_code: str | None = None):
        super().__init__(message)
        if set_error_code:
            self.set_error_code = set_error_code


# --- mail transport and storage ---------------------------------------------------------------
class MailFormatError(MalformedMessage):
    """A mail that is not a well-formed SET mail; it is quarantined, never half-processed."""


class WrongMailContentType(MailFormatError):
    """The mail's Content-Type is not one of the four SET content types."""

    set_error_code = "messageNotSupported"


class UnexpectedMultipart(MailFormatError):
    """A multipart mail: a SET mail carries exactly one DER blob as a single-part body."""


class MissingMailBody(MailFormatError):
    """No header/body separator, or an empty body."""


class BadMailEncoding(MailFormatError):
    """The body is not (strict) base64, or the transfer encoding is not base64."""


class BadMailHeader(MailFormatError):
    """A required header is missing or repeated, or a header value would break the mail."""


class MailTooLarge(MailFormatError, MessageTooLarge):
    """A mail over the size limit; refused before parsing."""


class TransportError(SetmailError):
    """SMTP delivery failed.  ``permanent`` (a 5xx reply) means: retrying will not help."""

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class MaildirError(SetmailError):
    """A Maildir operation failed on disk (permissions, full disk, missing folders)."""


class MaildirKeyError(MaildirError, KeyError):
    """No message with that key in the folder the operation needs it in."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WatchError(SetmailError):
    """A watcher could not be set up (e.g. inotify required but unavailable)."""


class StoreError(SetmailError):
    """The agent's SQLite store failed or was used wrongly (nested transaction, bad schema)."""


class StoreDamaged(StoreError):
    """The store's file is corrupt, truncated or lost while the agent's Maildir shows it was used:
    the agent refuses to start (it would forget every transaction) until a backup is restored."""

    exit_code = 3


class DedupeConflict(StoreError):
    """A dedupe record for this SHA-256 of the MessageWrapper DER already exists: the exact same
    message was accepted and processed before."""


# --- PKI additions (setmail.pki) ------------------------------------------------------------------
class KeyAlreadyCertified(CertificateError):
    """A CA was asked to certify a public key it has already certified (SET refuses key reuse)."""


class CardholderMismatch(CertificateError):
    """The cardholder certificate's identifier does not match PANSecret, PAN and expiry."""


# --- worlds and the command line (setmail.world, setmail.cli) -------------------------------------
class WorldError(SetmailError):
    """No usable world at the given home (missing or unreadable world.toml, unknown agent)."""

    exit_code = 3


class WorldExists(WorldError):
    """``setmail init`` found a world already there and ``--force`` was not given."""


class UnknownAgent(WorldError):
    """The world has no agent by that name."""

    exit_code = 2
