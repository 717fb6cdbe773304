"""Embedded SMTP server (aiosmtpd) delivering into per-agent Maildirs.

Promises, in SMTP terms:

* RCPT for an address not in ``routes`` gets ``550``: the server is never an open relay.
* A mail over ``data_size_limit`` gets ``552`` (aiosmtpd checks SIZE= at MAIL and counts at DATA).
* ``250`` after DATA is sent only once every recipient's copy is fsynced into its Maildir; a disk
  failure gets ``451`` so the client keeps the mail and retries.  The fsync work runs in a thread
  pool so the event loop keeps serving other connections meanwhile.

Each copy is stored with LF line endings (as local delivery agents do) and ``Return-Path`` /
``Delivered-To`` headers on top, so any Maildir reader shows a normal mail.

The listen backlog is 1024 instead of asyncio's 100: under a burst of a few hundred clients the
default queue overflowed and clients waited a 1 s SYN retransmit (transport-notes.md).  Passing
the backlog for the threaded mode overrides ``Controller._create_server``, private API of the
pinned aiosmtpd 1.4.x.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from setmail.errors import MaildirError
from setmail.mail.maildir import deliver, ensure_maildir

BACKLOG = 1024
DEFAULT_SIZE_LIMIT = 1 << 20  # SET messages are a few KB; 1 MiB leaves room for certificate chains


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (aiosmtpd's Controller cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _local_copy(raw: bytes, mail_from: str, rcpt: str) -> bytes:
    trace = f"Return-Path: <{mail_from}>\nDelivered-To: {rcpt}\n".encode("utf-8", "replace")
    return trace + raw.replace(b"\r\n", b"\n")


class MaildirHandler:
    """aiosmtpd handler: refuse unknown recipients, deliver durably, then answer."""

    def __init__(self, routes: Mapping[str, Path]):
        self.routes = {addr.lower(): Path(path) for addr, path in routes.items()}
        self.executor: ThreadPoolExecutor | None = None
        self.delivered = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() not in self.routes:
            return f"550 5.1.1 <{address}>: recipient unknown here (no relaying)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _deliver_all(self, raw: bytes, mail_from: str, rcpts: list[str]) -> None:
        for rcpt in rcpts:
            deliver(self.routes[rcpt.lower()], _local_copy(raw, mail_from, rcpt))

    async def handle_DATA(self, server, session, envelope):
        loop = asyncio.get_running_loop()
        rcpts = list(dict.fromkeys(envelope.rcpt_tos))  # RCPT twice → one copy
        try:
            await loop.run_in_executor(self.executor, self._deliver_all,
                                       envelope.original_content, envelope.mail_from or "", rcpts)
        except MaildirError:
            return "451 4.3.0 Local storage failure, try again later"
        self.delivered += 1
        return "250 2.0.0 Stored"


_SIMPLE_ADDR = re.compile(r"\s*<([A-Za-z0-9._+=-]{1,64}@[A-Za-z0-9.-]{1,253})>\s*(.*)\Z", re.S)


class _SMTP(SMTP):
    """aiosmtpd's SMTP with a fast path for the plain ``<local@domain>`` addresses of MAIL and
    RCPT: aiosmtpd parses every one with the email package's RFC 5322 parser (and defines a class
    per call), a tenth of the server's CPU per mail.  Anything else takes aiosmtpd's own path."""

    def _getaddr(self, arg):
        found = _SIMPLE_ADDR.match(arg or "")
        if found is None:
            return super()._getaddr(arg)
        return found.group(1), found.group(2)


class _BacklogController(Controller):
    """aiosmtpd Controller whose listening socket has a deep accept queue."""

    def factory(self):
        return _SMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, host=self.hostname, port=self.port,
                                       ssl=self.ssl_context, backlog=BACKLOG)


class SMTPServer:
    """SMTP front door of one host: ``routes`` maps recipient address → Maildir path.

    Run it either in its own thread (``start()``/``stop()`` or ``with SMTPServer(...)``) or inside
    the caller's event loop (``await start_async()`` / ``await stop_async()``).
    """

    def __init__(self, routes: Mapping[str, str | os.PathLike], *, host: str = "127.0.0.1",
                 port: int, data_size_limit: int = DEFAULT_SIZE_LIMIT,
                 server_hostname: str = "setmail.local", delivery_threads: int = 16):
        for path in routes.values():
            ensure_maildir(path)
        self.host, self.port = host, port
        self.data_size_limit = data_size_limit
        self.server_hostname = server_hostname
        self.delivery_threads = delivery_threads
        self.handler = MaildirHandler({a: Path(p) for a, p in routes.items()})
        self._controller: _BacklogController | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _begin(self) -> None:
        if self._controller or self._server:
            raise RuntimeError("SMTP server already running")
        self.handler.executor = ThreadPoolExecutor(self.delivery_threads,
                                                   thread_name_prefix="smtpd-deliver")

    def _end(self) -> None:
        executor, self.handler.executor = self.handler.executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _smtp_kwargs(self) -> dict:
        return dict(data_size_limit=self.data_size_limit, hostname=self.server_hostname,
                    ident="setmail", enable_SMTPUTF8=True, timeout=60)

    # -- threaded ---------------------------------------------------------------------------
    def start(self) -> SMTPServer:
        self._begin()
        kwargs = self._smtp_kwargs()
        kwargs["server_hostname"] = kwargs.pop("hostname")  # Controller's hostname= is the bind
        self._controller = _BacklogController(self.handler, hostname=self.host, port=self.port,
                                              **kwargs)
        try:
            self._controller.start()
        except BaseException:
            self._controller = None
            self._end()
            raise
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self._end()

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inside a running loop --------------------------------------------------------------
    async def start_async(self) -> SMTPServer:
        self._begin()
        loop = asyncio.get_running_loop()
        kwargs = self._smtp_kwargs()

        def factory() -> SMTP:
            session = _SMTP(self.handler, loop=loop, **kwargs)
            self._sessions.add(session)
            return session

        try:
            self._server = await loop.create_server(factory, host=self.host, port=self.port,
                                                    backlog=BACKLOG)
        except BaseException:
            self._end()
            raise
        return self

    async def stop_async(self) -> None:
        """Stop listening, drop open sessions (clients retry what got no 250), join deliveries."""
        if self._server is not None:
            self._server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            await self._server.wait_closed()
            self._server = None
        await asyncio.get_running_loop().run_in_executor(None, self._end)

    async def __aenter__(self) -> SMTPServer:
        return await self.start_async()

    async def __aexit__(self, *exc) -> None:
        await self.stop_async()
