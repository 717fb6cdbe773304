"""The runtime against a mail attacker (issue 12), with a small role on real SMTP, Maildirs and
SQLite: dedupe on the exact SET content, refused mail never recorded, bounded re-sends of a
repeated request, a repeated response absorbed, refusals and a disagreeing From logged, and a
PAN gone from every file of the agent once wiped."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import pytest

from setmail.agent import Agent, commands as cmdq
from setmail.agent.dedupe import MAX_RESENDS
from setmail.asn1.certmsgs import CardCInitReq
from setmail.crypto.suite import fresh
from setmail.mail import maildir
from setmail.mail.mime import build_mail, parse_mail
from setmail.roles import refusal, wire
from setmail.roles.base import Outcome, Send
from setmail.roles.wire import received
from tests.test_agent_runtime import CLIENT, SERVER, PingRole, two_agents

PAN = "4111111111111111"
MALLORY = "mallory@evil.example"


class GuardRole(PingRole):
    """PingRole as a role of issue 12 would write it: the server refuses a request whose LID
    starts with "x" (a "forgery") with a note in its state and an Error to the directory address
    of the client, answers the directory address (never the From) naming it as ``peer``; the
    client's answer sends a follow-up, so a replayed answer would re-send it; commands keep a PAN
    in state ("keep"), wipe it ("forget") or are refused ("refuse")."""

    TRANSITIONS = {
        "START": {"ping": "WAIT", "CardCInitReq": ("ANSWERED", "PARKED", "START"),
                  "keep": "KEPT", "refuse": "START"},
        "WAIT": {"Error": "DONE", "timer:retry": "WAIT"},
        "PARKED": {"release": "ANSWERED"},
        "KEPT": {"forget": "DONE"},
    }

    def transaction_key(self, event):
        if getattr(event, "name", None) in ("keep", "forget", "refuse"):
            return "card-" + event.args["id"]
        return super().transaction_key(event)

    def on_CardCInitReq(self, state, event, now, shared):
        parsed = wire.unwrap(event, now)
        lid = CardCInitReq.load(parsed.body)["lid_ee"].native
        if lid.startswith(b"x"):
            der = refusal.error_wrapper("unspecifiedFailure", event.wrapper_der, now=now)
            return Outcome(parsed.rrpid.hex(), {"state": "START",
                                                "refusals": state.get("refusals", 0) + 1},
                           sends=(Send(CLIENT, "Error", der),),
                           refused=f"lid {lid!r} is not the client's (card {PAN})")
        outcome = super().on_CardCInitReq(state, event, now, shared)
        sends = tuple(dataclasses.replace(s, to=CLIENT) for s in outcome.sends)
        return dataclasses.replace(outcome, sends=sends, peer=CLIENT)

    def on_Error(self, state, event, now, shared):
        follow = wire.wrap("CardCInitReq", CardCInitReq({
            "rrpid": fresh(), "lid_ee": b"follow-up", "chall_ee": fresh(), "brand_id": "Visa"}),
            now=now)
        outcome = super().on_Error(state, event, now, shared)
        return dataclasses.replace(outcome, sends=(Send(SERVER, "CardCInitReq", follow),))

    def on_keep(self, state, event, now, shared):
        return Outcome("", {"state": "KEPT", "secret": {"pan": event.args["pan"]}})

    def on_forget(self, state, event, now, shared):
        return Outcome("", {"state": "DONE", "last4": state["secret"]["pan"][-4:]})

    def on_refuse(self, state, event, now, shared):
        return Outcome("", {"state": "START", "noted": True}, refused="not now")


@pytest.fixture
def world(tmp_path):
    with two_agents(tmp_path, GuardRole) as (agents, _, _):
        yield agents


def request(client: Agent, lid: str = "good") -> bytes:
    """The raw mail of the client's CardCInitReq (built, queued, not sent)."""
    cmdq.submit(client.store, "ping", {"id": lid + fresh(4).hex(), "to": SERVER, "lid": lid})
    client.process_commands()
    return client.store.outbox()[-1].raw


