"""Wait for mail arriving in a Maildir's ``new/`` without busy polling.

Linux inotify through ctypes (no third-party dependency): ``IN_CREATE`` catches our own
link-based delivery, ``IN_MOVED_TO`` catches MTAs that rename into ``new/``.  Where inotify is
missing (other OS, no free watches) the watcher polls the directory listing instead.

The watcher is for a thread that blocks in ``wait`` (poll(2) on the inotify descriptor and a
wake-up pipe): the agents' work threads, with no event-loop hop per mail.

Keys reported are *hints*: a key can be reported twice (an initial scan racing an event, a queue
overflow rescan) or be gone by the time the consumer looks, so consumers claim and skip
:class:`~setmail.errors.MaildirKeyError`.  Names starting with ``.`` are ignored.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import select
import struct
import time
from pathlib import Path

from setmail.errors import WatchError

IN_CREATE = 0x00000100
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        return lib
    except (OSError, AttributeError):
        return None


def _inotify_open(directory: Path) -> int:
    """An inotify fd watching ``directory``; WatchError if inotify is unavailable."""
    lib = _libc()
    if lib is None:
        raise WatchError("inotify is not available on this platform")
    fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise WatchError(f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}")
    if lib.inotify_add_watch(fd, os.fsencode(directory), IN_CREATE | IN_MOVED_TO) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise WatchError(f"inotify_add_watch({directory}) failed: {os.strerror(err)}")
    return fd


def _parse_events(buf: bytes) -> tuple[list[str], bool]:
    """File names from a read of inotify events, and whether the kernel queue overflowed."""
    names, overflow, pos = [], False, 0
    while pos + _EVENT.size <= len(buf):
        _wd, mask, _cookie, length = _EVENT.unpack_from(buf, pos)
        pos += _EVENT.size
        if mask & IN_Q_OVERFLOW:
            overflow = True
        name = buf[pos:pos + length].rstrip(b"\0")
        pos += length
        if name:
            names.append(os.fsdecode(name))
    return names, overflow


class MaildirWatcher:
    """Reports keys appearing in ``<maildir>/new`` to one thread that blocks in ``wait(timeout)``.

    ``mode`` is ``"auto"`` (inotify, else polling), ``"inotify"`` (WatchError if unavailable) or
    ``"poll"``.  With ``initial=True`` the messages already in ``new/`` are reported first; the
    watch is set up before that scan, so nothing delivered in between is missed.  ``wake()`` may
    be called from any thread and ends a wait early (the agent's stop); ``close()`` frees the
    descriptors once the waiting thread has finished.
    """

    def __init__(self, maildir: str | os.PathLike, *, mode: str = "auto",
                 poll_interval: float = 0.2, initial: bool = False):
        if mode not in ("auto", "inotify", "poll"):
            raise ValueError(f"unknown watch mode {mode!r}")
        self._dir = Path(maildir) / "new"
        self._poll_interval = poll_interval
        self._queue: dict[str, None] = {}  # insertion-ordered set: repeats collapse while queued
        self._fd: int | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._closed = False
        if mode != "poll":
            try:
                self._fd = _inotify_open(self._dir)
            except WatchError:
                if mode == "inotify":
                    raise
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        for fd in (self._wake_r, self._fd):
            if fd is not None:
                self._poller.register(fd, select.POLLIN)
        self._known = set(self._listing())
        if initial:
            self._push(sorted(self._known))

    @property
    def mode(self) -> str:
        return "inotify" if self._fd is not None else "poll"

    @property
    def closed(self) -> bool:
        return self._closed

    def _listing(self) -> list[str]:
        try:
            return [n for n in os.listdir(self._dir) if not n.startswith(".")]
        except OSError:
            return []

    def _push(self, names) -> None:
        for name in names:
            if not name.startswith("."):
                self._queue[name] = None

    def _rescan(self) -> None:
        current = self._listing()
        # Our names start with the delivery time, so name order is arrival order.
        self._push(sorted(n for n in current if n not in self._known))
        self._known = set(current)

    def _on_readable(self) -> None:
        while self._fd is not None:
            try:
                buf = os.read(self._fd, 65536)
            except OSError:  # BlockingIOError: drained
                return
            names, overflow = _parse_events(buf)
            if overflow:
                self._push(self._listing())
            self._push(names)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        if self._wake_w is None:
            return
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # full pipe (BlockingIOError): a wake-up is pending anyway
            pass

    def wait(self, timeout: float | None = None) -> list[str]:
        """All keys reported so far (oldest event first); ``[]`` on timeout, when woken with
        nothing queued, or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue and not self._closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            step = remaining if self._fd is not None else (
                self._poll_interval if remaining is None else min(self._poll_interval, remaining))
            woken = False
            # milliseconds rounded up: rounded down, the last fraction of a millisecond spun in poll(0)
            for fd, _ in self._poller.poll(None if step is None else math.ceil(step * 1000)):
                if fd == self._wake_r:
                    woken = True
                    self._drain_wakeups()
                else:
                    self._on_readable()
            if self._fd is None:
                self._rescan()
            if woken:
                break
        keys = list(self._queue)
        self._queue.clear()
        return keys

    def close(self) -> None:
        """Free the descriptors (after the waiting thread is done with ``wait``).  Idempotent."""
        self._closed = True
        for name in ("_fd", "_wake_r", "_wake_w"):
            fd = getattr(self, name, None)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)
        self._queue.clear()

    def __del__(self):
        try:
            self.close()
        except (OSError, AttributeError):  # AttributeError: __init__ refused its arguments
            pass
