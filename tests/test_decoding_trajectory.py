"""Trajectory rendering: the live terminal view and the HTML replay show masks, fills and edits of every step."""

from __future__ import annotations

import io
import json
import re

from rich.console import Console

from redraft.decoding import DecodeConfig, Engine, generate
from redraft.decoding.testing import TINY_MASK_ID, tiny_model
from redraft.decoding.trace import trace_html
from redraft.decoding.view import MASK_GLYPH, live_decode, render

CFG = DecodeConfig(tau_mask=0.5, tau_edit=0.0, block_length=8, max_new_tokens=16, max_post_steps=2,
                   mask_id=TINY_MASK_ID, trajectory=True)


def test_render_marks_masks_fills_and_edits():
    res = generate(tiny_model(), None, [[1, 2, 3]], CFG)[0]
    traj = res.trajectory
    first = render(traj, str, step=1)
    assert MASK_GLYPH in first.plain and first.plain.count(MASK_GLYPH) == 21 - len(traj.steps[0].filled)
    assert any("green" in str(span.style) for span in first.spans)
    k = next(i for i, s in enumerate(traj.steps, 1) if s.edited)
    assert any("yellow" in str(span.style) for span in render(traj, str, step=k).spans)
    assert MASK_GLYPH not in render(traj, str).plain


def test_live_decode_returns_the_same_result_as_generate():
    model = tiny_model()

    class Tok:
        def decode(self, ids, skip_special_tokens=False):
            return "".join(f"<{i}>" for i in ids)

    out = io.StringIO()
    res = live_decode(Engine(model, mask_id=TINY_MASK_ID), [1, 2, 3], CFG.replace(trajectory=False), Tok(),
                      Console(file=out, width=200))
    assert res.token_ids == generate(model, None, [[1, 2, 3]], CFG)[0].token_ids
    assert "mask" in out.getvalue()


def _page_data(page: str) -> dict:
    return json.loads(re.search(r"const D = (.*);\n", page).group(1).replace("<\\/", "</"))


def test_trace_html_holds_every_step():
    traj = generate(tiny_model(), None, [[1, 2, 3]], CFG)[0].trajectory
    page = trace_html(traj, lambda t: f"t{t}</script>", title="a <title>")
    assert "RedraftTrajectory" in page and "a &lt;title&gt;" in page
    data = _page_data(page)
    assert len(data["steps"]) == len(traj.steps) and data["canvas"] == traj.canvas
    assert page.count("</script>") == 2  # renderer + data: token text cannot close a script early
    assert "<\\/script>" in page


def test_trace_data_keeps_replaced_tokens_and_the_answer_end():
    """Regression (issue 14 item 10): edits carry the token they replaced (and its text), and the answer's end is
    stored so the page collapses the masks after it; the page opens on an edit step, not the last one."""
    res = generate(tiny_model(), None, [[1, 2, 3]], CFG)[0]
    traj = res.trajectory
    end = traj.prompt_len + len(res.token_ids)
    data = _page_data(trace_html(traj, lambda t: f"t{t}", end=end))
    assert data["end"] == end
    edits = [e for s in data["steps"] for e in s["edited"]]
    assert edits and all(len(e) == 3 for e in edits)
    for _, old, new in edits:
        for tok in (old, new):
            assert tok == traj.mask_id or data["vocab"][str(tok)] == f"t{tok}"
    assert [s["final_blocks"] for s in data["steps"]] == [s.final_blocks for s in traj.steps]


def test_trace_page_ships_the_package_renderer():
    from redraft.decoding.trace import static_text

    page = trace_html(generate(tiny_model(), None, [[1, 2, 3]], CFG)[0].trajectory, str)
    assert static_text("trajectory.js") in page and static_text("trajectory.css") in page
    assert "view.show(view.defaultStep())" in page
