"""The trace pictures drawn from hand-made models (no world): one arrow per mail in the terminal,
HTML and SVG, verdicts marked, the embedded mails safe inside a script, card numbers masked, and
``--follow``'s loop ending as it should.  tests/test_tracedraw_e2e.py draws real purchases."""
from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET

from rich.console import Console

from setmail.tracedraw import html, svg
from setmail.tracedraw.follow import INTERRUPTED, SETTLED, TIMED_OUT, follow
from setmail.tracedraw.model import Arrow, Lane, Trace, order_lanes, redact
from setmail.tracedraw.text import diagram

XID = "ab" * 20
PAN = "4111111111111111"
MAILS = [("alice", "shop", "PInitReq", "accepted", ""),
         ("shop", "alice", "PInitRes", "accepted", ""),
         ("alice", "shop", "PReq", "refused (unknownXID)", ""),
         ("mallory@evil.example", "shop", "PReq", "quarantined", "SignatureInvalid: bad"),
         ("shop", "gateway", "AuthReq", "duplicate", ""),
         ("gateway", "bank", "IssAuthReq", "not yet processed", "")]
SVG_NS = "{http://www.w3.org/2000/svg}"


def make_trace(mails=MAILS, states=("APPROVED", "CAPTURED", "CAPTURED", "POSTED")) -> Trace:
    lanes = order_lanes([Lane("shop", "merchant", states[1]), Lane("bank", "issuer", states[3]),
                         Lane("alice", "cardholder", states[0]),
                         Lane("gateway", "gateway", states[2]),
                         Lane("mallory@evil.example", "outside")])
    arrows = tuple(Arrow(i, 1000.0 + i / 10, 0.1 if i > 1 else 0.0, s, r, t, 200 * i, res,
                         reason=why, key=f"k{i}",
                         detail={"headers": {"Subject": f"SET {t} {XID}"},
                                 "note": f"</script><b>&amp; card {PAN}"})
                   for i, (s, r, t, res, why) in enumerate(mails, 1))
    return Trace(XID, lanes, arrows)


def test_lanes_follow_the_purchase_left_to_right():
    assert [lane.role for lane in make_trace().lanes] == [
        "wallet", "merchant", "gateway", "issuer", "outside"]


def test_text_has_one_arrow_per_mail_in_order_with_its_verdict():
    text = diagram(make_trace(), 120).plain
    heads = [line for line in text.splitlines() if "▶" in line or "◀" in line]
    assert len(heads) == len(MAILS)
    labels = re.findall(r"│ (\w+) [\d.]+ k?B ([✓✗⚠=…])", text)
    assert [t for t, _ in labels] == [m[2] for m in MAILS]
    assert [mark for _, mark in labels] == ["✓", "✓", "✗", "⚠", "=", "…"]
    assert "refused (unknownXID)" in text and "quarantined: SignatureInvalid: bad" in text
    assert "◀" in heads[1] and "▶" in heads[0]  # PInitRes goes back to the wallet
    assert text.splitlines()[-1].split() == ["APPROVED", "CAPTURED", "CAPTURED", "POSTED", "-"]


def test_svg_is_xml_with_one_arrow_group_per_mail():
    tree = ET.fromstring(svg.document(make_trace()))
    arrows = [g for g in tree.iter(SVG_NS + "g") if "arrow" in g.get("class", "").split()]
    assert [(g.get("data-type"), g.get("data-from"), g.get("data-to"), g.get("data-verdict"))
            for g in arrows] == [(t, s, r, v) for (s, r, t, _, _), v in zip(
                MAILS, ("ok", "ok", "refused", "quarantined", "duplicate", "pending"))]
    assert [g.get("data-index") for g in arrows] == [str(i) for i in range(1, len(MAILS) + 1)]
    assert tree.find(f".//{SVG_NS}foreignObject") is not None  # the click-to-decode panel


