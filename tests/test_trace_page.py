"""The `--trace` replay page in a real browser (issue 14 item 10): masks wrap instead of overflowing, the page opens
on a step with an edit, an edit shows the token it replaced, masks after the answer collapse into one line."""

from __future__ import annotations

import pytest

from redraft.decoding import DecodeConfig, Trajectory, TrajectoryStep, generate
from redraft.decoding.testing import TINY_MASK_ID, tiny_model
from redraft.decoding.trace import trace_html

from _browser import browser  # noqa: F401  (fixture)

CFG = DecodeConfig(tau_mask=0.5, tau_edit=0.0, block_length=8, max_new_tokens=16, max_post_steps=2,
                   mask_id=TINY_MASK_ID, trajectory=True)


def _open(browser, tmp_path, page: str):  # noqa: F811
    path = tmp_path / "trace.html"
    path.write_text(page, encoding="utf-8")
    browser.set_window_size(480, 800)
    browser.get(path.as_uri())
    return browser


def _canvas(browser):  # noqa: F811
    return browser.execute_script(
        "const c = document.querySelector('.rd-canvas'); return {scroll: c.scrollWidth, client: c.clientWidth,"
        " html: c.innerHTML, text: c.textContent, k: +document.querySelector('.rd-slider').value,"
        " max: +document.querySelector('.rd-slider').max, info: document.querySelector('.rd-info').textContent};")


def test_trace_page_fixes(browser, tmp_path):  # noqa: F811
    res = generate(tiny_model(), None, [[1, 2, 3]], CFG.replace(max_new_tokens=48))[0]
    traj = res.trajectory
    end = traj.prompt_len + 5  # pretend the answer ended early: the tail must collapse
    page = trace_html(traj, lambda t: f"<b>t{t}</b>", end=end)
    _open(browser, tmp_path, page)
    c = _canvas(browser)
    first_edit = next(i for i, s in enumerate(traj.steps, 1) if s.edited)
    assert c["k"] == first_edit and c["max"] == len(traj.steps), "opens on the first step with an edit"
    assert c["scroll"] <= c["client"], "no horizontal overflow"
    assert "<b>" not in c["html"] and "&lt;b&gt;" in c["html"], "token text is escaped"
    pos, old, new = traj.steps[first_edit - 1].edited[0]
    old_text = "\u2591" if old == TINY_MASK_ID else f"<b>t{old}</b>"
    edit_text = browser.execute_script(f"return document.querySelector('.rd-e[data-pos=\"{pos}\"]').textContent")
    assert edit_text == old_text + f"<b>t{new}</b>", "an edit shows the token it replaced"
    # the last step: everything after the block holding the answer's end is one line
    browser.execute_script("document.querySelector('.rd-next').click();" * (len(traj.steps) - first_edit))
    c = _canvas(browser)
    assert c["k"] == len(traj.steps)
    shown = browser.execute_script("return document.querySelectorAll('.rd-canvas .rd-t').length")
    assert shown == -(-end // CFG.block_length) * CFG.block_length
    assert f"{len(traj.canvas) - shown} more positions after the end of the answer" in c["text"]


def test_a_long_run_of_masks_wraps(browser, tmp_path):  # noqa: F811
    """Regression: 256 masks in one block used to be one unbreakable line with a horizontal scrollbar."""
    canvas = [1, 2, 3] + [TINY_MASK_ID] * 253
    traj = Trajectory(3, 256, TINY_MASK_ID, canvas, [TrajectoryStep(0, True, [(3, 7)], [], 0)])
    _open(browser, tmp_path, trace_html(traj, str))
    browser.execute_script("const v = document.querySelector('.rd-slider'); v.value = 0;"
                           "v.dispatchEvent(new Event('input'));")
    c = _canvas(browser)
    assert c["k"] == 0 and c["text"].count("\u2591") == 253
    assert c["scroll"] <= c["client"]


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
