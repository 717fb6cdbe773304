"""SMTP client for the outbox: send one mail, classify failures, compute retry times.

Failures become :class:`~setmail.errors.TransportError` with ``permanent=True`` only for a 5xx
reply (retrying cannot help: unknown recipient, too large); 4xx replies, refused connections,
timeouts and dropped connections are temporary and retried with :class:`Backoff`.

Connections are kept per (host, port) and reused: an agent sends bursts to the same few peers,
and the SMTP greeting + EHLO cost as much as the mail itself.  A reused connection the server
has closed meanwhile is retried once on a fresh one.  That may send a mail twice (if the server
stored it but the reply was lost) — SMTP is at-least-once anyway and receivers deduplicate.
"""
from __future__ import annotations

import random
import re
import smtplib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from setmail.errors import TransportError
from setmail.mail.mime import PLAIN_ADDR_SPEC

Sender = Callable[[str, int, str, Sequence[str], bytes, float], None]


def _crlf(raw: bytes) -> bytes:
    """SMTP wants CRLF; smtplib does not fix bare LF in bytes, and aiosmtpd would merge lines.
    Our own mails are built with CRLF already: two counts cost less than two copies."""
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _reply_error(what: str, code: int, text: bytes | str) -> TransportError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return TransportError(f"{what}: {code} {text}", permanent=500 <= code < 600, code=code)


def _classify(exc: Exception, where: str) -> TransportError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{r}: {c} {m.decode('utf-8', 'replace') if isinstance(m, bytes) else m}"
                           for r, (c, m) in exc.recipients.items())
        return TransportError(f"{where}: recipients refused ({detail})",
                              permanent=bool(codes) and all(500 <= c < 600 for c in codes),
                              code=max(codes, default=None))
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_error(where, exc.smtp_code, exc.smtp_error)
    return TransportError(f"{where}: {type(exc).__name__}: {exc}", permanent=False)


_DOT_LINE = re.compile(rb"(?m)^\.")
_PLAIN_ADDRESS = re.compile(PLAIN_ADDR_SPEC + r"\Z")


class _Client(smtplib.SMTP):
    """smtplib.SMTP that writes a plain ASCII addr-spec as ``<addr>`` directly: smtplib runs
    every envelope address through email.utils' RFC 5322 parser (``quoteaddr``), which costs more
    than the rest of the MAIL and RCPT commands, and arrives at the same ``<addr>`` for these.
    Anything else (UTF-8, quoted local parts, SMTPUTF8) takes smtplib's own path."""

    def _plain(self, verb: str, prefix: str, address: str, options) -> tuple[int, bytes] | None:
        if not _PLAIN_ADDRESS.match(address) or any(o.lower() == "smtputf8" for o in options):
            return None
        extra = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd(verb, f"{prefix}:<{address}>{extra}")
        return self.getreply()

    def mail(self, sender, options=()):
        return self._plain("mail", "FROM", sender, options) or super().mail(sender, options)

    def rcpt(self, recip, options=()):
        return self._plain("rcpt", "TO", recip, options) or super().rcpt(recip, options)

    def transact(self, sender: str, recipients: list[str], data: bytes) -> dict:
        """``sendmail`` (same result, same exceptions), pipelined when the server offers
        PIPELINING (RFC 2920) and every address is plain: MAIL, RCPT and DATA go in one write, the
        body in a second, so a mail costs two round trips instead of four.  Any refusal leaves the
        server mid-transaction, so the caller drops the connection on an exception."""
        self.ehlo_or_helo_if_needed()
        if not (self.has_extn("pipelining")
                and all(_PLAIN_ADDRESS.match(a) for a in (sender, *recipients))):
            return self.sendmail(sender, recipients, data)
        size = f" SIZE={len(data)}" if self.has_extn("size") else ""
        self.send(f"MAIL FROM:<{sender}>{size}\r\n".encode("ascii")
                  + b"".join(f"RCPT TO:<{r}>\r\n".encode("ascii") for r in recipients)
                  + b"DATA\r\n")
        code, reply = self.getreply()
        mail_ok = code == 250
        refused = {}
        for recipient in recipients:
            rcode, rreply = self.getreply()
            if rcode not in (250, 251):
                refused[recipient] = (rcode, rreply)
        dcode, dreply = self.getreply()
        if not mail_ok:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        if len(refused) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(refused)
        if dcode != 354:
            raise smtplib.SMTPDataError(dcode, dreply)
        # dot-stuffing, as smtplib's data() does (a base64 body never needs it: no scan then)
        body = _DOT_LINE.sub(b"..", data) if data[:1] == b"." or b"\n." in data else data
        if body[-2:] != b"\r\n":
            body += b"\r\n"
        self.send(body + b".\r\n")
        code, reply = self.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return refused


