"""`redraft generate --trace FILE.html`: a self-contained HTML replay of a decoding trajectory with a step slider.

The page inlines the package's trajectory renderer (`static/trajectory.js` + `.css`), the same one the `redraft
serve` playground uses, and the trajectory as JSON (`trajectory_data`)."""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

from .results import Trajectory

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>redraft trace: %(title)s</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em}
%(css)s
</style></head><body>
<h2>%(title)s</h2>
<div id="legend"></div>
<div id="trace"></div>
<script>
%(js)s
</script>
<script>
const D = %(data)s;
document.getElementById("legend").append(RedraftTrajectory.legend());
const view = new RedraftTrajectory.View(document.getElementById("trace"), D);
view.show(view.defaultStep());
</script></body></html>
"""


def static_text(name: str) -> str:
    """A file of the package's renderer (`trajectory.js`, `trajectory.css`)."""
    return (resources.files("redraft.decoding") / "static" / name).read_text(encoding="utf-8")


def token_vocab(ids, token_text, mask_id: int) -> dict[str, str]:
    """id -> text of the given ids (the mask id is drawn as a glyph, so it is left out)."""
    return {str(i): token_text(i) for i in sorted(set(ids)) if i != mask_id}


def step_ids(step) -> set[int]:
    return {t for _, t in step.filled} | {t for s in step.edited for t in s[1:]}


def step_data(step) -> dict:
    """One `TrajectoryStep` in the renderer's JSON form."""
    return {"block": step.block, "forward": step.forward, "filled": [list(x) for x in step.filled],
            "edited": [list(x) for x in step.edited], "final_blocks": step.final_blocks}


def trajectory_data(traj: Trajectory, token_text, end: int | None = None) -> dict:
    """The renderer's input: canvas, steps and the text of every token id that occurs (token_text: id -> str).
    end: the answer's end (absolute position, exclusive; e.g. prompt_len + len(result.token_ids)): positions after
    its block collapse into one line. None = unknown (the blocks reached so far show)."""
    ids = set(traj.canvas).union(*(step_ids(s) for s in traj.steps))
    return {"prompt_len": traj.prompt_len, "block_length": traj.block_length, "mask_id": traj.mask_id,
            "canvas": list(traj.canvas), "vocab": token_vocab(ids, token_text, traj.mask_id), "end": end,
            "steps": [step_data(s) for s in traj.steps]}


def script_json(data) -> str:
    """JSON safe inside <script>: no `</` (token text cannot close the script), no U+2028/2029 surprises."""
    return json.dumps(data).replace("</", "<\\/").replace("<!--", "<\\!--")


def trace_html(traj: Trajectory, token_text, title: str = "", end: int | None = None) -> str:
    """The replay page for one trajectory; token_text: id -> str (only ids that occur are stored). It opens on the
    first step with a T2T edit (else the last step with fills); see `trajectory_data` for `end`."""
    return _PAGE % {"title": html.escape(title), "data": script_json(trajectory_data(traj, token_text, end)),
                    "css": static_text("trajectory.css"), "js": static_text("trajectory.js")}


def write_trace(path: str | Path, traj: Trajectory | None, tokenizer, title: str = "",
                end: int | None = None) -> Path:
    if traj is None:
        raise ValueError("trajectory is None: decode with DecodeConfig(trajectory=True)")
    page = trace_html(traj, lambda t: tokenizer.decode([t], skip_special_tokens=False), title, end)
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
