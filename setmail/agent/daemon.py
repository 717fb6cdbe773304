"""Run agents (and optionally the SMTP server) until asked to stop.

Per agent two plain threads, no event loop in between: the *worker* (mail reported by a
``MaildirWatcher``, queued commands, due timers — one unit at a time) and the *sender* (outbox
rows → SMTP, with backoff), which the worker wakes after every unit that may have queued mail.
The asyncio loop only runs the SMTP server and waits for the stop signal: handing each mail from
the loop to a worker pool and back cost each agent more CPU than its SQLite commits.  Stopping
(Ctrl-C, SIGTERM) lets the unit in progress finish, stops the SMTP server (clients retry
anything that got no 250) and closes the stores; nothing is lost because every mail is on disk
before its 250 and every outgoing mail is in the outbox until the next hop's 250.
"""
from __future__ import annotations

import asyncio
import cProfile
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from setmail.agent import dedupe
from setmail.agent.runtime import Agent
from setmail.errors import MaildirError, StoreError
from setmail.mail.smtpd import DEFAULT_SIZE_LIMIT, SMTPServer
from setmail.mail.watch import MaildirWatcher

log = logging.getLogger("setmail.agent")
PROFILE_ENV = "SETMAIL_PROFILE"
#: seconds the wipes of a running agent may wait for their shared WAL checkpoint (``Store``'s
#: ``wipe_delay``): a wiped secret is gone from every file within this plus one poll
WIPE_DELAY = 0.5
#: at most this many waiting mails share one durable flush: more would hold their answers back
GROUP_COMMIT = 16
#: seconds between two expiries of old dedupe records (and once at start)
HOUSEKEEPING_INTERVAL = 3600.0


#: failures of the disk or the database, not of our code: one line in the log (the message names
#: the file), no traceback; the unit rolled back and is tried again (docs/faults.md)
DISK_FAULTS = (StoreError, MaildirError, OSError)
_HINTS = (("locked", "another process holds the store's write lock"),
          ("busy", "another process holds the store's write lock"),
          ("full", "free space on that disk"), ("no space", "free space on that disk"),
          ("read-only", "make it writable again"), ("permission", "give the agent access"))


def fault_line(exc: BaseException) -> str:
    """``exc`` as one log line, with what to do when we know."""
    text = " ".join(str(exc).split())
    hint = next((h for word, h in _HINTS if word in text.lower()), None)
    return f"{text} ({hint})" if hint else text


def _log_failure(what: str, name: str, exc: BaseException, pause: float) -> None:
    if isinstance(exc, DISK_FAULTS):
        log.error("%-8s %s failed: %s; retrying in %.1f s", name, what, fault_line(exc), pause)
    else:
        log.exception("%s: %s failed, retrying in %.1f s", name, what, pause)


