"""`redraft generate --trace FILE.html`: a self-contained HTML replay of a decoding trajectory with a step slider."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .results import Trajectory

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>redraft trace: %(title)s</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}
#canvas{font-family:monospace;white-space:pre-wrap;line-height:1.6;border:1px solid #ccc;padding:1em}
.p{color:#888}.m{color:#bbb}.f{background:#c8f7c5}.e{background:#ffe08a;font-weight:bold}
.legend span{margin-right:1em;padding:0 .3em}
</style></head><body>
<h2>%(title)s</h2>
<div class="legend"><span class="p">prompt</span><span class="m">&#9617; mask</span>
<span class="f">fill (M2T)</span><span class="e">edit (T2T)</span></div>
<p><input id="step" type="range" min="0" max="0" value="0" style="width:100%%">
<span id="info"></span></p>
<div id="canvas"></div>
<script>
const D = %(data)s;
const slider = document.getElementById("step");
slider.max = D.steps.length;
slider.value = D.steps.length;
function esc(s){return s.replace(/&/g,"&amp;").replace(/</g,"&lt;").replace(/>/g,"&gt;");}
function show(k){
  const cur = D.canvas.slice();
  for (let i = 0; i < k; i++) {
    for (const [p, t] of D.steps[i].filled) cur[p] = t;
    for (const [p, o, t] of D.steps[i].edited) cur[p] = t;
  }
  const last = k > 0 ? D.steps[k-1] : {filled: [], edited: [], block: "-"};
  const fill = new Set(last.filled.map(x => x[0])), edit = new Set(last.edited.map(x => x[0]));
  let out = "";
  for (let p = 0; p < cur.length; p++) {
    const t = cur[p], s = t === D.mask_id ? "&#9617;" : esc(D.vocab[t] ?? ("<" + t + ">"));
    const c = p < D.prompt_len ? "p" : t === D.mask_id ? "m" : edit.has(p) ? "e" : fill.has(p) ? "f" : "";
    out += c ? `<span class="${c}">${s}</span>` : s;
  }
  document.getElementById("canvas").innerHTML = out;
  document.getElementById("info").textContent =
    `step ${k}/${D.steps.length}, block ${last.block}: ${last.filled.length} filled, ${last.edited.length} edited`;
}
slider.oninput = () => show(+slider.value);
show(+slider.value);
</script></body></html>
"""


def trace_html(traj: Trajectory, token_text, title: str = "") -> str:
    """The replay page for one trajectory; token_text: id -> str (only ids that occur are stored)."""
    ids = set(traj.canvas) | {t for s in traj.steps for _, t in s.filled} | {t for s in traj.steps
                                                                           for _, _, t in s.edited}
    data = {"prompt_len": traj.prompt_len, "mask_id": traj.mask_id, "canvas": traj.canvas,
            "vocab": {str(i): token_text(i) for i in sorted(ids) if i != traj.mask_id},
            "steps": [{"block": s.block, "filled": s.filled, "edited": s.edited} for s in traj.steps]}
    payload = json.dumps(data).replace("</", "<\\/")
    return _PAGE % {"title": html.escape(title), "data": payload}


def write_trace(path: str | Path, traj: Trajectory | None, tokenizer, title: str = "") -> Path:
    if traj is None:
        raise ValueError("trajectory is None: decode with DecodeConfig(trajectory=True)")
    page = trace_html(traj, lambda t: tokenizer.decode([t], skip_special_tokens=False), title)
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
