"""Maildirs mail tools read: the quarantine and Sent as Maildir++ folders, purchase threads, the
mbox export.  Real files, Python's own ``mailbox`` reader and a JWZ threader (tests/jwz.py); the
same over a running world is tests/test_mail_clients_e2e.py."""
from __future__ import annotations

import datetime as dt
import mailbox

import pytest

from setmail.agent import mailout
from setmail.mail import maildir as md
from setmail.mail.export import export_mbox
from setmail.mail.mime import build_mail, parse_mail
from setmail.mail.threads import MAX_REFERENCES, reply_headers, thread_root
from setmail.roles.base import Send
from setmail.roles.wire import wrap
from tests.jwz import thread_files

XID = bytes(range(20))
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
ADDRESS = {"alice": "alice@cardholder.example", "shop": "shop@merchant.example",
           "gateway": "gateway@gateway.example", "bank": "bank@issuer.example"}


@pytest.fixture
def box(tmp_path):
    return md.ensure_maildir(tmp_path / "mailboxes" / "shop")


def _raw(n: int, **headers) -> bytes:
    return build_mail(b"\x30\x03\x02\x01" + bytes([n]), content_type="application/set-payment",
                      sender="a@x.example", recipient="b@y.example", message_id=f"m{n}@x.example",
                      subject=f"SET T{n} x", date=NOW, **headers)


# --- the folders ---------------------------------------------------------------------------------
def test_quarantine_is_a_maildir_folder_python_reads(box):
    keep, bad = md.deliver(box, _raw(1)), md.deliver(box, _raw(2))
    md.claim(box, bad)
    md.quarantine(box, bad, "BadSignature: not the merchant's")
    inbox = mailbox.Maildir(box, create=False)
    assert sorted(inbox.list_folders()) == ["Sent", "quarantine"]
    assert [m["Message-ID"] for m in inbox] == ["<m1@x.example>"] and keep in inbox
    quarantine = inbox.get_folder("quarantine")
    [(key, msg)] = quarantine.items()
    assert key == bad and msg["Message-ID"] == "<m2@x.example>" and msg.get_subdir() == "new"
    assert md.reason(box, bad) == "BadSignature: not the merchant's"  # beside, not in, the folder
    # a mail client reading it moves it to cur/ with flags: our readers follow
    msg.set_subdir("cur")
    msg.add_flag("S")
    quarantine[key] = msg
    assert (box / ".quarantine" / "cur" / f"{bad}:2,S").exists()
    assert [(e.key, e.folder) for e in md.list_messages(box, include_quarantine=True)
            if e.folder == "quarantine"] == [(bad, "quarantine")]
    assert parse_mail(md.read(box, bad), max_size=1 << 20).message_id == "m2@x.example"


def test_a_quarantine_of_the_old_flat_layout_moves_into_the_folder(tmp_path):
    root = tmp_path / "old"
    for sub in ("tmp", "new", "cur", ".quarantine"):
        (root / sub).mkdir(parents=True)
    (root / ".quarantine" / "123.M1P2.host").write_bytes(_raw(3))
    (root / ".quarantine" / "123.M1P2.host.reason").write_text("WrongMailContentType: x\n")
    md.ensure_maildir(root)
    folder = mailbox.Maildir(root, create=False).get_folder("quarantine")
    assert list(folder.keys()) == ["123.M1P2.host"]
    assert md.reason(root, "123.M1P2.host") == "WrongMailContentType: x"


def test_sent_copies_are_seen_filed_once_and_readable(box):
    a, b = _raw(4), _raw(5)
    sent = mailout.SentFolder(box)
    sent.keep(a)
    sent.keep(b)
    sent.keep(a)  # a re-send of the same mail
    sent.file()
    sent.keep(a)  # ... even in a later drain
    sent.file()
    folder = mailbox.Maildir(box, create=False).get_folder("Sent")
    assert sorted(m["Message-ID"] for m in folder) == ["<m4@x.example>", "<m5@x.example>"]
    assert all(m.get_subdir() == "cur" and m.get_flags() == "S" for m in folder)
    assert list(mailbox.Maildir(box, create=False).keys()) == []  # the inbox: nothing
    entries = md.list_messages(box, include_sent=True)
    assert {e.folder for e in entries} == {"sent"} and len(entries) == 2
    assert {md.read(box, e.key) for e in entries} == {a, b}


# --- threads -----------------------------------------------------------------------------------
def _send(sender: str, mtype: str, to: str, txkey: str, seq: int, request, answers=None,
          **ids) -> bytes:
    der = wrap(mtype, b"\x30\x00", now=NOW, rrpid=b"r" * 20, **ids)
    send = Send(ADDRESS[to], mtype, der, answers)
    return mailout.build(agent=sender, address=ADDRESS[sender], send=send, txkey=txkey, seq=seq,
                         now=NOW, request=parse_mail(request, max_size=1 << 20)
                         if request else None)[1]


def _ids(raw: bytes) -> str:
    return parse_mail(raw, max_size=1 << 20).message_id


