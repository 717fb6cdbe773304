"""MIME codec for SET mail: one DER blob, base64, in a single-part mail.

Why hand-made bytes instead of ``email.message.EmailMessage``: a benchmark pushes thousands of
mails, and the full ``email`` policy machinery costs far more than the crypto it wraps.  The
format is fixed and simple, so we write it with byte formatting.  Reading has two paths: a clean
mail (plain ASCII header fields) is read with one regex, ~3x cheaper; anything else goes to the
email package (``BytesHeaderParser``, compat32, headers only), which stays the reference: the
fast path returns exactly what it would, or steps aside (tests/test_mail_mime.py checks both).

Security: nothing security-relevant is taken from headers.  From/To/Subject/Message-ID only route,
thread and trace mail; who sent a SET message is decided upstream from the signed DER.  Parsing is
strict anyway (one content type header, strict base64, size checked first) so a hostile mail is
refused with a :class:`~setmail.errors.MailFormatError`, never a traceback.

Message ids are handled bare (``local@domain``) in the API; angle brackets are wire syntax only.
Built mails use CRLF line endings (SMTP wire format); parsing accepts CRLF or LF (Maildir files).
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.header import Header, decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, getaddresses

from setmail.errors import (
    BadMailEncoding,
    BadMailHeader,
    MailTooLarge,
    MissingMailBody,
    UnexpectedMultipart,
    WrongMailContentType,
)

SET_CONTENT_TYPES = frozenset({
    "application/set-payment",
    "application/set-registration",
    "application/set-payment-initiation",
    "application/set-registration-initiation",
})
MAX_LINE = 998  # RFC 5322 2.1.1; aiosmtpd refuses lines over 1000 octets with CRLF
_CRLF = b"\r\n"
# Headers the codec owns; callers cannot override them through extra_headers.
_STRUCTURAL = frozenset({
    "from", "to", "subject", "date", "message-id", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding",
})
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")  # printable ASCII except ':' (RFC 5322 ftext)
_MSGID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+\Z")  # no whitespace, '<' or '>'
_ANGLE_ID = re.compile(rb"<([^<>\s]+)>")
_HEADER_PARSER = BytesHeaderParser(policy=compat32)
_BODY_SPLIT = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class ParsedMail:
    """A decoded SET mail.  ``headers`` keeps every header in order, as (name, value) pairs."""

    content_type: str
    der: bytes
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    sender: str
    recipient: str
    subject: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def _bare_id(value: str, what: str) -> str:
    ident = value.strip()
    if ident.startswith("<") and ident.endswith(">"):
        ident = ident[1:-1]
    if len(ident) > 900 or not _MSGID.match(ident):  # length first: the regex is quadratic
        raise BadMailHeader(f"{what} is not a valid message id: {value!r}")
    return ident


def _plain(value: str, what: str) -> str:
    """A header value that cannot inject lines and fits one line."""
    if "\r" in value or "\n" in value or len(value) > 900 or not value.isascii():
        raise BadMailHeader(f"{what} must be one line of at most 900 ASCII characters")
    return value


def _encode_subject(subject: str) -> str:
    """Surrounding whitespace is dropped: header parsing would not keep it anyway."""
    if "\r" in subject or "\n" in subject:
        raise BadMailHeader("Subject must not contain line breaks")
    subject = subject.strip()
    if subject.isascii() and len(subject) <= 900 and "=?" not in subject:
        return subject
    # RFC 2047 encoded words, folded to short lines so no line exceeds the limit.
    return Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")


def _fold_ids(name: str, ids: Iterable[str]) -> bytes:
    """``Name: <a> <b> ...`` folded before any id that would push a line past 78 columns."""
    lines, line = [], name + ":"
    for ident in ids:
        token = f"<{ident}>"
        if len(line) + 1 + len(token) > 78 and not line.endswith(":"):
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines).encode("ascii") + _CRLF


def build_mail(
    der: bytes,
    *,
    content_type: str,
    sender: str,
    recipient: str,
    message_id: str,
    subject: str,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    date: datetime | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """Wrap ``der`` into a SET mail (CRLF line endings, base64 body in 76-character lines).

    ``in_reply_to``/``references`` thread a transaction in mail clients.  ``date`` defaults to now
    (UTC); pass it for deterministic output.  Raises BadMailHeader / WrongMailContentType on
    arguments that would produce a broken or ambiguous mail.
    """
    if content_type not in SET_CONTENT_TYPES:
        raise WrongMailContentType(f"not a SET content type: {content_type!r}")
    if not der:
        raise MissingMailBody("refusing to build a mail without a body")
    refs = [_bare_id(r, "References") for r in references]
    head = [
        b"From: " + _plain(sender, "From").encode(),
        b"To: " + _plain(recipient, "To").encode(),
        b"Subject: " + _encode_subject(subject).encode("ascii"),
        b"Date: " + format_datetime(date or datetime.now(timezone.utc)).encode(),
        b"Message-ID: <" + _bare_id(message_id, "Message-ID").encode() + b">",
    ]
    if in_reply_to is not None:
        head.append(b"In-Reply-To: <" + _bare_id(in_reply_to, "In-Reply-To").encode() + b">")
    for name, value in (extra_headers or {}).items():
        if not _HEADER_NAME.match(name) or name.lower() in _STRUCTURAL:
            raise BadMailHeader(f"extra header name not allowed: {name!r}")
        head.append(f"{name}: {_plain(value, name)}".encode())
    head += [
        b"MIME-Version: 1.0",
        b"Content-Type: " + content_type.encode(),
        b"Content-Transfer-Encoding: base64",
    ]
    out = _CRLF.join(head) + _CRLF
    if refs:
        out += _fold_ids("References", refs)
    return out + _CRLF + _base64_lines(der)


_LINE_76 = re.compile(rb".{1,76}", re.S)


def _base64_lines(data: bytes) -> bytes:
    """``base64.encodebytes(data)`` with CRLF line ends (76 characters a line): one encoding
    call, the lines cut by a regular expression (a third faster than encodebytes' loop over
    57-octet chunks, and no second pass to turn LF into CRLF)."""
    text = binascii.b2a_base64(data, newline=False)
    return _CRLF.join(_LINE_76.findall(text)) + _CRLF if text else b""


#: longest header value whose RFC 2047 words are decoded or whose address is parsed: the email
#: package's decode_header and getaddresses grow faster than linearly (a 1 MiB Subject of encoded
#: words took 20 s); a longer value is kept as it came (headers are informational) or, for an
#: address, taken as no address.
_HEADER_PARSE_LIMIT = 4096


def _text(value: object) -> str:
    """A header value as str; RFC 2047 words decoded (only where they occur, for speed, and only
    in values up to _HEADER_PARSE_LIMIT characters)."""
    text = str(value)
    if "=?" in text and len(text) <= _HEADER_PARSE_LIMIT:
        try:
            text = str(make_header(decode_header(text)))
        except (ValueError, LookupError, UnicodeError):
            pass  # leave it undecoded: headers are informational only
    return text


#: A plain ASCII addr-spec: the envelope addresses the SMTP fast paths handle themselves (the
#: server's MAIL/RCPT parsing and the client's commands); anything else takes aiosmtpd's or
#: smtplib's own RFC 5321/5322 parser.
PLAIN_ADDR_SPEC = r"[A-Za-z0-9._+=-]{1,64}@[A-Za-z0-9.-]{1,253}"


# One bare address, ``<``...``>`` optional.  The '@' (not first, not last) is checked outside the
# regex: ``[^...]+@[^...]+`` backtracked over every '@' (seconds for a hostile 16 KB From header).
_BARE_ADDR = re.compile(r"\s*<?([^\s<>\",;()]+)>?\s*\Z")


def _address(value: str | None) -> str:
    if not value or len(str(value)) > _HEADER_PARSE_LIMIT:
        return ""
    bare = _BARE_ADDR.match(str(value))  # the common case, without the full address parser
    if bare and "@" in bare.group(1)[1:-1]:
        return bare.group(1)
    pairs = getaddresses([value])
    return pairs[0][1] if pairs else ""


def parse_mail(raw: bytes, *, max_size: int) -> ParsedMail:
    """Decode a SET mail; raise a MailFormatError subclass for anything but a clean one.

    A clean mail takes the fast path (``_parse_clean``); everything else, every refusal
    included, is decided by the email package as before."""
    if len(raw) > max_size:
        raise MailTooLarge(f"mail of {len(raw)} octets exceeds the limit of {max_size}")
    parsed = _parse_clean(raw)
    return parsed if parsed is not None else _parse_mail_email(raw, max_size=max_size)


# A header field as compat32 stores it: a name of RFC 5322 ftext, the colon, blanks (dropped, as
# header_source_parse drops them), then printable ASCII and folded continuation lines, kept verbatim
# with their inner line ends.  Anything else is matched line by line as the third group, so
# re.split never restarts inside a line (quadratic on a hostile header); possessive for the same.
_FIELD = re.compile(r"([!-9;-~]++):[ \t]*+([\t -~]*+(?:\r?\n[\t ][\t -~]*+)*+)(?:\r?\n|\Z)"
                    r"|([^\n]++\n?|\n)")
_SEPARATOR = re.compile(rb"\n\r?\n")  # _BODY_SPLIT found from its first \n (a literal: faster)
# _ANGLE_ID on str, its \s spelled out (bytes \s): a set lookup instead of a category test.
_ANGLE_ID_TEXT = re.compile(r"<([^<>\t\n\x0b\x0c\r ]+)>")


def _parse_clean(raw: bytes) -> ParsedMail | None:
    """``_parse_mail_email(raw)`` for a clean mail, None whenever in doubt: a header block that is
    not plain ASCII fields (non-ASCII octets, lone CR, lines without colon, defects) or any check
    that would refuse the mail.  Every derivation below is the reference's, on the same strings."""
    split = _SEPARATOR.search(raw)
    if split is None:
        return None
    start = split.start()
    if start and raw[start - 1] == 13:  # the CR of a CRLF, as _BODY_SPLIT matches it
        start -= 1
    head = raw[:start]
    if not head.isascii():  # decoded with surrogateescape, compat32 would return Header objects
        return None
    text = head.decode("ascii")
    parts = _FIELD.split(text)  # per match: "" (the pattern matches everywhere), name, value, other
    if any(parts[3::4]):
        return None
    names, values = parts[1::4], parts[2::4]
    lower = "\n".join(names).lower().split("\n")
    first = dict(zip(lower, values))
    refs = first.get("references", "")
    if len(first) < len(names):  # a repeated name; Message.get returns its first value
        if any(lower.count(n) > 1 for n in ("content-type", "content-transfer-encoding",
                                            "message-id")):
            return None
        first = dict(zip(lower[::-1], values[::-1]))
        refs = " ".join(v for n, v in zip(lower, values) if n == "references")
    ctype = first.get("content-type")
    cte = first.get("content-transfer-encoding")
    ident = first.get("message-id")
    if ctype is None or cte is None or ident is None or cte.strip().lower() != "base64":
        return None
    # Message.get_content_type(); a SET type is neither multipart nor defaulted to text/plain.
    content_type = ctype.partition(";")[0].strip().lower()
    if content_type not in SET_CONTENT_TYPES:
        return None
    # b"".join(body.split()) when CR and LF were its only white octets; strict base64 refuses any
    # other.  (Two one-octet replaces: replace(b"\r\n", b"") is 8x slower.)
    compact = raw[split.end():].replace(b"\n", b"").replace(b"\r", b"")
    try:
        der = binascii.a2b_base64(compact, strict_mode=True)  # what b64decode(validate=True) runs
        message_id = _bare_id(ident, "Message-ID")
    except (binascii.Error, BadMailHeader):
        return None
    if not der:
        return None
    reply = first.get("in-reply-to")
    in_reply_to = None
    if reply is not None:
        found = _ANGLE_ID_TEXT.search(reply)
        in_reply_to = found.group(1) if found else None
    return ParsedMail(
        content_type=content_type,
        der=der,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=tuple(_ANGLE_ID_TEXT.findall(refs)),
        sender=_address(first.get("from")),
        recipient=_address(first.get("to")),
        subject=_text(first.get("subject", "")),
        headers=tuple(zip(names, map(_text, values) if "=?" in text else values)),
    )