class SMTPClientPool:
    """Idle SMTP connections per (host, port), shared safely by threads."""

    def __init__(self, *, local_hostname: str = "setmail.local", max_idle: int = 4):
        self.local_hostname = local_hostname
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[smtplib.SMTP]] = {}
        self._lock = threading.Lock()

    def _take(self, key: tuple[str, int]) -> smtplib.SMTP | None:
        with self._lock:
            conns = self._idle.get(key)
            return conns.pop() if conns else None

    def _give_back(self, key: tuple[str, int], conn: smtplib.SMTP) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self.max_idle:
                conns.append(conn)
                return
        _quietly_close(conn)

    def send(self, host: str, port: int, sender: str, recipients: Sequence[str], raw: bytes,
             timeout: float = 30.0) -> None:
        """Send ``raw`` from ``sender`` to ``recipients``; return only after the server's 250.

        Any recipient refused raises (a partial acceptance too: pass one recipient per call
        for exact retry semantics, as the outbox does).
        """
        key = (host, port)
        data = _crlf(raw)
        where = f"SMTP {host}:{port}"
        conn = self._take(key)
        for reused in ((True, False) if conn is not None else (False,)):
            try:
                if conn is None:
                    conn = _Client(host, port, local_hostname=self.local_hostname,
                                   timeout=timeout)
                elif conn.sock is not None:
                    conn.sock.settimeout(timeout)
                refused = conn.transact(sender, list(recipients), data)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                _quietly_close(conn)
                conn = None
                if reused:
                    continue  # the server dropped an idle connection: one fresh try
                raise _classify(exc, where) from exc
            except (smtplib.SMTPException, OSError) as exc:
                _quietly_close(conn)
                raise _classify(exc, where) from exc
            if refused:
                self._give_back(key, conn)
                raise _classify(smtplib.SMTPRecipientsRefused(refused), where)
            self._give_back(key, conn)
            return

    def close(self) -> None:
        with self._lock:
            conns = [c for cs in self._idle.values() for c in cs]
            self._idle.clear()
        for conn in conns:
            _quietly_close(conn, polite=True)


def _quietly_close(conn: smtplib.SMTP | None, polite: bool = False) -> None:
    if conn is None:
        return
    try:
        if polite:
            conn.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        conn.close()


_default_pool = SMTPClientPool()


def send(host: str, port: int, sender: str, recipients: Iterable[str], raw: bytes,
         timeout: float = 30.0) -> None:
    """Send through the module's shared connection pool; see :meth:`SMTPClientPool.send`."""
    _default_pool.send(host, port, sender, list(recipients), raw, timeout)


def close_connections() -> None:
    """Close the shared pool's idle connections (at shutdown, or between tests)."""
    _default_pool.close()


@dataclass(frozen=True)
class Backoff:
    """Exponential retry schedule with a cap, jitter and an attempt budget.

    ``attempt`` counts failed attempts so far (1 after the first failure).  Every method is a
    pure function of its arguments; the jitter draw ``u`` in [0, 1) defaults to a random one at
    the edge, so the store can persist the resulting time and tests can pin it.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2  # the delay is scaled by a factor in [1 - jitter, 1 + jitter)
    max_attempts: int = 10

    def __post_init__(self):
        if self.base <= 0 or self.factor < 1 or self.cap < self.base or not 0 <= self.jitter < 1:
            raise ValueError("Backoff needs base > 0, factor >= 1, cap >= base, 0 <= jitter < 1")
        if self.max_attempts < 1:
            raise ValueError("Backoff needs max_attempts >= 1")

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts

    def delay(self, attempt: int, u: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (>= 1)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        exponent = min(attempt - 1, 64)  # beyond that the cap rules anyway; avoids overflow
        raw = min(self.cap, self.base * self.factor ** exponent)
        u = random.random() if u is None else u
        return min(self.cap, raw * (1 - self.jitter + 2 * self.jitter * u))

    def next_attempt_at(self, now: float, attempt: int, u: float | None = None,
                        *, permanent: bool = False) -> float | None:
        """When to try again after failed attempt ``attempt``; None means give up."""
        if permanent or self.exhausted(attempt):
            return None
        return now + self.delay(attempt, u)


@dataclass(frozen=True)
class DrainResult:
    sent: tuple[int, ...]
    failed: tuple[int, ...]
    dead: tuple[int, ...]  # permanent failure or attempts exhausted: no further tries


def drain_outbox(store, *, now: float, backoff: Backoff, sender: str,
                 send_fn: Sender | None = None, limit: int = 100, timeout: float = 30.0,
                 before_record: Callable[[], None] | None = None) -> DrainResult:
    """Send the store's due outbox rows once each; record 250s and failures.

    A row leaves the outbox only after its 250 (``store.mark_sent_many``, one commit for the
    drain's 250s, made before its return, after ``before_record``: the agent files its Sent
    copies there); failures get the next attempt time from ``backoff`` (``store.mark_failed``),
    None once retrying is pointless.
    """
    send_fn = send_fn or (lambda h, p, s, r, raw, t: send(h, p, s, r, raw, t))
    sent, failed, dead = [], [], []
    try:
        for row in store.due_outbox(now, limit=limit):
            try:
                send_fn(row.host, row.port, sender, [row.recipient], row.raw, timeout)
            except TransportError as exc:
                when = backoff.next_attempt_at(now, row.attempts + 1, permanent=exc.permanent)
                store.mark_failed(row.id, str(exc), when)
                (failed if when is not None else dead).append(row.id)
            else:
                sent.append(row.id)
    finally:
        if sent:
            try:
                if before_record is not None:
                    before_record()
            finally:
                store.mark_sent_many(sent, now=now)
    return DrainResult(tuple(sent), tuple(failed), tuple(dead))
