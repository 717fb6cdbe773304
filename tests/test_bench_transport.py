"""The transport benchmark's role: a chain is exactly a purchase's 12 mails, each a real SET
Error that passes the agents' strict decoding, with a fresh RRPID per hop (so no hop is taken
for a repeat of another) and the chain id as LID-C."""
import datetime as dt

from setmail.asn1.wrapper import decode_wrapper
from setmail.bench.transport import MAILS_PER_PURCHASE, PING, PONG, Bounce, _body
from setmail.roles.base import Command, Inbound

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_a_chain_is_twelve_distinct_mails_then_done():
    body = _body(6000)
    ping, pong = Bounce(body, 100, MAILS_PER_PURCHASE // 2), Bounce(body, 100, None)
    chain = "ab" * 16
    states = {PING: None, PONG: None}
    out = ping.step(None, Command("bounce", {"id": chain}), NOW)
    states[PING] = out.state
    mails, at = [], PING
    while out.sends:
        (send,) = out.sends
        mails.append(send.wrapper_der)
        wrapper = decode_wrapper(send.wrapper_der)  # strict, as the receiving agent does
        to, role = (PONG, pong) if at == PING else (PING, ping)
        event = Inbound("Error", send.wrapper_der, at, decoded=wrapper)
        assert role.transaction_key(event) == chain  # read from the header's LID-C
        out = role.step(states[to], event, NOW)
        states[to], at = out.state, to
    assert len(mails) == MAILS_PER_PURCHASE and states[PING]["state"] == "DONE"
    rrpids = {decode_wrapper(m)["message_header"]["rrpid"].native for m in mails}
    assert len(rrpids) == MAILS_PER_PURCHASE
    assert all(6000 < len(m) < 6400 for m in mails)
