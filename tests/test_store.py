"""The agent store on real SQLite files: atomic transactions, dedupe, outbox, timers, reopen."""
import sqlite3
import threading

import pytest

from setmail.errors import DedupeConflict, StoreError
from setmail.store import OutgoingMail, Store
from setmail.store.schema import SCHEMA_VERSION

DIGEST = bytes(range(32))  # the SHA-256 of a MessageWrapper DER
MAIL = OutgoingMail("merchant@merchant.example", "127.0.0.1", 2525, b"raw mail\r\n", "r1@gw")


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "agents" / "gateway.db") as s:
        yield s


def test_pragmas_and_schema_version(store):
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert store.schema_version == SCHEMA_VERSION >= 2


def test_state_round_trip_json_and_bytes(store):
    with store.transaction(now=10.0) as tx:
        tx.put_state("tx-1", {"state": "PReqSent", "amount": 1234, "items": [1, 2]})
        tx.put_state("tx-2", b"\x00opaque\xff")
        assert tx.get_state("tx-1")["amount"] == 1234  # reads see the transaction's writes
    assert store.get_state("tx-1") == {"state": "PReqSent", "amount": 1234, "items": [1, 2]}
    assert store.get_state("tx-2") == b"\x00opaque\xff"
    assert store.get_state("nope", "default") == "default"
    with store.transaction(now=11.0) as tx:
        tx.put_state("tx-1", {"state": "Done"})
        tx.delete_state("tx-2")
    assert store.state_keys() == ["tx-1"]
    assert store.get_state("tx-1") == {"state": "Done"}
    with pytest.raises(StoreError):
        with store.transaction(now=12.0) as tx:
            tx.put_state("tx-3", object())


def test_exception_inside_transaction_leaves_no_partial_rows(store):
    with store.transaction(now=1.0) as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS ledger (account TEXT, amount INTEGER)")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with store.transaction(now=2.0) as tx:
            tx.put_state("tx-1", {"s": 1})
            tx.record_dedupe(DIGEST, "AuthReq", [MAIL], txkey="tx-1")
            tx.enqueue(MAIL)
            tx.set_timer("resend:tx-1", 30.0, {"n": 1})
            tx.execute("INSERT INTO ledger VALUES (?, ?)", ("acct", -500))
            tx.mark_processed("key1", "done")
            tx.record_quarantine("key2", "bad")
            raise Boom()
    assert store.get_state("tx-1") is None
    assert store.lookup_dedupe(DIGEST) is None
    assert store.outbox() == [] and store.due_timers(1e9) == []
    assert store.query("SELECT * FROM ledger") == []
    assert store.processed_status("key1") is None and store.quarantined() == []
    # The store is usable afterwards, and a failing SQL statement also rolls everything back.
    with pytest.raises(StoreError):
        with store.transaction(now=3.0) as tx:
            tx.put_state("tx-1", {"s": 2})
            tx.execute("INSERT INTO no_such_table VALUES (1)")
    assert store.get_state("tx-1") is None


def test_transaction_object_is_dead_after_the_with(store):
    with store.transaction(now=1.0) as tx:
        pass
    with pytest.raises(StoreError):
        tx.put_state("late", 1)


def test_nested_transaction_refused(store):
    with store.transaction(now=1.0):
        with pytest.raises(StoreError):
            with store.transaction(now=1.0):
                pass


def test_dedupe_record_and_lookup(store):
    other = OutgoingMail("merchant@merchant.example", "127.0.0.1", 2525, b"second", "r2@gw")
    capreq = bytes(range(1, 33))
    with store.transaction(now=5.0) as tx:
        ids = [tx.enqueue(MAIL), tx.enqueue(other)]  # the agent queues what it records
        tx.record_dedupe(DIGEST, "AuthReq", [MAIL, other], txkey="tx-9")
        tx.record_dedupe(capreq, "CapReq")  # no response
    rec = store.lookup_dedupe(DIGEST)
    assert rec.responses == (MAIL, other) and rec.txkey == "tx-9" and rec.processed_at == 5.0
    # stored once: the record refers to the outbox rows; once sent, the bytes are the Sent copy's
    assert store.query("SELECT COUNT(*) FROM dedupe_response WHERE raw IS NULL")[0][0] == 2
    store.mark_sent_many(ids, now=6.0)
    assert [(r.message_id, r.raw) for r in store.lookup_dedupe(DIGEST).responses] == [
        (MAIL.message_id, None), (other.message_id, None)]
    assert (rec.digest, rec.msg_type, rec.resends) == (DIGEST, "AuthReq", 0)
    assert store.lookup_dedupe(capreq).responses == ()
    assert store.lookup_dedupe(bytes(32)) is None
    with pytest.raises(DedupeConflict):
        with store.transaction(now=6.0) as tx:
            tx.put_state("tx-9", "would be a second processing")
            tx.record_dedupe(DIGEST, "AuthReq", [MAIL])
    assert store.get_state("tx-9") is None
    with pytest.raises(StoreError, match="32 octets"):  # an RRPID is no dedupe key any more
        with store.transaction(now=6.0) as tx:
            tx.record_dedupe(DIGEST[:20], "AuthReq")


