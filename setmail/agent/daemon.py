"""Run agents (and optionally the SMTP server) in one asyncio loop until asked to stop.

Per agent two tasks: the *worker* (mail from the Maildir watcher, queued commands, due timers —
one unit at a time, in the agent's own worker thread so RSA work never blocks the SMTP server)
and the *sender* (outbox rows → SMTP, with backoff).  Stopping (Ctrl-C, SIGTERM) lets the unit in
progress finish, stops the SMTP server (clients retry anything that got no 250) and closes the
stores; nothing is lost because every mail is on disk before its 250 and every outgoing mail
is in the outbox until the next hop's 250.
"""
from __future__ import annotations

import asyncio
import cProfile
import functools
import logging
import os
import signal
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setmail.agent.runtime import Agent
from setmail.mail.smtpd import DEFAULT_SIZE_LIMIT, SMTPServer
from setmail.mail.watch import MaildirWatcher

log = logging.getLogger("setmail.agent")
PROFILE_ENV = "SETMAIL_PROFILE"


class AgentRunner:
    def __init__(self, agent: Agent, *, poll: float = 0.25, watch_mode: str = "auto"):
        self.agent = agent
        self.poll = poll
        self.watch_mode = watch_mode
        self._work = ThreadPoolExecutor(1, thread_name_prefix=f"{agent.name}-work")
        self._send = ThreadPoolExecutor(1, thread_name_prefix=f"{agent.name}-send")
        self._kick = asyncio.Event()
        #: SETMAIL_PROFILE=DIR: profile every unit of work (cProfile, timed in thread CPU seconds so
        #: waits do not count), written to DIR/<agent>.<work|send>.prof when the agent stops (how
        #: the benchmark's costs were found; docs/runtime.md)
        self.profiles = ((cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time))
                         if os.environ.get(PROFILE_ENV) else None)

    async def _call(self, pool, fn, *args):
        if self.profiles is not None:  # one profiler per thread: cProfile is per-thread state
            fn = functools.partial(self.profiles[pool is self._send].runcall, fn)
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _worker(self, stop: asyncio.Event, watcher: MaildirWatcher) -> None:
        """Mail, then commands, then due timers, then wait; a unit of work that fails for a
        reason outside the mail (a locked or full disk) is logged and the pending mail is taken up
        again after a pause, so the agent never silently stops working."""
        keys = await self._call(self._work, self.agent.recover)
        failures = 0
        while not stop.is_set():
            try:
                await self._round(stop, keys)
                failures = 0
            except Exception:  # the unit rolled back; its mail is still pending
                failures += 1
                pause = min(0.5 * 2 ** failures, 30.0)
                log.exception("%s: work failed, retrying in %.1f s", self.agent.name, pause)
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except asyncio.TimeoutError:
                    pass
                keys = [] if stop.is_set() else await self._call(self._work, self.agent.recover)
                continue
            timeout = self.poll
            nxt = self.agent.next_timer_at()
            if nxt is not None:
                timeout = max(0.0, min(timeout, nxt - time.time()))
            keys = await watcher.wait(timeout) if not stop.is_set() else []

    async def _round(self, stop: asyncio.Event, keys) -> None:
        loop = asyncio.get_running_loop()
        await self._call(self._work, self._work_round, list(keys), stop,
                         lambda: loop.call_soon_threadsafe(self._kick.set))

    def _work_round(self, keys: list[str], stop: asyncio.Event, kick) -> None:
        """One round, in the work thread: the mail, then commands, then due timers; the sender
        is kicked after every unit that may have queued mail.  One hand-off to the thread per
        round rather than per mail: under load the hand-offs cost more than the Python they
        surrounded.  (``stop.is_set()`` only reads a flag, safe from this thread.)"""
        for key in keys:
            if stop.is_set():
                return
            self.agent.process_mail(key)
            kick()
        if stop.is_set():
            return
        if self.agent.process_commands():
            kick()
        if self.agent.fire_due_timers():
            kick()

    async def _sender(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._kick.clear()
            try:
                await self._call(self._send, self.agent.send_due)
            except Exception:  # rows stay in the outbox; the next round sends them
                log.exception("%s: sending failed, retrying", self.agent.name)
            nxt = self.agent.next_send_at()
            timeout = 1.0 if nxt is None else max(0.0, min(1.0, nxt - time.time()))
            if timeout > 0:
                try:
                    await asyncio.wait_for(self._kick.wait(), timeout)
                except asyncio.TimeoutError:
                    pass

    async def run(self, stop: asyncio.Event) -> None:
        watcher = MaildirWatcher(self.agent.config.maildir, mode=self.watch_mode,
                                 poll_interval=self.poll)
        worker = asyncio.create_task(self._worker(stop, watcher))
        sender = asyncio.create_task(self._sender(stop))
        try:
            await stop.wait()
        finally:
            watcher.close()
            self._kick.set()
            for task in (worker, sender):
                try:
                    await task
                except Exception:  # pragma: no cover - logged, shutdown continues
                    log.exception("%s: task failed", self.agent.name)
            self._work.shutdown(wait=True)
            self._send.shutdown(wait=True)
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
        log.info("%-8s started (%s, role %s)", runner.agent.name, runner.agent.config.address,
                 runner.agent.role.name)
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
