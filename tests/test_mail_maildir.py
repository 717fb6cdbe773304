"""Durable Maildir on a real filesystem: delivery, two-phase consume, recovery, quarantine."""
import mailbox
import os
import threading

import pytest

from setmail.errors import MaildirError, MaildirKeyError
from setmail.mail import maildir as md


@pytest.fixture
def box(tmp_path):
    return md.ensure_maildir(tmp_path / "mailboxes" / "merchant")  # parents created too


def test_layout_and_delivery(box):
    assert sorted(p.name for p in box.iterdir()) == [".Sent", ".quarantine", "cur", "new", "tmp"]
    for folder in (".Sent", ".quarantine"):  # Maildir++ folders, as mail clients expect them
        assert sorted(p.name for p in (box / folder).iterdir()) == [
            "cur", "maildirfolder", "new", "tmp"]
    key = md.deliver(box, b"Subject: x\n\nbody\n")
    assert (box / "new" / key).read_bytes() == b"Subject: x\n\nbody\n"
    assert list((box / "tmp").iterdir()) == []
    assert md.read(box, key) == b"Subject: x\n\nbody\n"


def test_standard_maildir_reader_sees_our_messages_and_ignores_quarantine(box):
    keep = md.deliver(box, b"Subject: keep\n\nx\n")
    bad = md.deliver(box, b"Subject: bad\n\nx\n")
    md.quarantine(box, bad, "not a SET mail")
    reader = mailbox.Maildir(box, create=False)
    assert [m["Subject"] for m in reader] == ["keep"]
    md.claim(box, keep)
    md.mark_done(box, keep)
    assert reader.get_message(keep).get_flags() == "S"


def test_claim_mark_done_pending(box):
    a, b, c = (md.deliver(box, f"m{i}".encode()) for i in range(3))
    md.claim(box, a)
    assert (box / "cur" / f"{a}:2,").exists()
    md.claim(box, b)
    md.mark_done(box, b)
    assert (box / "cur" / f"{b}:2,S").exists()
    md.mark_done(box, b)  # idempotent
    pend = md.pending(box)
    assert [(e.key, e.folder) for e in pend] == [(a, "cur"), (c, "new")]
    with pytest.raises(MaildirKeyError):
        md.claim(box, a)  # already claimed: not in new/ any more
    with pytest.raises(MaildirKeyError):
        md.mark_done(box, c)  # never claimed
    listing = {e.key: e for e in md.list_messages(box)}
    assert listing[b].flags == "S" and listing[b].done and listing[b].size == 2
    assert listing[c].folder == "new"


def test_pending_is_oldest_first_and_ignores_dot_files(box):
    keys = [md.deliver(box, b"x") for _ in range(5)]
    for i, key in enumerate(keys):  # make mtimes strictly ordered, reversed from names
        os.utime(box / "new" / key, (1000 - i, 1000 - i))
    (box / "new" / ".hidden").write_bytes(b"ignored")
    (box / "cur" / ".hidden:2,").write_bytes(b"ignored")
    assert [e.key for e in md.pending(box)] == keys[::-1]


def test_key_in_new_and_cur_after_half_persisted_rename_is_listed_once(box):
    key = md.deliver(box, b"x")
    os.link(box / "new" / key, box / "cur" / f"{key}:2,")
    assert [(e.key, e.folder) for e in md.pending(box)] == [(key, "cur")]


def test_foreign_flags_are_kept_on_mark_done(box):
    key = md.deliver(box, b"x")
    os.rename(box / "new" / key, box / "cur" / f"{key}:2,R")
    assert [e.key for e in md.pending(box)] == [key]
    md.mark_done(box, key)
    assert (box / "cur" / f"{key}:2,RS").exists()
    assert md.pending(box) == []


