"""Every party on its own host behind Postfix (issue 14, item 2): real Postfix instances relay
the SET mail between hosts, each delivering into its agents' Maildirs.

Five "hosts" on one box, each a Postfix instance with its own config, queue and data directory,
listening on its own loopback address (/work/shared/reference/postfix-multihost.md): the
cardholders', the merchant's, the gateway's, the issuer's and the certificate authorities' (the
brand runs the CCA, MCA and PCA: their Root and Brand CA keys stay in the world ``init`` wrote).
Each party runs from its bundle (``setmail export``) as ``setmail agent --home BUNDLE``.  The
merchant and the gateway register by mail with their CAs across hosts, alice too; the issuer
pins its gateway's certificates when they exist (D-130), handed over out of band as between
banks.  Then a purchase, and store-and-forward for real: the gateway's Postfix stops, purchases
queue at the merchant's Postfix, it starts again, they complete.

Needs root (Postfix binds port 25 and delivers as the ``setmail`` user); scripts/postfix-setup
installs Postfix when missing.
"""
from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from setmail.mail import maildir
from setmail.world import create_world, load_world
from tests.e2e_world import REPO, RunningWorld, minor_units, run_cli
from tests.test_bundles import bundle_files

#: host -> (address, domain, agents it runs)
HOSTS = {
    "cardholder": ("127.0.25.2", "cardholder.example", ("alice", "bob")),
    "merchant": ("127.0.25.3", "merchant.example", ("shop",)),
    "gateway": ("127.0.25.4", "gateway.example", ("gateway",)),
    "issuer": ("127.0.25.5", "issuer.example", ("bank",)),
    "ca": ("127.0.25.6", "ca.example", ("cca", "mca", "pca")),
}
RUN = ("alice", "shop", "gateway", "bank", "cca", "mca", "pca")  # bob's bundle is only checked
#: Postfix retries every second or two instead of minutes (the defaults: 300 s, 4000 s)
FAST = ("queue_run_delay=1s", "minimal_backoff_time=1s", "maximal_backoff_time=2s",
        "max_idle=5s")
SETUP = REPO / "scripts" / "postfix-setup"