def resent_from(raw: bytes, sender: str, der: bytes | None = None) -> bytes:
    """The same SET content (or ``der``) in a new mail with another From and Message-ID."""
    mail = parse_mail(raw, max_size=1 << 20)
    return build_mail(der or mail.der, content_type=mail.content_type, sender=sender,
                      recipient=mail.recipient, message_id=f"{fresh(6).hex()}@evil.example",
                      subject=mail.subject)


def deliver_and_process(agent: Agent, cfg, *raws: bytes) -> list[str]:
    keys = [maildir.deliver(cfg.maildir, raw) for raw in raws]
    return [agent.process_mail(k) for k in keys]


def details(agent: Agent) -> list[tuple[str, str | None]]:
    return agent.store.query("SELECT status, detail FROM processed_mail ORDER BY processed_at, "
                             "rowid")


def test_a_refused_forgery_first_never_blocks_the_genuine_mail(world, caplog):
    """Issue 12 point 2: a forged copy with the genuine RRPID (one byte changed) arrives first;
    it is refused and leaves no dedupe record, so the genuine mail is processed, not taken for a
    duplicate.  The refusal's note and its Error (to the directory address, not the From) are
    committed; one WARNING line says why, without the PAN the role put in its reason."""
    client, server = world["client"], world["server"]
    scfg = server.config
    genuine = request(client, "good")
    der = parse_mail(genuine, max_size=1 << 20).der
    forged = der.replace(b"good", b"xood", 1)
    assert forged != der and len(forged) == len(der)
    caplog.set_level(logging.INFO, "setmail.agent")
    txkey = "tx/" + server.role.transaction_key(received(der, CLIENT, "x@y", None))
    statuses = deliver_and_process(server, scfg, resent_from(genuine, MALLORY, forged),
                                   resent_from(genuine, MALLORY, forged))
    assert statuses == ["refused", "refused"]  # the repeat of a refusal: the role asked again
    assert server.store.get_state(txkey) == {"state": "START", "refusals": 2}
    assert server.store.lookup_dedupe(hashlib.sha256(forged).digest()) is None
    assert deliver_and_process(server, scfg, genuine) == ["done"]
    assert server.store.get_state(txkey) == {"state": "ANSWERED"}
    assert server.stats["refused"] == 2 and server.stats["in"] == 1
    assert server.store.lookup_dedupe(hashlib.sha256(der).digest()) is not None
    errors = [r for r in server.store.outbox() if b"Subject: SET Error" in r.raw]
    assert len(errors) == 3 and {r.recipient for r in errors} == {CLIENT}  # 2 refusals + answer
    (status, detail), = [d for d in details(server) if d[0] == "refused"][:1]
    assert detail.startswith("lid b'xood' is not the client's") and PAN not in detail
    refused = [r for r in caplog.records if "REFUSED" in r.getMessage()]
    assert len(refused) == 2 and all(r.levelno == logging.WARNING for r in refused)
    line = refused[0].getMessage()
    assert "REFUSED CardCInitReq tx=" in line and PAN not in line and "[digits]" in line


def test_a_replayed_response_is_absorbed_and_answers_nothing(world):
    """Issue 12 point 7: the client's answer to a response (its follow-up) is never re-sent when
    the response comes again, whoever sends it: no amplification, no loop."""
    client, server = world["client"], world["server"]
    raw = request(client)
    client.send_due()
    [server.process_mail(k) for k in server.recover()]
    server.send_due()
    answer_key = client.recover()[0]
    answer = maildir.read(client.config.maildir, answer_key)
    assert client.process_mail(answer_key) == "done"
    followups = len(client.store.outbox())
    assert followups == 1 and raw
    replays = [answer, resent_from(answer, MALLORY), answer]
    assert deliver_and_process(client, client.config, *replays) == ["duplicate"] * 3
    assert len(client.store.outbox()) == followups
    assert client.stats["absorbed"] == 3
    assert [d for _, d in details(client)][-1].endswith("response absorbed")


