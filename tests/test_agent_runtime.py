"""The agent runtime with a tiny request/response test role, real SMTP, Maildirs and SQLite."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import threading
import time
from pathlib import Path

import pytest

from setmail.agent import Agent, AgentConfig, register_effect
from setmail.agent import commands as cmdq
from setmail.agent.daemon import serve
from setmail.asn1.certmsgs import CardCInitReq
from setmail.crypto.suite import fresh
from setmail.errors import StoreError
from setmail.mail import maildir
from setmail.mail.mime import build_mail, parse_mail
from setmail.mail.smtpd import SMTPServer, pick_free_port
from setmail.roles import refusal, wire
from setmail.roles.base import Outcome, Role, Send, SetTimer, Effect

CLIENT, SERVER = "client@a.example", "server@b.example"


# -- the test role ----------------------------------------------------------------------------------
class PingRole(Role):
    """Client: Command("ping", {"id", "to"}) -> CardCInitReq; the answer (an Error) ends it.
    Server: CardCInitReq -> Error echoing the header; counts requests in shared state and emits
    an in-transaction effect, so "done twice" is visible."""

    name = "ping"
    shared_key = "served"
    TRANSITIONS = {
        "START": {"ping": "WAIT", "CardCInitReq": ("ANSWERED", "PARKED")},
        "WAIT": {"Error": "DONE", "timer:retry": "WAIT"},
        "PARKED": {"release": "ANSWERED"},
    }

    def transaction_key(self, event):
        if getattr(event, "name", None) == "ping":
            return hashlib.sha256(event.args["id"].encode()).hexdigest()
        if getattr(event, "name", None) == "release":
            return event.args["tx"]
        from setmail.asn1.wrapper import decode_wrapper
        return decode_wrapper(event.wrapper_der)["message_header"]["rrpid"].native.hex()

    def on_ping(self, state, event, now, shared):
        rrpid = hashlib.sha256(event.args["id"].encode()).digest()
        req = CardCInitReq({"rrpid": rrpid, "lid_ee": event.args.get("lid", "ping").encode(),
                            "chall_ee": fresh(),
                            "brand_id": "Visa"})
        der = wire.wrap("CardCInitReq", req, now=now, rrpid=rrpid)
        timers = ()
        if event.args.get("retry"):
            timers = (SetTimer("retry", now + dt.timedelta(seconds=float(event.args["retry"])),
                               {"to": event.args["to"]}),)
        return Outcome(rrpid.hex(), {"state": "WAIT", "to": event.args["to"], "der": der.hex()},
                       sends=(Send(event.args["to"], "CardCInitReq", der),), timers=timers)

    def on_timer_retry(self, state, event, now, shared):
        return Outcome("", {**state, "retries": state.get("retries", 0) + 1},
                       sends=(Send(state["to"], "CardCInitReq", bytes.fromhex(state["der"])),))

    def on_CardCInitReq(self, state, event, now, shared):
        parsed = wire.unwrap(event, now)
        if CardCInitReq.load(parsed.body)["lid_ee"].native == b"park":  # answered by "release"
            return Outcome(parsed.rrpid.hex(), {"state": "PARKED", "to": event.sender,
                                                "der": event.wrapper_der.hex()})
        der = refusal.error_wrapper("unspecifiedFailure", event.wrapper_der, now=now)
        served = dict(shared)
        served["count"] = served.get("count", 0) + 1
        return Outcome(parsed.rrpid.hex(), {"state": "ANSWERED"},
                       sends=(Send(event.sender, "Error", der, event.mail_id),),
                       effects=(Effect("test.served", {"rrpid": parsed.rrpid}),), shared=served)

    def on_release(self, state, event, now, shared):
        request = bytes.fromhex(state["der"])
        der = refusal.error_wrapper("unspecifiedFailure", request, now=now)
        return Outcome(event.args["tx"], {"state": "ANSWERED"}, sends=(
            Send(state["to"], "Error", der, answers=hashlib.sha256(request).hexdigest()),))

    def on_Error(self, state, event, now, shared):
        return Outcome("", {"state": "DONE", "to": state["to"]},
                       effects=(Effect("test.pong", {"tx": "x"}),))


def _served(ctx, tx, data):
    tx.execute("CREATE TABLE IF NOT EXISTS test_served (rrpid BLOB)")
    tx.execute("INSERT INTO test_served VALUES (?)", (data["rrpid"],))


def _pong(ctx, data):
    (ctx.home / "pong.txt").write_text("pong\n")


register_effect("test.served", in_tx=_served)
register_effect("test.pong", after_commit=_pong)


# -- a two-agent setup ---------------------------------------------------------------------------------
def make_agents(root: Path, port: int):
    peers = {CLIENT: "client", SERVER: "server"}
    cfgs = {n: AgentConfig(n, a, root / "agents" / n, root / "mailboxes" / n, "127.0.0.1", port,
                           peers) for a, n in peers.items()}
    return cfgs


def routes(cfgs):
    return {c.address: c.maildir for c in cfgs.values()}


def run_daemon_main(root: str, port: int, seconds: float) -> None:
    """Entry for subprocess tests: SMTP server + both agents until `seconds` pass."""
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfgs = make_agents(Path(root), port)

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        agents = [Agent(c, PingRole()) for c in cfgs.values()]
        await serve(agents, routes=routes(cfgs), listen=("127.0.0.1", port), stop=stop,
                    poll=0.05, signals=True)
    asyncio.run(main())


@contextlib.contextmanager
def two_agents(root: Path, role=PingRole):
    """The client and the server agent running ``role``, with an SMTP server for both."""
    port = pick_free_port()
    cfgs = make_agents(root, port)
    server = SMTPServer(routes(cfgs), port=port).start()
    agents = {n: Agent(c, role()) for n, c in cfgs.items()}
    try:
        yield agents, cfgs, port
    finally:
        for a in agents.values():
            a.close()
        server.stop()


@pytest.fixture
def world(tmp_path):
    with two_agents(tmp_path) as (agents, cfgs, port):
        yield tmp_path, agents, cfgs, port


def pump(agents, rounds=4):
    """Drive both agents synchronously: commands, mail, timers, sending."""
    for _ in range(rounds):
        for agent in agents.values():
            agent.process_commands()
            for key in agent.recover():
                agent.process_mail(key)
            agent.fire_due_timers()
            agent.send_due()


def served_count(agent) -> int:
    try:
        return agent.store.query("SELECT COUNT(*) FROM test_served")[0][0]
    except Exception:
        return 0


def test_request_response_roundtrip(world):
    root, agents, cfgs, _ = world
    client, server = agents["client"], agents["server"]
    cid = cmdq.submit(client.store, "ping", {"id": "one", "to": SERVER})
    pump(agents)
    assert cmdq.get(client.store, cid).status == "done"
    txkey = hashlib.sha256(b"one").hexdigest()
    assert client.store.get_state("tx/" + txkey)["state"] == "DONE"
    assert server.store.get_state("shared/served") == {"count": 1}
    assert served_count(server) == 1
    assert (cfgs["client"].home / "pong.txt").exists()
    # both mails are done (S flag) and threaded
    for name in ("client", "server"):
        entries = maildir.list_messages(cfgs[name].maildir)
        assert len(entries) == 1 and entries[0].done
    raw = maildir.read(cfgs["client"].maildir, maildir.list_messages(cfgs["client"].maildir)[0].key)
    assert b"In-Reply-To: <" + txkey.encode() in raw.replace(b"\r\n", b"\n")
    assert b"Subject: SET Error " in raw and b"Content-Type: application/set-payment" in raw
    assert client.store.outbox() == [] and server.store.outbox() == []


def test_duplicate_delivery_resends_stored_response(world):
    root, agents, cfgs, _ = world
    client, server = agents["client"], agents["server"]
    cmdq.submit(client.store, "ping", {"id": "dup", "to": SERVER})
    client.process_commands()
    row = client.store.outbox()[0]
    # deliver the request twice (as a relay might), then process both
    maildir.deliver(cfgs["server"].maildir, row.raw)
    maildir.deliver(cfgs["server"].maildir, row.raw)
    statuses = [server.process_mail(k) for k in server.recover()]
    assert statuses == ["done", "duplicate"]
    assert served_count(server) == 1 and server.store.get_state("shared/served") == {"count": 1}
    out = server.store.outbox()
    assert len(out) == 2 and out[0].raw == out[1].raw and out[0].message_id == out[1].message_id
    server.send_due()
    # the client gets the answer twice: the second is a duplicate, state unchanged
    statuses = [client.process_mail(k) for k in client.recover()]
    assert statuses == ["done", "duplicate"]
    assert client.store.get_state("tx/" + hashlib.sha256(b"dup").hexdigest())["state"] == "DONE"
    assert [r[0] for r in server.store.query(
        "SELECT status FROM processed_mail ORDER BY processed_at")] == ["done", "duplicate"]


def test_a_request_answered_in_a_later_step_is_answered_again_on_a_repeat(world):
    """A request parked by its own step and answered by a later one (the merchant's PInitReq
    before its order): the later answer joins the request's dedupe record, so a repeat of the
    request (a relay, the client's retry) gets that answer again instead of silence."""
    root, agents, cfgs, _ = world
    client, server = agents["client"], agents["server"]
    cmdq.submit(client.store, "ping", {"id": "parked", "to": SERVER, "lid": "park"})
    client.process_commands()
    request = client.store.outbox()[0].raw
    maildir.deliver(cfgs["server"].maildir, request)
    assert [server.process_mail(k) for k in server.recover()] == ["done"]
    tx = hashlib.sha256(b"parked").hexdigest()
    assert server.store.get_state("tx/" + tx)["state"] == "PARKED" and server.store.outbox() == []
    cmdq.submit(server.store, "release", {"tx": tx})
    assert server.process_commands() == 1
    (answer,) = server.store.outbox()
    digest = hashlib.sha256(parse_mail(request, max_size=1 << 20).der).digest()
    record = server.store.lookup_dedupe(digest)
    assert [m.raw for m in record.responses] == [answer.raw]
    maildir.deliver(cfgs["server"].maildir, request)  # the same request again
    assert [server.process_mail(k) for k in server.recover()] == ["duplicate"]
    assert [r.raw for r in server.store.outbox()] == [answer.raw, answer.raw]
    with server.store.transaction(now=1.0) as tx_:  # no record: nothing to add to, no error
        assert not tx_.add_dedupe_responses(bytes(32), [answer.mail])


def test_a_repeat_after_the_answer_went_gets_it_from_the_sent_copy(world, caplog):
    """Each outgoing mail is stored once (D-481): the dedupe record names its answer, whose bytes
    are the outbox row's until the 250, then the .Sent copy's.  A repeat after the send gets the
    identical mail again; with that copy deleted (by a mail client) it is logged as lost."""
    root, agents, cfgs, _ = world
    client, server = agents["client"], agents["server"]
    cmdq.submit(client.store, "ping", {"id": "sent-copy", "to": SERVER})
    client.process_commands()
    request = client.store.outbox()[0].raw
    maildir.deliver(cfgs["server"].maildir, request)
    assert [server.process_mail(k) for k in server.recover()] == ["done"]
    (answer,) = server.store.outbox()
    assert server.send_due().sent and server.store.outbox() == []
    assert server.store.query("SELECT raw FROM dedupe_response") == [(None,)]
    maildir.deliver(cfgs["server"].maildir, request)
    assert [server.process_mail(k) for k in server.recover()] == ["duplicate"]
    assert [r.raw for r in server.store.outbox()] == [answer.raw]
    server.send_due()
    (copy,) = (Path(cfgs["server"].maildir) / ".Sent" / "cur").iterdir()
    copy.unlink()
    maildir.deliver(cfgs["server"].maildir, request)
    assert [server.process_mail(k) for k in server.recover()] == ["duplicate"]
    assert server.store.outbox() == [] and "is lost" in caplog.text


def test_mails_processed_as_a_group_share_one_flush(world):
    """``Agent.grouped``: the answers stay back and the mails unmarked until the group's flush;
    then each mail is done and every answer due."""
    root, agents, cfgs, _ = world
    client, server = agents["client"], agents["server"]
    for ident in ("g1", "g2"):
        cmdq.submit(client.store, "ping", {"id": ident, "to": SERVER})
    client.process_commands()
    for row in client.store.outbox():
        maildir.deliver(cfgs["server"].maildir, row.raw)
    keys = server.recover()
    with server.grouped():
        assert [server.process_mail(k) for k in keys] == ["done", "done"]
        assert len(server.store.outbox()) == 2 and server.store.due_outbox(time.time()) == []
        assert len(maildir.pending(cfgs["server"].maildir)) == 2
    assert len(server.store.due_outbox(time.time())) == 2
    assert maildir.pending(cfgs["server"].maildir) == []
    assert {server.store.processed_status(k) for k in keys} == {"done"}


def _mail(der: bytes, content_type="application/set-registration", **kw) -> bytes:
    return build_mail(der, content_type=content_type, sender=kw.get("sender", CLIENT),
                      recipient=SERVER, message_id=f"{fresh(6).hex()}@a.example",
                      subject="SET test")


def test_bad_mail_is_quarantined_and_agent_keeps_serving(world):
    root, agents, cfgs, _ = world
    client, server = agents["client"], agents["server"]
    cmdq.submit(client.store, "ping", {"id": "good", "to": SERVER})
    client.process_commands()
    good = client.store.outbox()[0].raw
    good_der = parse_mail(good, max_size=1 << 20).der
    bad = {
        "garbage": b"this is not a mail at all",
        "truncated": _mail(good_der[:-7]),
        "wrongtype": _mail(good_der, "application/set-payment"),
        "oversize": _mail(good_der) + b"A" * (cfgs["server"].max_mail_size + 10),
        "notset": _mail(b"\x30\x03\x02\x01\x01"),
    }
    keys = {name: maildir.deliver(cfgs["server"].maildir, raw) for name, raw in bad.items()}
    keys["good"] = maildir.deliver(cfgs["server"].maildir, good)
    results = {k: server.process_mail(k) for k in server.recover()}
    by_name = {name: results[key] for name, key in keys.items()}
    assert by_name.pop("good") == "done"
    assert set(by_name.values()) == {"quarantined"}
    qdir = cfgs["server"].maildir / ".quarantine"
    for name, key in keys.items():
        if name != "good":
            assert (qdir / "new" / key).exists() and (qdir / f"{key}.reason").read_text().strip()
    assert "WrongMailContentType" in (qdir / f"{keys['wrongtype']}.reason").read_text()
    assert len(server.store.quarantined()) == 5
    # none is answered, not even the one whose header decoded from a party of the world: an
    # Error would go to whatever the From says, about bytes nobody authenticated
    (answer,) = server.store.outbox()  # the good request's answer, nothing else
    assert parse_mail(answer.raw, max_size=1 << 20).in_reply_to == parse_mail(
        good, max_size=1 << 20).message_id
    assert served_count(server) == 1


def test_an_unexpected_error_is_quarantined_and_never_answered(world):
    root, agents, cfgs, _ = world
    client = agents["client"]
    # an Error the client never asked for: not in the table in START -> quarantine, no reply
    stray = refusal.error_wrapper("unspecifiedFailure", b"\x30\x00", now=dt.datetime.now(
        dt.timezone.utc).replace(microsecond=0))
    key = maildir.deliver(cfgs["client"].maildir, _mail(stray, "application/set-payment",
                                                        sender=SERVER))
    assert client.process_mail(key) == "quarantined"
    assert client.store.outbox() == []


def test_a_failed_commit_leaves_the_kept_shared_state_as_the_store_has_it(world):
    """The agent keeps its decoded shared state between steps (D-486): a commit that fails
    must not leave the state it tried to write behind in that copy."""
    root, agents, cfgs, _ = world
    client, server = agents["client"], agents["server"]
    with server.store.transaction(now=1.0) as tx:  # the in-transaction effect's INSERT fails
        tx.execute("CREATE VIEW test_served AS SELECT NULL AS rrpid")
    cmdq.submit(client.store, "ping", {"id": "first", "to": SERVER})
    client.process_commands()
    client.send_due()
    [key] = server.recover()
    with pytest.raises(StoreError, match="is a view"):  # the agent stops; the mail stays
        server.process_mail(key)
    assert server.store.get_state("shared/served") is None
    with server.store.transaction(now=2.0) as tx:
        tx.execute("DROP VIEW test_served")
    pump(agents)  # the same mail again: counted once, from what the store holds
    assert server.store.get_state("shared/served") == {"count": 1}
    assert served_count(server) == 1


def test_timer_fires_through_commit_path(world):
    root, agents, cfgs, _ = world
    client = agents["client"]
    now = [time.time()]
    client.clock = lambda: now[0]
    cmdq.submit(client.store, "ping", {"id": "t", "to": SERVER, "retry": 5})
    client.process_commands()
    assert client.fire_due_timers() == 0
    now[0] += 6
    assert client.fire_due_timers() == 1
    tx = client.store.get_state("tx/" + hashlib.sha256(b"t").hexdigest())
    assert tx["retries"] == 1 and len(client.store.outbox()) == 2
    assert client.store.due_timers(now[0] + 100) == []


def test_unknown_recipient_refused_550(world):
    import smtplib
    root, agents, cfgs, port = world
    with smtplib.SMTP("127.0.0.1", port) as conn:
        code, _ = conn.ehlo()
        conn.mail(CLIENT)
        code, msg = conn.rcpt("nobody@b.example")
    assert code == 550


def test_serve_in_one_loop_and_stop_cleanly(tmp_path):
    port = pick_free_port()
    cfgs = make_agents(tmp_path, port)
    stop_box = {}

    def runner():
        async def main():
            stop = asyncio.Event()
            stop_box["stop"], stop_box["loop"] = stop, asyncio.get_running_loop()
            agents = [Agent(c, PingRole()) for c in cfgs.values()]
            await serve(agents, routes=routes(cfgs), listen=("127.0.0.1", port), stop=stop,
                        poll=0.05, signals=False)
        asyncio.run(main())

    thread = threading.Thread(target=runner)
    thread.start()
    try:
        deadline = time.time() + 10
        while "stop" not in stop_box and time.time() < deadline:
            time.sleep(0.02)
        store = cmdq.open_store(cfgs["client"].store_path)
        cmdq.ensure_tables(store)
        cid = cmdq.submit(store, "ping", {"id": "live", "to": SERVER})
        txkey = "tx/" + hashlib.sha256(b"live").hexdigest()
        while time.time() < deadline and (store.get_state(txkey) or {}).get("state") != "DONE":
            time.sleep(0.05)
        assert store.get_state(txkey)["state"] == "DONE"
        assert cmdq.get(store, cid).status == "done"
        store.close()
    finally:
        stop_box["loop"].call_soon_threadsafe(stop_box["stop"].set)
        thread.join(10)
    assert not thread.is_alive()