def wait_for(what: str, check, timeout: float = 60.0, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


class Net(RunningWorld):
    """The hosts' Postfix instances and the agents' processes under one scratch folder (the
    agents' processes and logs as ``RunningWorld`` keeps them)."""

    def __init__(self, base: Path):  # noqa: super().__init__ would start a world of its own
        self.base = self.home = base
        self.world = create_world(base / "world", smtp_port=2599)  # certificates by mail
        self.procs: dict[str, subprocess.Popen] = {}
        (base / "logs").mkdir()
        (base / "mail").mkdir()
        os.chmod(base / "mail", 0o711)  # Postfix delivers as the setmail user: it passes here

    def bundle(self, name: str) -> Path:
        return self.base / "bundles" / name

    def etc(self, host: str) -> Path:
        return self.base / "pf" / host / "etc"

    def host_of(self, agent: str) -> str:
        return next(h for h, (_, _, names) in HOSTS.items() if agent in names)

    # -- set-up -----------------------------------------------------------------------------
    def export(self) -> None:
        for host, (ip, _, names) in HOSTS.items():
            for name in names:
                code, _, err = run_cli("export", name, str(self.bundle(name)), "--smtp",
                                       f"{ip}:25", "--mailboxes", str(self.base / "mail" / host),
                                       "--home", str(self.world.home))
                assert code == 0, err

    def configure(self) -> None:
        for host, (ip, _, names) in HOSTS.items():
            pf = self.base / "pf" / host
            routes = [f"--route={d}={i}" for h, (i, d, _) in HOSTS.items() if h != host]
            code, out, err = run_cli(
                "postfix-config", *(str(self.bundle(n)) for n in names),
                "--config-dir", str(pf / "etc"), "--listen", ip, "--queue-dir", str(pf / "spool"),
                "--data-dir", str(pf / "lib"), "--log", str(pf / "postfix.log"), *routes,
                "--routes-only", *(f"--set={s}" for s in FAST))
            assert code == 0 and "warning" not in out, err + out

    def postfix(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["postfix", "-c", str(self.etc(host)), *args],
                              capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} on {host}: {done.stderr}"
                                 + self.postfix_log(host))
        return done

    def postfix_log(self, host: str) -> str:
        path = self.base / "pf" / host / "postfix.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def queue(self, host: str) -> list[dict]:
        done = subprocess.run(["postqueue", "-c", str(self.etc(host)), "-j"],
                              capture_output=True, text=True, check=True)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def start(self, *names: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for name in names:
            log = open(self.base / "logs" / f"{name}.log", "a")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "setmail.cli.main", "agent", "--home",
                 str(self.bundle(name)), "--poll", "0.05"],
                env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    # -- observing ----------------------------------------------------------------------------
    def state(self, agent: str, xid: str, mer_id=None) -> dict:
        """``agent``'s state of purchase ``xid``, read from its bundle (``wait_state`` asks)."""
        from setmail.agent.commands import open_store
        from setmail.txview import purchase_states
        store = open_store(load_world(self.bundle(agent)).store_path(agent))
        try:
            found = [s for _, s in purchase_states(store, xid)]
        finally:
            store.close()
        return found[0] if found else {}

    def mails(self, agent: str, message_type: str) -> list[email.message.Message]:
        """The mails of ``message_type`` Postfix delivered to ``agent``, headers as delivered."""
        box = load_world(self.bundle(agent)).maildir(agent)
        found = (email.message_from_bytes(maildir.read(box, e.key))
                 for e in maildir.list_messages(box))
        return [m for m in found if m["X-SET-Message-Type"] == message_type]

    def ledger(self) -> dict:
        code, out, err = run_cli("ledger", "--json", "--home", str(self.bundle("bank")))
        assert code == 0, err
        return {a["holder"]: a for a in minor_units(json.loads(out))}

    def purchase(self, amount: str, n: int, *, wait: float = 0) -> str:
        """The shop front-end takes the order on the merchant's host; alice buys on hers."""
        description = f"teapot #{n}"
        code, xid, err = run_cli("order", "--amount", amount, "--description", description,
                                 "--cardholder-address", "alice@cardholder.example",
                                 "--home", str(self.bundle("shop")))
        assert code == 0, err
        code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop",
                                 "--amount", amount, "--description", description, "--xid",
                                 xid.strip(), "--home", str(self.bundle("alice")),
                                 *(["--wait", str(wait), "--json"] if wait else []))
        assert code == 0, err + self.log("alice") + self.log("shop")
        return xid.strip()

    # -- tear-down ----------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Every agent (Ctrl-C), then every Postfix, until its last daemon has exited."""
        self.stop()
        for host in HOSTS:
            if (self.etc(host) / "main.cf").exists():
                self.postfix(host, "stop", check=False)
        wait_for("every Postfix daemon to exit", lambda: not self._daemons(), 10)

    def _daemons(self) -> list[int]:
        """Postfix processes of these hosts still alive (qmgr and postlogd outlive `stop`)."""
        marks = [f"MAIL_CONFIG={self.etc(h)}".encode() for h in HOSTS]
        alive = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if any(m in env for m in marks):
                    alive.append(int(entry))
        return alive


