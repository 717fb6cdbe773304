"""The store's mail index (issue 16, ``store.mailindex``) in a running world over SMTP: every
processed mail has a row saying what its head said, and ``trace`` and ``mailbox list`` built
from it show exactly what a scan of every file shows — also for mail the index does not know
(processed before the upgrade), a file deleted under it, and mail moved to an archive folder.

One world for the module, two purchases; the tests that change files run last, each on its own
purchase."""
from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from setmail.mail import maildir
from setmail.mail.mime import parse_mail
from setmail.txview import trace
from tests.e2e_world import run_cli, started

AGENTS = ("alice", "shop", "gateway", "bank")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with started(tmp_path_factory.mktemp("index") / "world") as world:
        world.xids = [buy(world) for _ in range(2)]
        yield world


def buy(w) -> str:
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             "12.34", "--wait", "120", "--json", "--home", str(w.home))
    assert code == 0, err + out
    return json.loads(out)["xid"]


def files(w, name):
    """(folder, key, bytes) of every mail in ``name``'s new/, cur/ and quarantine."""
    root = w.world.maildir(name)
    for e in maildir.list_messages(root, include_quarantine=True):
        yield e.folder, e.key, maildir.read(root, e.key)


def scanned(w, xid):
    """The reference: (recipient, key) of every file whose head names ``xid``, found by reading
    every file of every Maildir (what ``trace`` did before the index)."""
    found = set()
    for name in AGENTS:
        for _, key, raw in files(w, name):
            if f" {xid}".encode() in raw[:raw.find(b"\r\n\r\n")]:
                found.add((name, key))
    return found


def db(w, name):
    return sqlite3.connect(w.world.store_path(name), timeout=30)


