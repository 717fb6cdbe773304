"""roles.exchange: one outstanding request, the answers it accepts and what an Error may do to it.

Real keys and real DER throughout: the Errors are built by ``roles.refusal.error_wrapper`` (signed
or not), the request is a real PInitReq wrapper.
"""
from __future__ import annotations

import datetime as dt

import pytest

from setmail.crypto.suite import DEFAULT_SUITE, fresh
from setmail.errors import ProtocolError
from setmail.roles.base import CancelTimer, Inbound, Outcome, SetTimer
from setmail.roles.exchange import ENDS, NUDGE, UNRELATED, Exchange, pin, pin_matches
from setmail.roles.purchase_msgs import pinit_req
from setmail.roles.refusal import error_wrapper
from setmail.roles.wire import Parsed, wrap
from tests.minipki import NOW

EX = Exchange(retry_after=dt.timedelta(minutes=5), max_retries=2,
              nudge_after=dt.timedelta(seconds=30))
PEER = "gateway@gateway.example"


def GIVE_UP(why: str) -> Outcome:
    """What a role does when the re-sends are spent (here: say why)."""
    return Outcome("tx1", None, refused=why)


def request(rrpid: bytes, lid_c: bytes = b"C" * 16, xid: bytes = b"X" * 20) -> bytes:
    body = pinit_req(rrpid=rrpid, language="en", lid_c=lid_c, xid=xid, chall_c=b"c" * 20,
                     brand_id="Visa", bin_="411111")
    return wrap("PInitReq", body, now=NOW, rrpid=rrpid, lid_c=lid_c, lid_m=xid)


@pytest.fixture()
def asked(minipki):
    """A state with one PInitReq outstanding, pinned to the gateway-sig certificate's subject."""
    rrpid = fresh()
    der = request(rrpid)
    state: dict = {"state": "WAITING"}
    out = EX.ask(state, "tx1", to=PEER, type_name="PInitReq", der=der, rrpid=rrpid,
                 expects=("PInitRes",), pin_=pin(subject=minipki.parties["gateway-sig"].cert),
                 now=NOW)
    return out, der, rrpid


def error_event(code: str, offending: bytes, signer=None) -> Inbound:
    return Inbound("Error", error_wrapper(code, offending, now=NOW, signer=signer), "any@where")


def test_ask_sends_to_the_named_counterpart_and_sets_the_timer(asked):
    out, der, rrpid = asked
    assert [(s.to, s.message_type, s.wrapper_der) for s in out.sends] == [(PEER, "PInitReq", der)]
    (timer,) = out.timers
    assert isinstance(timer, SetTimer) and timer.due == NOW + EX.retry_after
    rec = EX.pending(out.state)
    assert rec["rrpid"] == rrpid.hex() and rec["attempts"] == 0 and rec["to"] == PEER


def test_resends_are_the_same_bytes_then_the_exchange_is_spent(asked):
    out, der, _ = asked
    state = out.state
    for attempt in (1, 2):
        again = EX.on_timer(state, "tx1", NOW, GIVE_UP)
        assert [s.wrapper_der for s in again.sends] == [der] and again.sends[0].to == PEER
        state = again.state
        assert EX.pending(state)["attempts"] == attempt
    assert EX.on_timer(state, "tx1", NOW, GIVE_UP).refused == "no answer to PInitReq after 2 re-sends"
    settled, timers = EX.settle(state)
    assert EX.pending(settled) is None and timers == (CancelTimer("retry"),)
    stale = EX.on_timer(settled, "tx1", NOW, GIVE_UP)
    assert stale.sends == () and stale.state == settled


def _parsed(type_name: str, rrpid: bytes) -> Parsed:
    return Parsed(type_name, b"", {"rrpid": rrpid, "message_ids": {}}, b"")


def test_accept_only_the_expected_type_rrpid_and_signer(asked, minipki):
    out, _, rrpid = asked
    gw, other = minipki.parties["gateway-sig"].cert, minipki.parties["merchant-sig"].cert
    assert EX.accept(out.state, _parsed("PInitRes", rrpid), gw)["rrpid"] == rrpid.hex()
    with pytest.raises(ProtocolError, match="another party"):
        EX.accept(out.state, _parsed("PInitRes", rrpid), other)
    with pytest.raises(ProtocolError, match="RRPID"):
        EX.accept(out.state, _parsed("PInitRes", fresh()), gw)
    with pytest.raises(ProtocolError, match="answers no request"):
        EX.accept(out.state, _parsed("PRes", rrpid), gw)
    with pytest.raises(ProtocolError, match="answers no request"):
        EX.accept({"state": "WAITING"}, _parsed("PInitRes", rrpid), gw)


def test_only_a_signed_error_from_the_counterpart_naming_our_bytes_ends_the_request(asked, minipki):
    out, der, rrpid = asked
    gw, other = minipki.parties["gateway-sig"], minipki.parties["merchant-sig"]
    forged_request = request(rrpid, lid_c=b"F" * 16)  # our clear RRPID on other bytes

    def verdict(event):
        return EX.judge(out.state, event, NOW, validate=None, suite=DEFAULT_SUITE)

    assert verdict(error_event("unknownXID", der, signer=gw)).kind == ENDS
    assert verdict(error_event("unknownXID", der, signer=gw)).code == "unknownXID"
    assert verdict(error_event("unknownXID", der)).kind == NUDGE            # unsigned
    assert verdict(error_event("unknownXID", der, signer=other)).kind == NUDGE  # not pinned
    assert verdict(error_event("unknownXID", forged_request, signer=gw)).kind == NUDGE
    assert verdict(error_event("unknownXID", request(fresh()), signer=gw)).kind == UNRELATED
    assert EX.judge({"state": "WAITING"}, error_event("unknownXID", der, signer=gw), NOW,
                    validate=None, suite=DEFAULT_SUITE).kind == UNRELATED


def test_an_error_whose_signer_fails_its_path_check_only_nudges(asked, minipki):
    out, der, _ = asked
    signed = error_event("unknownXID", der, signer=minipki.parties["gateway-sig"])

    def refuse(signer, included):
        raise ProtocolError("not a gateway certificate", "invalidCertificate")
    verdict = EX.judge(out.state, signed, NOW, validate=refuse, suite=DEFAULT_SUITE)
    assert verdict.kind == NUDGE and "unverifiable" in verdict.why


def test_a_nudge_brings_the_resend_forward_once_per_attempt(asked):
    out, _, _ = asked
    state, timers = EX.nudge(dict(out.state), "tx1", NOW)
    assert [t.due for t in timers] == [NOW + dt.timedelta(seconds=30)]
    again, timers = EX.nudge(state, "tx1", NOW)
    assert timers == () and again == state
    resent = EX.on_timer(state, "tx1", NOW, GIVE_UP).state  # the next attempt may be nudged again
    assert EX.nudge(resent, "tx1", NOW)[1] != ()


def test_pins(minipki):
    gw, gw_kex = minipki.parties["gateway-sig"].cert, minipki.parties["gateway-kex"].cert
    other = minipki.parties["merchant-sig"].cert
    assert pin_matches(pin(thumb=gw), gw) and not pin_matches(pin(thumb=gw), other)
    assert pin_matches(pin(subject=gw), gw) and not pin_matches(pin(subject=gw_kex), gw)
    assert not pin_matches(pin(mer_id="SHOP-0001"), gw)  # no merchantData: never a merchant
    assert pin_matches({}, gw) and not pin_matches({}, None)
