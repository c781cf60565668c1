"""C1 evidence: replayed confidences explain the engine's M2T fills (eq. 1), the histogram bins, and the RESULTS
section built from them."""

from __future__ import annotations

import pytest

from redraft.decoding import generate, preset
from redraft.evaluation.confidence import ConfidenceHistogram, confidence_histograms, masked_confidences
from redraft.evaluation.tasks import get_task
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer


@pytest.mark.parametrize("tau_mask", [0.004, 0.7])
def test_replayed_confidences_explain_the_engines_fills(tiny_checkpoint, tau_mask):
    """Each forward's fills are exactly eq. 1 applied to the replayed probabilities: the masked positions above
    tau_mask, or the most confident one when none is (num_to_transfer 1)."""
    model, tok = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    config = preset("quality", max_new_tokens=24, block_length=8, trajectory=True, tau_mask=tau_mask, editing=False)
    results = generate(model, tok, ["12+34=", "sort: 3 1 2 ->", "def f(x):"], config)
    checked, by_threshold = 0, 0
    for r in results:
        steps = [s for s in r.trajectory.steps if s.forward]
        per_forward = masked_confidences(model, r.trajectory)
        assert len(per_forward) == len(steps)
        for step, probs in zip(steps, per_forward):
            p = dict(probs)
            if not p:  # a forward after the block was filled (editing steps): nothing to fill
                assert not step.filled
                continue
            assert set(p) >= {pos for pos, _ in step.filled} and all(0.0 < x <= 1.0 for x in p.values())
            high = {pos for pos, x in p.items() if x > tau_mask}
            expected = high if high else {max(p, key=p.get)}
            near = {pos for pos, x in p.items() if abs(x - tau_mask) < 1e-5}
            assert {pos for pos, _ in step.filled} ^ expected <= near
            checked += 1
            by_threshold += bool(high)
    assert checked >= 9
    if tau_mask < 0.01:
        assert by_threshold > 0  # the threshold branch of eq. 1 was exercised, not only the fallback


def test_histogram_bins_and_shares():
    h = ConfidenceHistogram("q")
    h.add([0.0, 0.05, 0.1, 0.55, 0.7, 0.71, 0.95, 1.0])
    assert h.counts == [3, 0, 0, 0, 0, 1, 1, 1, 0, 2] and h.total == 8
    assert h.share(0.5, 0.7) == pytest.approx(2 / 8) and h.share(0.7, 1.0) == pytest.approx(3 / 8)


def test_confidence_histograms_over_tasks(tiny_checkpoint):
    model, tok = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    configs = {"quality": preset("quality", block_length=8, max_new_tokens=16),
               "speedy": preset("speedy", block_length=8, max_new_tokens=16)}
    hists = confidence_histograms(model, tok, [get_task("addition")], configs, n=3, seed=0,
                                  overrides={"max_new_tokens": 16})
    assert set(hists) == {"quality", "speedy"}
    for h in hists.values():
        assert h.forwards >= 3 * 2 and h.total >= h.forwards  # >= 2 blocks per example, >= 1 masked per forward


def test_results_section_reads_the_band_between_the_thresholds():
    from types import SimpleNamespace

    from redraft.evaluation.report import EvalReport, TaskRun
    from redraft.evaluation.results_output import _c1_evidence

    def rep(tau):
        return EvalReport("m", "x", {"tau_mask": tau}, 1, [0], [TaskRun("addition", 0, 1, 1.0, 2, 4, 4, 1, 0, 1.0)],
                          "now")

    q, s = ConfidenceHistogram("quality"), ConfidenceHistogram("speedy")
    q.add([0.55, 0.65, 0.95, 0.2])
    s.add([0.9])
    res = SimpleNamespace(reports={"quality": rep(0.7), "speedy": rep(0.5)}, confidence={"quality": q, "speedy": s},
                          settings=SimpleNamespace(confidence_n=4, seeds=(0,)))
    text = "\n".join(_c1_evidence(res))
    assert "| quality | 0.7 | 0 | 4 | 0.0% | 25.0% |" in text and "| 0.250 |" in text
    assert "50.0% of the masked positions have a top probability in (0.5, 0.7]" in text and "25.0% are above 0.7" in text
