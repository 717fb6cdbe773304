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
from setmail.mail import maildir as md
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