def test_dedupe_answers_added_later_and_resends_counted(store):
    late = OutgoingMail("cardholder@x", "127.0.0.1", 2525, b"PInitRes", "late@shop")
    with store.transaction(now=1.0) as tx:
        tx.record_dedupe(DIGEST, "PInitReq", txkey="tx-1")  # parked: no answer yet
    with store.transaction(now=2.0) as tx:
        tx.enqueue(late)
        tx.enqueue(MAIL)
        assert tx.add_dedupe_responses(DIGEST, [late])
        assert tx.add_dedupe_responses(DIGEST, [MAIL])
        assert not tx.add_dedupe_responses(bytes(32), [late])  # no such record: nothing added
        assert [tx.count_resend(DIGEST) for _ in range(3)] == [1, 2, 3]
        assert tx.count_resend(bytes(32)) == 0
    rec = store.lookup_dedupe(DIGEST)
    assert rec.responses == (late, MAIL) and rec.resends == 3
    assert store.query("SELECT COUNT(*) FROM dedupe_response")[0][0] == 2


def test_migration_from_v1_replaces_the_header_keyed_dedupe(tmp_path):
    """A V1 store (dedupe keyed by From, RRPID and type) opens as V2: its other tables keep their
    rows, the old dedupe records go (they cannot be re-keyed: the DER was not kept)."""
    from setmail.store.schema import V1
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1 + "PRAGMA user_version = 1;")
    conn.execute("INSERT INTO role_state VALUES ('tx/a', 'json', '{\"state\":\"DONE\"}', 1.0)")
    conn.execute("INSERT INTO dedupe VALUES ('peer@x', x'01', 'AuthReq', 'a', 1.0)")
    conn.execute("INSERT INTO dedupe_response VALUES ('peer@x', x'01', 'AuthReq', 0, 'p@x', "
                 "'h', 25, x'00', 'm@x')")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        assert store.get_state("tx/a") == {"state": "DONE"}
        assert store.query("SELECT COUNT(*) FROM dedupe")[0][0] == 0
        cols = [r[1] for r in store.query("PRAGMA table_info(dedupe)")]
        assert cols == ["digest", "msg_type", "txkey", "processed_at", "resends"]
        with store.transaction(now=2.0) as tx:
            tx.enqueue(MAIL)
            tx.record_dedupe(DIGEST, "AuthReq", [MAIL])
        assert store.lookup_dedupe(DIGEST).responses == (MAIL,)


def test_migration_from_v2_keeps_the_answers_stored_with_their_records(tmp_path):
    """A V2 store's answers held their own bytes; as V3 they keep them (new ones refer)."""
    from setmail.store.schema import V1, V2
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1 + V2 + "PRAGMA user_version = 2;")
    conn.execute("INSERT INTO dedupe VALUES (?, 'AuthReq', 'a', 1.0, 2)", (DIGEST,))
    conn.execute("INSERT INTO dedupe_response VALUES (?, 0, ?, ?, ?, ?, ?)",
                 (DIGEST, MAIL.recipient, MAIL.host, MAIL.port, MAIL.raw, MAIL.message_id))
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        rec = store.lookup_dedupe(DIGEST)
        assert rec.responses == (MAIL,) and rec.resends == 2


def test_outbox_due_sent_failed(store):
    with store.transaction(now=100.0) as tx:
        a = tx.enqueue(MAIL)
        b = tx.enqueue(MAIL, not_before=150.0)
    assert [r.id for r in store.due_outbox(100.0)] == [a]
    assert [r.id for r in store.due_outbox(150.0)] == [a, b]
    row = store.due_outbox(100.0)[0]
    assert (row.raw, row.attempts, row.created_at, row.mail) == (MAIL.raw, 0, 100.0, MAIL)
    assert store.mark_failed(a, "451 try later", 200.0)
    assert [r.id for r in store.due_outbox(199.0)] == [b]
    row = store.due_outbox(200.0)[1]  # b (due 150) comes before a (due 200)
    assert row.id == a and row.attempts == 1 and row.last_error == "451 try later"
    assert store.due_outbox(1e9, limit=1)[0].id == b  # earliest due first
    assert store.mark_sent(b, now=160.0)
    assert not store.mark_sent(b, now=161.0)  # already gone
    with store.transaction(now=162.0) as tx:
        c, d = tx.enqueue(MAIL), tx.enqueue(MAIL)
    assert store.mark_sent_many([c, b, d], now=163.0) == 2  # b was gone already
    assert [r.id for r in store.outbox()] == [a]
    assert [r[0] for r in store.query("SELECT sent_at FROM sent_log ORDER BY rowid")] == [
        160.0, 163.0, 163.0]
    assert store.mark_failed(a, "550 no such user", None)  # give up: row kept, never due
    assert store.due_outbox(1e9) == [] and store.outbox()[0].last_error == "550 no such user"
    assert store.outbox(include_dead=False) == []
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again


