"""Embedded SMTP server (aiosmtpd) delivering into per-agent Maildirs.

Promises, in SMTP terms:

* RCPT for an address not in ``routes`` gets ``550``: the server is never an open relay.
* A mail over ``data_size_limit`` gets ``552`` (aiosmtpd checks SIZE= at MAIL and counts at DATA).
* ``250`` after DATA is sent only once every recipient's copy is fsynced into its Maildir; a full
  disk gets ``452`` (insufficient storage), any other disk failure ``451``, so the client keeps
  the mail and retries; each failed copy is logged in one line naming its Maildir.  The fsync work runs in a writer
  thread, group-committed (see ``MaildirHandler``), so the event loop keeps serving other
  connections meanwhile.

Each copy is stored with LF line endings (as local delivery agents do) and ``Return-Path`` /
``Delivered-To`` headers on top, so any Maildir reader shows a normal mail.

The listen backlog is 1024 instead of asyncio's 100: under a burst of a few hundred clients the
default queue overflowed and clients waited a 1 s SYN retransmit (transport-notes.md).  Passing
the backlog for the threaded mode overrides ``Controller._create_server``, private API of the
pinned aiosmtpd 1.4.x.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, syntax

from setmail.errors import MaildirError
from setmail.mail.maildir import deliver_many, ensure_maildir
from setmail.mail.mime import PLAIN_ADDR_SPEC

log = logging.getLogger("mail.log")  # aiosmtpd's logger
slog = logging.getLogger("setmail.smtp")
#: errno values meaning "no room": the client should try later, as for a full mail queue
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_FULL = "452 4.3.1 Insufficient system storage, try again later"
_FAILED = "451 4.3.0 Local storage failure, try again later"

BACKLOG = 1024
DEFAULT_SIZE_LIMIT = 1 << 20  # SET messages are a few KB; 1 MiB leaves room for certificate chains


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (aiosmtpd's Controller cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 30.0, alive=lambda: True) -> bool:
    """Whether a server accepts connections on ``host:port`` within ``timeout`` seconds (giving up
    early once ``alive()`` is false, e.g. the server process exited): for whoever starts
    ``setmail run`` in another process and must wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _local_copy(raw: bytes, mail_from: str, rcpt: str) -> bytes:
    trace = f"Return-Path: <{mail_from}>\nDelivered-To: {rcpt}\n".encode("utf-8", "replace")
    return trace + raw.replace(b"\r\n", b"\n")


