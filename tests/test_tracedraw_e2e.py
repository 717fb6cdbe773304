"""``setmail trace`` pictures of real purchases over SMTP (tests/e2e_world.py), and the HTML one
rendered by headless Chromium: every mail of the purchase is an arrow in the terminal, in the
HTML, in the SVG and in the page the browser built; no card number reaches any of them.

One world for the module: alice buys at shop (12 mails, all accepted), then a stranger's forged
mail naming the purchase lands at shop and is quarantined: a 13th arrow, marked, in its own lane.
``SETMAIL_TRACE_PNG=docs/trace.png`` makes the browser test keep its screenshot there (README).
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from setmail.mail import maildir
from setmail.mail.mime import build_mail
from tests.e2e_world import REPO, RunningWorld, run_cli

PURCHASE = ["PInitReq", "PInitRes", "PReq", "AuthReq", "IssAuthReq", "IssAuthRes", "AuthRes",
            "PRes", "CapReq", "IssCapReq", "IssCapRes", "CapRes"]
STRANGER = "mallory@evil.example"
HEADS = re.compile(r"[▶◀]")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    world = RunningWorld(tmp_path_factory.mktemp("trace") / "world")
    world.start_smtp()
    world.start()
    try:
        code, out, err = run_cli("register", "alice", "--wait", "120", "--home", str(world.home))
        assert code == 0, err + world.log("alice")
        yield world
    finally:
        world.stop()


def buy(w, wait: bool = True) -> str:
    code, out, err = run_cli("buy", "--cardholder", "alice", "--merchant", "shop", "--amount",
                             "12.34", "--home", str(w.home),
                             *(["--wait", "120", "--json"] if wait else []))
    assert code == 0, err + out
    return json.loads(out)["xid"] if wait else out.strip()


@pytest.fixture(scope="module")
def xid(w):
    """A captured purchase, then a forged mail naming it (not even a MessageWrapper)."""
    xid = buy(w)
    w.wait_state("shop", xid, "CAPTURED", timeout=90)
    w.wait_state("bank", xid, "POSTED", timeout=90)
    raw = build_mail(b"\x30\x03\x02\x01\x00", content_type="application/set-payment",
                     sender=STRANGER, recipient=w.world.agent("shop").address,
                     message_id=f"<forged.{xid}@evil.example>", subject=f"SET PReq {xid}",
                     extra_headers={"X-SET-Message-Type": "PReq"})
    maildir.deliver(w.world.maildir("shop"), raw)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entries = trace_json(w, xid)
        if len(entries) == 13 and entries[-1]["result"] == "quarantined":
            return xid
        time.sleep(0.1)
    raise AssertionError(f"the forged mail was not quarantined: {entries}")


def trace_json(w, xid: str) -> list[dict]:
    code, out, err = run_cli("trace", xid, "--json", "--home", str(w.home))
    assert code == 0, err
    return json.loads(out)


def pans(w) -> list[str]:
    return [card.pan for card in w.world.cards.values()]


def expected(w, xid: str) -> list[tuple[str, str, str]]:
    """(type, from, to) of every mail, in the order `trace --json` lists them."""
    return [(e["message_type"], e["sender"], e["recipient"]) for e in trace_json(w, xid)]


def test_json_is_as_before(w, xid):
    entries = trace_json(w, xid)
    assert set(entries[0]) == {"time", "sender", "recipient", "message_type", "size", "result",
                               "key"}
    assert sorted(e["message_type"] for e in entries[:12]) == sorted(PURCHASE)
    assert all(e["result"] == "accepted" for e in entries[:12])
    assert (entries[12]["sender"], entries[12]["recipient"]) == (STRANGER, "shop")


def test_terminal_diagram_has_an_arrow_per_mail(w, xid):
    code, out, err = run_cli("trace", xid, "--home", str(w.home))
    assert code == 0, err
    arrows = [line for line in out.splitlines() if HEADS.search(line)]
    assert len(arrows) == 13 and all(len(HEADS.findall(line)) == 1 for line in arrows)
    labels = re.findall(r"(\w+) [\d.]+ k?B ([✓⚠✗=…])", out)
    assert [t for t, _ in labels] == [t for t, _, _ in expected(w, xid)]
    assert [m for _, m in labels] == ["✓"] * 12 + ["⚠"]
    assert "quarantined: MalformedMessage" in out
    lanes = out.splitlines()[1].split()
    assert lanes[:4] == ["alice", "shop", "gateway", "bank"] and lanes[4].startswith("mallory")
    assert out.splitlines()[-1].split() == ["APPROVED", "CAPTURED", "CAPTURED", "POSTED", "-"]
    assert not any(pan in out for pan in pans(w))


def arrows_in(markup: str) -> list[tuple[str, str, str]]:
    """(type, from, to) of every arrow element in an HTML or SVG text."""
    return [(t, f, to) for t, f, to in re.findall(
        r'<g class="arrow [a-z ]+"[^>]*?data-type="([^"]+)" data-from="([^"]+)" '
        r'data-to="([^"]+)"', markup)]


@pytest.mark.parametrize("fmt", ["html", "svg"])
def test_picture_file_has_an_arrow_per_mail_and_no_card_number(w, xid, fmt, tmp_path):
    path = tmp_path / f"trace.{fmt}"
    code, out, err = run_cli("trace", xid, "--format", fmt, "--output", str(path),
                             "--home", str(w.home))
    assert code == 0 and "13 mails" in out, err
    text = path.read_text(encoding="utf-8")
    assert arrows_in(text) == expected(w, xid)
    for pan in pans(w):
        assert pan not in text and pan not in json.dumps(text)
    assert "PInitReq" in text and "MalformedMessage" in text
    assert "http://" not in text.replace("http://www.w3.org/", "")  # no fetch, no link out
    if fmt == "svg":
        ET.fromstring(text)  # well-formed: any SVG viewer opens it


# --- the browser -----------------------------------------------------------------------------
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and only root may apt-get install it "
                    "(scripts/install-chromium)")
    done = subprocess.run([str(REPO / "scripts" / "install-chromium")], capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.skip(f"chromium could not be installed: {done.stderr.strip()[-300:]}")
    return done.stdout.strip().splitlines()[-1]


def browse(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", "--disable-background-networking",
         f"--user-data-dir={profile}", *args],
        capture_output=True, timeout=180, env={**os.environ, "HOME": str(profile)})


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = rows[-1]
    return width, height, [bytes(r[i:i + 3]) for r in rows for i in range(0, stride, bpp)]


def test_chromium_draws_every_mail_as_an_arrow(w, xid, tmp_path):
    browser = chromium()
    page = tmp_path / "trace.html"
    code, _, err = run_cli("trace", xid, "--format", "html", "--output", str(page),
                           "--home", str(w.home))
    assert code == 0, err
    # the page's script ran: it counted the arrows and opened the mail the address names
    dom = browse(browser, tmp_path / "profile", "--dump-dom", f"{page.as_uri()}#mail-13")
    html = dom.stdout.decode("utf-8", "replace")
    assert 'data-trace-ready="13"' in html, dom.stderr.decode()[-2000:]
    assert arrows_in(html) == expected(w, xid)
    assert 'class="arrow quarantined selected"' in html
    title = re.search(r'<h2 id="detail-title">([^<]*)</h2>', html).group(1)
    assert title.startswith("#13 PReq: mallory@evil.example → shop") and "quarantined" in title
    assert "Subject: SET PReq " + xid in html  # the decoded headers, shown in the panel
    assert not any(pan in html for pan in pans(w))

    shot = tmp_path / "trace.png"
    done = browse(browser, tmp_path / "profile", f"--screenshot={shot}",
                  "--window-size=1200,1100", f"{page.as_uri()}#mail-3")
    assert shot.exists(), done.stderr.decode()[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1100)
    colours = set(pixels)
    assert len(colours) > 50  # not blank: text, lanes, arrows
    green = sum(1 for p in pixels if p[1] > 100 and p[0] < 90 and p[2] < 90)
    assert green > 2000, green  # the accepted arrows, drawn in their colour
    if os.environ.get("SETMAIL_TRACE_PNG"):
        shutil.copyfile(shot, os.environ["SETMAIL_TRACE_PNG"])


# --- live --------------------------------------------------------------------------------------
def follow_cmd(w, xid: str) -> list[str]:
    return [sys.executable, "-m", "setmail.cli.main", "trace", xid, "--follow", "--timeout", "120",
            "--home", str(w.home)]


def test_follow_appends_a_line_per_mail_until_the_purchase_settles(w, xid):
    new = buy(w, wait=False)
    done = subprocess.run(follow_cmd(w, new), capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split()[7] for line in lines[:-1]) == sorted(PURCHASE), lines
    assert all(line.endswith("accepted") for line in lines[:-1])
    assert lines[-1] == "settled: alice APPROVED, shop CAPTURED, gateway CAPTURED, bank POSTED"


def test_follow_redraws_in_place_on_a_terminal(w, xid):
    new = buy(w, wait=False)
    master, slave = pty.openpty()
    import fcntl
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 110, 0, 0))
    proc = subprocess.Popen(follow_cmd(w, new), stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm"})
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 180)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0, out.decode("utf-8", "replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = out.decode("utf-8", "replace")
    assert "\x1b[" in text and "settled" in text
    final = text[text.rindex(f"purchase {new}"):]
    assert len(HEADS.findall(final)) == 12 and "CapRes" in final


def test_follow_stops_cleanly_on_ctrl_c(w):
    proc = subprocess.Popen(follow_cmd(w, "cd" * 20), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    first = proc.stderr.readline()  # it polls now, for a purchase that never comes
    assert first.startswith("following purchase"), first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "stopped (Ctrl-C)", err
    assert "Traceback" not in err and out == ""
