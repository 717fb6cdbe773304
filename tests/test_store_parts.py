"""A role's shared state kept in parts (setmail.store.parts) on a real SQLite store: what is read
back is what was written, a step writes only the rows it changed, and a store from before parts
(one row) is read as it is and split by the first write."""
from __future__ import annotations

import pytest

from setmail.store import Store, parts

NAME, GATEWAY = "shared/gateway", ("batches/*/live/*/items",)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "gateway.db") as s:
        yield s


def _book(n: int) -> dict:
    items = [{"xid": f"{i:04x}", "kind": "capture", "amount": 100 + i, "seq": i + 1}
             for i in range(n)]
    return {"batches": {"ab12": {"mer_id": "m", "next": 3, "open": 2, "admin": ["r1"],
                                 "live": {"1": {"seq": 2, "items": items[:2], "full": True},
                                          "2": {"seq": n, "items": items, "full": False}}}},
            "brand": {"Visa": 4}}


def _save(store, old, new, split=True, now=1.0):
    with store.transaction(now=now) as tx:
        parts.save(tx, NAME, old, new, GATEWAY, split=split)


def _rows(store) -> dict[str, float]:
    return dict(store.query("SELECT txkey, updated_at FROM role_state WHERE txkey LIKE 'shared/%'"))


def test_round_trip_and_one_row_per_chunk(store):
    value = _book(200)
    _save(store, None, value, split=False)
    assert parts.load(store, NAME) == (value, True)
    # the root, 1 chunk of batch 1, 4 chunks (64 items each) of batch 2
    assert len(_rows(store)) == 1 + 1 + 4


def test_a_capture_writes_its_chunk_only(store):
    old = _book(200)
    _save(store, None, old, split=False)
    new = _book(201)
    _save(store, old, new, now=2.0)
    changed = {k for k, t in _rows(store).items() if t == 2.0}
    # the root (the batch's "seq" moved on) and the last chunk, not the 3 full ones before it
    assert changed == {NAME, parts.row_key(NAME, ("batches", "ab12", "live", "2", "items", 3))}
    assert parts.load(store, NAME)[0] == new


def test_removed_items_and_batches_leave_no_rows(store):
    old = _book(200)
    _save(store, None, old, split=False)
    new = _book(10)
    del new["batches"]["ab12"]["live"]["1"]
    _save(store, old, new, now=2.0)
    assert parts.load(store, NAME)[0] == new
    assert len(_rows(store)) == 1 + 1  # root and batch 2's one chunk


def test_a_store_from_before_parts_is_read_then_split(store):
    legacy = _book(100)
    with store.transaction(now=1.0) as tx:
        tx.put_state(NAME, legacy)
    assert parts.load(store, NAME) == (legacy, False)
    new = _book(101)
    _save(store, legacy, new, split=False, now=2.0)
    assert parts.load(store, NAME) == (new, True)
    assert len(_rows(store)) == 1 + 1 + 2


def test_empty_parts_and_other_roles_states(store):
    value = {"pending": {}, "4111": {"held": 5}}
    with store.transaction(now=1.0) as tx:
        parts.save(tx, "shared/ledger", None, value, ("pending",), split=False)
        parts.save(tx, "shared/brand", None, {"Visa": 1}, (), split=False)
    assert parts.load(store, "shared/ledger") == (value, True)
    assert parts.load(store, "shared/brand") == ({"Visa": 1}, False)
    assert parts.load(store, "shared/none") == (None, False)
    with store.transaction(now=2.0) as tx:
        new = {"pending": {"ab.cd/7": {"kind": "capture"}}, "4111": {"held": 5}}
        parts.save(tx, "shared/ledger", value, new, ("pending",), split=True)
    assert parts.load(store, "shared/ledger")[0] == new
    assert "4111" not in "".join(_rows(store))  # a PAN is never part of a row's key
