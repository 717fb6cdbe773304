"""One process per agent: ``flock(2)`` locks on ``agents/<name>/agent.lock`` and ``world.lock``.

Why: two processes running one agent each take the other's claimed mail for a crash's leftovers
and answer it again (issue 12 saw a CapRes sent 2,706 times in 10 s), and ``init --force`` under a
running agent wipes the store it is writing.  An agent holds its lock exclusively for its life;
``setmail run``/``agent`` take the world lock *shared* while they take their agents' locks, and
``init`` takes it *exclusively* and then every agent's lock, so neither can start while the
other is under way.

Why ``fcntl.flock`` rather than the ``filelock`` package: the holder writes its pid into the
lock file so a second process can say who runs the agent, and filelock opens the file with
``O_TRUNC`` on every attempt, so a refused contender would erase that pid.  ``flock`` locks
belong to the open file, so the kernel drops them when the holder dies however it dies
(``SETMAIL_FAULT``'s ``os._exit``, SIGKILL): there is no stale lock to clean up, and a second
``Agent`` in the same process is refused like a second process.  No new dependency either.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from setmail.errors import SetmailError

AGENT_LOCK, WORLD_LOCK = "agent.lock", "world.lock"


class LockHeld(SetmailError):
    """Someone else holds the lock; ``pid`` is the holder's if it wrote one (else None)."""

    exit_code = 3

    def __init__(self, message: str, pid: int | None):
        super().__init__(message)
        self.pid = pid


class AlreadyRunning(LockHeld):
    """Another process runs this agent."""


class WorldBusy(LockHeld):
    """``init`` is (re)creating the world, or ``init --force`` found an agent running."""


class FileLock:
    """A non-blocking ``flock`` on ``path``; exclusive holders write their pid into the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._exclusive = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, *, shared: bool = False) -> int | None:
        """Take the lock; None on success, else the holder's pid (0 if it wrote none)."""
        if self._fd is not None:
            return None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            return pid
        except BaseException:
            os.close(fd)
            raise
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._exclusive = fd, not shared
        return None

    def release(self) -> None:
        """Idempotent.  The pid is cleared first: a reader never sees a pid that is not running."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._exclusive:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int, patience: float = 0.2) -> int:
    """The holder's pid; it writes it right after locking, so an empty file is worth a short
    wait (a shared holder never writes one: 0)."""
    deadline = time.monotonic() + patience
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return 0
        time.sleep(0.01)


def _pid_text(pid: int | None) -> str:
    return f"pid {pid}" if pid else "pid unknown"


def agent_lock(home: str | os.PathLike, name: str) -> FileLock:
    """Take agent ``name``'s lock in its ``home`` (``<world>/agents/<name>``) or raise
    ``AlreadyRunning``; the caller holds it for the agent's life."""
    lock = FileLock(Path(home) / AGENT_LOCK)
    pid = lock.try_acquire()
    if pid is not None:
        raise AlreadyRunning(f"agent {name} is already running ({_pid_text(pid)})", pid)
    return lock


def world_lock(home: str | os.PathLike, *, shared: bool) -> FileLock:
    """Take the world's lock: shared while agents start, exclusive for ``init``."""
    lock = FileLock(Path(home) / WORLD_LOCK)
    pid = lock.try_acquire(shared=shared)
    if pid is not None:
        if shared:
            raise WorldBusy(f"the world at {home} is being created by setmail init "
                            f"({_pid_text(pid)})", pid)
        raise WorldBusy(f"the world at {home} is in use: agents are starting or another "
                        "setmail init is running; try again", pid or None)
    return lock
