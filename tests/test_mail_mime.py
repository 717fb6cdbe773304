"""MIME codec: byte-identical round trip, line limits, threading headers, strict refusal, and the
fast parse path equal to the email package."""
import base64
import itertools
import os
import random
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setmail.errors import (
    BadMailEncoding, BadMailHeader, MailFormatError, MailTooLarge, MalformedMessage,
    MissingMailBody, UnexpectedMultipart, WrongMailContentType,
)
from setmail.mail import mime
from setmail.mail.mime import SET_CONTENT_TYPES, build_mail, parse_mail
from setmail.mail.smtpd import _local_copy

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


# --- fast path: identical to the email package (the reference), or it steps aside ---------------
# parse_mail reads a clean mail with one regex (_parse_clean) and leaves everything else to
# _parse_mail_email, the former implementation on the email package.  Every test below compares
# the two on the same bytes: identical ParsedMail (all fields), or identical exception and message.
def _outcome(fn, raw):
    try:
        return fn(raw, max_size=LIMIT)
    except MailFormatError as exc:
        return type(exc), str(exc)


def _same_as_reference(raw):
    """Assert parse_mail == the email package on ``raw``; True if the fast path decided it."""
    fast = mime._parse_clean(raw)
    reference = _outcome(mime._parse_mail_email, raw)
    if fast is not None:
        assert fast == reference, raw
    assert _outcome(parse_mail, raw) == reference, raw
    return fast is not None


def _variants(raw):
    """A built mail as sent (CRLF), with LF line ends, and as the SMTP server stores it."""
    return raw, raw.replace(b"\r\n", b"\n"), _local_copy(raw, "a@x.example", "b@y.example")


SUBJECTS = ["SET PInitReq", "", "Zahlung für Bestellung Nr. 4 — ü", "literal =?utf-8?q?x?= text",
            "x" * 1000, "ü" * 400, "  padded  ", "a: b; c=d, <e@f>"]
EXTRAS = [None, {"X-SET-Message-Type": "PReq"}, {"X-A": "1", "x-b": "colon: in value", "X-C": ""}]


def test_fast_path_equals_email_package_for_every_built_mail():
    rng = random.Random(1)
    combos = itertools.product(sorted(SET_CONTENT_TYPES), [0, 1, 30], [None, "irt.1@m.example"],
                               EXTRAS, SUBJECTS)
    for ctype, nrefs, reply, extra, subject in combos:
        raw = make(os.urandom(rng.choice([1, 2, 3, 57, 58, 5000])), content_type=ctype,
                   references=[f"r{i}.tx@c.example" for i in range(nrefs)], in_reply_to=reply,
                   extra_headers=extra, subject=subject)
        for variant in _variants(raw):
            assert _same_as_reference(variant), variant  # and the fast path took it


def test_fast_path_equals_email_package_for_a_worlds_mails():
    """Real mails (e.g. ``./scripts/bench purchases 5 --keep``, then
    SETMAIL_DECODE_MAILDIRS=/tmp/setmail-bench-*/world/mailboxes)."""
    roots = [r for r in os.environ.get("SETMAIL_DECODE_MAILDIRS", "").split(os.pathsep) if r]
    paths = [p for root in roots for p in sorted(Path(root).glob("*/cur/*"))]
    if not paths:
        pytest.skip("set SETMAIL_DECODE_MAILDIRS to a world's mailboxes")
    assert all(_same_as_reference(p.read_bytes()) for p in paths)


# Header-block mutations: each takes (rng, lines) and edits the list of header lines in place.
def _pick(rng, lines):
    return rng.randrange(len(lines)) if lines else 0


def _edit_line(fn):
    def mutate(rng, lines):
        if lines:
            i = _pick(rng, lines)
            lines[i] = fn(rng, lines[i])
    return mutate


def _set_header(name, values):
    def mutate(rng, lines):
        new = f"{name}:{rng.choice(['', ' ', '  ', chr(9)])}{rng.choice(values)}".encode("utf-8")
        hits = [i for i, line in enumerate(lines) if line.lower().startswith(name.lower().encode())]
        if hits and rng.random() < 0.8:
            lines[rng.choice(hits)] = new
        else:
            lines.insert(rng.randrange(len(lines) + 1), new)
    return mutate


def _fold(rng, line):
    spaces = [i for i, c in enumerate(line) if c == 32]
    if not spaces:
        return line
    i = rng.choice(spaces)
    return line[:i] + rng.choice([b"\r\n ", b"\n ", b"\r\n\t", b"\n\t", b"\r\n  "]) + line[i + 1:]