class AgentRunner:
    """One agent's work and send threads (see the module docstring), started and stopped from
    the event loop by ``run``."""

    def __init__(self, agent: Agent, *, poll: float = 0.25, watch_mode: str = "auto"):
        self.agent = agent
        agent.store.wipe_delay = WIPE_DELAY  # the work loop calls retry_wipe after every round
        self.poll = poll
        self.watch_mode = watch_mode
        self._housekeeping_due = 0.0  # at the first round
        self._halt = threading.Event()   # set once: finish the unit in progress, then stop
        self._kick = threading.Event()   # the worker queued mail: the sender looks now
        #: SETMAIL_PROFILE=DIR: profile both threads (cProfile, timed in thread CPU seconds so
        #: waits do not count), written to DIR/<agent>.<work|send>.prof when the agent stops (how
        #: the benchmark's costs were found; docs/runtime.md)
        self.profiles = ((cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time))
                         if os.environ.get(PROFILE_ENV) else None)

    def _pause(self, seconds: float) -> bool:
        """Sleep unless stopping; whether to go on."""
        return not self._halt.wait(seconds)

    def _work(self, watcher: MaildirWatcher) -> None:
        """Mail, then commands, then due timers, then wait; a unit of work that fails for a
        reason outside the mail (a locked or full disk) is logged and the pending mail is taken up
        again after a pause, so the agent never silently stops working."""
        agent, failures = self.agent, 0
        try:
            keys = agent.recover()
        except Exception as exc:  # the same pause-and-retry as a failed round
            _log_failure("recovery", agent.name, exc, 0.0)
            keys, failures = [], 1
        while not self._halt.is_set():
            try:
                if failures:
                    keys = agent.recover()
                self._round(keys)
                again = agent.poll_reload()  # a rebuilt role takes what it deferred, at once
                agent.store.retry_wipe()  # the wipes' checkpoint, once due
                self._housekeeping()
                failures = 0
                if again:
                    keys = again
                    continue
                timeout = self.poll
                nxt = agent.next_timer_at()
                if nxt is not None:
                    timeout = max(0.0, min(timeout, nxt - time.time()))
                wipe = agent.store.wipe_due_in()  # the wait ends when a wipe's checkpoint is due
                if wipe is not None:
                    timeout = min(timeout, wipe)
            except Exception as exc:  # the unit rolled back; its mail is still pending
                failures += 1
                pause = min(0.5 * 2 ** failures, 30.0)
                _log_failure("work", agent.name, exc, pause)
                keys = []
                if not self._pause(pause):
                    break
                continue
            keys = watcher.wait(timeout) if not self._halt.is_set() else []

    def _housekeeping(self) -> None:
        """Now and then: dedupe records past the Date window go (``dedupe.expire``)."""
        if time.monotonic() < self._housekeeping_due:
            return
        self._housekeeping_due = time.monotonic() + HOUSEKEEPING_INTERVAL
        gone = dedupe.expire(self.agent.store, self.agent.clock())
        if gone:
            log.info("%-8s      %d dedupe record(s) past the Date window dropped", self.agent.name,
                     gone)

    def _round(self, keys: list[str]) -> None:
        """One round: the mail (up to GROUP_COMMIT mails share one WAL flush, ``Agent.grouped``),
        then commands, then due timers; the sender is kicked after every unit (or group) that
        may have queued mail."""
        for start in range(0, len(keys), GROUP_COMMIT):
            group = keys[start:start + GROUP_COMMIT]
            with self.agent.grouped(len(group) > 1):
                for key in group:
                    if self._halt.is_set():
                        break
                    self.agent.process_mail(key)
            self._kick.set()
        if self._halt.is_set():
            return
        if self.agent.process_commands():
            self._kick.set()
        if self.agent.fire_due_timers():
            self._kick.set()

    def _send(self) -> None:
        while not self._halt.is_set():
            self._kick.clear()
            timeout = 1.0
            try:
                self.agent.send_due()
                nxt = self.agent.next_send_at()
                if nxt is not None:
                    timeout = max(0.0, min(1.0, nxt - time.time()))
            except Exception as exc:  # rows stay in the outbox; the next round sends them
                _log_failure("sending", self.agent.name, exc, timeout)
            if timeout > 0:
                self._kick.wait(timeout)

    def _thread(self, part: int, target, *args) -> threading.Thread:
        if self.profiles is not None:  # one profiler per thread: cProfile is per-thread state
            args = (target, *args)
            target = self.profiles[part].runcall
        name = f"{self.agent.name}-{('work', 'send')[part]}"
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    async def run(self, stop: asyncio.Event) -> None:
        watcher = MaildirWatcher(self.agent.config.maildir, mode=self.watch_mode,
                                 poll_interval=self.poll)
        threads = [self._thread(0, self._work, watcher), self._thread(1, self._send)]
        try:
            await stop.wait()
        finally:
            self._halt.set()
            self._kick.set()
            watcher.wake()
            for thread in threads:
                await asyncio.get_running_loop().run_in_executor(None, thread.join)
            watcher.close()
            self.agent.close()
            if self.profiles is not None:
                directory = Path(os.environ[PROFILE_ENV])
                directory.mkdir(parents=True, exist_ok=True)
                for part, profile in zip(("work", "send"), self.profiles):
                    profile.dump_stats(str(directory / f"{self.agent.name}.{part}.prof"))


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread
            pass


async def serve(agents: Iterable[Agent], *, routes: Mapping[str, Path] | None = None,
                listen: tuple[str, int] | None = None, stop: asyncio.Event | None = None,
                size_limit: int = DEFAULT_SIZE_LIMIT, poll: float = 0.25,
                signals: bool = True, ready=None) -> None:
    """Run ``agents`` (and an SMTP server on ``listen`` for ``routes``) until ``stop`` is set."""
    stop = stop or asyncio.Event()
    if signals:
        install_signal_handlers(stop)
    server = None
    if listen is not None and routes:
        server = SMTPServer(routes, host=listen[0], port=listen[1], data_size_limit=size_limit)
        await server.start_async()
        log.info("SMTP server listening on %s:%d for %d address(es)", listen[0], listen[1],
                 len(routes))
    runners = [AgentRunner(agent, poll=poll) for agent in agents]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    for runner in runners:
        agent = runner.agent
        waiting = (f", waiting for {agent.reloader.built.waiting}"
                   if agent.reloader is not None and not agent.reloader.ready else "")
        log.info("%-8s started (%s, role %s%s)", agent.name, agent.config.address,
                 agent.role.name, waiting)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        stop.set()
        log.info("stopping: finishing work in progress")
        if server is not None:
            await server.stop_async()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("stopped")
