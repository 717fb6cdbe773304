"""A trace as a sequence diagram in the terminal (rich ``Text``): a column per party, two rows per
mail (what it was, then the arrow), the parties' states at the bottom.

```
           alice           shop          gateway          bank
           wallet        merchant        gateway         issuer
             │               │               │               │
#1           │ PInitReq 212 B ✓              │               │
+0 ms        ├──────────────▶│               │               │
```

Every arrow row holds exactly one head (``▶`` or ``◀``), so a test or a reader counts mails by
heads.  Colour says the verdict (green accepted, red refused, yellow quarantined, dim pending);
the mark after the size says it without colour (✓ ✗ ⚠ = …).
"""
from __future__ import annotations

from rich.text import Text

from setmail.tracedraw.model import Arrow, Trace, human_delay
from setmail.txview import when

GUTTER = 9
MIN_COLUMN, MAX_COLUMN = 14, 28
STYLES = {"ok": "green", "refused": "bold red", "quarantined": "bold yellow",
          "duplicate": "cyan", "pending": "dim"}


class _Canvas:
    """Rows of cells, each a character and a style: lanes first, labels and arrows over them."""

    def __init__(self, width: int):
        self.width = width
        self.rows: list[list[tuple[str, str]]] = []

    def row(self) -> list[tuple[str, str]]:
        self.rows.append([(" ", "")] * self.width)
        return self.rows[-1]

    def put(self, row: list, x: int, text: str, style: str = "") -> None:
        for i, ch in enumerate(text):
            if 0 <= x + i < self.width:
                row[x + i] = (ch, style)

    def text(self) -> Text:
        out = Text(no_wrap=True, overflow="crop")
        for n, row in enumerate(self.rows):
            if n:
                out.append("\n")
            line = "".join(ch for ch, _ in row).rstrip()
            x = 0
            while x < len(line):
                style = row[x][1]
                end = x
                while end < len(line) and row[end][1] == style:
                    end += 1
                out.append(line[x:end], style=style or None)
                x = end
        return out


def layout(trace: Trace, width: int) -> tuple[int, list[int]]:
    """(column width, the x of each lane's line) for a terminal ``width`` columns wide."""
    lanes = max(len(trace.lanes), 1)
    column = max(MIN_COLUMN, min(MAX_COLUMN, (width - GUTTER) // lanes))
    return column, [GUTTER + i * column + column // 2 for i in range(lanes)]


def diagram(trace: Trace, width: int = 100) -> Text:
    """The whole picture; wider than ``width`` only when the lanes need more."""
    column, xs = layout(trace, width)
    canvas = _Canvas(GUTTER + column * max(len(xs), 1) + MAX_COLUMN)

    def lanes_row() -> list:
        row = canvas.row()
        for x in xs:
            canvas.put(row, x, "│", "dim")
        return row

    title = canvas.row()
    canvas.put(title, 0, f"purchase {trace.xid}", "bold")
    canvas.put(title, 50, _summary(trace), "dim")
    for attr, style in (("name", "bold"), ("role", "dim")):
        row = canvas.row()
        for lane, x in zip(trace.lanes, xs):
            shown = getattr(lane, attr)[:column - 1]
            canvas.put(row, x - len(shown) // 2, shown, style)
    lanes_row()
    for arrow in trace.arrows:
        _arrow(canvas, lanes_row(), lanes_row(), arrow, trace, xs)
    lanes_row()
    row = canvas.row()
    for lane, x in zip(trace.lanes, xs):
        shown = (lane.state or "-")[:column - 1]
        canvas.put(row, x - len(shown) // 2, shown, "bold")
    return canvas.text()


def _arrow(canvas: _Canvas, label_row: list, row: list, arrow: Arrow, trace: Trace,
           xs: list[int]) -> None:
    style = STYLES.get(arrow.verdict, "bold red")
    src, dst = xs[trace.lane_index(arrow.sender)], xs[trace.lane_index(arrow.recipient)]
    canvas.put(label_row, 0, f"#{arrow.index}", "dim")
    canvas.put(row, 0, human_delay(arrow.delay)[:GUTTER - 1], "dim")
    label = arrow.label + ("" if arrow.verdict == "ok" else f" {arrow.outcome}")
    canvas.put(label_row, min(src, dst) + 2, label, style)
    if src == dst:  # a party's mail to itself: a loop, not a line
        canvas.put(row, src, "↺▶", style)
        return
    left, right = min(src, dst), max(src, dst)
    line = "─" * (right - left - 1)
    if dst > src:
        canvas.put(row, left, "├" + line[:-1] + "▶", style)
    else:
        canvas.put(row, left + 1, "◀" + line[1:] + "┤", style)


def _summary(trace: Trace) -> str:
    if not trace.arrows:
        return "no mail yet"
    took = trace.arrows[-1].time - trace.arrows[0].time
    return (f"{len(trace.arrows)} mails in {human_delay(took)[1:]}"
            + ("  settled" if trace.settled else "  in progress"))


def line(arrow: Arrow) -> str:
    """One mail as one plain line (``--follow`` when the output is not a terminal)."""
    return (f"{when(arrow.time)} #{arrow.index:<3} {human_delay(arrow.delay):>9}  "
            f"{arrow.sender:>8} -> {arrow.recipient:<8} {arrow.message_type:<11} {arrow.size:>6} B  {arrow.outcome}")