def test_html_is_self_contained_and_its_mails_cannot_break_out_of_the_script():
    page = html.document(make_trace())
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    assert page.count('<g class="arrow ') == len(MAILS)
    data = re.search(r'<script type="application/json" id="trace-mails">(.*?)</script>', page,
                     re.S).group(1)
    assert "<" not in data and ">" not in data and "&" not in data
    mails = json.loads(data)
    assert sorted(mails, key=int) == [str(i) for i in range(1, len(MAILS) + 1)]
    assert "</script><b>" in mails["1"]["text"]  # decoded back intact, yet never markup


def test_card_numbers_are_masked_wherever_they_hide():
    assert redact({"a": [f"pan {PAN} here", {PAN: 1}], "n": 5}) == {
        "a": ["pan ••••••••••••1111 here", {"••••••••••••1111": 1}], "n": 5}
    assert redact("serial 4111111111111112") == "serial 4111111111111112"  # not Luhn-valid


def test_settled_needs_the_wallet_final_no_party_waiting_and_every_mail_processed():
    done = [m[:3] + ("accepted", "") for m in MAILS]
    assert make_trace(done).settled
    assert not make_trace(MAILS).settled  # a mail not yet processed
    assert not make_trace(done, ("PREQ_SENT", "AUTH_SENT", "ISSUER_AUTH", "SENT")).settled
    assert not make_trace(done, ("APPROVED", "CAP_SENT", "CAPTURED", "HELD")).settled
    assert make_trace(done, ("DECLINED", "DECLINED", "DECLINED", "DECLINED")).settled


def _snapshots(*traces):
    it = iter(traces)
    return lambda: next(it)


def test_follow_prints_each_judged_mail_once_then_the_states():
    partial = make_trace([m[:3] + ("accepted", "") for m in MAILS[:2]] + [MAILS[5]],
                         ("PREQ_SENT",) * 4)
    final = make_trace([m[:3] + ("accepted", "") for m in MAILS])
    out = io.StringIO()
    ended, last = follow(_snapshots(partial, partial, final), Console(file=out, width=200),
                         sleep=lambda s: None)
    lines = out.getvalue().splitlines()
    assert ended == SETTLED and last is final
    assert [line.split()[7] for line in lines[:-1]] == [m[2] for m in MAILS]
    assert lines[-1] == "settled: alice APPROVED, shop CAPTURED, gateway CAPTURED, bank POSTED"


def test_follow_redraws_on_a_terminal_and_stops_on_ctrl_c_or_timeout():
    final = make_trace([m[:3] + ("accepted", "") for m in MAILS])
    out = io.StringIO()
    ended, _ = follow(_snapshots(make_trace(MAILS[:1], ("PINIT_SENT",) * 4), final),
                      Console(file=out, width=120, force_terminal=True), sleep=lambda s: None)
    drawn = out.getvalue()
    assert ended == SETTLED and "\x1b[" in drawn  # drawn in place, in colour
    assert drawn.index("in progress") < drawn.index("settled")  # the first frame, then the last
    assert "IssAuthReq" in drawn and "POSTED" in drawn

    def interrupted():
        raise KeyboardInterrupt

    assert follow(interrupted, Console(file=io.StringIO()))[0] == INTERRUPTED
    clock = iter(range(100)).__next__
    running = make_trace(MAILS)
    ended, last = follow(lambda: running, Console(file=io.StringIO()), timeout=3,
                         clock=clock, sleep=lambda s: None)
    assert ended == TIMED_OUT and last is running


def test_bad_options_are_one_line_errors(tmp_path):
    from tests.e2e_world import run_cli
    for args, why in ((["--format", "pdf"], "--format must be one of text, html, svg"),
                      (["--follow", "--json"], "--follow draws in the terminal"),
                      (["--output", str(tmp_path / "x")], "add --format html")):
        code, out, err = run_cli("trace", XID, *args, "--home", str(tmp_path))
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
