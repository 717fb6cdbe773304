"""Archiving processed mail into dated Maildir++ folders, and dedupe records expiring with the
Date window the roles enforce (issue 16, item 4)."""
import datetime as dt
import os
import time

import pytest
from typer.testing import CliRunner

from setmail.agent import dedupe
from setmail.mail import maildir
from setmail.mail.archive import archive, folder_name, parse_age
from setmail.store import OutgoingMail, Store

DAY = 86400.0


def _aged(box, raw: bytes, age_days: float, *, done: bool) -> str:
    key = maildir.deliver(box, raw)
    maildir.claim(box, key)
    if done:
        maildir.mark_done(box, key)
    (path,) = (box / "cur").glob(key + ":*")
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return key


def test_only_done_mail_older_than_the_age_moves_to_its_month(tmp_path):
    box = maildir.ensure_maildir(tmp_path / "gw")
    old = _aged(box, b"Subject: old\n\nx", 40, done=True)
    recent = _aged(box, b"Subject: recent\n\nx", 2, done=True)
    unfinished = _aged(box, b"Subject: claimed\n\nx", 40, done=False)  # a crash's leftover
    waiting = maildir.deliver(box, b"Subject: new\n\nx")
    month = folder_name(time.time() - 40 * DAY)
    assert archive(box, older_than=30 * DAY, now=time.time()) == {month: [old]}
    assert [p.name for p in (box / month / "cur").iterdir()] == [old + ":2,S"]
    assert (box / month / "maildirfolder").exists()
    left = {e.key for e in maildir.list_messages(box)}
    assert left == {recent, unfinished, waiting}
    assert {e.key for e in maildir.pending(box)} == {unfinished, waiting}
    assert maildir.read(box / month, old) == b"Subject: old\n\nx"
    assert archive(box, older_than=30 * DAY, now=time.time()) == {}  # nothing left to move


def test_archive_command(tmp_path, monkeypatch):
    from setmail.cli.main import app
    from setmail.world.create import create_world
    home = tmp_path / "world"
    create_world(home, smtp_port=2599, certificates="direct")
    box = home / "mailboxes" / "gateway"
    _aged(box, b"Subject: old\n\nx", 3, done=True)
    runner = CliRunner()
    out = runner.invoke(app, ["mailbox", "archive", "gateway", "--older-than", "1d",
                              "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert f"1 mail(s) -> {folder_name(time.time() - 3 * DAY)}" in out.output
    bad = runner.invoke(app, ["mailbox", "archive", "gateway", "--older-than", "soon",
                              "--home", str(home)])
    assert bad.exit_code == 2 and "not an age" in bad.output


def test_parse_age():
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 43200 and parse_age("90m") == 5400
    for bad in ("", "d", "3w", "-1d", "1.5d"):
        with pytest.raises(ValueError):
            parse_age(bad)


def test_dedupe_records_expire_past_the_date_window(tmp_path):
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc).timestamp()
    keep_for = dedupe.RETENTION.total_seconds()
    mail = OutgoingMail("m@x", "127.0.0.1", 25, b"raw", "a@x")
    with Store(tmp_path / "s.db") as store:
        for i, age in enumerate((keep_for + 10, keep_for + 5, keep_for - 5)):
            with store.transaction(now=now - age) as tx:
                tx.enqueue(mail)
                tx.record_dedupe(bytes([i]) * 32, "AuthReq", [mail])
        assert dedupe.expire(store, now, batch=1) == 2
        assert [r[0] for r in store.query("SELECT digest FROM dedupe")] == [bytes([2]) * 32]
        assert store.query("SELECT COUNT(*) FROM dedupe_response")[0][0] == 1  # cascaded
        assert dedupe.expire(store, now) == 0