def test_a_purchase_is_one_thread_of_true_replies():
    """The order of a purchase with a parked PInitReq, an inquiry and a refund: each party
    builds its mail from the mail it processes (or from a command: no request)."""
    xid, tag = XID.hex(), b"t" * 8
    p = dict(lid_m=XID, xid=XID)
    pinit = _send("alice", "PInitReq", "shop", xid, 1, None, lid_c=b"c" * 16, lid_m=XID)
    assert _ids(pinit) == thread_root(xid)
    retry = _send("alice", "PInitReq", "shop", xid, 2, None, lid_c=b"c" * 16, lid_m=XID)
    pinit_res = _send("shop", "PInitRes", "alice", xid, 1, None, _ids(pinit), **p)  # parked
    preq = _send("alice", "PReq", "shop", xid, 3, pinit_res, **p)
    auth_req = _send("shop", "AuthReq", "gateway", xid, 2, preq, **p)
    iss_req = _send("gateway", "IssAuthReq", "bank", f"{xid}.{tag.hex()}", 1, auth_req,
                    xid=XID, lid_m=tag)
    iss_res = _send("bank", "IssAuthRes", "gateway", "k", 1, iss_req, _ids(iss_req),
                    xid=XID, lid_m=tag)
    auth_res = _send("gateway", "AuthRes", "shop", f"{xid}.{tag.hex()}", 2, iss_res,
                     _ids(auth_req), **p)  # answered from the issuer's answer
    pres = _send("shop", "PRes", "alice", xid, 3, auth_res, _ids(preq), **p)
    inq = _send("alice", "InqReq", "shop", xid, 4, None, **p)  # a command
    inq_res = _send("shop", "InqRes", "alice", xid, 4, inq, _ids(inq), **p)
    cred = _send("shop", "CredReq", "gateway", xid, 5, None, **p)  # `setmail refund`
    cred_res = _send("gateway", "CredRes", "shop", f"{xid}.{tag.hex()}", 3, cred, _ids(cred),
                     **p)
    other = _send("alice", "PInitReq", "shop", "ff" * 20, 1, None, lid_m=b"\xff" * 20)
    mails = [pinit, retry, pinit_res, preq, auth_req, iss_req, iss_res, auth_res, pres, inq,
             inq_res, cred, cred_res]
    roots = thread_files(mails + [other])
    assert len(roots) == 2
    [purchase] = [r for r in roots if r.ident == thread_root(xid)]
    tree = {c.ident: c for _, c in purchase.walk()}
    assert set(tree) == {_ids(m) for m in mails}
    parent = {ident: c.parent.ident if c.parent else None for ident, c in tree.items()}
    chain = [pinit, pinit_res, preq, auth_req, iss_req, iss_res]
    assert [parent[_ids(m)] for m in chain[1:]] == [_ids(m) for m in chain[:-1]]
    assert parent[_ids(auth_res)] == _ids(auth_req) and parent[_ids(pres)] == _ids(preq)
    for child, mother in ((retry, pinit), (inq, pinit), (cred, pinit), (inq_res, inq),
                          (cred_res, cred)):
        assert parent[_ids(child)] == _ids(mother)
    # the wallet's own side (its inbox + Sent) still hangs from the PInitReq
    wallet = thread_files([pinit, retry, pinit_res, preq, pres, inq, inq_res])
    assert len(wallet) == 1 and wallet[0].ident == thread_root(xid)


def test_references_keep_the_root_and_the_latest_ancestors():
    chain = tuple(f"m{i}@x" for i in range(30))
    parent, refs = reply_headers("new@x", root="m0@x", request=(chain[-1], chain[:-1]))
    assert parent == "m29@x" and len(refs) == MAX_REFERENCES
    assert refs[0] == "m0@x" and refs[-1] == "m29@x" and refs[1:] == chain[-MAX_REFERENCES + 1:]
    # a request of another thread is no parent: the mail answers its own root
    assert reply_headers("a@x", root="r@x", request=("b@x", ("s@x",))) == ("r@x", ("r@x",))
    # not a purchase's mail, no request: no threading, as before
    assert reply_headers("a@x") == (None, ())
    assert reply_headers("a@x", request=("b@x", ("c@x",))) == ("b@x", ("c@x", "b@x"))


# --- export ------------------------------------------------------------------------------------
def test_export_keeps_one_copy_per_message_in_date_order(tmp_path):
    root = thread_root("ab" * 20)
    shop = md.ensure_maildir(tmp_path / "shop")
    alice = md.ensure_maildir(tmp_path / "alice")

    def mail(n: int, minute: int, **kw) -> bytes:
        return build_mail(b"\x30\x00", content_type="application/set-payment",
                          sender=f"p{n}@x.example", recipient="q@y.example",
                          message_id=root if n == 0 else f"m{n}@x.example", subject=f"SET T{n} k",
                          date=NOW + dt.timedelta(minutes=minute), **kw)
    first = mail(0, 0)
    second = mail(2, 1, in_reply_to=root, references=[root])
    forged = mail(3, 2, references=[root])
    unrelated = mail(4, 3)
    md.file_copies(alice / md.SENT, [("k0", first)])
    md.deliver(shop, first)
    md.deliver(alice, second)
    md.file_copies(shop / md.SENT, [("k2", second)])
    md.quarantine(shop, md.deliver(shop, forged), "BadSignature: forged")
    md.deliver(shop, unrelated)
    target = tmp_path / "out.mbox"
    written = export_mbox({"shop": shop, "alice": alice}, "AB" * 20, target)
    assert [m.message_id for m in written] == [root, "m2@x.example", "m3@x.example"]
    box = mailbox.mbox(target, create=False)
    msgs = list(box)
    assert [m["Message-ID"] for m in msgs] == [f"<{root}>", "<m2@x.example>", "<m3@x.example>"]
    assert msgs[0].get_from().startswith("p0@x.example ")
    assert msgs[2]["X-Setmail-Quarantined"] == "shop: BadSignature: forged"
    assert msgs[1].get_payload(decode=True) == b"\x30\x00"
    assert export_mbox({"shop": shop}, "cd" * 20, tmp_path / "none.mbox") == []
    assert not (tmp_path / "none.mbox").exists()
