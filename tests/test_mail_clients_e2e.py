"""Maildirs that mail tools read well, over a running world (tests/e2e_world.py): each agent's
Sent folder, one thread per purchase (a JWZ threader, tests/jwz.py, and real mutt in tmux), the
quarantine as a Maildir++ folder, ``setmail export-thread`` read back with ``mailbox.mbox``.

One world for the module: a purchase (captured, inquired, refunded) and a purchase whose PInitReq
reached the merchant before its order (parked, answered by the order's step).
"""
from __future__ import annotations

import email
import json
import mailbox
import os
import re
import shutil
import subprocess
import sys
import time
from email.policy import compat32
from pathlib import Path

import pytest

from setmail.mail import maildir as md
from setmail.mail.threads import thread_root
from tests.e2e_world import REPO, run_cli, started
from tests.jwz import thread_files

AGENTS = ("alice", "shop", "gateway", "bank")
#: what each party sends in the first purchase: bought and captured, inquired, refunded
SENT = {
    "alice": {"PInitReq", "PReq", "InqReq"},
    "shop": {"PInitRes", "AuthReq", "PRes", "CapReq", "InqRes", "CredReq"},
    "gateway": {"IssAuthReq", "AuthRes", "IssCapReq", "CapRes", "IssCredReq", "CredRes"},
    "bank": {"IssAuthRes", "IssCapRes", "IssCredRes"},
}
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with started(tmp_path_factory.mktemp("mailclients") / "world") as world:
        yield world


def _mails(w, agent: str, *folders: str) -> list[bytes]:
    """Raw mails of ``agent``'s inbox (""), Sent (".Sent") or quarantine (".quarantine")."""
    root = w.world.maildir(agent)
    return [p.read_bytes() for f in folders for sub in ("new", "cur")
            for p in sorted((root / f / sub).glob("*"))]


def _head(raw: bytes):
    return email.message_from_bytes(raw, policy=compat32)


def _of(raws: list[bytes], xid: str) -> dict[str, str]:
    """Message-ID -> SET type of the mails of purchase ``xid`` (its Subject names it)."""
    heads = [_head(r) for r in raws]
    return {_ANGLE_ID.findall(h["Message-ID"])[0]: h["X-SET-Message-Type"] for h in heads
            if xid in h["Subject"]}


def _wait_sent(w, xid: str, want: dict[str, set[str]], timeout: float = 30) -> None:
    """Until every agent's Sent folder has the types ``want`` of purchase ``xid``: copies are
    filed after the 250, by the sender thread."""
    deadline = time.monotonic() + timeout
    while True:
        have = {a: set(_of(_mails(w, a, ".Sent"), xid).values()) for a in want}
        if all(have[a] >= want[a] for a in want):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Sent folders of {xid[:12]}: {have}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def bought(w) -> str:
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             "12.34", "--wait", "60", "--json", "--home", str(w.home))
    assert code == 0 and json.loads(out).get("captured"), out + err
    xid = json.loads(out)["xid"]
    code, out, err = run_cli("inquire", xid, "--wait", "30", "--home", str(w.home))
    assert code == 0 and "CAPTURED" in out, out + err
    code, out, err = run_cli("refund", xid, "--wait", "30", "--home", str(w.home))
    assert code == 0 and "REFUNDED" in out, out + err
    _wait_sent(w, xid, SENT)
    return xid


@pytest.fixture(scope="module")
def parked(w) -> str:
    """The cardholder's PInitReq first; the merchant parks it until the order comes."""
    from setmail.agent.commands import open_store, submit
    from setmail.crypto.suite import fresh
    from setmail.money import parse_amount
    world = w.world
    card = world.cards_of("alice")[0]
    xid = fresh(20).hex()
    amount, currency, exp10 = parse_amount("5.00", card.currency)
    order = {"xid": xid, "description": "parked order", "amount": amount, "currency": currency,
             "amt_exp10": exp10}

    def queue(agent: str, name: str, args: dict) -> None:
        store = open_store(world.store_path(agent))
        try:
            submit(store, name, args)
        finally:
            store.close()
    queue("alice", "buy", {**order, "merchant": world.agent("shop").address, "pan": card.pan,
                           "expiry": card.expiry, "brand": world.brand})
    w.wait_state("shop", xid, "PARKED")
    queue("shop", "order", {**order, "cardholder": world.agent("alice").address})
    w.wait_state("alice", xid, "APPROVED", timeout=60)
    w.wait_state("shop", xid, "CAPTURED")
    _wait_sent(w, xid, {"alice": {"PInitReq", "PReq"}, "shop": {"PInitRes", "PRes", "CapReq"},
                        "gateway": {"CapRes"}})
    return xid


