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


def test_trace_html_holds_every_step():
    traj = generate(tiny_model(), None, [[1, 2, 3]], CFG)[0].trajectory
    page = trace_html(traj, lambda t: f"t{t}</script>", title="a <title>")
    assert "<script>" in page and 'type="range"' in page and "a &lt;title&gt;" in page
    data = json.loads(re.search(r"const D = (.*);\n", page).group(1).replace("<\\/", "</"))
    assert len(data["steps"]) == len(traj.steps) and data["canvas"] == traj.canvas
    assert page.count("</script>") == 1  # token text cannot close the script early
