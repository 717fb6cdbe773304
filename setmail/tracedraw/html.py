"""A trace as one self-contained HTML page: the SVG diagram inline, a legend, and a panel where a
clicked arrow shows its mail decoded (``setmail decode``'s text: headers and SET fields, the
encrypted parts unopened).  A Content-Security-Policy forbids the page any network access."""
from __future__ import annotations

from html import escape

from setmail.tracedraw.assets import CSP, CSS, JS
from setmail.tracedraw.model import Trace
from setmail.tracedraw.svg import diagram, mails_json

PAGE_CSS = """
body { margin: 16px; color: #222; background: #fff; }
.legend { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 13px;
  margin: 6px 0 10px; }
.legend span { margin-right: 14px; font-weight: bold; }
.legend .ok { color: #2e7d32; } .legend .refused { color: #c62828; }
.legend .quarantined { color: #b26a00; } .legend .duplicate { color: #00838f; }
.legend .pending { color: #757575; }
.detail-panel pre { max-height: 60vh; }
"""

LEGEND = ('<div class="legend"><span class="ok">✓ accepted</span>'
          '<span class="refused">✗ refused</span>'
          '<span class="quarantined">⚠ quarantined</span>'
          '<span class="duplicate">= duplicate</span>'
          '<span class="pending">… not yet processed</span></div>')


def document(trace: Trace) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>SET purchase {escape(trace.xid)}</title>
<style>{CSS}{PAGE_CSS}</style>
</head>
<body>
{LEGEND}
{diagram(trace)}
<section class="detail-panel">
<h2 id="detail-title">Click an arrow to see its mail (decoded, no secrets)</h2>
<pre id="detail"></pre>
</section>
<script type="application/json" id="trace-mails">{mails_json(trace)}</script>
<script>{JS}</script>
</body>
</html>
"""