# --- Sent -----------------------------------------------------------------------------------------
def test_each_agent_keeps_what_it_sent_and_it_is_what_the_others_received(w, bought):
    sent_ids: dict[str, str] = {}
    received: dict[str, str] = {}
    for agent in AGENTS:
        mine = _of(_mails(w, agent, ".Sent"), bought)
        assert set(mine.values()) == SENT[agent] and len(mine) == len(SENT[agent]), (agent, mine)
        assert all(_head(r)["From"] == w.world.agent(agent).address
                   for r in _mails(w, agent, ".Sent") if bought in _head(r)["Subject"])
        sent_ids |= mine
        received |= _of(_mails(w, agent, ""), bought)
    assert sent_ids == received  # one agent's mailbox (inbox + Sent) tells its whole side
    sent = mailbox.Maildir(w.world.maildir("shop"), create=False).get_folder("Sent")
    assert all(m.get_flags() == "S" and m.get_subdir() == "cur" for m in sent)
    code, out, _ = run_cli("mailbox", "list", "shop", "--sent", "--json", "--home", str(w.home))
    listed = {r["message_id"]: r["type"] for r in json.loads(out) if r["folder"] == "sent"}
    assert code == 0 and _of(_mails(w, "shop", ".Sent"), bought).items() <= listed.items()


# --- threads --------------------------------------------------------------------------------------
def _tree_of(roots, xid: str):
    """The one root whose tree holds the mails of ``xid``; every one of them is in it."""
    holding = [r for r in roots for _, c in r.walk()
               if c.message is not None and xid in c.message["Subject"]]
    trees = {id(r): r for r in holding}
    assert len(trees) == 1, f"{xid[:12]} is spread over {len(trees)} threads"
    return holding[0]


def test_one_thread_per_purchase_across_all_mailboxes(w, bought, parked):
    raws = [r for a in AGENTS for r in _mails(w, a, "", ".Sent")]
    roots = thread_files(raws)
    for xid, count in ((bought, 18), (parked, 12)):
        tree = _tree_of(roots, xid)
        assert tree.ident == thread_root(xid) and tree.message["X-SET-Message-Type"] == "PInitReq"
        inside = [c for _, c in tree.walk()]
        assert all(xid in c.message["Subject"] for c in inside)  # no other purchase's mail
        assert len(inside) == count == len(_of(raws, xid))
        depth = {c.message["X-SET-Message-Type"]: d for d, c in tree.walk()}
        assert depth["PInitRes"] == 1 and depth["PReq"] == 2 and depth["AuthReq"] == 3
        assert depth["PRes"] == 3  # the PReq's answer, sent once the issuer had answered
    parked_tree = {c.message["X-SET-Message-Type"]: c for _, c in _tree_of(roots, parked).walk()}
    assert parked_tree["PInitRes"].parent.ident == thread_root(parked)  # the parked one's answer


@pytest.mark.parametrize("agent", AGENTS)
def test_one_agents_mailbox_threads_its_side_of_each_purchase(w, bought, parked, agent):
    raws = _mails(w, agent, "", ".Sent")
    roots = thread_files(raws)
    for xid in (bought, parked):
        if _of(raws, xid):
            tree = _tree_of(roots, xid)
            assert sum(1 for _ in tree.walk()) == len(_of(raws, xid)) + (tree.message is None)


# --- quarantine ---------------------------------------------------------------------------------------
def test_the_quarantine_is_a_maildir_folder(w, bought):
    key = w.deliver("shop", b"\x30\x03\x02\x01\x07", sender="mallory@evil.example",
                    message_type="PReq", message_id="forged.1@evil.example")
    deadline = time.monotonic() + 30
    box = mailbox.Maildir(w.world.maildir("shop"), create=False)
    while key not in box.get_folder("quarantine") and time.monotonic() < deadline:
        time.sleep(0.05)
    folder = box.get_folder("quarantine")
    assert folder[key]["Message-ID"] == "<forged.1@evil.example>" and key not in box
    assert "MalformedMessage" in md.reason(w.world.maildir("shop"), key)
    code, out, _ = run_cli("mailbox", "list", "shop", "--json", "--home", str(w.home))
    [row] = [r for r in json.loads(out) if r["key"] == key]
    assert code == 0 and row["folder"] == "quarantine" and "MalformedMessage" in row["reason"]