def test_a_non_durable_commit_commits_and_restores_full_sync(store, tmp_path):
    """mark_sent's kind of commit: atomic and visible to other connections, no fsync of its own,
    and the connection is back at synchronous=FULL afterwards, even when the body fails."""
    with store.transaction(now=1.0, durable=False) as tx:
        tx.put_state("k", 1)
    with pytest.raises(RuntimeError):
        with store.transaction(now=2.0, durable=False) as tx:
            tx.put_state("k", 2)
            raise RuntimeError("boom")
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2
    other = sqlite3.connect(store.path)
    assert other.execute("SELECT value FROM role_state WHERE txkey = 'k'").fetchone()[0] == "1"
    other.close()


def test_timers(store):
    with store.transaction(now=0.0) as tx:
        tx.set_timer("resend:tx-1", 30.0, {"msg": "PReq", "n": 1})
        tx.set_timer("resend:tx-2", 10.0)
    assert store.next_timer_at() == 10.0
    assert [t.key for t in store.due_timers(29.0)] == ["resend:tx-2"]
    with store.transaction(now=1.0) as tx:
        tx.set_timer("resend:tx-1", 60.0, {"msg": "PReq", "n": 2})  # moved, not duplicated
        assert tx.cancel_timer("resend:tx-2") and not tx.cancel_timer("resend:tx-2")
    assert store.due_timers(59.0) == []
    [timer] = store.due_timers(60.0)
    assert timer.payload == {"msg": "PReq", "n": 2} and timer.due_at == 60.0


def test_processed_and_quarantine_indexes(store):
    with store.transaction(now=7.0) as tx:
        tx.mark_processed("k1", "done", txkey="tx-1")
        tx.mark_processed("k2", "quarantined", detail="bad signature")
        tx.record_quarantine("k2", "bad signature", message_id="m2@x")
    assert store.processed_status("k1") == "done"
    assert store.processed_status("k3") is None
    [q] = store.quarantined()
    assert (q.maildir_key, q.reason, q.message_id, q.quarantined_at) == (
        "k2", "bad signature", "m2@x", 7.0)


def test_reopen_keeps_everything(tmp_path):
    path = tmp_path / "merchant.db"
    with Store(path) as store:
        with store.transaction(now=1.0) as tx:
            tx.put_state("tx-1", {"s": "x"})
            tx.record_dedupe(DIGEST, "AuthRes", [MAIL])
            oid = tx.enqueue(MAIL)
            tx.set_timer("t", 5.0, [1, 2])
            tx.execute("CREATE TABLE ledger (amount INTEGER)")
            tx.execute("INSERT INTO ledger VALUES (42)")
            tx.mark_processed("k", "done")
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.get_state("tx-1") == {"s": "x"}
        assert store.lookup_dedupe(DIGEST).responses == (MAIL,)
        assert [r.id for r in store.due_outbox(1.0)] == [oid]
        assert store.due_timers(5.0)[0].payload == [1, 2]
        assert store.query("SELECT amount FROM ledger") == [(42,)]
        assert store.processed_status("k") == "done"
    with pytest.raises(StoreError):
        store.get_state("tx-1")  # closed


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_unopenable_path_is_a_store_error(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError):
        Store(tmp_path / "file" / "x.db")
    (tmp_path / "garbage.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(tmp_path / "garbage.db")


def test_threads_share_a_store(store):
    def worker(n):
        for i in range(20):
            with store.transaction(now=float(i)) as tx:
                tx.put_state(f"w{n}-{i}", i)
                tx.enqueue(MAIL)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.state_keys()) == 80 and len(store.outbox()) == 80


