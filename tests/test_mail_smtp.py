"""Real aiosmtpd on loopback into real Maildirs; the real SMTP client and its backoff."""
import asyncio
import os
import smtplib
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from setmail.errors import TransportError
from setmail.mail.mime import build_mail, parse_mail
from setmail.mail.sender import Backoff, SMTPClientPool, close_connections, drain_outbox, send
from setmail.mail.smtpd import BACKLOG, SMTPServer, pick_free_port
from setmail.store import OutgoingMail, Store

MERCHANT = "merchant@merchant.example"
GATEWAY = "gateway@gateway.example"


def mail(der=None, to=MERCHANT, n=0):
    return build_mail(der or os.urandom(1500), content_type="application/set-payment",
                      sender="cardholder@cardholder.example", recipient=to,
                      message_id=f"m{n}@cardholder.example", subject=f"SET test {n}",
                      date=datetime(2026, 1, 1, tzinfo=timezone.utc))


@pytest.fixture
def boxes(tmp_path):
    return {MERCHANT: tmp_path / "mailboxes" / "merchant", GATEWAY: tmp_path / "mailboxes" / "gw"}


@pytest.fixture
def server(boxes):
    srv = SMTPServer(boxes, port=pick_free_port(), data_size_limit=64 * 1024)
    with srv:
        yield srv
    close_connections()


def new_files(box):
    return sorted((box / "new").iterdir())


def test_delivery_lands_in_new_with_content(server, boxes):
    der = os.urandom(3000)
    send("127.0.0.1", server.port, "cardholder@cardholder.example", ["Merchant@MERCHANT.example"],
         mail(der))
    [path] = new_files(boxes[MERCHANT])
    stored = path.read_bytes()
    assert stored.startswith(b"Return-Path: <cardholder@cardholder.example>\nDelivered-To: ")
    assert b"\r\n" not in stored  # local copy uses LF like any MDA
    parsed = parse_mail(stored, max_size=1 << 20)
    assert parsed.der == der and parsed.message_id == "m0@cardholder.example"
    assert new_files(boxes[GATEWAY]) == []


def test_two_recipients_each_get_a_copy(server, boxes):
    send("127.0.0.1", server.port, "x@cardholder.example", [MERCHANT, GATEWAY], mail())
    assert len(new_files(boxes[MERCHANT])) == 1 and len(new_files(boxes[GATEWAY])) == 1


def test_unknown_recipient_gets_550_and_nothing_is_written(server, boxes):
    with pytest.raises(TransportError) as info:
        send("127.0.0.1", server.port, "x@cardholder.example", ["victim@elsewhere.example"],
             mail())
    assert info.value.permanent and info.value.code == 550
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="t") as client:
        code, _ = client.ehlo()
        client.mail("x@cardholder.example")
        assert client.rcpt("relay@elsewhere.example")[0] == 550
    assert all(new_files(b) == [] and os.listdir(b / "tmp") == [] for b in boxes.values())


def test_oversize_gets_552(server, boxes):
    big = mail(os.urandom(80 * 1024))
    with pytest.raises(TransportError) as info:
        send("127.0.0.1", server.port, "x@cardholder.example", [MERCHANT], big)
    assert info.value.permanent and info.value.code == 552
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="t") as client:
        client.ehlo()
        assert client.esmtp_features["size"] == str(64 * 1024)
        client.mail("x@cardholder.example")  # no SIZE= announced: refused at end of DATA
        client.rcpt(MERCHANT)
        assert client.data(big)[0] == 552
    assert new_files(boxes[MERCHANT]) == []


def test_burst_of_300_concurrent_connections(server, boxes):
    """Every client has its own connection (no pooling); all 300 mails must land."""
    n = 300
    payloads = [mail(n=i) for i in range(n)]

    def one(raw):
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="burst", timeout=20) as c:
            c.sendmail("x@cardholder.example", [MERCHANT], raw)

    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(one, payloads))
    elapsed = time.perf_counter() - start
    files = new_files(boxes[MERCHANT])
    assert len(files) == n
    ids = {parse_mail(p.read_bytes(), max_size=1 << 20).message_id for p in files}
    assert ids == {f"m{i}@cardholder.example" for i in range(n)}
    print(f"\nburst: {n} mails over {n} connections in {elapsed:.2f}s = {n / elapsed:.0f} mails/s")
    assert elapsed < 20


def _listen_backlog(port):
    """Send-Q of a listening socket in ``ss`` output is its accept-queue size (the backlog)."""
    if shutil.which("ss") is None:
        pytest.skip("ss not installed")
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2])


