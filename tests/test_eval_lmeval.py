"""lm-evaluation-harness integration, offline: local YAML tasks over local JSONL files on the bundled model.

generate_until is checked against `redraft eval` on the same examples (same prompts, completions and score);
loglikelihood (the ELBO estimate) must rank the reference first on an easy synthetic multiple-choice set."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'redraft[lmeval]')")

from redraft.evaluation import LMEvalModel  # noqa: E402
from redraft.evaluation.commands import resolve_model  # noqa: E402
from redraft.evaluation.harness import evaluate  # noqa: E402
from redraft.evaluation.tasks import get_task  # noqa: E402

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
N = 6

GEN_YAML = """task: redraft_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: {budget}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    regexes_to_ignore: ["^\\\\s+", "\\\\s+$"]
"""

MC_YAML = """task: redraft_sorting_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def model():
    return LMEvalModel(resolve_model(None), batch_size=8, mc_samples=4)


def _gen_task_dir(tmp_path: Path, name: str) -> Path:
    """Our task's eval examples (the ones `redraft eval --n N --seeds 0` decodes) as a local lm-eval task."""
    rows = [{"prompt": e.messages[0]["content"], "answer": e.answer, "key": e.key}
            for e in get_task(name).examples(N, seed=0, split="eval")]
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / f"{name}.yaml").write_text(GEN_YAML.format(name=name, data=tmp_path / f"{name}.jsonl",
                                                         budget=get_task(name).max_new_tokens))
    return tmp_path


def _mc_task_dir(tmp_path: Path, n: int = 8) -> Path:
    """sort: x y z -> choices: the sorted list (reference), the list as given, reversed sorted, one value changed."""
    rng = random.Random(0)
    rows = []
    for e in get_task("sorting").examples(n, seed=1, split="eval"):
        values = e.meta["values"]
        ordered = sorted(values)
        changed = list(ordered)
        changed[rng.randrange(len(changed))] = (changed[0] + 5) % 10
        distractors = [" ".join(map(str, v)) for v in (values, ordered[::-1], changed)]
        choices = [e.answer] + [d for d in dict.fromkeys(distractors) if d != e.answer]
        rng.shuffle(choices)
        rows.append({"prompt": e.messages[0]["content"], "choices": choices, "label": choices.index(e.answer)})
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.yaml").write_text(MC_YAML.format(data=tmp_path / "mc.jsonl"))
    return tmp_path


def _run(model, task_dir: Path, task: str, **kw):
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=model, tasks=[task], apply_chat_template=True, log_samples=True,
                                   task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
                                   **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sorting", "addition"])  # the bundled model: 100% and ~15% (wrong answers too)
def test_generate_until_matches_redraft_eval(model, tmp_path, name):
    out = _run(model, _gen_task_dir(tmp_path, name), f"redraft_{name}")
    ours = evaluate(model.model, [name], n=N, seeds=[0], tokenizer=model.tok, batch_size=8)
    samples = out["samples"][f"redraft_{name}"]
    by_key = {s["doc"]["key"]: s for s in samples}
    assert len(by_key) == N
    ref = {s.key: s for s in ours.runs[0].samples}
    for key, s in by_key.items():
        assert s["resps"][0][0].strip() == ref[key].completion.strip(), key
        assert float(s["exact_match"]) == ref[key].score, key
    score = out["results"][f"redraft_{name}"]["exact_match,none"]
    assert score == pytest.approx(ours.runs[0].score)
    assert name != "sorting" or score > 0.5  # the bundled model sorts (100% in its model card)


def test_chat_prompt_keeps_template_special_tokens(model):
    messages = [{"role": "user", "content": "sort: 3 1 2"}]
    text = model.apply_chat_template(messages)
    assert model.encode_context(text) == model.tok.apply_chat_template(messages, add_generation_prompt=True)
    assert model.encode_context("<role>x") == model.tok.encode("<role>x")  # plain text never yields specials


@pytest.mark.slow
def test_elbo_ranks_the_reference_first(model, tmp_path):
    out = _run(model, _mc_task_dir(tmp_path), "redraft_sorting_mc")
    acc = out["results"]["redraft_sorting_mc"]["acc,none"]
    assert acc >= 0.85, out["results"]


def test_loglikelihood_estimate_is_deterministic_and_shares_noise(model):
    from lm_eval.api.instance import Instance

    ctx = model.apply_chat_template([{"role": "user", "content": "sort: 4 2 8"}])
    reqs = [Instance("loglikelihood", {}, (ctx, c), i) for i, c in enumerate(["2 4 8", "8 4 2", "2 4 8"])]
    first, second = model.loglikelihood(reqs), model.loglikelihood(reqs)
    assert first == second  # same seed -> same estimate
    assert first[0] == first[2]  # identical choices: identical noise, identical score
    assert first[0][0] > first[1][0] and all(lp < 0 for lp, _ in first)
    rolling = model.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("def f(x):\n    return x\n",), 0)])
    assert len(rolling) == 1 and rolling[0] < 0


def test_bad_model_args_name_the_problem():
    with pytest.raises(ValueError, match="no argument 'tau_mask_typo'"):
        LMEvalModel(resolve_model(None), tau_mask_typo=0.5)
    with pytest.raises(ValueError, match="mc_samples"):
        LMEvalModel(resolve_model(None), mc_samples=0)


@pytest.mark.slow
def test_cli_hands_over_to_lm_eval(tmp_path):
    task_dir = _mc_task_dir(tmp_path, n=2)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "redraft.cli", "lm-eval", "--model_args", "mc_samples=2", "--batch_size", "4",
                           "--tasks", "redraft_sorting_mc", "--include_path", str(task_dir), "--apply_chat_template",
                           "--output_path", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "redraft_sorting_mc" in proc.stdout and "acc" in proc.stdout
    assert list((tmp_path / "out").rglob("results_*.json"))


def test_lm_eval_argv_adds_run_and_the_model():
    from redraft.evaluation.lmeval_command import lm_eval_argv

    assert lm_eval_argv(["--tasks", "x"]) == ["lm-eval", "run", "--model", "redraft", "--tasks", "x"]
    assert lm_eval_argv(["run", "--model", "hf", "--tasks", "x"]) == ["lm-eval", "run", "--model", "hf", "--tasks",
                                                                     "x"]
    assert lm_eval_argv(["ls", "tasks"]) == ["lm-eval", "ls", "tasks"]
    assert lm_eval_argv(["--help"]) == ["lm-eval", "run", "--help"]
