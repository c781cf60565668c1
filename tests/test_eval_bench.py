"""Tests for `bench` (plan, dedup, Pareto front, Markdown, PNG) and the `eval` / `bench` CLI verbs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest

from redraft.evaluation import commands
from redraft.evaluation.bench import BenchSettings, bench, plan
from redraft.evaluation.bench_output import plot_pareto, to_markdown, write_markdown
from redraft.evaluation.tasks import get_task


class CharTokenizer:
    eos_token = "<|endoftext|>"
    mask_token = "<|mask|>"

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return self.encode(messages[-1]["content"])


@dataclass
class Stats:
    forwards: int
    tokens: int
    m2t_fills: int
    t2t_edits: int
    mbe_edits: int


@dataclass
class Result:
    token_ids: list
    text: str
    finish_reason: str
    stats: Stats


class TradeoffEngine:
    """A fake engine with the paper's trade-off: lower tau_mask = fewer forwards and more errors; editing (and MBE)
    repairs some errors. Deterministic in (prompt, config)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = 0

    def __call__(self, model, tok, prompts, configs):
        self.calls += 1
        out = []
        for ids, c in zip(prompts, configs):
            prompt = tok.decode(ids)
            u = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 2**32
            p_ok = 0.2 + 0.7 * c.tau_mask + (0.25 * (1 - c.tau_edit) if c.editing else 0) + 0.05 * c.mbe_blocks
            answer = self.answers[prompt]
            text = answer if u < p_ok else answer[::-1] + "9"
            tokens = len(text) + 1
            forwards = max(1, round(tokens * (0.2 + c.tau_mask)))
            edits = round(tokens * (1 - c.tau_edit) * 0.2) if c.editing else 0
            out.append(Result(tok.encode(text), text + tok.eos_token, "eos",
                              Stats(forwards, tokens, tokens, edits, edits // 2 if c.mbe_blocks else 0)))
        return out


def _setup(tasks, n, seeds):
    tok = CharTokenizer()
    answers = {}
    for name in tasks:
        task = get_task(name)
        for s in seeds:
            for e in task.examples(n, seed=s, split="eval"):
                answers[tok.decode(task.prompt_ids(e, tok))] = e.answer
    return tok, TradeoffEngine(answers)


@pytest.fixture(scope="module")
def report():
    settings = BenchSettings(tasks=("addition", "reverse"), n=12, seeds=(0, 1), batch_size=8,
                             tau_masks=(0.3, 0.5, 0.7, 0.9), tau_edits=(0.0, 0.5))
    tok, engine = _setup(settings.tasks, settings.n, settings.seeds)
    rep = bench(object(), settings, tokenizer=tok, generate_fn=engine)
    rep.engine_calls = engine.calls
    return rep


def test_plan_covers_modes_mbe_and_sweep():
    names = [(n, g) for n, g, _ in plan(BenchSettings(tau_masks=(0.5, 0.9), tau_edits=(0.0,), mbe_blocks=2))]
    assert names[:3] == [("quality", "modes"), ("speedy", "modes"), ("no-edit", "modes")]
    assert ("quality+mbe2", "mbe") in names and ("speedy+mbe2", "mbe") in names
    assert [n for n, g in names if g == "sweep"] == ["m0.5/e0", "m0.5/off", "m0.9/e0", "m0.9/off"]


def test_bench_dedups_and_measures(report):
    # quality / speedy appear in "modes", "mbe" and (as m0.7/e0.5, m0.5/e0) the sweep but are decoded once each
    unique = {json.dumps(p.report.config, sort_keys=True) for p in report.points}
    per_config_calls = 2 * 2 * 2  # tasks x seeds x batches (12 examples, batch 8)
    assert report.engine_calls == len(unique) * per_config_calls
    assert report.point("m0.7/e0.5").report.runs == report.point("quality").report.runs
    q, s, off = (report.point(n) for n in ("quality", "speedy", "no-edit"))
    assert s.mean("tpf") > q.mean("tpf")
    assert off.mean("edits_per_token") == 0.0 < q.mean("edits_per_token")
    assert report.point("quality+mbe1").mean("score") >= q.mean("score")


def test_pareto_front_is_non_dominated(report):
    front = report.pareto()
    sweep = report.group("sweep")
    assert front and set(p.name for p in front) <= set(p.name for p in sweep)
    for p in front:
        assert not any(q.mean("tpf") > p.mean("tpf") and q.mean("score") > p.mean("score") for q in sweep)
    for p in sweep:
        if p not in front:
            assert any(q.mean("tpf") >= p.mean("tpf") and q.mean("score") >= p.mean("score") for q in front)
    tpfs = [p.mean("tpf") for p in front]
    assert tpfs == sorted(tpfs)


def test_markdown_json_and_png(report, tmp_path):
    md = to_markdown(report)
    assert "## Quality vs speedy vs no editing" in md and "| addition |" in md and "★" in md
    assert "| m0.3/off | 0.3 | off |" in md and "pareto.png" in md
    write_markdown(report, tmp_path / "bench.md")
    js = json.loads(report.write_json(tmp_path / "bench.json").read_text())
    assert {p["name"] for p in js["points"]} >= {"quality", "speedy", "no-edit", "m0.9/off"}
    assert js["pareto"] == [p.name for p in report.pareto()]
    png = plot_pareto(report, tmp_path / "pareto.png")
    from matplotlib.image import imread

    img = imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 600 and img[..., :3].std() > 0.05  # a real, non-blank picture


def test_bench_settings_validation():
    for kwargs, match in [({"tasks": ()}, "tasks"), ({"tau_masks": (1.5,)}, "tau_masks"),
                          ({"tau_edits": (-1.0,)}, "tau_edits"), ({"mbe_blocks": 0}, "mbe_blocks")]:
        with pytest.raises(ValueError, match=match):
            BenchSettings(**kwargs)


def test_parse_sets_and_lists():
    assert commands.parse_sets(["tau_mask=0.6", "editing=false", "stop=[\"x\"]", "mode=abc"]) == {
        "tau_mask": 0.6, "editing": False, "stop": ["x"], "mode": "abc"}
    with pytest.raises(ValueError, match="--set"):
        commands.parse_sets(["tau_mask"])


def test_cli_registers_eval_and_bench(capsys):
    from redraft.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["eval", "m", "--tasks", "addition,sorting", "--mode", "speedy", "--n", "3",
                              "--seeds", "0,1,2", "--out", "d"])
    assert args.func is commands.run_eval and args.tasks == ["addition", "sorting"] and args.seeds == [0, 1, 2]
    args = parser.parse_args(["bench", "m", "--tau-mask", "0.4,0.8", "--tau-edit", "0"])
    assert args.func is commands.run_bench and args.tau_mask == [0.4, 0.8] and args.tau_edit == [0.0]
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "m", "--seeds", "a,b"])
    assert "--seeds must be a comma-separated list" in capsys.readouterr().err