def test_listen_backlog_is_1024_in_both_modes(server, boxes):
    assert _listen_backlog(server.port) == BACKLOG == 1024

    async def in_loop():
        async with SMTPServer(boxes, port=pick_free_port()) as srv:
            return _listen_backlog(srv.port)

    assert asyncio.run(in_loop()) == 1024


def test_connections_are_reused_and_stale_ones_replaced(boxes):
    port = pick_free_port()
    pool = SMTPClientPool()
    with SMTPServer(boxes, port=port):
        for i in range(3):
            pool.send("127.0.0.1", port, "x@c.example", [MERCHANT], mail(n=i))
        assert len(pool._idle[("127.0.0.1", port)]) == 1
    # The server restarted: the pooled connection is dead and must be replaced transparently.
    with SMTPServer(boxes, port=port):
        pool.send("127.0.0.1", port, "x@c.example", [MERCHANT], mail(n=9))
    pool.close()
    assert len(new_files(boxes[MERCHANT])) == 4


def test_connection_refused_is_temporary():
    with pytest.raises(TransportError) as info:
        send("127.0.0.1", pick_free_port(), "x@c.example", [MERCHANT], mail(), timeout=2)
    assert not info.value.permanent and info.value.code is None


def test_disk_failure_answers_451_and_keeps_mail_with_the_sender(server, boxes):
    tmp = boxes[MERCHANT] / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")  # tmp/ is now a file: delivery fails even for root
    try:
        with pytest.raises(TransportError) as info:
            send("127.0.0.1", server.port, "x@c.example", [MERCHANT], mail())
        assert info.value.code == 451 and not info.value.permanent
        assert new_files(boxes[MERCHANT]) == []
    finally:
        tmp.unlink()
        tmp.mkdir()


def test_server_runs_inside_an_existing_loop(boxes):
    async def scenario():
        srv = SMTPServer(boxes, port=pick_free_port())
        async with srv:
            loop = asyncio.get_running_loop()
            pool = SMTPClientPool()
            raw = mail(n=5)
            await loop.run_in_executor(None, pool.send, "127.0.0.1", srv.port, "x@c.example",
                                       [GATEWAY], raw)
            pool_conn_open = bool(pool._idle)
            await srv.stop_async()  # with a pooled client connection still open
            pool.close()
            return pool_conn_open

    assert asyncio.run(asyncio.wait_for(scenario(), 15))
    assert len(new_files(boxes[GATEWAY])) == 1