class MaildirHandler:
    """aiosmtpd handler: refuse unknown recipients, deliver durably, then answer.

    Deliveries are group-committed: every DATA that completes while the writer thread is busy
    waits for the next batch, which the writer stores with one directory fsync per Maildir
    (``maildir.deliver_many``) and answers with one wake-up of the event loop.  Under load that
    replaces a thread hand-off and a directory fsync per mail by one per batch; an idle server
    answers a lone mail as soon as its own fsyncs are done.
    """

    def __init__(self, routes: Mapping[str, Path]):
        self.routes = {addr.lower(): Path(path) for addr, path in routes.items()}
        self.executor: ThreadPoolExecutor | None = None
        self.delivered = 0
        self._queue: list[tuple[list[tuple[Path, bytes]], asyncio.Future]] = []
        self._writing = False

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        """Advertise PIPELINING (RFC 2920): aiosmtpd answers commands strictly in order from a
        buffered reader, which is all pipelining asks of a server, and a client may then send
        MAIL, RCPT and DATA in one packet — two round trips per mail instead of four."""
        session.host_name = hostname  # aiosmtpd leaves this to a handle_EHLO that takes responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() not in self.routes:
            return f"550 5.1.1 <{address}>: recipient unknown here (no relaying)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        loop = asyncio.get_running_loop()
        raw, mail_from = envelope.original_content, envelope.mail_from or ""
        copies = [(self.routes[rcpt.lower()], _local_copy(raw, mail_from, rcpt))
                  for rcpt in dict.fromkeys(envelope.rcpt_tos)]  # RCPT twice -> one copy
        done = loop.create_future()
        self._queue.append((copies, done))
        if not self._writing:
            self._writing = True
            loop.create_task(self._write_batches(loop))
        refusal = await done
        if refusal:
            return refusal
        self.delivered += 1
        return "250 2.0.0 Stored"

    async def _write_batches(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write what is queued, in batches, until the queue is empty."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                items = [copy for copies, _ in batch for copy in copies]
                try:
                    results = await loop.run_in_executor(self.executor, deliver_many, items)
                except Exception:  # pragma: no cover - deliver_many reports OSErrors per item
                    log.exception("Maildir delivery failed")
                    results = [MaildirError("delivery failed")] * len(items)
                pos = 0
                for copies, done in batch:
                    refusal = _refusal(results[pos:pos + len(copies)])
                    pos += len(copies)
                    if not done.done():  # the session may have gone meanwhile
                        done.set_result(refusal)
        finally:
            self._writing = False


def _refusal(results: list) -> str | None:
    """The reply for a mail whose copies had these results (None: all stored)."""
    errors = [r for r in results if isinstance(r, MaildirError)]
    if not errors:
        return None
    full = any(getattr(e, "errno", None) in _NO_ROOM for e in errors)
    reply = _FULL if full else _FAILED
    for error in errors:
        slog.error("SMTP %s; answered %s", error, reply[:3])
    return reply


_SIMPLE_ADDR = re.compile(rf"\s*<({PLAIN_ADDR_SPEC})>\s*(.*)\Z", re.S)


_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
_TOO_MUCH = "552 Error: Too much mail data"


class _BodyCheck:
    """aiosmtpd's per-line accounting of a DATA body, applied to bulk chunks.

    aiosmtpd reads lines with a StreamReader whose limit is ``line_length_limit`` (1001): a line
    of more than limit + 2 octets (CRLF included) overruns the reader and is refused as too long
    before its octets are counted; any other line is counted first (``552`` once the total passes
    ``data_size_limit``, if that is set) and then refused if longer than the limit.  The first
    error wins.  ``feed`` replays exactly that over the complete lines not yet accounted.
    """

    def __init__(self, size_limit: int | None, line_limit: int):
        self.size_limit, self.line_limit = size_limit, line_limit
        self.pos = 0    # data[:pos] are whole lines already accounted
        self.count = 0  # their octets

    def feed(self, data: bytearray, stop: int) -> str | None:
        """Account the lines complete in ``data[:stop]``; the error reply, if any, else None."""
        end = data.rfind(b"\r\n", self.pos, stop) + 2
        if end > 1:
            lines = data[self.pos:end].split(b"\r\n")
            del lines[-1]  # the empty remainder after the last CRLF
            count = self.count + end - self.pos
            if ((not self.size_limit or count <= self.size_limit)
                    and max(map(len, lines)) + 2 <= self.line_limit):
                self.pos, self.count = end, count  # the common case: all fine
            else:
                return self._first_error(lines)
        if stop - self.pos > self.line_limit + 1:  # a partial line sure to overrun the reader
            return _TOO_LONG
        return None

    def _first_error(self, lines: list[bytes]) -> str:
        for line in lines:
            length = len(line) + 2
            if length > self.line_limit + 2:
                return _TOO_LONG
            self.count += length
            if self.size_limit and self.count > self.size_limit:
                return _TOO_MUCH
            if length > self.line_limit:
                return _TOO_LONG
        raise AssertionError("no line breaks a limit")  # pragma: no cover


def _unstuff(body: bytearray) -> bytes:
    """RFC 5321 4.5.2: drop the leading dot of every line (lines end with CRLF only)."""
    if body.startswith(b"."):
        del body[0]
    return bytes(body.replace(b"\r\n.", b"\r\n"))


class _SMTP(SMTP):
    """aiosmtpd's SMTP with two fast paths, each a large share of the server's CPU per mail.

    * MAIL and RCPT with plain ``<local@domain>`` addresses: aiosmtpd parses every one with the
      email package's RFC 5322 parser (and defines a class per call).  Anything else takes
      aiosmtpd's own path.
    * The DATA body: aiosmtpd awaits ``readuntil(CRLF)`` once per line (~140 for a 10 KB SET
      mail); this reads it in bulk and replays aiosmtpd's line rules over it (``_BodyCheck``).
      Configurations this does not cover (``decode_data``, no ``handle_DATA``) use aiosmtpd's.
    """

    def _getaddr(self, arg):
        found = _SIMPLE_ADDR.match(arg or "")
        if found is None:
            return super()._getaddr(arg)
        return found.group(1), found.group(2)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self._decode_data or "DATA" not in self._handle_hooks:
            return await super().smtp_DATA(arg)
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        body, error = await self._read_body()
        if body is None:  # connection gone
            return
        if error is not None:
            await self.push(error)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = _unstuff(body)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_body(self) -> tuple[bytearray | None, str | None]:
        """Read up to the lone-dot line; (body without it, first error reply or None).

        ``readuntil(".\r\n")`` with the reader's small limit either returns a short chunk
        ending in ".\r\n" (the terminator if it starts the body or follows a CRLF) or overruns,
        and then ``read`` takes everything buffered in one piece.  Nothing past the terminator is
        consumed, so pipelined commands stay in the reader.  After an error the rest is drained
        keeping only a tail for spotting the terminator, as aiosmtpd discards it too.
        """
        reader = self._reader
        data = bytearray()
        check = _BodyCheck(self.data_size_limit, self.line_length_limit)
        error = None
        while self.transport is not None:
            try:
                try:
                    chunk = await reader.readuntil(b".\r\n")
                    dot = True
                except asyncio.LimitOverrunError as overrun:
                    chunk = await reader.read(overrun.consumed)
                    dot = False
            except asyncio.CancelledError:
                log.info("Connection lost during DATA")
                self._writer.close()
                raise
            data += chunk
            end = dot and (len(data) == 3 or data[-5:-3] == b"\r\n")
            if error is None:
                error = check.feed(data, len(data) - 3 if end else len(data))
            if end:
                del data[-3:]
                return data, error
            if error is not None:
                del data[:-4]
        return None, None


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
                 server_hostname: str = "setmail.local"):
        for path in routes.values():
            ensure_maildir(path)
        self.host, self.port = host, port
        self.data_size_limit = data_size_limit
        self.server_hostname = server_hostname
        self.handler = MaildirHandler({a: Path(p) for a, p in routes.items()})
        self._controller: _BacklogController | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _begin(self) -> None:
        if self._controller or self._server:
            raise RuntimeError("SMTP server already running")
        self.handler.executor = ThreadPoolExecutor(1, thread_name_prefix="smtpd-deliver")

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
