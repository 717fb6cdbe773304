"""A trace as SVG: the diagram the HTML page shows inline, and a standalone ``.svg`` that carries
the same click-to-decode panel (a ``foreignObject``) and script.

Every mail is one ``<g class="arrow …">`` with ``data-index``, ``data-type``, ``data-from``,
``data-to`` and ``data-verdict``: what the tests count, and what the script opens on a click.
The mails' decoded text travels in ``<script type="application/json" id="trace-mails">`` with
``<``, ``>`` and ``&`` escaped, so neither HTML nor XML can read it as markup.
"""
from __future__ import annotations

import json
from html import escape

from setmail.inspect import render_text
from setmail.tracedraw.assets import CSS, JS
from setmail.tracedraw.model import Arrow, Trace, human_delay, human_size

GUTTER, LANE, TOP, ROW, BOTTOM = 96, 190, 96, 46, 70
PANEL = 380  # height of the standalone SVG's detail panel
LABEL_MAX = 58


def _a(value) -> str:
    return escape(str(value), quote=True)


def size(trace: Trace) -> tuple[int, int]:
    """(width, height) of the diagram in pixels."""
    return (GUTTER + LANE * max(len(trace.lanes), 1) + 40,
            TOP + ROW * len(trace.arrows) + 20 + BOTTOM)


def lane_x(trace: Trace, name: str) -> int:
    return GUTTER + LANE * trace.lane_index(name) + LANE // 2


def diagram(trace: Trace, *, extra_height: int = 0) -> str:
    """The ``<svg>`` element (no XML declaration): lanes, arrows, states, the arrowheads."""
    width, height = size(trace)
    bottom = TOP + ROW * len(trace.arrows) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="trace" width="{width}" '
             f'height="{height + extra_height}" viewBox="0 0 {width} {height + extra_height}" '
             f'role="img" aria-label="SET purchase {_a(trace.xid)}">',
             "<defs>" + "".join(
                 f'<marker id="head-{v}" class="{v}" viewBox="0 0 10 10" refX="9" refY="5" '
                 f'markerWidth="5" markerHeight="5" orient="auto-start-reverse">'
                 f'<path d="M0,0 L10,5 L0,10 z"/></marker>'
                 for v in ("ok", "refused", "quarantined", "duplicate", "pending")) + "</defs>",
             f'<text class="title" x="12" y="22">purchase {_a(trace.xid)}</text>',
             f'<text class="summary" x="12" y="40">{_a(_summary(trace))}</text>']
    for lane in trace.lanes:
        x = lane_x(trace, lane.name)
        parts.append(
            f'<g class="lane" data-lane="{_a(lane.name)}" data-kind="{_a(lane.kind)}">'
            f'<line class="lane-line" x1="{x}" y1="{TOP - 8}" x2="{x}" y2="{bottom}"/>'
            f'<rect class="lane-box" x="{x - 70}" y="50" width="140" height="38"/>'
            f'<text class="name" x="{x}" y="66" text-anchor="middle">{_a(lane.name)}</text>'
            f'<text class="role" x="{x}" y="82" text-anchor="middle">{_a(lane.role)}</text>'
            f'<rect class="lane-box" x="{x - 70}" y="{bottom + 6}" width="140" height="26"/>'
            f'<text class="state" x="{x}" y="{bottom + 24}" text-anchor="middle">'
            f'{_a(lane.state or "-")}</text></g>')
    for arrow in trace.arrows:
        parts.append(_arrow(trace, arrow, TOP + ROW * (arrow.index - 1) + 30, width))
    parts.append("</svg>")
    return "\n".join(parts)


def _arrow(trace: Trace, arrow: Arrow, y: int, width: int) -> str:
    v = arrow.verdict if arrow.verdict in ("ok", "refused", "quarantined", "duplicate",
                                           "pending") else "refused"
    x1, x2 = lane_x(trace, arrow.sender), lane_x(trace, arrow.recipient)
    step = 8 if x2 > x1 else -8
    if x1 == x2:  # to itself: a short loop to the right
        line = (f'<path class="{v}" fill="none" d="M{x1},{y - 10} h30 v14 h-26" '
                f'marker-end="url(#head-{v})"/>')
    else:
        line = (f'<line class="{v}" x1="{x1 + step // 2}" y1="{y}" x2="{x2 - step // 4}" '
                f'y2="{y}" marker-end="url(#head-{v})"/>')
    label = arrow.label if v == "ok" else f"{arrow.label} {arrow.outcome}"
    if len(label) > LABEL_MAX:
        label = label[:LABEL_MAX - 1] + "…"
    title = (f"#{arrow.index} {arrow.message_type} {arrow.sender} → {arrow.recipient}, "
             f"{human_size(arrow.size)}, {human_delay(arrow.delay)}: {arrow.outcome}")
    return (f'<g class="arrow {v}" tabindex="0" data-index="{arrow.index}" '
            f'data-type="{_a(arrow.message_type)}" data-from="{_a(arrow.sender)}" '
            f'data-to="{_a(arrow.recipient)}" data-verdict="{v}" data-size="{arrow.size}">'
            f'<title>{_a(title)}</title>'
            f'<rect class="hit" x="0" y="{y - 26}" width="{width}" height="{ROW - 2}"/>'
            f'<text class="index" x="10" y="{y - 8}">#{arrow.index}</text>'
            f'<text class="delay" x="10" y="{y + 6}">{_a(human_delay(arrow.delay))}</text>'
            f'<text class="{v}{" flag" if v != "ok" else ""}" x="{min(x1, x2) + 10}" '
            f'y="{y - 7}">{_a(label)}</text>{line}</g>')


def _summary(trace: Trace) -> str:
    if not trace.arrows:
        return "no mail yet"
    took = trace.arrows[-1].time - trace.arrows[0].time
    counts: dict[str, int] = {}
    for arrow in trace.arrows:
        counts[arrow.verdict] = counts.get(arrow.verdict, 0) + 1
    verdicts = ", ".join(f"{n} {'accepted' if v == 'ok' else v}" for v, n in counts.items())
    return (f"{len(trace.arrows)} mails in {human_delay(took)[1:]} ({verdicts}); "
            f"{'settled' if trace.settled else 'in progress'}. Click an arrow for its mail.")


def mails_json(trace: Trace) -> str:
    """index -> {title, text}: each mail as `setmail decode` prints it, safe inside a script."""
    data = {str(a.index): {"title": f"#{a.index} {a.message_type}: {a.sender} → {a.recipient}"
                                    f" — {a.outcome}",
                           "text": render_text(a.detail) if a.detail else "(not decoded)"}
            for a in trace.arrows}
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def document(trace: Trace) -> str:
    """A standalone .svg: the diagram, a detail panel under it, the inline style and script."""
    width, height = size(trace)
    svg = diagram(trace, extra_height=PANEL)
    head, tail = svg.split("\n", 1)
    panel = (f'<foreignObject x="10" y="{height}" width="{width - 20}" height="{PANEL - 10}">'
             '<div xmlns="http://www.w3.org/1999/xhtml" class="detail-panel">'
             '<h2 id="detail-title">Click an arrow to see its mail (decoded, no secrets)</h2>'
             f'<pre id="detail" style="height:{PANEL - 70}px"></pre></div></foreignObject>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + head + "\n"
            f"<style>{CSS}</style>\n"
            f'<script type="application/json" id="trace-mails">{mails_json(trace)}</script>\n'
            + tail.rsplit("</svg>", 1)[0] + panel + "\n"
            f"<script>//<![CDATA[\n{JS}\n//]]></script>\n</svg>\n")