def test_quarantine_from_new_and_from_cur(box):
    a, b = md.deliver(box, b"a"), md.deliver(box, b"b")
    md.claim(box, b)
    qa = md.quarantine(box, a, "wrong content type")
    md.quarantine(box, b, "bad signature: ünïcode")
    q = box / md.QUARANTINE
    assert qa == q / "new" / a and qa.read_bytes() == b"a"
    assert (q / "new" / b).read_bytes() == b"b"  # claimed (cur/K:2,): its flags do not follow
    assert md.reason(box, a) == "wrong content type" and md.reason(box, "nokey") is None
    assert (q / f"{a}.reason").read_text() == "wrong content type\n"
    assert (q / f"{b}.reason").read_text(encoding="utf-8") == "bad signature: ünïcode\n"
    assert md.pending(box) == [] and md.list_messages(box) == []
    assert md.read(box, b) == b"b"
    quarantined = md.list_messages(box, include_quarantine=True)
    assert {(e.key, e.folder) for e in quarantined} == {(a, "quarantine"), (b, "quarantine")}
    with pytest.raises(MaildirKeyError):
        md.quarantine(box, a, "again")  # no longer in new/ or cur/


@pytest.mark.parametrize("key", ["", "../x", ".quarantine", "a/b", "x:2,S"])
def test_bad_keys_refused(box, key):
    for op in (md.claim, md.mark_done, md.read):
        with pytest.raises(MaildirKeyError):
            op(box, key)


def test_unknown_key(box):
    with pytest.raises(MaildirKeyError) as info:
        md.read(box, "1.M1P1Q1.host")
    assert "no message" in str(info.value)


def test_many_writers_in_one_process_never_clash(box):
    keys, errors = [], []

    def writer(n):
        try:
            for i in range(50):
                keys.append(md.deliver(box, f"{n}-{i}".encode()))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(keys)) == 400
    assert len(os.listdir(box / "new")) == 400
    assert sorted(md.read(box, k) for k in keys) == sorted(
        f"{n}-{i}".encode() for n in range(8) for i in range(50))


def test_disk_failure_is_a_maildir_error(tmp_path):
    with pytest.raises(MaildirError):
        md.deliver(tmp_path / "missing", b"x")  # no tmp/ folder
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(MaildirError):
        md.ensure_maildir(tmp_path / "file" / "box")


def test_deliver_many_isolates_a_failing_maildir(box, tmp_path):
    """A group-committed batch: each item stands alone; a broken Maildir fails only its items."""
    other = md.ensure_maildir(tmp_path / "mailboxes" / "gateway")
    results = md.deliver_many([(box, b"one"), (tmp_path / "missing", b"lost"), (other, b"two"),
                               (box, b"three")])
    assert isinstance(results[1], MaildirError)
    keys = [results[0], results[2], results[3]]
    assert all(isinstance(k, str) for k in keys)
    assert [md.read(box, results[0]), md.read(other, results[2]), md.read(box, results[3])] == [
        b"one", b"two", b"three"]
    assert sorted(os.listdir(box / "new")) == sorted([results[0], results[3]])
    assert os.listdir(box / "tmp") == [] and os.listdir(other / "tmp") == []


def test_claim_returns_the_path_that_read_claimed_and_mark_done_use(box):
    key = md.deliver(box, b"claimed body")
    claimed = md.claim(box, key)
    assert claimed == str(box / "cur" / f"{key}:2,")
    assert md.read_claimed(box, key, claimed) == b"claimed body"
    md.mark_done(box, key, claimed=claimed)
    assert os.listdir(box / "cur") == [f"{key}:2,S"]
    md.mark_done(box, key, claimed=claimed)  # idempotent: the fast path misses, the scan finds S
    assert os.listdir(box / "cur") == [f"{key}:2,S"] and md.pending(box) == []


def test_claimed_path_stale_falls_back_to_lookup(box):
    """Someone renamed the claimed file meanwhile (a flag added by a mail client): read and
    mark_done still find the message by its key."""
    key = md.deliver(box, b"moved")
    claimed = md.claim(box, key)
    os.rename(claimed, claimed + "F")
    assert md.read_claimed(box, key, claimed) == b"moved"
    md.mark_done(box, key, claimed=claimed)
    assert os.listdir(box / "cur") == [f"{key}:2,FS"]
    with pytest.raises(MaildirKeyError):
        md.mark_done(box, "1.nothing.here", claimed=str(box / "cur" / "1.nothing.here:2,"))