@pytest.fixture(scope="module")
def net():
    if os.geteuid() != 0:
        pytest.skip("needs root: Postfix instances bind port 25 on loopback addresses of their "
                    "own and deliver as the setmail user (scripts/postfix-setup)")
    done = subprocess.run([str(SETUP), *(ip for ip, _, _ in HOSTS.values())],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"scripts/postfix-setup failed: {done.stderr}"
    # the setmail user must reach the Maildirs: a scratch folder outside pytest's private tmp
    base = Path(tempfile.mkdtemp(prefix="setmail-pf-", dir="/tmp"))
    os.chmod(base, 0o711)
    net = Net(base)
    try:
        net.export()
        net.configure()
        for host in HOSTS:
            net.postfix(host, "start")
        net.start(*RUN)
        yield net
    finally:
        net.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def received(mail: email.message.Message) -> list[str]:
    """The Received headers, newest first, each on one line."""
    return [" ".join(str(v).split()) for v in mail.get_all("Received", [])]


def test_registration_and_a_purchase_across_five_postfix_hosts(net):
    gw = load_world(net.bundle("gateway")).keys_dir("gateway")
    wait_for("the gateway's certificates from the PCA",
             lambda: all((gw / f).exists() for f in ("sig.cert.pem", "kex.cert.pem")),
             60, lambda: net.log("gateway") + net.log("pca"))
    pins = load_world(net.bundle("bank")).keys_dir("gateway")
    for file in ("sig.cert.pem", "kex.cert.pem"):  # the issuer pins them (D-130)
        shutil.copyfile(gw / file, pins / file)
    shop = load_world(net.bundle("shop"))
    wait_for("the shop's certificates and its copy of the gateway's",
             lambda: (shop.agent_home("shop") / "peers" / "gateway" / "kex.cert.pem").exists(),
             60, lambda: net.log("shop") + net.log("mca"))
    code, out, err = run_cli("register", "alice", "--wait", "60", "--home",
                             str(net.bundle("alice")))
    assert code == 0, err + net.log("alice") + net.log("cca")

    before = net.ledger()["alice"]
    xid = net.purchase("12.34", 1, wait=60)
    assert net.wait_state("alice", xid, ("APPROVED",))
    assert net.wait_state("shop", xid, ("CAPTURED",))["cap_code"] == "success"
    assert net.wait_state("bank", xid, ("POSTED",))
    after = net.ledger()["alice"]
    assert after["posted"] - before["posted"] == 1234 and after["held"] == before["held"]

    # every mail crossed two Postfix hosts: the sender's, then the recipient's
    preq = net.mails("shop", "PReq")[0]
    hops = received(preq)
    assert "by mx.merchant.example (Postfix)" in hops[0] and "[127.0.25.2]" in hops[0], hops
    assert "by mx.cardholder.example (Postfix)" in hops[1], hops
    auth = net.mails("gateway", "AuthReq")[0]
    assert [h.split(" by ")[1].split()[0] for h in received(auth)][:2] == [
        "mx.gateway.example", "mx.merchant.example"]
    assert net.mails("bank", "IssAuthReq") and net.mails("alice", "PRes")


def test_store_and_forward_while_the_gateway_host_is_down(net):
    before = net.ledger()["alice"]
    net.postfix("gateway", "stop")
    wait_for("the gateway's Postfix to stop", lambda: net.postfix(
        "gateway", "status", check=False).returncode != 0, 10)
    try:
        xids = [net.purchase(amount, n) for n, amount in ((2, "1.01"), (3, "2.02"))]
        # the AuthReqs wait in the merchant's queue, deferred: the next hop refuses connections
        def deferred():
            return [m for m in net.queue("merchant") if m["queue_name"] == "deferred" and any(
                r["address"] == "gateway@gateway.example"
                and "Connection refused" in r.get("delay_reason", "") for r in m["recipients"])]
        queued = wait_for("two AuthReqs deferred at the merchant's host",
                          lambda: len(deferred()) >= 2 and deferred(), 60,
                          lambda: net.log("shop") + net.postfix_log("merchant"))
        assert len(queued) == 2 and {m["sender"] for m in queued} == {"shop@merchant.example"}
        for xid in xids:
            assert net.state("shop", xid).get("state") not in ("AUTHORIZED", "CAPTURED")
        assert net.state("gateway", xids[0]) == {}
    finally:
        net.postfix("gateway", "start")
    subprocess.run(["postqueue", "-c", str(net.etc("merchant")), "-f"], check=True)
    for xid in xids:
        assert net.wait_state("alice", xid, ("APPROVED",))
        assert net.wait_state("shop", xid, ("CAPTURED",))
    wait_for("the merchant's queue to empty", lambda: not net.queue("merchant"), 30)
    after = net.ledger()["alice"]
    assert after["posted"] - before["posted"] == 101 + 202


def test_no_bundle_gained_a_secret_by_running(net):
    """After registrations and purchases the merchant's host still holds no card number (SET's
    dual signature keeps the PAN from it), and alice's none of bob's."""
    world = net.world
    for name, forbidden in (("shop", ("alice-visa", "bob-visa")), ("alice", ("bob-visa",))):
        data = b"".join(bundle_files(net.bundle(name)).values())
        assert len(data) > 10_000
        for card in forbidden:
            assert world.cards[card].pan.encode() not in data, (name, card)


def test_no_open_relay_and_our_size_limit(net):
    """A stranger (not the host's own agents) may only send to the host's own addresses, and
    Postfix announces the agents' own message size limit."""
    import smtplib

    from setmail.mail.smtpd import DEFAULT_SIZE_LIMIT
    ip = HOSTS["merchant"][0]
    with smtplib.SMTP(ip, 25, local_hostname="stranger.example",
                      source_address=("127.0.0.1", 0), timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == str(DEFAULT_SIZE_LIMIT)
        smtp.mail("mallory@stranger.example")
        code, text = smtp.rcpt("gateway@gateway.example")
        assert code == 554 and b"Relay access denied" in text
        code, text = smtp.rcpt("nobody@merchant.example")
        assert code == 550 and b"User unknown" in text
        assert smtp.rcpt("shop@merchant.example")[0] == 250
