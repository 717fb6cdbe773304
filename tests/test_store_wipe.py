"""A wiped secret is gone from every file of a real SQLite store (database, WAL, shared memory):
secure_delete zeroes it in the database file, the TRUNCATE checkpoint after the wiping commit
empties the WAL; a checkpoint another process's reader makes busy is tried again."""
import sqlite3
import time
from pathlib import Path

from setmail.store import Store

PAN = b"4111111111111111"


def files_holding(root: Path, needle: bytes = PAN) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def put_secret(store: Store, key: str = "tx/a") -> None:
    with store.transaction(now=1.0) as tx:
        tx.put_state(key, {"state": "SENT", "secret": {"pan": PAN.decode(), "expiry": "202912"}})
        for i in range(50):  # enough other pages that the secret's page is not the only one
            tx.put_state(f"tx/other-{i}", {"state": "DONE", "pad": "x" * 500})


def test_a_wiped_secret_is_in_no_file(tmp_path):
    with Store(tmp_path / "state.db") as store:
        put_secret(store)
        assert files_holding(tmp_path) == ["state.db-wal"]
        with store.transaction(now=1.5) as tx:  # an unrelated commit: nothing to checkpoint for
            tx.put_state("tx/b", {"state": "DONE"})
        assert files_holding(tmp_path) == ["state.db-wal"]
        with store.transaction(now=2.0) as tx:
            assert tx.state_secret("tx/a") == {"pan": PAN.decode(), "expiry": "202912"}
            assert tx.state_secret("tx/b") is None and tx.state_secret("tx/none") is None
            tx.put_state("tx/a", {"state": "DONE"})
            tx.note_wipe()
        assert files_holding(tmp_path) == [] and not store.wipe_pending
        assert (tmp_path / "state.db-wal").stat().st_size == 0
        assert store.get_state("tx/a") == {"state": "DONE"}


def test_a_deleted_row_is_zeroed_in_the_database_file(tmp_path):
    """The same with the row deleted and the secret already checkpointed into the database
    file before: without secure_delete its bytes would stay in the freed space of the page."""
    with Store(tmp_path / "state.db") as store:
        put_secret(store)
        store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert files_holding(tmp_path) == ["state.db"]
        with store.transaction(now=2.0) as tx:
            tx.delete_state("tx/a")
            tx.note_wipe()
        assert files_holding(tmp_path) == []


def test_without_a_wipe_the_wal_still_holds_it(tmp_path):
    """Why the checkpoint: replacing the state alone leaves the old page image in the WAL."""
    with Store(tmp_path / "state.db") as store:
        put_secret(store)
        with store.transaction(now=2.0) as tx:
            tx.put_state("tx/a", {"state": "DONE"})
        assert files_holding(tmp_path) == ["state.db-wal"]


def test_a_busy_checkpoint_is_tried_again(tmp_path):
    path = tmp_path / "state.db"
    with Store(path) as store:
        put_secret(store)
        reader = sqlite3.connect(path, isolation_level=None)  # the CLI, polling a state
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM role_state").fetchone()[0] == 51
        with store.transaction(now=2.0) as tx:
            tx.put_state("tx/a", {"state": "DONE"})
            tx.note_wipe()
        assert store.wipe_pending  # not an error: the commit stands
        assert store.get_state("tx/a") == {"state": "DONE"}
        # the agent waits no longer than the pause before the next try (its poll ends then)
        assert 0 < store.wipe_due_in() <= Store.CHECKPOINT_RETRY
        time.sleep(Store.CHECKPOINT_RETRY)
        assert store.wipe_due_in() == 0
        assert not store.retry_wipe()  # the reader still holds its snapshot
        assert store.wipe_due_in() > 0  # and it is not tried again at once
        reader.execute("COMMIT")
        reader.close()
        time.sleep(Store.CHECKPOINT_RETRY)
        assert store.retry_wipe() and not store.wipe_pending and store.wipe_due_in() is None
        assert files_holding(tmp_path) == []
        assert store.retry_wipe()  # nothing owed: nothing done


def test_close_pays_a_checkpoint_still_owed(tmp_path):
    path = tmp_path / "state.db"
    other = sqlite3.connect(path)  # another process keeps the database open: no auto-checkpoint
    store = Store(path)
    put_secret(store)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM role_state").fetchone()
    with store.transaction(now=2.0) as tx:
        tx.put_state("tx/a", {"state": "DONE"})
        tx.note_wipe()
    assert store.wipe_pending
    reader.execute("COMMIT")
    reader.close()
    store.close()
    assert files_holding(tmp_path) == []
    other.close()


def test_a_running_agents_wipes_share_one_deferred_checkpoint(tmp_path):
    """With ``wipe_delay`` (a running agent's), the checkpoint waits until it is due, then
    ``retry_wipe`` does it once for every wipe before it."""
    import time
    with Store(tmp_path / "state.db") as store:
        store.wipe_delay = 0.3
        put_secret(store, "tx/a")
        put_secret(store, "tx/b")
        for key in ("tx/a", "tx/b"):
            with store.transaction(now=2.0) as tx:
                tx.put_state(key, {"state": "DONE"})
                tx.note_wipe()
        assert store.wipe_pending and files_holding(tmp_path) == ["state.db-wal"]
        assert store.retry_wipe() is False  # not due yet: still owed
        time.sleep(0.35)
        assert store.retry_wipe() is True and not store.wipe_pending
        assert files_holding(tmp_path) == []