# --- export ----------------------------------------------------------------------------------------------
def test_export_thread_writes_the_purchase_once_in_date_order(w, bought, tmp_path):
    target = tmp_path / "purchase.mbox"
    code, out, err = run_cli("export-thread", bought, "--mbox", str(target), "--home", str(w.home))
    assert code == 0 and "wrote 18 mails" in out, out + err
    msgs = list(mailbox.mbox(target, create=False))
    ids = [_ANGLE_ID.findall(m["Message-ID"])[0] for m in msgs]
    every = {i for a in AGENTS for i in _of(_mails(w, a, "", ".Sent"), bought)}
    assert len(ids) == len(set(ids)) == 18 and set(ids) == every
    assert ids[0] == thread_root(bought)
    dates = [email.utils.parsedate_to_datetime(m["Date"]) for m in msgs]
    assert dates == sorted(dates)
    assert {m["X-SET-Message-Type"] for m in msgs} == set().union(*SENT.values())
    raws = [m.as_bytes() for m in msgs]
    assert len(thread_files(raws)) == 1  # the export is one thread too
    code, _, err = run_cli("export-thread", "00" * 20, "--mbox", str(tmp_path / "x"),
                           "--home", str(w.home))
    assert code == 1 and "no mail of purchase" in err and not (tmp_path / "x").exists()
    # Maildirs gathered from the hosts: the merchant's and the cardholder's see 12 of them
    code, out, err = run_cli("export-thread", bought, "--mbox", str(target),
                             *(a for n in ("shop", "alice") for a in (
                                 "--maildir", str(w.world.maildir(n)))))
    assert code == 0 and "wrote 12 mails" in out, out + err
    assert len(mailbox.mbox(target, create=False)) == 12
    code, _, err = run_cli("export-thread", bought, "--mbox", str(target), "--maildir",
                           str(tmp_path))
    assert code == 2 and "not a Maildir" in err


# --- mutt ---------------------------------------------------------------------------------------------
def _mutt() -> str:
    if not (shutil.which("mutt") and shutil.which("tmux")):
        if os.geteuid() != 0:
            pytest.skip("mutt/tmux missing and only root can install them (scripts/install-mutt)")
        subprocess.run([str(REPO / "scripts" / "install-mutt")], check=True, timeout=900)
    return shutil.which("mutt")


class Tmux:
    """One tmux server of our own (its own socket): nothing else's sessions are touched."""

    def __init__(self):
        self.socket = f"setmail-test-{os.getpid()}"

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, text=True,
                              capture_output=True, timeout=30).stdout

    def screen_until(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.tmux("capture-pane", "-p", "-t", "mutt")
            if needle in screen or time.monotonic() > deadline:
                return screen
            time.sleep(0.2)


def _muttrc(tmp: Path, maildir: Path) -> Path:
    """The muttrc and mailcap of docs/mail-clients.md, pointed at this world."""
    setmail = Path(sys.executable).with_name("setmail")
    mailcap = tmp / "mailcap"
    mailcap.write_text(f"application/set-payment; {setmail} decode %s; copiousoutput\n"
                       f"application/set-registration; {setmail} decode %s; copiousoutput\n")
    rc = tmp / "muttrc"
    rc.write_text(f"""set mbox_type=Maildir
set folder={maildir}
set spoolfile=+
mailboxes + +.Sent +.quarantine
set read_only=yes
set sort=threads
set sort_aux=date-sent
set ascii_chars=yes
set index_format="%s"
set help=no
set header_cache=
set mailcap_path={mailcap}
auto_view application/set-payment application/set-registration
""")
    return rc


def test_mutt_shows_each_purchase_as_one_thread_of_nested_replies(w, bought, parked, tmp_path):
    mutt = _mutt()
    rc = _muttrc(tmp_path, w.world.maildir("shop"))
    tmux = Tmux()
    env = f"HOME={tmp_path} TERM=xterm LANG=C.UTF-8"
    tmux.tmux("new-session", "-d", "-s", "mutt", "-x", "200", "-y", "50",
              f"env {env} {mutt} -n -F {rc}")
    try:
        screen = tmux.screen_until(parked)
        lines = [line.rstrip() for line in screen.splitlines() if "SET " in line]
        for xid, count in ((bought, 6), (parked, 4)):  # the merchant's inbox: what it received
            mine = [line for line in lines if xid in line]
            assert len(mine) == count, screen
            start = lines.index(mine[0])
            assert lines[start:start + count] == mine, screen  # one thread: together
            prefixes = [line[:line.index("SET ")] for line in mine]
            assert prefixes[0] == "" and "SET PInitReq" in mine[0], screen  # one root
            assert all(p.endswith("->") for p in prefixes[1:]), screen  # the rest replies
            assert max(len(p) for p in prefixes) >= 5, screen  # nested: replies to replies
        tmux.tmux("send-keys", "-t", "mutt", "=", "Enter")  # the first mail, decoded by mailcap
        shown = tmux.screen_until("message_type: ")
        assert "Autoview using" in shown and "message_type: PInitReq" in shown, shown
        assert "xid: " in shown or "lid_m: " in shown, shown
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True,
                       timeout=30)
