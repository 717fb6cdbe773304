"""``setmail queue list|cancel`` as a user types it, with no agent running: a queued purchase
is listed (names of its arguments only, never the card) and withdrawn before it can run."""
from __future__ import annotations

import json

from setmail.agent import commands as cmdq
from setmail.world import create_world, load_world
from tests.e2e_world import run_cli


def test_queued_commands_are_listed_and_cancelled(tmp_path):
    home = tmp_path / "w"
    create_world(home, smtp_port=2599, certificates="direct")
    h = ("--home", str(home))
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             "5.00", *h)
    assert code == 0, err
    code, out, _ = run_cli("queue", "list", "--json", *h)
    rows = [r for r in json.loads(out) if r["name"] == "buy"]
    assert code == 0 and len(rows) == 1 and rows[0]["status"] == "pending"
    assert rows[0]["command"].startswith("alice#") and "pan" in rows[0]["args"]
    assert "4111111111111111" not in out
    ref = rows[0]["command"]
    code, out, _ = run_cli("queue", "list", "--agent", "alice", *h)
    assert code == 0 and ref in out and "buy" in out
    code, out, _ = run_cli("queue", "cancel", ref, *h)
    assert code == 0 and "withdrawn" in out
    store = cmdq.open_store(load_world(home).store_path("alice"))
    try:
        row = cmdq.get(store, int(ref.split("#")[1]))
        assert row.status == "withdrawn" and row.args["pan"] == cmdq.REDACTED
    finally:
        store.close()
    code, _, err = run_cli("queue", "cancel", ref, *h)
    assert code == 1 and "withdrawn already" in err
    code, _, err = run_cli("queue", "cancel", "alice", *h)
    assert code == 2 and "AGENT#ID" in err
    code, _, err = run_cli("queue", "cancel", "nobody#1", *h)
    assert code == 2 and "no agent 'nobody'" in err
    code, out, _ = run_cli("queue", "list", "--all", "--json", *h)
    assert any(r["command"] == ref and r["status"] == "withdrawn" for r in json.loads(out))
