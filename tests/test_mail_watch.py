"""Watcher: inotify and polling both notice deliveries; close ends waits and iteration."""
import asyncio
import os
import threading
import time

import pytest

from setmail.mail import maildir as md
from setmail.mail.watch import BlockingWatcher, MaildirWatcher, _inotify_open


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


def test_watcher_notices_delivery(tmp_path, mode):
    box = md.ensure_maildir(tmp_path / "box")

    async def scenario():
        with_watch = MaildirWatcher(box, mode=mode, poll_interval=0.02)
        assert with_watch.mode == mode
        async with with_watch as watcher:
            assert await watcher.wait(timeout=0.05) == []
            loop = asyncio.get_running_loop()
            key = await loop.run_in_executor(None, md.deliver, box, b"x")
            assert await watcher.wait(timeout=5) == [key]
            keys = [md.deliver(box, b"y") for _ in range(3)]
            seen = []
            async for k in watcher:
                seen.append(k)
                if len(seen) == 3:
                    break
            assert seen == keys

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_rename_into_new_is_noticed_and_dot_files_ignored(tmp_path, mode):
    box = md.ensure_maildir(tmp_path / "box")

    async def scenario():
        async with MaildirWatcher(box, mode=mode, poll_interval=0.02) as watcher:
            (box / "new" / ".tmpfile").write_bytes(b"")
            (box / "tmp" / "mta.1").write_bytes(b"x")
            os.rename(box / "tmp" / "mta.1", box / "new" / "mta.1")  # how some MTAs deliver
            assert await watcher.wait(timeout=5) == ["mta.1"]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_initial_scan_reports_existing_mail(tmp_path, mode):
    box = md.ensure_maildir(tmp_path / "box")
    old = md.deliver(box, b"old")

    async def scenario():
        async with MaildirWatcher(box, mode=mode, initial=True, poll_interval=0.02) as watcher:
            assert await watcher.wait(timeout=1) == [old]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_close_wakes_waiters_and_ends_iteration(tmp_path, mode):
    box = md.ensure_maildir(tmp_path / "box")

    async def scenario():
        watcher = MaildirWatcher(box, mode=mode, poll_interval=0.02)

        async def drain():
            return [k async for k in watcher]

        task = asyncio.create_task(drain())
        waiting = asyncio.create_task(watcher.wait())
        await asyncio.sleep(0.05)
        watcher.close()
        watcher.close()  # idempotent
        assert await task == []
        assert await waiting == []
        assert watcher.closed

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_auto_mode_and_bad_mode(tmp_path):
    box = md.ensure_maildir(tmp_path / "box")
    watcher = MaildirWatcher(box)
    assert watcher.mode in ("inotify", "poll")
    watcher.close()
    with pytest.raises(ValueError):
        MaildirWatcher(box, mode="magic")


def test_blocking_watcher_reports_deliveries_times_out_and_wakes(tmp_path, mode):
    """The agents' work threads block in BlockingWatcher.wait: deliveries and renames into new/
    are reported in order, dot files are not, a timeout returns [] after (not long before) its
    time, and wake() from another thread ends a long wait at once."""
    box = md.ensure_maildir(tmp_path / "box")
    watcher = BlockingWatcher(box, mode=mode, poll_interval=0.02)
    try:
        assert watcher.mode == mode
        started = time.monotonic()
        assert watcher.wait(timeout=0.1) == []
        assert 0.1 <= time.monotonic() - started < 2
        keys = [md.deliver(box, b"x%d" % i) for i in range(3)]
        (box / "new" / ".hidden").write_bytes(b"")
        (box / "tmp" / "mta.1").write_bytes(b"y")
        os.rename(box / "tmp" / "mta.1", box / "new" / "mta.1")
        seen = []
        deadline = time.monotonic() + 5
        while len(seen) < 4 and time.monotonic() < deadline:
            seen += watcher.wait(timeout=1)
        assert seen == keys + ["mta.1"]
        threading.Timer(0.1, watcher.wake).start()
        started = time.monotonic()
        assert watcher.wait(timeout=30) == []
        assert time.monotonic() - started < 5
    finally:
        watcher.close()
        watcher.close()  # idempotent
    watcher.wake()  # after close: nothing to write to, no error
    assert watcher.closed and watcher.wait(timeout=5) == []
