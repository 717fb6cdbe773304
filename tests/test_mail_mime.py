"""MIME codec: byte-identical round trip, line limits, threading headers, strict refusal."""
import base64
import os
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setmail.errors import (
    BadMailEncoding, BadMailHeader, MailFormatError, MailTooLarge, MalformedMessage,
    MissingMailBody, UnexpectedMultipart, WrongMailContentType,
)
from setmail.mail.mime import SET_CONTENT_TYPES, build_mail, parse_mail

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
LIMIT = 1 << 20


def make(der=b"\x30\x03\x02\x01\x07", **kw):
    args = dict(content_type="application/set-payment", sender="cardholder@cardholder.example",
                recipient="merchant@merchant.example", message_id="tx1.1@cardholder.example",
                subject="SET PInitReq", date=WHEN)
    args.update(kw)
    return build_mail(der, **args)


@pytest.mark.parametrize("content_type", sorted(SET_CONTENT_TYPES))
def test_round_trip_each_content_type(content_type):
    der = os.urandom(5000)
    parsed = parse_mail(make(der, content_type=content_type), max_size=LIMIT)
    assert parsed.der == der
    assert parsed.content_type == content_type


@settings(max_examples=int(os.environ.get("SETMAIL_FUZZ", 60)), deadline=None)
@given(der=st.binary(min_size=1, max_size=4000),
       subject=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=300))
def test_round_trip_is_byte_identical_and_lines_are_short(der, subject):
    raw = make(der, subject=subject, references=[f"r{i}@x.example" for i in range(30)],
               in_reply_to="r29@x.example")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as SMTP wants
    parsed = parse_mail(raw, max_size=LIMIT)
    assert parsed.der == der
    assert parsed.subject == subject.strip()  # surrounding whitespace is not kept


def test_headers_and_threading():
    raw = make(in_reply_to="<tx1.1@merchant.example>",
               references=["tx1.0@cardholder.example", "<tx1.1@merchant.example>"],
               extra_headers={"X-SET-Message": "PReq"})
    parsed = parse_mail(raw, max_size=LIMIT)
    assert parsed.message_id == "tx1.1@cardholder.example"
    assert parsed.in_reply_to == "tx1.1@merchant.example"
    assert parsed.references == ("tx1.0@cardholder.example", "tx1.1@merchant.example")
    assert parsed.sender == "cardholder@cardholder.example"
    assert parsed.recipient == "merchant@merchant.example"
    assert parsed.subject == "SET PInitReq"
    assert parsed.header("x-set-message") == "PReq"
    assert parsed.header("Date") == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert parsed.header("MIME-Version") == "1.0"
    assert b"Message-ID: <tx1.1@cardholder.example>\r\n" in raw


def test_subject_that_looks_like_an_encoded_word_survives():
    subject = "literal =?utf-8?q?not_encoded?= text"
    assert parse_mail(make(subject=subject), max_size=LIMIT).subject == subject


def test_build_is_deterministic_with_fixed_date():
    assert make() == make()


def test_parse_accepts_lf_line_endings_of_maildir_files():
    raw = make(b"hello der").replace(b"\r\n", b"\n")
    assert parse_mail(raw, max_size=LIMIT).der == b"hello der"


def _good_head(ct="application/set-payment", cte="base64"):
    return (f"From: a@x\r\nTo: b@y\r\nSubject: s\r\nMessage-ID: <m@x>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {ct}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").encode()


B64 = base64.encodebytes(b"\x30\x00" * 10)


@pytest.mark.parametrize("raw, error", [
    (_good_head("text/plain") + B64, WrongMailContentType),
    (_good_head("application/octet-stream") + B64, WrongMailContentType),
    (_good_head().replace(b"Content-Type: application/set-payment\r\n", b"") + B64,
     BadMailHeader),  # no Content-Type at all
    (_good_head() + b"", MissingMailBody),
    (_good_head() + b"\r\n \r\n", MissingMailBody),
    (_good_head().rstrip(b"\r\n"), MissingMailBody),  # no separator
    (_good_head() + b"not*base64!!\r\n", BadMailEncoding),
    (_good_head() + b"QUJD\r\nRA\r\n", BadMailEncoding),  # bad padding
    (_good_head(cte="7bit") + B64, BadMailEncoding),
    (_good_head(cte="quoted-printable") + B64, BadMailEncoding),
    (_good_head('multipart/mixed; boundary="xx"') + b"--xx\r\nContent-Type: "
     b"application/set-payment\r\n\r\nMAAA\r\n--xx--\r\n", UnexpectedMultipart),
    (_good_head() + b"--xx\r\nContent-Type: application/set-payment\r\n\r\nMAAA\r\n--xx--\r\n",
     BadMailEncoding),  # multipart garbage in a single-part body
    (_good_head().replace(b"Message-ID: <m@x>\r\n", b"") + B64, BadMailHeader),
    (_good_head().replace(b"MIME-Version", b"Content-Type: text/plain\r\nMIME-Version") + B64,
     BadMailHeader),  # two Content-Type headers: ambiguous
    (b"\x00\xff\xfe garbage without structure", MissingMailBody),
    (b"", MissingMailBody),
])
def test_malformed_mail_is_refused(raw, error):
    with pytest.raises(error) as info:
        parse_mail(raw, max_size=LIMIT)
    assert isinstance(info.value, MailFormatError)
    assert isinstance(info.value, MalformedMessage)


def test_oversize_refused_before_parsing():
    with pytest.raises(MailTooLarge) as info:
        parse_mail(make(os.urandom(3000)), max_size=1000)
    assert info.value.set_error_code == "messageTooBig"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_anything_but_mail_format_error(raw):
    try:
        parse_mail(raw, max_size=LIMIT)
    except MailFormatError:
        pass


@pytest.mark.parametrize("kw, error", [
    (dict(content_type="text/plain"), WrongMailContentType),
    (dict(subject="x\r\nBcc: victim@example"), BadMailHeader),
    (dict(sender="a@x\r\nBcc: v@e"), BadMailHeader),
    (dict(message_id="no spaces allowed@x"), BadMailHeader),
    (dict(message_id="no-at-sign"), BadMailHeader),
    (dict(in_reply_to="<a<b@x>"), BadMailHeader),
    (dict(extra_headers={"Content-Type": "text/plain"}), BadMailHeader),
    (dict(extra_headers={"Bad Name": "v"}), BadMailHeader),
    (dict(der=b""), MissingMailBody),
])
def test_build_refuses_broken_arguments(kw, error):
    with pytest.raises(error):
        make(**kw)


def test_body_lines_are_exactly_base64_encodebytes_with_crlf():
    import base64
    import os

    from setmail.mail.mime import _base64_lines
    for n in [*range(0, 200), 4096, 11022, 57 * 100, 57 * 100 + 1]:
        data = os.urandom(n)
        assert _base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n"), n