def _parse_mail_email(raw: bytes, *, max_size: int) -> ParsedMail:
    """The reference decoder, on the email package (compat32).  It decides every mail the fast
    path does not vouch for, so refusals and unusual mails keep exactly its behaviour."""
    if len(raw) > max_size:
        raise MailTooLarge(f"mail of {len(raw)} octets exceeds the limit of {max_size}")
    split = _BODY_SPLIT.search(raw)
    if split is None:
        raise MissingMailBody("no header/body separator")
    head_bytes, body = raw[: split.start()], raw[split.end():]
    msg = _HEADER_PARSER.parsebytes(head_bytes + b"\n\n")
    if len(msg.get_all("Content-Type") or ()) != 1:
        raise BadMailHeader("exactly one Content-Type header is required")
    maintype = msg.get_content_maintype()
    content_type = msg.get_content_type()
    if maintype == "multipart" or msg.is_multipart():
        raise UnexpectedMultipart(f"multipart mail ({content_type}) is not a SET mail")
    if content_type not in SET_CONTENT_TYPES:
        raise WrongMailContentType(f"not a SET content type: {content_type!r}")
    cte = msg.get_all("Content-Transfer-Encoding") or ()
    if len(cte) != 1 or str(cte[0]).strip().lower() != "base64":
        raise BadMailEncoding("Content-Transfer-Encoding must be exactly one 'base64'")
    compact = b"".join(body.split())
    if not compact:
        raise MissingMailBody("empty body")
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadMailEncoding(f"body is not valid base64: {exc}") from exc
    if not der:
        raise MissingMailBody("body decodes to nothing")
    ids = msg.get_all("Message-ID") or ()
    if len(ids) != 1:
        raise BadMailHeader("exactly one Message-ID header is required")
    message_id = _bare_id(str(ids[0]), "Message-ID")
    reply = msg.get("In-Reply-To")
    in_reply_to = None
    if reply is not None:
        found = _ANGLE_ID.search(str(reply).encode("ascii", "replace"))
        in_reply_to = found.group(1).decode() if found else None
    refs_raw = " ".join(str(v) for v in msg.get_all("References") or ())
    references = tuple(m.decode() for m in _ANGLE_ID.findall(refs_raw.encode("ascii", "replace")))
    return ParsedMail(
        content_type=content_type,
        der=der,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        sender=_address(msg.get("From")),
        recipient=_address(msg.get("To")),
        subject=_text(msg.get("Subject", "")),
        headers=tuple((k, _text(v)) for k, v in msg.items()),
    )
