"""Watcher: inotify and polling both notice deliveries; wake and close end waits."""
import os
import threading
import time

import pytest

from setmail.mail import maildir as md
from setmail.mail.watch import MaildirWatcher, _inotify_open


def _has_inotify(tmp_path):
    try:
        os.close(_inotify_open(tmp_path))
        return True
    except Exception:
        return False


@pytest.fixture(params=["inotify", "poll"])
def mode(request, tmp_path):
    if request.param == "inotify" and not _has_inotify(tmp_path):
        pytest.skip("inotify unavailable here")
    return request.param


def _collect(watcher, count: int, timeout: float = 5) -> list[str]:
    """Keys from successive waits until ``count`` arrived (or the time is up)."""
    seen, deadline = [], time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        seen += watcher.wait(timeout=1)
    return seen


def test_watcher_notices_delivery(tmp_path, mode):
    box = md.ensure_maildir(tmp_path / "box")
    watcher = MaildirWatcher(box, mode=mode, poll_interval=0.02)
    try:
        assert watcher.mode == mode
        assert watcher.wait(timeout=0.05) == []
        key = md.deliver(box, b"x")
        assert watcher.wait(timeout=5) == [key]
        keys = [md.deliver(box, b"y") for _ in range(3)]
        assert _collect(watcher, 3) == keys
    finally:
        watcher.close()


def test_rename_into_new_is_noticed_and_dot_files_ignored(tmp_path, mode):
    box = md.ensure_maildir(tmp_path / "box")
    watcher = MaildirWatcher(box, mode=mode, poll_interval=0.02)
    try:
        (box / "new" / ".tmpfile").write_bytes(b"")
        (box / "tmp" / "mta.1").write_bytes(b"x")
        os.rename(box / "tmp" / "mta.1", box / "new" / "mta.1")  # how some MTAs deliver
        assert watcher.wait(timeout=5) == ["mta.1"]
    finally:
        watcher.close()


def test_initial_scan_reports_existing_mail(tmp_path, mode):
    box = md.ensure_maildir(tmp_path / "box")
    old = md.deliver(box, b"old")
    watcher = MaildirWatcher(box, mode=mode, initial=True, poll_interval=0.02)
    try:
        assert watcher.wait(timeout=1) == [old]
    finally:
        watcher.close()


def test_wake_ends_a_wait_and_close_ends_all_waits(tmp_path, mode):
    """The agents' work threads block in wait: a timeout returns [] after (not long before) its
    time, wake() from another thread ends a long wait at once, and once closed every wait
    returns [] at once (close is idempotent; a wake after it is harmless)."""
    box = md.ensure_maildir(tmp_path / "box")
    watcher = MaildirWatcher(box, mode=mode, poll_interval=0.02)
    started = time.monotonic()
    assert watcher.wait(timeout=0.1) == []
    assert 0.1 <= time.monotonic() - started < 2
    got = []
    waiting = threading.Thread(target=lambda: got.append(watcher.wait()))
    waiting.start()
    time.sleep(0.05)
    watcher.wake()
    waiting.join(5)
    assert not waiting.is_alive() and got == [[]]
    keys = [md.deliver(box, b"x%d" % i) for i in range(3)]
    (box / "tmp" / "mta.1").write_bytes(b"y")
    os.rename(box / "tmp" / "mta.1", box / "new" / "mta.1")
    assert _collect(watcher, 4) == keys + ["mta.1"]  # a wake-up leaves nothing behind
    watcher.close()
    watcher.close()  # idempotent
    watcher.wake()  # after close: nothing to write to, no error
    started = time.monotonic()
    assert watcher.closed and watcher.wait(timeout=5) == [] and watcher.wait() == []
    assert time.monotonic() - started < 1


def test_auto_mode_and_bad_mode(tmp_path):
    box = md.ensure_maildir(tmp_path / "box")
    watcher = MaildirWatcher(box)
    assert watcher.mode in ("inotify", "poll")
    watcher.close()
    with pytest.raises(ValueError):
        MaildirWatcher(box, mode="magic")