def _case(rng, line):
    name, colon, value = line.partition(b":")
    return bytes(c ^ 32 if 65 <= c | 32 <= 122 and rng.random() < 0.5 else c for c in name) \
        + colon + value


def _insert(chars):
    def fn(rng, line):
        i = rng.randrange(len(line) + 1)
        return line[:i] + rng.choice(chars) + line[i:]
    return fn


MUTATIONS = [
    _edit_line(_case),
    _edit_line(_fold),
    _edit_line(_fold),
    _edit_line(lambda rng, line: line.replace(b": ", rng.choice([b":", b":  ", b":\t", b": \t"]))),
    _edit_line(lambda rng, line: line + rng.choice([b" ", b"\t", b"  \t", b"\r"])),
    _edit_line(_insert([b":", b": ", b"::", b";", b"=?", b"<", b">", b"@", b",", b'"'])),
    _edit_line(_insert([b"\xe9", b"\xff", "é".encode(), b"\x80"])),
    _edit_line(_insert([b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x7f", b"\r", b"\x01"])),
    _edit_line(lambda rng, line: line.replace(b":", b" :", 1)),
    _edit_line(lambda rng, line: line.partition(b":")[2]),
    lambda rng, lines: lines and lines.insert(_pick(rng, lines), lines[_pick(rng, lines)]),
    lambda rng, lines: lines and lines.pop(_pick(rng, lines)),
    lambda rng, lines: lines.insert(rng.randrange(len(lines) + 1), rng.choice(
        [b"no colon here", b" leading blank: x", b"\tleading tab", b"From a@x Sat Mar  1 12:00",
         b": empty name", b"", b"X-Empty:", b"X-Blank: ", b" ", b"X-Fold:\r\n continued",
         b"X-Fold: a\r\n \r\n b", b"Received: from x\r\n\tby y; Sat, 1 Mar 2026"])),
    _set_header("Content-Type", [
        "application/set-payment", "Application/SET-Payment", "application/set-payment; x=y",
        " application/set-registration ;", "application/set-payment-initiation(c)",
        "multipart/mixed; boundary=x", "text/plain", "application", "a/b/c", "",
        "application/set-payment\r\n ; charset=x", "application/set-registration-initiation"]),
    _set_header("Content-Transfer-Encoding",
                ["base64", "BASE64", " Base64 ", "7bit", "", "base64;", "base64\r\n "]),
    _set_header("Message-ID", ["<m@x>", "m@x", "<m@x", " <a@b> ", "<a b@c>", "<@x>", "<>", "<a@>",
                               "<a@b><c@d>", "<a@b\r\n >"]),
    _set_header("In-Reply-To", ["<r@x>", "r@x", "<r@x> <s@y>", "<>", "<<r@x>>", "x <r@x> y", ""]),
    _set_header("References", ["<a@x>", "<a@x>\r\n <b@y>", "<a@x><b@y>", "a@x", "<a x>", "",
                               "<a@x>, <b@y>", "<<a@x>>", "<a@x> junk <b@y"]),
    _set_header("From", ["a@x", "<a@x>", "A <a@x>", '"A, B" <a@x>', "a@x, b@y", "", "@x", "a@",
                         "a@b@c", "(c) a@x", "g: a@x;", "a@x (c)", "=?utf-8?q?A?= <a@x>"]),
    _set_header("To", ["b@y", "<b@y>", "B <b@y>", "undisclosed:;", "b@y\r\n (folded)"]),
    _set_header("Subject", ["plain", "=?utf-8?q?gr=C3=BC=C3=9Fe?=", "=?utf-8?b?w7w=?=",
                            "=?x-unknown?q?a?=", "=?utf-8?q?broken", "a =?utf-8?q?b?= c",
                            "=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "x" * 2000]),
]


def _mutate_body(rng, body):
    return rng.choice([
        lambda: body.replace(b"\r\n", b"\n"),
        lambda: body.replace(b"\n", b"\r\n") if b"\r\n" not in body else body,
        lambda: body.rstrip(b"\r\n"),
        lambda: body + rng.choice([b"\r\n", b"\n\n", b" ", b"\t\r\n", b"=", b"==", b"A"]),
        lambda: _insert([b" ", b"\t", b"\x0b", b"\x0c", b"\r", b"*", b"=", b"\xff"])(rng, body),
        lambda: b"",
        lambda: b"\r\n" + body,
    ])()


def _mutant(rng, base):
    head, _, body = base.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(rng.choice([1, 1, 2, 3, 4])):
        rng.choice(MUTATIONS)(rng, lines)
    eol = rng.choice([b"\r\n", b"\n", None])
    if eol is None:  # mixed line ends
        head = b"".join(line + rng.choice([b"\r\n", b"\n"]) for line in lines)
    else:
        head = b"".join(line + eol for line in lines)
        if eol == b"\n":
            body = body.replace(b"\r\n", b"\n")
    if rng.random() < 0.25:
        body = _mutate_body(rng, body)
    return head + rng.choice([b"\r\n", b"\n"]) + body


def test_fast_path_equals_email_package_on_random_header_mutations():
    rng = random.Random(20260301)
    bases = [make(os.urandom(300), references=["a@x.example", "b@y.example"],
                  in_reply_to="b@y.example", extra_headers={"X-SET-Message-Type": "PReq"}),
             make(os.urandom(40), subject="Zahlung ü",
                  content_type="application/set-registration"),
             make(os.urandom(5000), references=[f"r{i}@x.example" for i in range(12)])]
    n = int(os.environ.get("SETMAIL_FUZZ", 60)) * 60
    fast = sum(_same_as_reference(_mutant(rng, rng.choice(bases))) for _ in range(n))
    assert 0.2 * n < fast < 0.8 * n  # both paths were exercised


SOUP = [b"X-A", b"Content-Type", b"Message-ID", b"References", b"From", b":", b": ", b" ", b"\t",
        b"\r\n", b"\n", b"\r", b"<a@b>", b"a@b", b"=?utf-8?q?=C3=BC?=", b"\xe9", b"\x00", b";",
        b"application/set-payment", b"base64"]


@settings(max_examples=int(os.environ.get("SETMAIL_FUZZ", 60)) * 10, deadline=None)
@given(st.lists(st.sampled_from(SOUP), max_size=30), st.booleans())
def test_fast_path_equals_email_package_on_token_soup(tokens, before):
    soup, head = b"".join(tokens), _good_head()
    head = soup + b"\r\n" + head if before else head[:-2] + soup + b"\r\n\r\n"
    _same_as_reference(head + B64)


def test_angle_ids_on_text_equal_the_bytes_regex():
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(128)] + list("<<>>@ ab") * 8
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        expect = [m.decode() for m in mime._ANGLE_ID.findall(text.encode("ascii", "replace"))]
        assert mime._ANGLE_ID_TEXT.findall(text) == expect, text


_OLD_BARE_ADDR = re.compile(r"\s*<?([^\s<>\",;()]+@[^\s<>\",;()]+)>?\s*\Z")


def test_bare_address_check_equals_the_former_regex():
    rng = random.Random(8)
    alphabet = list("a@@<>  \t,;()\"x.") + ["\x1c", "\xa0", "é"]
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        old = _OLD_BARE_ADDR.match(text)
        new = mime._BARE_ADDR.match(text)
        assert (new.group(1) if new and "@" in new.group(1)[1:-1] else None) \
            == (old.group(1) if old else None), text


def test_separator_search_splits_like_the_reference():
    rng = random.Random(9)
    for _ in range(20000):
        raw = bytes(rng.choice(b"\r\n\r\na") for _ in range(rng.randrange(12)))
        old, new = mime._BODY_SPLIT.search(raw), mime._SEPARATOR.search(raw)
        if old is None or new is None:
            assert old is new, raw
            continue
        start = new.start() - (new.start() > 0 and raw[new.start() - 1] == 13)
        assert (start, new.end()) == old.span(), raw


@pytest.mark.parametrize("name, value", [
    ("X-Junk", b"X" * 300_000),  # no colon: _FIELD must not retry at every octet of the line
    ("Subject", b"\t " * 100_000 + b"\x01"),  # nor split the blanks every way (possessive)
    ("From", b"a@" * 20_000 + b"a;"),  # the former _BARE_ADDR backtracked over every '@'
    ("Message-ID", b"a@" * 100_000 + b"a>"),  # so does _MSGID: the length is checked first now
])
def test_hostile_headers_cost_linear_time(name, value):
    """Seconds to minutes each with a quadratic regex; milliseconds when linear."""
    head = [line for line in _good_head().split(b"\r\n") if not line.startswith(name.encode())]
    line = value if name == "X-Junk" else name.encode() + b": " + value
    raw = b"\r\n".join([line, *head]) + B64
    started = time.process_time()
    _outcome(parse_mail, raw)
    assert time.process_time() - started < 5  # quadratic: minutes
