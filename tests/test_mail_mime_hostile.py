"""Hostile header values: the email package's decoders grow faster than linearly, so values over
4096 characters are not decoded (Subject kept as it came, an over-long From is no address)."""
import os

from setmail.mail.mime import build_mail, parse_mail


def _mail(**headers) -> bytes:
    raw = build_mail(os.urandom(100), content_type="application/set-payment",
                     sender="a@b.example", recipient="c@d.example", message_id="m1@b.example",
                     subject="SET x")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n")
             if line.split(b":")[0].decode() not in headers]
    lines += [f"{k}: {v}".encode() for k, v in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_long_encoded_subject_is_kept_undecoded():
    short = "=?utf-8?q?caf=C3=A9?="
    assert parse_mail(_mail(Subject=short), max_size=1 << 20).subject == "café"
    long = " ".join([short] * 400)  # ~8 KB of encoded words
    assert parse_mail(_mail(Subject=long), max_size=1 << 20).subject == long


def test_overlong_from_is_no_address():
    parsed = parse_mail(_mail(From="x" * 5000 + "@b.example"), max_size=1 << 20)
    assert parsed.sender == ""
    assert parse_mail(_mail(From="a@b.example"), max_size=1 << 20).sender == "a@b.example"