def test_backoff_schedule():
    b = Backoff(base=1, factor=2, cap=30, jitter=0.2, max_attempts=6)
    assert [b.delay(a, u=0.5) for a in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay(3, u=0.0) == pytest.approx(3.2) and b.delay(3, u=0.999) < 4.8
    assert b.delay(10, u=0.999) <= 30  # jitter never exceeds the cap
    assert b.next_attempt_at(100.0, 1, u=0.5) == 101.0
    assert b.next_attempt_at(100.0, 6, u=0.5) is None  # budget spent
    assert b.next_attempt_at(100.0, 1, permanent=True) is None
    assert 0.8 <= b.delay(1) <= 1.2
    assert b.delay(10_000, u=0.5) == 30  # no overflow
    with pytest.raises(ValueError):
        b.delay(0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)


def test_drain_outbox_sends_retries_and_gives_up(tmp_path, boxes):
    port = pick_free_port()
    backoff = Backoff(base=10, cap=100, jitter=0, max_attempts=3)
    with Store(tmp_path / "agent.db") as store:
        with store.transaction(now=0.0) as tx:
            ok = tx.enqueue(OutgoingMail(MERCHANT, "127.0.0.1", port, mail(n=1), "m1@c"))
            relay = tx.enqueue(OutgoingMail("x@elsewhere.example", "127.0.0.1", port, mail(n=2),
                                            "m2@c"))
        # Server down: both fail temporarily and are rescheduled.
        result = drain_outbox(store, now=1.0, backoff=backoff, sender="c@c.example", timeout=2)
        assert set(result.failed) == {ok, relay} and not result.sent
        assert store.due_outbox(5.0) == []
        row = store.due_outbox(11.0)[0]
        assert row.attempts == 1 and row.next_attempt_at == 11.0 and "Connection" in row.last_error
        with SMTPServer(boxes, port=port):
            result = drain_outbox(store, now=11.0, backoff=backoff, sender="c@c.example")
        close_connections()
        assert result.sent == (ok,) and result.dead == (relay,)  # 550: permanent
        assert [r.id for r in store.outbox()] == [relay]
        assert store.outbox()[0].next_attempt_at is None and store.due_outbox(1e9) == []
        assert store.query("SELECT message_id, attempts, sent_at FROM sent_log") == [
            ("m1@c", 2, 11.0)]
    assert len(new_files(boxes[MERCHANT])) == 1


def test_fast_address_parsing_agrees_with_aiosmtpd():
    from aiosmtpd.smtp import SMTP
    from setmail.mail.smtpd import MaildirHandler, _SMTP
    fast, slow = _SMTP(MaildirHandler({})), SMTP(MaildirHandler({}))
    for arg in ("<alice@cardholder.example>", "<shop@merchant.example> SIZE=12000 BODY=8BITMIME",
                "<>", " <a.b+c@x-y.example>", "bob@example.org", '<"odd local"@example.org>',
                "<no-at-sign>", "<a@b> <c@d>", ""):
        assert fast._getaddr(arg) == slow._getaddr(arg), arg


# -- DATA body: bulk reading with aiosmtpd's exact semantics -----------------------------------

ENVELOPE = b"MAIL FROM:<x@c.example>\r\nRCPT TO:<" + MERCHANT.encode() + b">\r\nDATA\r\n"


def converse(port, script, replies):
    """Send ``script`` in one write; the first ``replies`` final reply lines after the greeting."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        sock.sendall(script)
        out = []
        while len(out) < replies:
            line = reader.readline()
            assert line, f"connection closed after {out}"
            if line[3:4] != b"-":
                out.append(line.rstrip(b"\r\n").decode())
        return out


def stored_bodies(box):
    return [p.read_bytes().split(b"\n", 2)[2] for p in new_files(box)]  # minus trace headers


def test_data_dot_unstuffing_empty_body_and_two_mails_on_one_connection(server, boxes):
    script = (b"HELO t\r\n" + ENVELOPE + b"..lead\r\nmid..dle\r\n\r\n...\r\n.\r\n"
              + ENVELOPE + b".\r\n" + b"QUIT\r\n")
    replies = converse(server.port, script, 10)
    assert [r[:3] for r in replies] == ["250", "250", "250", "354", "250", "250", "250", "354",
                                        "250", "221"]
    # arrival order is not file-name order: compare as a set
    assert sorted(stored_bodies(boxes[MERCHANT])) == sorted([b".lead\nmid..dle\n\n..\n", b""])


def test_data_line_over_1000_octets_gets_500_after_the_terminator(server, boxes):
    script = (b"HELO t\r\n" + ENVELOPE + b"ok\r\n" + b"x" * 1500 + b"\r\nafter\r\n.\r\n"
              + ENVELOPE + b"fine\r\n.\r\nQUIT\r\n")
    replies = converse(server.port, script, 10)
    assert replies[4] == "500 Line too long (see RFC5321 4.5.3.1.6)"
    assert replies[5:8] == ["250 OK", "250 2.1.5 OK", "354 End data with <CR><LF>.<CR><LF>"]
    assert replies[8:] == ["250 2.0.0 Stored", "221 Bye"]
    assert stored_bodies(boxes[MERCHANT]) == [b"fine\n"]


def test_data_over_the_size_limit_gets_552_and_the_connection_stays_usable(server, boxes):
    big = (b"y" * 998 + b"\r\n") * 200  # 200 KB > 64 KiB, in lines of legal length
    script = b"HELO t\r\n" + ENVELOPE + big + b".\r\n" + ENVELOPE + b"small\r\n.\r\nNOOP\r\n"
    replies = converse(server.port, script, 10)
    assert replies[4] == "552 Error: Too much mail data"
    assert replies[8:] == ["250 2.0.0 Stored", "250 OK"]
    assert stored_bodies(boxes[MERCHANT]) == [b"small\n"]


def test_pipelined_quit_after_the_terminator_is_answered(server, boxes):
    body = b"Subject: p\r\n\r\n" + b"QUJD" * 19 + b"\r\n"
    replies = converse(server.port, b"HELO t\r\n" + ENVELOPE + body + b".\r\nQUIT\r\n", 6)
    assert replies[4:] == ["250 2.0.0 Stored", "221 Bye"]
    assert stored_bodies(boxes[MERCHANT]) == [body.replace(b"\r\n", b"\n")]


def _data_cases():
    """(data_size_limit, body after DATA) pairs around every rule of aiosmtpd's smtp_DATA."""
    def line(n, fill=b"x"):  # a line of n octets, CRLF included
        return fill * (n - 2) + b"\r\n"
    cases = [b".\r\n", b"a\r\n.\r\n", b"..\r\n...x\r\n.y\r\n.\r\n", b"ends in a dot.\r\n.\r\n",
             b"bare\nlf\n.\nstill\r\n.\r\n", b"cr\r.\r\nx\r.\r\n\r\n.\r\n", b"\xff\xfe\r\n.\r\n",
             b"\r\n\r\n.\r\n", b".x\r\n.\r\n", line(5000) + b".\r\n", line(1003) + line(5000, b".")
             + b".\r\n"]
    cases += [line(n) + b".\r\n" for n in range(998, 1008)]
    cases += [line(n, b".") + b"z\r\n.\r\n" for n in (1001, 1002, 1004)]
    out = [(2500, c) for c in cases]
    for limit in (2500, 2501, 2502, 2504):  # which error comes first: 552 or 500?
        for first in (1000, 1001):
            for second in (1001, 1002, 1003, 1004, 1500):
                out.append((limit, line(first) + line(second) + line(600) + b".\r\n"))
    out.append((2500, line(1000) * 3 + line(2000) + b".\r\n"))
    out += [(2500, line(1000) * 2 + line(n) + tail + b".\r\n")  # at the limit, then over
            for n in (500, 501) for tail in (b"", line(1500))]
    out.append((0, line(1000) * 300 + b".\r\n"))  # no size limit
    out.append((0, line(1000) * 100 + line(1004) + line(1000) * 100 + b".\r\n"))
    return out


def test_bulk_data_reading_agrees_with_aiosmtpd():
    """Replies and stored content of our smtp_DATA equal aiosmtpd's own, for bodies around
    each rule, sent in one write and in pieces that cut lines and the terminator anywhere."""
    from aiosmtpd.smtp import SMTP
    from setmail.mail.smtpd import _SMTP

    class Recorder:
        def __init__(self):
            self.got = []

        async def handle_DATA(self, server, session, envelope):
            self.got.append((envelope.content, envelope.original_content))
            return "250 recorded"

    async def transcript(cls, limit, script, piece):
        handler = Recorder()
        srv = await asyncio.get_running_loop().create_server(
            lambda: cls(handler, data_size_limit=limit, enable_SMTPUTF8=True), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
        for i in range(0, len(script), piece or len(script)):
            writer.write(script[i:i + (piece or len(script))])
            await writer.drain()
            await asyncio.sleep(0)
        replies = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        srv.close()
        await srv.wait_closed()
        return replies, handler.got

    async def scenario():
        checked = 0
        for limit, body in _data_cases():
            script = (b"HELO t\r\n" + ENVELOPE + body + ENVELOPE + b"next\r\n.\r\nQUIT\r\n")
            for piece in (None, 1, 3, 1000, 4099):
                if piece and len(script) > 1000 * piece:
                    continue  # keep the test fast
                ours = await transcript(_SMTP, limit, script, piece)
                assert ours == await transcript(SMTP, limit, script, piece), (limit, body[:40])
                assert ours[0].endswith(b"221 Bye\r\n")
                checked += 1
        return checked

    assert asyncio.run(scenario()) > 200


def test_data_prechecks_as_aiosmtpd(server):
    replies = converse(server.port, b"DATA\r\nHELO t\r\nDATA\r\nMAIL FROM:<x@c.example>\r\n"
                       b"DATA\r\nRCPT TO:<" + MERCHANT.encode() + b">\r\nDATA x\r\nQUIT\r\n", 8)
    assert [r[:3] for r in replies] == ["503", "250", "503", "250", "503", "250", "501", "221"]


def test_body_check_decides_a_partial_line_only_when_sure():
    """A partial line may only be refused once it must overrun aiosmtpd's reader: 1001 octets
    plus CR can still become a 1003-octet line, which aiosmtpd counts first (here: 552)."""
    from setmail.mail.smtpd import _BodyCheck
    check = _BodyCheck(1002, 1001)
    data = bytearray(b"x" * 1001 + b"\r")
    assert check.feed(data, len(data)) is None
    data += b"\n"
    assert check.feed(data, len(data)) == "552 Error: Too much mail data"
    data = bytearray(b"x" * 1003)
    assert _BodyCheck(1002, 1001).feed(data, len(data)).startswith("500 Line too long")


def test_plain_addresses_are_written_as_smtplib_would():
    """The client's shortcut for plain addr-specs gives smtplib's own ``quoteaddr`` result."""
    import random
    import string

    from setmail.mail.sender import _PLAIN_ADDRESS
    rng = random.Random(7)
    local_chars, domain_chars = string.ascii_letters + string.digits + "._+=-", \
        string.ascii_lowercase + string.digits + ".-"
    checked = 0
    for _ in range(2000):
        addr = ("".join(rng.choice(local_chars) for _ in range(rng.randint(1, 12))) + "@"
                + "".join(rng.choice(domain_chars) for _ in range(rng.randint(1, 12))))
        if _PLAIN_ADDRESS.match(addr):
            assert f"<{addr}>" == smtplib.quoteaddr(addr), addr
            checked += 1
    assert checked > 1000
    assert not _PLAIN_ADDRESS.match("José@example.org")  # SMTPUTF8 goes through smtplib


def test_pipelined_client_mixed_refusals_keep_the_pool_usable(server, boxes):
    """Our server offers PIPELINING and the pool uses it; a refused recipient, a refused sender
    (SIZE over the limit) and a full success follow each other on the pool without confusion."""
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="t") as client:
        client.ehlo()
        assert client.has_extn("pipelining")
    pool = SMTPClientPool()
    with pytest.raises(TransportError) as info:  # one of two recipients refused
        pool.send("127.0.0.1", server.port, "x@c.example", [MERCHANT, "nobody@else.example"],
                  mail(n=1))
    assert info.value.code == 550
    assert len(new_files(boxes[MERCHANT])) == 1  # the accepted one got its copy
    with pytest.raises(TransportError) as info:  # SIZE= over the limit: refused at MAIL
        pool.send("127.0.0.1", server.port, "x@c.example", [MERCHANT], mail(os.urandom(80_000)))
    assert info.value.permanent and info.value.code == 552
    with pytest.raises(TransportError) as info:  # every recipient refused
        pool.send("127.0.0.1", server.port, "x@c.example", ["a@else.example"], mail(n=2))
    assert info.value.permanent and info.value.code == 550
    pool.send("127.0.0.1", server.port, "x@c.example", [MERCHANT, GATEWAY], mail(n=3))
    pool.send("127.0.0.1", server.port, "x@c.example", [MERCHANT], mail(n=4))
    pool.close()
    assert len(new_files(boxes[MERCHANT])) == 3 and len(new_files(boxes[GATEWAY])) == 1
    bodies = sorted(parse_mail(p.read_bytes(), max_size=1 << 20).message_id
                    for p in new_files(boxes[MERCHANT]))
    assert bodies == ["m1@cardholder.example", "m3@cardholder.example", "m4@cardholder.example"]


def test_a_server_without_pipelining_gets_plain_smtp():
    """Any other MTA (here plain aiosmtpd, which offers no PIPELINING) gets smtplib's dialogue."""
    from aiosmtpd.controller import Controller

    class Keep:
        def __init__(self):
            self.got = []

        async def handle_DATA(self, server, session, envelope):
            self.got.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    keep, port = Keep(), pick_free_port()
    controller = Controller(keep, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        pool = SMTPClientPool()
        raw = mail(n=5)
        pool.send("127.0.0.1", port, "x@c.example", [MERCHANT], raw)
        pool.send("127.0.0.1", port, "x@c.example", [GATEWAY], raw)
        pool.close()
    finally:
        controller.stop()
    assert [(f, r) for f, r, _ in keep.got] == [("x@c.example", [MERCHANT]),
                                               ("x@c.example", [GATEWAY])]
    assert keep.got[0][2].replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")


def test_pipelined_body_is_dot_stuffed(server, boxes):
    raw = b"Subject: dots\r\n\r\n.leading\r\n..two\r\nmid.dle\r\n.\r\nlast"
    send("127.0.0.1", server.port, "x@c.example", [MERCHANT], raw)
    stored = new_files(boxes[MERCHANT])[0].read_bytes()
    assert stored.endswith(b"\n\n.leading\n..two\nmid.dle\n.\nlast\n")


def test_pool_dot_stuffs_and_fixes_line_ends_only_where_needed(server, boxes):
    """The client skips dot-stuffing for bodies without a line that starts with "." and the
    CRLF fix for mails already in CRLF (our own); the others still arrive byte for byte."""
    pool = SMTPClientPool()
    crlf = b"Subject: t\r\n\r\n.lead\r\nmid\r\n..two\r\n.\r\nlast"
    bare = b"Subject: u\n\nfirst\n.dot\nend\n"
    plain = b"Subject: v\r\n\r\nno dots here\r\n"
    for raw in (crlf, bare, plain):
        pool.send("127.0.0.1", server.port, "x@c.example", [MERCHANT], raw)
    pool.close()
    assert sorted(stored_bodies(boxes[MERCHANT])) == sorted([
        b"Subject: t\n\n.lead\nmid\n..two\n.\nlast\n", b"Subject: u\n\nfirst\n.dot\nend\n",
        b"Subject: v\n\nno dots here\n"])