def wait_done(w, xid):
    """Every mail of ``xid`` processed (the last CapRes may still be on its way)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entries = trace(w.world, xid)
        if len(entries) == 12 and all(e.result == "accepted" for e in entries):
            return entries
        time.sleep(0.2)
    raise AssertionError(f"not all 12 mails of {xid} accepted: {entries}")


def test_every_processed_mail_is_indexed_with_what_its_head_says(w):
    for xid in w.xids:
        wait_done(w, xid)
    for name in AGENTS:
        con = db(w, name)
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT maildir_key, message_type, tx, sender, size, received_at FROM processed_mail")}
        con.close()
        on_disk = list(files(w, name))
        assert on_disk and len(rows) == len(on_disk)
        for folder, key, raw in on_disk:
            mail = parse_mail(raw, max_size=1 << 21)
            mtype, tx, sender, size, received = rows[key]
            assert (mtype, sender, size) == (mail.header("X-SET-Message-Type"), mail.sender,
                                             len(raw))
            assert mail.subject == f"SET {mtype} {tx}"
            assert abs(received - maildir.read_stamped(w.world.maildir(name), key)[1]) < 1e-3


def test_trace_from_the_index_finds_what_a_scan_of_every_file_finds(w):
    for xid in w.xids:
        entries = wait_done(w, xid)
        assert {(e.recipient, e.key) for e in entries} == scanned(w, xid)
        assert [e.message_type for e in entries][:3] == ["PInitReq", "PInitRes", "PReq"]
        assert [e.time for e in entries] == sorted(e.time for e in entries)


def test_mailbox_list_shows_the_newest_and_counts_the_rest(w):
    code, out, err = run_cli("mailbox", "list", "gateway", "--json", "--limit", "0",
                             "--home", str(w.home))
    everything = json.loads(out)
    assert code == 0 and len(everything) == len(list(files(w, "gateway"))), err
    assert all(r["status"] == "accepted" or r["status"] == "done" for r in everything)
    code, out, _ = run_cli("mailbox", "list", "gateway", "--json", "--limit", "3",
                           "--home", str(w.home))
    assert json.loads(out) == everything[-3:]
    code, text, err = run_cli("mailbox", "list", "gateway", "--limit", "3", "--home", str(w.home))
    assert f"({len(everything) - 3:,} older mail(s) not shown" in err
    assert len(text.strip().splitlines()) == 3


def test_the_sent_folder_is_listed_from_the_sent_log(w):
    code, out, _ = run_cli("mailbox", "list", "shop", "--sent", "--json", "--limit", "0",
                           "--home", str(w.home))
    sent = [r for r in json.loads(out) if r["folder"] == "sent"]
    root = w.world.maildir("shop")
    assert len(sent) == len(maildir.list_messages(root, include_sent=True)) - len(
        maildir.list_messages(root))
    for row in sent:
        mail = parse_mail(maildir.read(root, row["key"]), max_size=1 << 21)
        assert (row["type"], row["message_id"], row["subject"]) == (
            mail.header("X-SET-Message-Type"), mail.message_id, mail.subject)


def test_export_thread_reads_only_the_files_the_index_names(w, tmp_path):
    """``export-thread`` in a world reads the files its stores' index names for the purchase
    (received mails and Sent copies), and writes what reading every file writes."""
    from setmail.mail.export import export_mbox
    from setmail.txview.mails import purchase_files
    xid = w.xids[0]
    sources = {name: w.world.maildir(name) for name in w.world.agents}
    only = purchase_files(w.world, xid)
    assert all(only[name] is not None for name in AGENTS)
    everything = maildir.list_messages(w.world.maildir("shop"), include_quarantine=True,
                                       include_sent=True)
    assert len(only["shop"]) == len(everything) / 2  # one purchase of two: half the files
    scanned_all = export_mbox(sources, xid, tmp_path / "all.mbox")
    indexed = export_mbox(sources, xid, tmp_path / "indexed.mbox", only=only)
    assert [(m.agent, m.key) for m in indexed] == [(m.agent, m.key) for m in scanned_all]
    assert (tmp_path / "all.mbox").read_bytes() == (tmp_path / "indexed.mbox").read_bytes()


def test_mail_the_index_does_not_know_is_read_from_its_file(w):
    """As after an upgrade from a store without the index: the first purchase's rows at the
    gateway lose their facts; trace and mailbox list still show every mail, with its status."""
    xid = w.xids[0]
    before = trace(w.world, xid)
    con = db(w, "gateway")
    with con:
        gone = con.execute("UPDATE processed_mail SET size = NULL, tx = NULL WHERE tx LIKE ?",
                           (xid + "%",)).rowcount
    con.close()
    assert gone == 4  # AuthReq, IssAuthRes, CapReq, IssCapRes
    assert trace(w.world, xid) == before
    code, out, _ = run_cli("mailbox", "list", "gateway", "--json", "--limit", "0",
                           "--home", str(w.home))
    assert len(json.loads(out)) == len(list(files(w, "gateway")))


def test_a_deleted_file_is_not_shown_and_an_archived_one_still_is(w):
    xid = w.xids[1]
    entries = trace(w.world, xid)
    shop = [e for e in entries if e.recipient == "shop"]
    deleted, archived = shop[0].key, shop[1].key
    root = w.world.maildir("shop")
    os.unlink(next((root / "cur").glob(deleted + ":*")))
    path = next((root / "cur").glob(archived + ":*"))
    old = time.time() - 3 * 86400
    os.utime(path, (old, old))
    code, out, err = run_cli("mailbox", "archive", "shop", "--older-than", "1d",
                             "--home", str(w.home))
    assert code == 0 and "1 mail(s) -> .Archive." in out, out + err
    after = trace(w.world, xid)
    assert [e.key for e in after] == [e.key for e in entries if e.key != deleted]
    assert next(e for e in after if e.key == archived).result == "accepted"
    code, out, _ = run_cli("mailbox", "list", "shop", "--json", "--limit", "0",
                           "--home", str(w.home))
    assert {deleted, archived}.isdisjoint(r["key"] for r in json.loads(out))


def test_a_mail_processed_but_not_yet_marked_done_is_shown_once(w):
    """Between its commit and ``mark_done`` (or while a group commit holds it) a processed
    mail is in cur/ without the S flag: it is shown once, from its index row."""
    xid = w.xids[1]
    root = w.world.maildir("gateway")
    entry = next(e for e in trace(w.world, xid) if e.recipient == "gateway")
    done = next((root / "cur").glob(entry.key + ":*"))
    os.rename(done, root / "cur" / (entry.key + ":2,"))
    after = trace(w.world, xid)
    assert [e.key for e in after].count(entry.key) == 1
    assert next(e for e in after if e.key == entry.key).result == "accepted"
    code, out, _ = run_cli("mailbox", "list", "gateway", "--json", "--limit", "0",
                           "--home", str(w.home))
    assert [r["key"] for r in json.loads(out)].count(entry.key) == 1