def test_a_repeated_request_gets_its_answers_at_most_max_resends_times(world, caplog):
    """An exact repeat of a request (a relay, the peer's retry) is answered again from the
    dedupe record, to where the answer went the first time (not the replay's From), and only
    MAX_RESENDS times: a replayed request cannot make an agent send without end."""
    client, server = world["client"], world["server"]
    raw = request(client)
    caplog.set_level(logging.INFO, "setmail.agent")
    assert deliver_and_process(server, server.config, raw) == ["done"]
    replays = [resent_from(raw, MALLORY) for _ in range(MAX_RESENDS + 3)]
    assert set(deliver_and_process(server, server.config, *replays)) == {"duplicate"}
    out = server.store.outbox()
    assert len(out) == 1 + MAX_RESENDS and {r.recipient for r in out} == {CLIENT}
    assert len({r.raw for r in out}) == 1
    digest = hashlib.sha256(parse_mail(raw, max_size=1 << 20).der).digest()
    assert server.store.lookup_dedupe(digest).resends == MAX_RESENDS
    tail = [d for _, d in details(server)][-3:]
    assert all(d.endswith(f"re-send limit ({MAX_RESENDS}) reached, absorbed") for d in tail)
    assert [r.levelno for r in caplog.records if "limit" in r.getMessage()] == [
        logging.WARNING] * 3
    assert server.stats["duplicates"] == MAX_RESENDS + 3 and server.stats["absorbed"] == 3


def test_a_from_that_disagrees_with_the_signer_is_logged(world, caplog):
    client, server = world["client"], world["server"]
    raw = request(client)
    caplog.set_level(logging.INFO, "setmail.agent")
    assert deliver_and_process(server, server.config, resent_from(raw, MALLORY)) == ["done"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and MALLORY in warned[0] and CLIENT in warned[0]
    assert "is not the signer's directory address" in warned[0]
    (answer,) = server.store.outbox()
    assert answer.recipient == CLIENT  # the role answered the directory address
    caplog.clear()
    assert deliver_and_process(server, server.config, request(client, "two")) == ["done"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # From == peer


def test_a_bad_answers_digest_is_logged_and_changes_nothing_else(world, caplog):
    server = world["server"]
    outcome = Outcome("t", {"state": "ANSWERED"}, sends=(
        Send(CLIENT, "Error", b"\x30\x00", answers="not-hex"),
        Send(CLIENT, "Error", b"\x30\x00", answers="ab" * 32)))  # a digest without a record
    caplog.set_level(logging.INFO, "setmail.agent")
    server._commit("t", outcome)
    assert len(server.store.outbox()) == 2 and server.store.get_state("tx/t")
    assert any("Send.answers must be" in r.getMessage() for r in caplog.records)


def files_holding(home: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and needle in p.read_bytes())


def test_a_pan_is_gone_from_every_file_once_wiped(world):
    """A command carrying a PAN, then a state holding it, then the wipe: afterwards no file of
    the agent's home (state.db, -wal, -shm, keys, lock) holds the PAN's bytes."""
    client = world["client"]
    home = client.config.home
    pan = PAN.encode()
    cmdq.submit(client.store, "ping", {"id": "p", "to": SERVER, "pan": PAN})  # not kept
    assert files_holding(home, pan) == ["state.db-wal"]
    assert client.process_commands() == 1
    assert files_holding(home, pan) == []  # the redaction's checkpoint
    cmdq.submit(client.store, "keep", {"id": "c1", "pan": PAN})
    assert client.process_commands() == 1
    assert files_holding(home, pan)  # the state keeps it for now (state.db after checkpoint)
    assert client.store.get_state("tx/card-c1")["secret"] == {"pan": PAN}
    cmdq.submit(client.store, "forget", {"id": "c1"})
    assert client.process_commands() == 1
    assert client.store.get_state("tx/card-c1") == {"state": "DONE", "last4": PAN[-4:]}
    assert files_holding(home, pan) == []
    assert {p.name for p in home.iterdir()} >= {"state.db", "agent.lock"}


def test_a_refused_command_fails_with_the_role_note_committed(world):
    client = world["client"]
    cid = cmdq.submit(client.store, "refuse", {"id": "r"})
    client.process_commands()
    row = cmdq.get(client.store, cid)
    assert (row.status, row.detail, row.args) == ("failed", "not now", {"id": "(redacted)"})
    assert client.store.get_state("tx/card-r") == {"state": "START", "noted": True}
