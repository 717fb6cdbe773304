"""The style sheet and the script a saved picture carries inline (HTML and SVG alike): a file
that works from a mail attachment or an air-gapped laptop, loading nothing from anywhere."""
from __future__ import annotations

CSS = """
svg.trace { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 13px; }
svg.trace .title { font-size: 15px; font-weight: bold; }
svg.trace .summary, svg.trace .role, svg.trace .delay, svg.trace .index { fill: #666; }
svg.trace .lane-line { stroke: #bbb; stroke-width: 1.5; stroke-dasharray: 4 4; }
svg.trace .lane-box { fill: #f3f5f8; stroke: #8a96a8; rx: 6; }
svg.trace .name { font-weight: bold; }
svg.trace .state { font-weight: bold; font-size: 12px; }
svg.trace .arrow { cursor: pointer; }
svg.trace .arrow line { stroke-width: 2; }
svg.trace .arrow .hit { fill: transparent; stroke: none; }
svg.trace .arrow:hover .hit, svg.trace .arrow:focus .hit { fill: #eef3ff; }
svg.trace .arrow.selected .hit { fill: #dde8ff; }
svg.trace .arrow:focus { outline: none; }
svg.trace .ok { fill: #2e7d32; stroke: #2e7d32; }
svg.trace .refused { fill: #c62828; stroke: #c62828; }
svg.trace .quarantined { fill: #b26a00; stroke: #b26a00; }
svg.trace .duplicate { fill: #00838f; stroke: #00838f; }
svg.trace .pending { fill: #757575; stroke: #757575; }
svg.trace .arrow text, svg.trace marker path { stroke: none; }
svg.trace .quarantined line, svg.trace .pending line { stroke-dasharray: 7 4; }
svg.trace .flag { font-weight: bold; }
.detail-panel { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; }
.detail-panel h2 { font-size: 15px; margin: 8px 0; }
.detail-panel pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px;
  background: #f7f7f7; border: 1px solid #ddd; padding: 8px; margin: 0; overflow: auto;
  white-space: pre; }
"""

#: click (or Enter on) an arrow: its mail in the panel; ``#mail-N`` in the address opens mail N
JS = """
(function () {
  var data = JSON.parse(document.getElementById('trace-mails').textContent);
  var arrows = document.querySelectorAll('.arrow');
  function show(index) {
    var mail = data[String(index)];
    if (!mail) { return; }
    for (var i = 0; i < arrows.length; i++) {
      var on = arrows[i].getAttribute('data-index') === String(index);
      arrows[i].setAttribute('class', arrows[i].getAttribute('class').replace(/ selected/g, '')
                             + (on ? ' selected' : ''));
    }
    document.getElementById('detail-title').textContent = mail.title;
    document.getElementById('detail').textContent = mail.text;
  }
  for (var i = 0; i < arrows.length; i++) {
    arrows[i].addEventListener('click', function (e) {
      show(e.currentTarget.getAttribute('data-index'));
    });
    arrows[i].addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') { show(e.currentTarget.getAttribute('data-index')); }
    });
  }
  var m = /^#mail-(\\d+)$/.exec(window.location.hash);
  if (m) { show(m[1]); }
  document.documentElement.setAttribute('data-trace-ready', String(arrows.length));
})();
"""

#: the only things a saved picture may use: its own inline style and script, data: images
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