def test_a_transaction_waits_for_another_writer_instead_of_failing(tmp_path):
    import sqlite3
    import threading
    import time as _time
    from setmail.store import Store
    path = tmp_path / "state.db"
    store = Store(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a CLI command, say, holding the write lock
    threading.Timer(0.6, lambda: other.execute("COMMIT")).start()
    start = _time.monotonic()
    with store.transaction(now=1.0) as tx:
        tx.put_state("tx/k", {"state": "DONE"})
    assert _time.monotonic() - start >= 0.5
    assert store.get_state("tx/k") == {"state": "DONE"}
    other.close()
    store.close()


def test_group_commit_holds_mail_back_until_the_flush(store):
    """Commits made without their own flush (``durable=False``) are atomic, but their outgoing
    mail is not due until ``flush`` (or any durable commit) has made the WAL durable."""
    with store.transaction(now=1.0, durable=False) as tx:
        first = tx.enqueue(MAIL)
    with store.transaction(now=1.0, durable=False) as tx:
        tx.enqueue(MAIL)
    assert len(store.outbox()) == 2 and store.due_outbox(2.0) == []
    assert store.next_send_at() is None  # the sender waits for the kick, it does not spin
    store.flush()
    assert store.next_send_at() == 1.0
    assert [r.id for r in store.due_outbox(2.0)] == [first, first + 1]
    with store.transaction(now=3.0, durable=False) as tx:
        tx.enqueue(MAIL)
    with store.transaction(now=3.0) as tx:  # a durable commit syncs the earlier frames too
        tx.put_state("k", 1)
    assert len(store.due_outbox(4.0)) == 3
    store.flush()  # nothing owed: no-op



_OPENER = """
import os, sys, time
from setmail.store import Store
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
with Store(sys.argv[1]) as s:
    print(s.schema_version)
"""


def test_processes_creating_one_store_at_once_all_open_it(tmp_path):
    """The agent and a cli command often create one store together: each reads the schema
    version again under the write lock, so none runs a migration the other already ran (it
    failed with 'index outbox_message_id already exists')."""
    import subprocess
    import sys
    for round_ in range(5):
        path, go = tmp_path / f"race{round_}.db", tmp_path / f"go{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", _OPENER, str(path), str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        go.touch()
        done = [p.communicate(timeout=60) for p in procs]
        assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, done)] == \
            [(0, str(SCHEMA_VERSION))] * 4, [err for _, err in done]


def test_migration_to_v4_lists_the_states_already_there(tmp_path):
    """V4 keeps a state's name and creation time in columns (``tx list``); the states written
    before the upgrade get them from their JSON, and new writes keep them current."""
    from setmail.store.schema import V1, V2, V3
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1 + V2 + V3 + "PRAGMA user_version = 3;")
    conn.execute("INSERT INTO role_state VALUES ('tx/a', 'json', ?, 1.0)",
                 ('{"state":"ORDERED","created":"2026-12-01T10:00:00+00:00","amount":5}',))
    conn.execute("INSERT INTO role_state VALUES ('n', 'json', '7', 1.0)")
    conn.execute("INSERT INTO role_state VALUES ('b', 'bytes', x'00ff', 1.0)")
    conn.commit()
    conn.close()
    with Store(path) as store:
        listed = "SELECT txkey, state_name, created FROM role_state ORDER BY txkey"
        assert store.query(listed) == [("b", None, None), ("n", None, None),
                                       ("tx/a", "ORDERED", "2026-12-01T10:00:00+00:00")]
        with store.transaction(now=2.0) as tx:
            tx.put_state("tx/a", {"state": "CAPTURED", "created": "2026-12-01T10:00:00+00:00"})
        assert store.query(listed)[2] == ("tx/a", "CAPTURED", "2026-12-01T10:00:00+00:00")
        assert store.get_state("tx/a")["state"] == "CAPTURED"


def test_a_start_after_a_clean_stop_skips_the_full_check_unless_the_file_changed(tmp_path):
    """``verify_unless_unchanged``: the stamp of a clean stop spares the next start reading the
    whole file; it is used once, and any change to the file (or no clean stop) means a full
    check, which finds damage."""
    path = tmp_path / "state.db"
    with Store(path) as store:
        with store.transaction(now=1.0) as tx:
            tx.put_state("tx/a", {"state": "DONE", "pad": "x" * 20000})
        assert store.verify_unless_unchanged()  # no stamp: checked
    Store(path).stamp_clean_stop()
    with Store(path) as store:
        assert not store.verify_unless_unchanged()  # as the clean stop left it
        assert store.verify_unless_unchanged()  # the stamp is used once
    Store(path).stamp_clean_stop()
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # damage written while the agent was stopped: page headers
        for page in range(1, size // 4096):
            fh.seek(page * 4096)
            fh.write(b"\xff" * 12)
    with Store(path) as store:
        with pytest.raises(StoreError):
            store.verify_unless_unchanged()
