"""Disk and database faults under a running world (issue 17, item 3; docs/faults.md).

One world for the module (tests/e2e_world.py: SMTP and each agent in its own process), whose
issuer ``bank`` keeps its home (state.db, keys) and its Maildir on two small tmpfs mounts, so a
test can fill them or make them read-only for real; another connection holds the store's write
lock with BEGIN EXCLUSIVE; files are removed and stores damaged on disk.  Each test asserts the
one-line log (no traceback), that the issuer's ledger has one hold and one posting per XID, and
that the purchase completes once the fault is gone — or, for a damaged store, that the agent
refuses to start until the backup is back.  Tests run in file order.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from setmail.agent.factory import build_agent
from setmail.mail import maildir
from tests.e2e_world import RunningWorld, run_cli
from tests.ledger_check import assert_ledger_holds

PATIENCE = "2"  # seconds the agents' writes wait for a lock (SETMAIL_STORE_PATIENCE)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts tmpfs: needs root")


def _mount(path: Path, size: str) -> None:
    """A tmpfs of ``size`` on ``path``, with what was there copied in."""
    saved = path.with_name(path.name + ".orig")
    path.rename(saved)
    path.mkdir(mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode:
        path.rmdir()
        saved.rename(path)
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    shutil.copytree(saved, path, dirs_exist_ok=True, symlinks=True)
    shutil.rmtree(saved)


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    old = os.environ.get("SETMAIL_STORE_PATIENCE")
    os.environ["SETMAIL_STORE_PATIENCE"] = PATIENCE
    world = RunningWorld(tmp_path_factory.mktemp("disk") / "world", extra_agents=())
    mounts = []
    try:
        for path, size in ((world.world.maildir("bank"), "1m"),
                           (world.world.agent_home("bank"), "8m")):
            _mount(path, size)
            mounts.append(path)
        world.start_smtp()
        world.start()
        code, _, err = run_cli("register", "alice", "--wait", "90", "--home", str(world.home))
        assert code == 0, err + world.log("alice")
        yield world
    finally:
        world.stop()
        for path in mounts:
            subprocess.run(["umount", "-l", str(path)], check=False)
        if old is None:
            os.environ.pop("SETMAIL_STORE_PATIENCE", None)
        else:
            os.environ["SETMAIL_STORE_PATIENCE"] = old


# -- helpers ---------------------------------------------------------------------------------------
def buy(w, amount: str) -> str:
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             amount, "--description", f"disk fault {time.time_ns()}",
                             "--home", str(w.home))
    assert code == 0, err
    return out.strip()


def posted_once(w, *xids: str) -> None:
    """Every purchase reaches POSTED at the issuer, with one hold and one posting in its ledger."""
    for xid in xids:
        w.wait_state("bank", xid, "POSTED", timeout=90)
        rows = dict(w.issuer_sql("SELECT kind, COUNT(*) FROM issuer_ledger WHERE xid = ? "
                                 "GROUP BY kind", (xid,)))
        assert rows == {"hold": 1, "release": 1, "post": 1}, rows
    assert_ledger_holds(w)


def wait_log(w, name: str, text: str, *, since: int = 0, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = w.log(name)[since:]
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{name}: no {text!r} in its log:\n{w.log(name)[since:][-3000:]}")


def line_with(log: str, text: str) -> str:
    return next(line for line in log.splitlines() if text in line)


def pending(w) -> list[str]:
    return [e.key for e in maildir.pending(w.world.maildir("bank"))]


def wait_pending(w, count: int = 1, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(pending(w)) < count:
        assert time.monotonic() < deadline, f"bank: {pending(w)} pending, wanted {count}"
        time.sleep(0.05)
    return pending(w)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; the file (remove it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def no_traceback(w, *names: str) -> None:
    for name in names:
        assert "Traceback" not in w.log(name), w.log(name)[-3000:]


# -- the faults ------------------------------------------------------------------------------------
def test_a_store_locked_longer_than_the_timeout_keeps_the_mail_until_the_lock_goes(w):
    """Another process holds the issuer's write lock (BEGIN EXCLUSIVE) beyond the agents'
    patience: the issuer logs one line, keeps the AuthReq pending, and processes it once."""
    since = len(w.log("bank"))
    holder = sqlite3.connect(w.world.store_path("bank"), timeout=5, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        xid = buy(w, "11.00")
        log = wait_log(w, "bank", "database is locked", since=since)
        line = line_with(log, "database is locked")
        assert "work failed" in line and "state.db" in line and "write lock" in line, line
        assert pending(w) and w.state("bank", xid) == {}  # the mail waits, nothing committed
        time.sleep(float(PATIENCE))  # locked for a while longer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    posted_once(w, xid)
    assert pending(w) == []
    no_traceback(w, "bank")


def test_a_mail_removed_under_the_agent_is_skipped(w, caplog):
    """Between listing and reading, a mail's file goes: the agent skips that key (one line) and
    processes the rest; the purchase goes on from the copy that was still there."""
    w.stop("bank")
    xid = buy(w, "12.00")
    (key,) = wait_pending(w)
    box = w.world.maildir("bank")
    copy = maildir.deliver(box, maildir.read(box, key))  # the same mail, delivered twice
    agent = build_agent(w.world, "bank")
    try:
        keys = agent.recover()
        assert set(keys) == {key, copy}
        (box / "new" / key).unlink()  # removed by someone else after the listing
        with caplog.at_level(logging.INFO, logger="setmail.agent"):
            logging.getLogger("setmail").addHandler(caplog.handler)
            try:
                statuses = {k: agent.process_mail(k) for k in keys}
            finally:
                logging.getLogger("setmail").removeHandler(caplog.handler)
    finally:
        agent.close()
    assert statuses == {key: "gone", copy: "done"}
    assert any(f"{key} is gone (removed before it was read): skipped" in r.getMessage()
               for r in caplog.records)
    assert w.issuer_sql("SELECT maildir_key FROM processed_mail WHERE maildir_key IN (?, ?)",
                        (key, copy)) == [(copy,)]
    w.start("bank")  # sends the AuthRes it committed
    posted_once(w, xid)


def test_a_full_maildir_is_answered_452_and_the_purchases_complete_once_space_is_free(w):
    box = w.world.maildir("bank")
    since = len(w.log("smtp")), len(w.log("gateway"))
    filler = fill(box)
    try:
        xids = [buy(w, "13.00"), buy(w, "14.00")]
        smtp = wait_log(w, "smtp", "answered 452", since=since[0])
        line = line_with(smtp, "answered 452")
        assert str(box) in line and "No space left on device" in line, line
        gateway = wait_log(w, "gateway", "452 4.3.1", since=since[1])
        assert "will retry" in line_with(gateway, "452 4.3.1")
        assert pending(w) == [] and all(w.state("bank", x) == {} for x in xids)
    finally:
        filler.unlink()
    posted_once(w, *xids)
    no_traceback(w, "smtp", "gateway", "bank")


def test_a_full_home_disk_fails_the_commit_and_the_mail_waits(w):
    home = w.world.agent_home("bank")
    since = len(w.log("bank"))
    filler = fill(home)
    try:
        xid = buy(w, "15.00")
        log = wait_log(w, "bank", "work failed", since=since)
        line = line_with(log, "work failed")
        assert "state.db" in line and "full" in line and "free space" in line, line
        assert pending(w) and w.state("bank", xid) == {}
    finally:
        filler.unlink()
    posted_once(w, xid)
    assert pending(w) == []
    no_traceback(w, "bank")


def test_a_read_only_maildir_waits_for_write_access(w):
    """The issuer's Maildir turns read-only with an AuthReq waiting in new/: the agent starts,
    cannot claim it (one line), SMTP answers 451 to the next; both complete once writable."""
    box = w.world.maildir("bank")
    w.stop("bank")
    first = buy(w, "16.00")
    (key,) = wait_pending(w)
    since = len(w.log("bank")), len(w.log("smtp"))
    _remount(box, "ro")
    try:
        w.start("bank")
        log = wait_log(w, "bank", "Read-only file system", since=since[0])
        assert "work failed" in line_with(log, "Read-only file system")
        assert "make it writable" in line_with(log, "Read-only file system")
        second = buy(w, "17.00")
        smtp = wait_log(w, "smtp", "answered 451", since=since[1])
        assert str(box) in line_with(smtp, "answered 451")
        assert pending(w) == [key] and (box / "new" / key).exists()
    finally:
        _remount(box, "rw")
    posted_once(w, first, second)
    no_traceback(w, "smtp", "bank")


def _zero(path: Path) -> None:
    path.write_bytes(b"")


def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _scribble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096:len(data) // 2] = os.urandom(len(data) // 2 - 4096)
    path.write_bytes(bytes(data))


def test_a_damaged_store_stops_the_agent_until_the_backup_is_restored(w, tmp_path):
    """Zeroed, truncated, scribbled: exit 3 and one line saying which file and how to restore;
    from the backup the agent starts and works."""
    store = w.world.store_path("bank")
    w.stop("bank")
    backup = tmp_path / "bank-state.db"
    with closing(sqlite3.connect(store)) as src, closing(sqlite3.connect(backup)) as dst:
        src.backup(dst)
    for damage in (_zero, _half, _scribble):
        shutil.copy(backup, store)
        damage(store)
        since = len(w.log("bank"))
        w.start("bank")
        assert w.wait_exit("bank", 60) == 3, damage.__name__
        log = w.log("bank")[since:]
        line = line_with(log, "setmail: error:")
        assert f"store {store} is damaged" in line and "restore the last backup" in line, line
        assert "Traceback" not in log
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, store)  # restored
    w.start("bank")
    posted_once(w, buy(w, "18.00"))
    no_traceback(w, "bank")
