"""The issuer's statement over real SMTP: a captured purchase, ``setmail statement alice --mail``,
the bank's agent signs and mails it, alice's agent verifies and keeps it (``--received``); a
Statement signed by the gateway is refused and kept nowhere; the ledger's invariant holds."""
from __future__ import annotations

import json
import time

import pytest

from setmail.asn1.codec.fastder import encode
from setmail.asn1.statement import StatementData
from setmail.crypto.cms import Identity
from setmail.crypto.operators import S
from setmail.crypto.suite import fresh
from setmail.roles.statements import statement_fields
from setmail.roles.wire import wrap
from setmail.world.keys import load_cert, load_key
from tests.e2e_world import RunningWorld, minor_units, run_cli
from tests.ledger_check import assert_ledger_holds


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    world = RunningWorld(tmp_path_factory.mktemp("issuer") / "world")
    world.start_smtp()
    world.start()
    try:
        code, _, err = run_cli("register", "alice", "--wait", "90", "--home", str(world.home))
        assert code == 0, err + world.log("alice")
        yield world
    finally:
        world.stop()


def kept(w) -> list[dict]:
    code, out, err = run_cli("statement", "alice", "--received", "--json", "--home", str(w.home))
    assert code == 0, err
    return minor_units(json.loads(out))


def wait_kept(w, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = kept(w)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"alice keeps {len(kept(w))} statements\n" + w.log("bank")[-2000:]
                         + w.log("alice")[-2000:])


def test_a_statement_mailed_by_the_issuer_is_kept_by_the_wallet(w):
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             "12.34", "--description", "statement e2e", "--wait", "60",
                             "--json", "--home", str(w.home))
    result = json.loads(out)
    assert code == 0 and result["state"] == "APPROVED", err
    w.wait_state("bank", result["xid"], "POSTED")
    code, out, err = run_cli("statement", "alice", "--mail", "--home", str(w.home))
    assert code == 0 and "queued" in out, err
    (statement,) = wait_kept(w, 1)
    body = statement["statement"]
    assert statement["issuer"] == w.world.agent("bank").address == body["issuer"]
    (card,) = body["cards"]
    mine = [e for e in card["entries"] if e["xid"] == result["xid"]]
    assert [e["kind"] for e in mine] == ["hold", "release", "post"]
    assert card["posted_pending"] >= 1234 and card["balance"] >= 1234
    code, out, _ = run_cli("statement", "alice", "--received", "--home", str(w.home))
    assert code == 0 and "4111111111111111" not in out and "…1111" in out
    assert_ledger_holds(w)
    code, out, _ = run_cli("ledger", "--check", "--home", str(w.home))
    assert code == 0 and "the invariant holds" in out


def test_a_statement_signed_by_the_gateway_is_refused(w):
    keys = w.world.keys_dir("gateway")
    gateway = Identity(load_key(keys / "sig.key.pem"), load_cert(keys / "sig.cert.pem"))
    before = len(kept(w))
    fields = statement_fields({"issuer": w.world.agent("bank").address, "holder": "alice",
                               "issued": "2026-01-01T00:00:00+00:00", "cards": []}, fresh(16))
    from datetime import datetime, timezone
    der = wrap("Statement", S(gateway, "StatementData", encode(StatementData, fields),
                              certs=(gateway.cert,)),
               now=datetime.now(timezone.utc).replace(microsecond=0))
    w.deliver("alice", der, sender=w.world.agent("bank").address, message_type="Statement",
              message_id=f"<forged-{fresh(4).hex()}@evil.example>")
    deadline = time.monotonic() + 20
    while "Statement refused" not in w.log("alice") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Statement refused" in w.log("alice")
    assert len(kept(w)) == before
