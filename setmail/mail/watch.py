"""Wait for mail arriving in a Maildir's ``new/`` without busy polling.

Linux inotify through ctypes (no third-party dependency): ``IN_CREATE`` catches our own
link-based delivery, ``IN_MOVED_TO`` catches MTAs that rename into ``new/``.  Where inotify is
missing (other OS, no free watches) the watcher polls the directory listing instead.

Two front ends share one core (``_Watch``: the inotify descriptor, the listing, the queue of
reported keys): ``MaildirWatcher`` for asyncio code, ``BlockingWatcher`` for a thread that sleeps
in poll(2) (the agents' work threads: no event loop hop per mail).

Keys reported are *hints*: a key can be reported twice (an initial scan racing an event, a queue
overflow rescan) or be gone by the time the consumer looks, so consumers claim and skip
:class:`~setmail.errors.MaildirKeyError`.  Names starting with ``.`` are ignored.
"""
from __future__ import annotations

import asyncio
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


class _Watch:
    """What both front ends share: the inotify fd (or none: polling), the names known in
    ``new/`` for polling rescans, and the insertion-ordered set of keys not yet handed out."""

    def __init__(self, maildir: str | os.PathLike, mode: str, poll_interval: float):
        if mode not in ("auto", "inotify", "poll"):
            raise ValueError(f"unknown watch mode {mode!r}")
        self._dir = Path(maildir) / "new"
        self._poll_interval = poll_interval
        self._queue: dict[str, None] = {}  # insertion-ordered set: repeats collapse while queued
        self._fd: int | None = None
        self._closed = False
        if mode != "poll":
            try:
                self._fd = _inotify_open(self._dir)
            except WatchError:
                if mode == "inotify":
                    raise
        self._known = set(self._listing())

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

    def _step(self, deadline: float | None) -> float | None:
        """How long the next sleep may last: None until woken, 0.0 once ``deadline`` has passed;
        polling never sleeps longer than the poll interval."""
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._fd is not None or remaining == 0.0:
            return remaining
        return self._poll_interval if remaining is None else min(self._poll_interval, remaining)

    def _notify(self) -> None:
        """Called when keys were queued (the asyncio front end wakes its waiter)."""

    def _push(self, names) -> None:
        for name in names:
            if not name.startswith("."):
                self._queue[name] = None
        if self._queue:
            self._notify()

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

    def _take_all(self) -> list[str]:
        keys = list(self._queue)
        self._queue.clear()
        return keys

    def _release_fd(self) -> int | None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        return fd

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


class MaildirWatcher(_Watch):
    """Reports keys appearing in ``<maildir>/new``.

    ``mode`` is ``"auto"`` (inotify, else polling), ``"inotify"`` (WatchError if unavailable) or
    ``"poll"``.  With ``initial=True`` the messages already in ``new/`` are reported first; the
    watch is set up before that scan, so nothing delivered in between is missed.

    Use ``await watcher.wait(timeout)`` (all keys seen so far, ``[]`` on timeout) or
    ``async for key in watcher``; ``close()`` ends the iteration and frees the fd.
    """

    def __init__(self, maildir: str | os.PathLike, *, mode: str = "auto",
                 poll_interval: float = 0.2, initial: bool = False):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        super().__init__(maildir, mode, poll_interval)
        if initial:
            self._push(sorted(self._known))

    def _notify(self) -> None:
        self._wakeup.set()

    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None and self._fd is not None:
            loop.add_reader(self._fd, self._on_readable)
            self._loop = loop

    async def _fill(self, timeout: float | None) -> None:
        """Wait until something is queued, the watcher is closed, or the timeout passes."""
        self._attach()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue and not self._closed:
            step = self._step(deadline)
            if step == 0.0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), step)
            except asyncio.TimeoutError:
                pass
            if self._fd is None and not self._closed:
                self._rescan()

    async def wait(self, timeout: float | None = None) -> list[str]:
        """All keys reported so far (oldest event first); ``[]`` on timeout or once closed."""
        await self._fill(timeout)
        return self._take_all()

    def __aiter__(self) -> MaildirWatcher:
        return self

    async def __anext__(self) -> str:
        await self._fill(None)
        if not self._queue:
            raise StopAsyncIteration
        key = next(iter(self._queue))
        del self._queue[key]
        return key

    def close(self) -> None:
        """Stop watching; pending waits return and iteration ends.  Idempotent."""
        self._closed = True
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._release_fd()
        self._queue.clear()
        self._wakeup.set()

    async def __aenter__(self) -> MaildirWatcher:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


class BlockingWatcher(_Watch):
    """The same reports for one thread that blocks in ``wait(timeout)`` (poll(2) on the inotify
    fd and a wake-up pipe).  ``wake()`` may be called from any thread and ends a wait early (the
    agent's stop); ``close()`` frees the descriptors once the waiting thread has finished."""

    def __init__(self, maildir: str | os.PathLike, *, mode: str = "auto",
                 poll_interval: float = 0.2):
        super().__init__(maildir, mode, poll_interval)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        if self._fd is not None:
            self._poller.register(self._fd, select.POLLIN)

    def wake(self) -> None:
        if self._wake_w is None:
            return
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):  # full pipe: a wake-up is pending anyway; closed
            pass

    def wait(self, timeout: float | None = None) -> list[str]:
        """All keys reported so far; ``[]`` on timeout or when woken with nothing queued."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue and not self._closed:
            step = self._step(deadline)
            if step == 0.0:
                break
            woken = False
            # milliseconds rounded up: rounded down, the last fraction of a millisecond spun in poll(0)
            for fd, _ in self._poller.poll(None if step is None else math.ceil(step * 1000)):
                if fd == self._wake_r:
                    woken = True
                    while True:
                        try:
                            if not os.read(self._wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
                else:
                    self._on_readable()
            if self._fd is None:
                self._rescan()
            if woken:
                break
        return self._take_all()

    def close(self) -> None:
        """Free the descriptors (after the waiting thread is done with ``wait``).  Idempotent."""
        self._closed = True
        self._release_fd()
        for name in ("_wake_r", "_wake_w"):
            fd = getattr(self, name, None)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)
        self._queue.clear()
