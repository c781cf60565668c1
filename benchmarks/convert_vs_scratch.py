"""AR -> block diffusion at tiny scale: a converted AR model vs the same architecture trained from scratch.

The user path of `redraft convert`, end to end, on this machine:

1. **AR tokenizer.** A byte-level BPE (no `<|mask|>`, EOS only) trained on the train split of the corpus (the
   standard library's source, or a subset of it), as an AR model's tokenizer.
2. **AR model.** A real `transformers` Qwen3 causal LM (dense, q/k norm) trained with a plain next-token loop (AdamW,
   cosine LR) on the packed train rows; each document attends only to itself (a 4-D block-diagonal causal mask,
   positions from 0 per document, as the diffusion trainer packs them). Saved with `save_pretrained`.
3. **Convert.** `redraft convert AR DST` (the CLI): LLaDA2-MoE names, `<|mask|>` added (the embedding and head grow
   by one row, initialised to the mean row), tokenizer and chat template written.
4. **Converted arm.** `redraft.training.Trainer` continues the converted model with the diffusion objective of
   `configs/convert-qwen3.yaml` (M2T + T2T + MTF) and its block-size warm-up 1 -> 4 -> 32 -> L -> 32, scaled down.
5. **Scratch arm.** The same architecture (the converted config.json), initialised by the trainer, with the identical
   recipe, data, row order and eval set; it runs longer, by the AR phase's tokens, so the two arms can also be
   compared at equal *total* tokens (AR + diffusion).

Both diffusion arms run at a constant learning rate after warm-up (`optim.schedule: constant`), so a point on the
longer scratch curve is exactly what a shorter scratch run would have reached (no decay phase that favours whichever
run ends at the compared point). Eval: the trainer's held-out diffusion loss (M2T, masked positions, eval block length
`block_length`, fixed noise seed), on the same held-out rows for both arms, every `eval_every` steps and at step 0.
Tokens are row positions (`batch_size x seq_len` per step), for AR and diffusion alike.

    python benchmarks/convert_vs_scratch.py                 # the full run (~20 min on one loaded CPU core)
    python benchmarks/convert_vs_scratch.py --quick         # 1-2 minutes, a smoke run of the same pipeline
    python benchmarks/convert_vs_scratch.py --shape test --work-dir /tmp/x --json /tmp/x.json --plot ''

Prints a table; writes JSON (default benchmarks/results/convert_vs_scratch[_quick].json) and a PNG plot (default
docs/convert_vs_scratch.png for the full run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    """Model, data and budget of one run. `files`: stdlib globs (relative to its root) for the corpus; empty = the
    whole standard library (the trainer's `data.stdlib`). Steps count optimiser steps of `*_batch` rows."""

    name: str
    files: tuple[str, ...]
    cpt_eval_fraction: float
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    seq_len: int
    ar_steps: int
    ar_batch: int
    ar_lr: float
    diffusion_steps: int
    diffusion_batch: int
    diffusion_lr: float
    warmup_steps: int
    eval_every: int
    eval_batches: int
    block_length: int = 32
    mtf_turns: int = 2
    seed: int = 0
    block_schedule: list[list[int]] = field(default_factory=list)

    def schedule(self) -> list[list[int]]:
        """LLaDA2.0's warm-up 1 -> 4 -> 32 -> whole row, then back to `block_length`, at the proportions of
        configs/convert-qwen3.yaml (2% per warm-up stage, the whole row to 70%), scaled to `diffusion_steps`."""
        if self.block_schedule:
            return self.block_schedule
        n = self.diffusion_steps
        stages = [[0, 1], [max(1, round(0.02 * n)), 4], [max(2, round(0.04 * n)), 32],
                  [max(3, round(0.06 * n)), self.seq_len], [max(4, round(0.7 * n)), self.block_length]]
        return [s for s in stages if s[1] <= self.seq_len]


SHAPES = {
    # ~1.3M parameters; about 20 minutes on one CPU core shared with other work
    "full": Shape("full", (), 0.02, vocab=2048, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384,
                  seq_len=128, ar_steps=200, ar_batch=32, ar_lr=2e-3, diffusion_steps=250, diffusion_batch=32,
                  diffusion_lr=1e-3, warmup_steps=20, eval_every=10, eval_batches=4),
    "quick": Shape("quick", ("json/*.py", "email/*.py", "a*.py", "c*.py"), 0.1, vocab=1024, hidden=96, layers=2,
                   heads=4, kv_heads=2, intermediate=256, seq_len=128, ar_steps=60, ar_batch=16, ar_lr=2e-3,
                   diffusion_steps=60, diffusion_batch=16, diffusion_lr=1e-3, warmup_steps=5, eval_every=10,
                   eval_batches=2),
    "test": Shape("test", ("json/*.py",), 0.34, vocab=300, hidden=32, layers=1, heads=2, kv_heads=1,
                  intermediate=64, seq_len=64, ar_steps=3, ar_batch=4, ar_lr=2e-3, diffusion_steps=4,
                  diffusion_batch=4, diffusion_lr=1e-3, warmup_steps=1, eval_every=2, eval_batches=1, block_length=16,
                  mtf_turns=1),
}

# configs/convert-qwen3.yaml's objective (M2T + T2T + MTF); mtf_turns per shape
NOISE = {"mask_ratio_min": 0.05, "mask_ratio_max": 1.0, "mask_ratio_per": "block", "t2t_ratio": 0.5,
         "t2t_max_rate": 0.2, "keep_weight": 0.1, "mtf_ratio": 0.5}


# ------------------------------------------------------------------------------------------------ data
def data_config(shape: Shape):
    from redraft.training.data import DataConfig

    stdlib_root = Path(sysconfig.get_paths()["stdlib"])
    globs = [str(stdlib_root / g) for g in shape.files]
    return DataConfig(seq_len=shape.seq_len, pad_multiple=min(32, shape.seq_len), stdlib=not shape.files,
                      text_files=globs, cpt_eval_fraction=shape.cpt_eval_fraction, seed=shape.seed)


def train_texts(cfg) -> tuple[list[str], set[str]]:
    """(the texts `redraft.training.data.build_corpus` trains on, the names it holds out): its held-out rule, for
    the AR tokenizer."""
    from redraft.training.data import is_code_eval_module, is_eval_name, stdlib_files

    texts: list[tuple[str, Path, bool]] = []
    if cfg.stdlib:
        root, files = stdlib_files(cfg.stdlib_max_file_bytes)
        texts += [(f"stdlib/{p.relative_to(root)}", p, is_code_eval_module(p.relative_to(root))) for p in files]
    for pattern in cfg.text_files:
        texts += [(str(p), p, False) for p in sorted(Path("/").glob(pattern.lstrip("/")))]
    held = {name for name, _, code_eval in texts if code_eval or is_eval_name(name, cfg.cpt_eval_fraction)}
    return [p.read_text(encoding="utf-8", errors="replace") for name, p, _ in texts if name not in held], held


def write_ar_tokenizer(shape: Shape, cfg, folder: Path) -> tuple[int, set[str]]:
    """A byte-level BPE with EOS as its only special token (no mask token): what an AR checkpoint ships, trained on
    the train split only. Returns (its size, the held-out names)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from redraft.model.tokenizer import EOS_TOKEN

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=shape.vocab, min_frequency=2, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts, held = train_texts(cfg)
    tok.train_from_iterator(texts, trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN}))
    return tok.get_vocab_size(with_added_tokens=True), held


def prepare(shape: Shape, work: Path) -> tuple[Any, int]:
    """AR tokenizer in work/ar, packed rows (tokenised with that tokenizer plus `<|mask|>`, exactly what
    `redraft convert` will write) in work/data. Returns (prepared data, AR vocabulary size)."""
    from redraft.model.convert import add_mask_token
    from redraft.training.prepare import prepare_data

    cfg = data_config(shape)
    ar_vocab, held = write_ar_tokenizer(shape, cfg, work / "ar")
    tokenizer, _, _, _ = add_mask_token(work / "ar", ar_vocab)
    data = prepare_data(cfg, work / "data", tokenizer=tokenizer)
    if held != set(data.recipe["held_out_files"]):
        raise RuntimeError("the AR tokenizer's held-out files differ from the data's (redraft.training.data changed)")
    if not len(data.eval):
        raise ValueError(f"shape {shape.name!r}: no held-out rows (raise cpt_eval_fraction or add files)")
    return data, ar_vocab


# ------------------------------------------------------------------------------------------------ AR phase
def document_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] bool: causal within each packed document, nothing across documents or into padding."""
    length = segment_ids.shape[1]
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] >= 0)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (same & causal)[:, None] | torch.eye(length, dtype=torch.bool)  # padding attends to itself (no NaN)


def ar_labels(batch) -> torch.Tensor:
    """Next-token labels for HF's shifted loss: token t is a target when t-1 is in the same document."""
    seg = batch.segment_ids
    labels = batch.input_ids.clone()
    keep = torch.zeros_like(seg, dtype=torch.bool)
    keep[:, 1:] = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] >= 0)
    return labels.masked_fill(~keep, -100)


def ar_loss(model, batch) -> torch.Tensor:
    out = model(input_ids=batch.input_ids, attention_mask=document_mask(batch.segment_ids),
                position_ids=batch.position_ids, labels=ar_labels(batch))
    return out.loss


@torch.no_grad()
def ar_eval(model, data, shape: Shape) -> float:
    model.eval()
    rows = np.arange(min(len(data.eval), shape.eval_batches * shape.diffusion_batch))
    loss = float(ar_loss(model, data.eval.batch(rows)))
    model.train()
    return loss


def train_ar(shape: Shape, data, ar_vocab: int, folder: Path) -> dict[str, Any]:
    """A transformers Qwen3 causal LM trained with a plain next-token loop; saved to `folder` (safetensors)."""
    import transformers

    torch.manual_seed(shape.seed)
    hf_cfg = transformers.Qwen3Config(
        vocab_size=ar_vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.hidden // shape.heads, max_position_embeddings=4 * shape.seq_len, tie_word_embeddings=False,
        rope_theta=10000.0, eos_token_id=data.tokenizer.eos_id, pad_token_id=data.tokenizer.eos_id)
    model = transformers.Qwen3ForCausalLM(hf_cfg).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed_tokens" not in n]
    plain = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed_tokens" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                            lr=shape.ar_lr, betas=(0.9, 0.95))
    order = np.random.default_rng(shape.seed + 7).permutation(len(data.train))
    curve = [{"step": 0, "tokens": 0, "eval_loss": ar_eval(model, data, shape)}]
    t0 = time.perf_counter()
    for step in range(shape.ar_steps):
        idx = [order[(step * shape.ar_batch + i) % len(order)] for i in range(shape.ar_batch)]
        warm = min(1.0, (step + 1) / max(1, shape.warmup_steps))
        cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / shape.ar_steps))
        for group in opt.param_groups:
            group["lr"] = shape.ar_lr * warm * cos
        loss = ar_loss(model, data.train.batch(idx))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done, train_loss = step + 1, float(loss.detach())
        if done % shape.eval_every == 0 or done == shape.ar_steps:
            curve.append({"step": done, "tokens": done * shape.ar_batch * shape.seq_len, "train_loss": train_loss,
                          "eval_loss": ar_eval(model, data, shape)})
            print(f"ar step {done}/{shape.ar_steps} loss {train_loss:.3f} eval {curve[-1]['eval_loss']:.3f}",
                  flush=True)
    elapsed = time.perf_counter() - t0
    model.save_pretrained(folder)
    return {"parameters": sum(p.numel() for p in model.parameters()), "steps": shape.ar_steps,
            "tokens": shape.ar_steps * shape.ar_batch * shape.seq_len, "time_s": round(elapsed, 1),
            "curve": curve, "model_type": "qwen3 (transformers)"}


def convert(src: Path, dst: Path, data) -> dict[str, Any]:
    """`redraft convert SRC DST` through the CLI, as a user runs it; checks the tokenizer is the data's."""
    from redraft.cli import main
    from redraft.model.tokenizer import load_tokenizer

    if main(["convert", str(src), str(dst)]) != 0:
        raise RuntimeError(f"redraft convert {src} {dst} failed")
    tok = load_tokenizer(dst)
    if tok.mask_id != data.tokenizer.mask_id or tok.vocab_size != data.tokenizer.vocab_size:
        raise RuntimeError("the converted tokenizer differs from the one the data was tokenised with")
    return json.loads((dst / "config.json").read_text())


# ------------------------------------------------------------------------------------------------ diffusion arms
def diffusion_config(shape: Shape, work: Path, arm: str, steps: int, model: dict[str, Any] | None,
                     init_from: Path | None, lr: float | None = None):
    from redraft.training.config import config_from_dict

    return config_from_dict({
        "output_dir": str(work / arm), "init_from": str(init_from) if init_from else None, "model": model or {},
        "data": {"seq_len": shape.seq_len, "pad_multiple": min(32, shape.seq_len), "prepared": str(work / "data")},
        "noise": {**NOISE, "mtf_turns": shape.mtf_turns},
        "optim": {"lr": lr or shape.diffusion_lr, "weight_decay": 0.1, "warmup_steps": shape.warmup_steps,
                  "schedule": "constant", "grad_clip": 1.0},
        "steps": steps, "batch_size": shape.diffusion_batch, "micro_batch_size": shape.diffusion_batch,
        "block_length": shape.block_length, "block_schedule": shape.schedule(), "seed": shape.seed,
        "device": "cpu", "autocast": "none", "log_every": shape.eval_every, "eval_every": shape.eval_every,
        "eval_batches": shape.eval_batches, "save_every": steps + 1, "save_dtype": "float32"})


def run_arm(cfg) -> dict[str, Any]:
    """Eval at step 0, then the trainer's run; the eval curve from its metrics.jsonl."""
    from redraft.training.trainer import Trainer

    probe = Trainer(cfg)
    probe.setup()
    first = probe.evaluate()
    del probe
    t0 = time.perf_counter()
    summary = Trainer(cfg).run()
    elapsed = time.perf_counter() - t0
    tokens_per_step = cfg.batch_size * cfg.data.seq_len
    curve = [{"step": 0, "tokens": 0, **first}]
    for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval_loss" in record:
            curve.append({"step": record["step"], "tokens": record["step"] * tokens_per_step,
                          "eval_loss": record["eval_loss"], "eval_acc": record["eval_acc"]})
    return {"steps": cfg.steps, "tokens": cfg.steps * tokens_per_step, "time_s": round(elapsed, 1),
            "parameters": summary["parameters"], "curve": curve}


def scratch_model(converted: dict[str, Any]) -> dict[str, Any]:
    """The converted architecture as a `model:` section (vocabulary and dtype come from the trainer)."""
    from redraft.model.config import LLaDA2MoeConfig

    fields = {f.name for f in dataclasses.fields(LLaDA2MoeConfig)} - {"extra", "vocab_size", "pad_token_id",
                                                                        "torch_dtype", "model_type"}
    return {k: v for k, v in converted.items() if k in fields}


# ------------------------------------------------------------------------------------------------ summary
def loss_at(curve: list[dict[str, Any]], tokens: int) -> float | None:
    """Eval loss of the last eval point at or before `tokens`."""
    points = [p for p in curve if p["tokens"] <= tokens]
    return points[-1]["eval_loss"] if points else None


def tokens_to_reach(curve: list[dict[str, Any]], target: float) -> int | None:
    for p in curve:
        if p["eval_loss"] <= target:
            return p["tokens"]
    return None


def summarize(ar: dict[str, Any], conv: dict[str, Any], scratch: dict[str, Any],
              sweep: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """`scratch` ran at the converted arm's learning rate; `sweep`: scratch arms at other rates (the best of all
    scratch arms is what the converted arm is held against in `best_scratch`)."""
    d = conv["tokens"]
    a = ar["tokens"]
    target = loss_at(scratch["curve"], d)  # scratch's loss after the converted arm's diffusion budget
    reach = tokens_to_reach(conv["curve"], target) if target is not None else None
    s_final = scratch["curve"][-1]["eval_loss"]
    reach_final = tokens_to_reach(conv["curve"], s_final)
    return {
        "per_diffusion_token": {
            "diffusion_tokens": d, "converted_eval_loss": loss_at(conv["curve"], d), "scratch_eval_loss": target,
            "converted_tokens_to_scratch_loss": reach,
            "token_ratio": round(d / reach, 2) if reach else None},
        "total_tokens": {
            "ar_tokens": a, "converted_total_tokens": a + d, "converted_eval_loss": loss_at(conv["curve"], d),
            "scratch_eval_loss_at_same_total": loss_at(scratch["curve"], a + d),
            "scratch_tokens": scratch["tokens"], "scratch_final_eval_loss": s_final,
            "converted_total_tokens_to_scratch_final": a + reach_final if reach_final is not None else None},
        "time_s": {"ar": ar["time_s"], "converted": conv["time_s"], "scratch": scratch["time_s"],
                   "scratch_at_converted_budget": round(scratch["time_s"] * d / scratch["tokens"], 1)},
        "best_scratch": min(({"lr": arm["lr"], "eval_loss_at_diffusion_tokens": loss_at(arm["curve"], d),
                              "eval_loss_at_same_total": loss_at(arm["curve"], a + d)}
                             for arm in [scratch, *sweep]), key=lambda r: r["eval_loss_at_same_total"]),
    }


def table(result: dict[str, Any]) -> str:
    conv, scratch = result["converted"]["curve"], result["scratch"]["curve"]
    a = result["ar"]["tokens"]
    lines = [f"{'diffusion tokens':>16} | {'converted':>9} | {'scratch':>9} | {'conv total tokens':>17}",
             "-" * 62]
    by_tokens = {p["tokens"]: p["eval_loss"] for p in scratch}
    for p in conv:
        s = by_tokens.get(p["tokens"])
        lines.append(f"{p['tokens']:>16,} | {p['eval_loss']:>9.3f} | {s if s is None else f'{s:9.3f}':>9} | "
                     f"{p['tokens'] + a:>17,}")
    for p in scratch:
        if p["tokens"] > conv[-1]["tokens"]:
            lines.append(f"{p['tokens']:>16,} | {'':>9} | {p['eval_loss']:>9.3f} |")
    s = result["summary"]
    per, tot = s["per_diffusion_token"], s["total_tokens"]
    lines += ["", f"AR phase: {a:,} tokens, {result['ar']['time_s']} s, AR eval loss "
                  f"{result['ar']['curve'][0]['eval_loss']:.3f} -> {result['ar']['curve'][-1]['eval_loss']:.3f}",
              f"per diffusion token: at {per['diffusion_tokens']:,} converted {per['converted_eval_loss']:.3f} vs "
              f"scratch {per['scratch_eval_loss']:.3f}; converted reached scratch's loss after "
              f"{per['converted_tokens_to_scratch_loss']} tokens (x{per['token_ratio']})",
              f"total tokens: converted {tot['converted_total_tokens']:,} (AR + diffusion) -> "
              f"{tot['converted_eval_loss']:.3f}; scratch at the same total -> "
              f"{tot['scratch_eval_loss_at_same_total']:.3f}"]
    for arm in result.get("scratch_lr_sweep", []):
        lines.append(f"scratch at lr {arm['lr']:g}: {loss_at(arm['curve'], per['diffusion_tokens']):.3f} at "
                     f"{per['diffusion_tokens']:,} tokens, {loss_at(arm['curve'], tot['converted_total_tokens']):.3f} "
                     f"at {tot['converted_total_tokens']:,}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = result["ar"]["tokens"]
    conv, scratch = result["converted"]["curve"], result["scratch"]["curve"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, shift, title in ((axes[0], 0, "per diffusion token"), (axes[1], a, "per total token (AR + diffusion)")):
        ax.plot([p["tokens"] / 1e6 for p in scratch], [p["eval_loss"] for p in scratch], "o-", ms=3,
                label=f"from scratch (lr {result['scratch']['lr']:g})")
        for arm in result.get("scratch_lr_sweep", []):
            ax.plot([p["tokens"] / 1e6 for p in arm["curve"]], [p["eval_loss"] for p in arm["curve"]], "--", lw=1,
                    label=f"from scratch (lr {arm['lr']:g})")
        ax.plot([(p["tokens"] + shift) / 1e6 for p in conv], [p["eval_loss"] for p in conv], "o-", ms=3,
                label=f"converted AR (Qwen3 -> redraft convert, lr {result['converted']['lr']:g})")
        if shift:
            ax.axvspan(0, a / 1e6, color="0.9")
            ax.text(a / 2e6, 0.95, "AR phase (causal LM)\nof the converted arm", ha="center", va="top", fontsize=8,
                    transform=ax.get_xaxis_transform())
        ax.set_xlabel("tokens (M)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out diffusion eval loss (M2T)")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"AR -> block diffusion vs scratch ({result['converted']['parameters']:,} parameters, "
                 f"seq {result['shape']['seq_len']}, stdlib text)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main
def run(shape: Shape, work: Path, scratch_lrs: list[float] = ()) -> dict[str, Any]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    data, ar_vocab = prepare(shape, work)
    prep_s = time.perf_counter() - t0
    print(f"data: {len(data.train)} train rows, {len(data.eval)} eval rows, vocab {data.tokenizer.vocab_size} "
          f"({prep_s:.0f} s)", flush=True)
    ar = train_ar(shape, data, ar_vocab, work / "ar")
    converted = convert(work / "ar", work / "converted", data)
    conv = run_arm(diffusion_config(shape, work, "converted_arm", shape.diffusion_steps, None, work / "converted"))
    extra = math.ceil(ar["tokens"] / (shape.diffusion_batch * shape.seq_len))
    conv["lr"] = shape.diffusion_lr
    scratch = run_arm(diffusion_config(shape, work, "scratch_arm", shape.diffusion_steps + extra,
                                       scratch_model(converted), None))
    scratch["lr"] = shape.diffusion_lr
    sweep = []
    for lr in scratch_lrs:  # the same scratch arm at other learning rates (is the comparison fair to scratch?)
        arm = run_arm(diffusion_config(shape, work, f"scratch_arm_lr{lr:g}", shape.diffusion_steps + extra,
                                       scratch_model(converted), None, lr=lr))
        sweep.append({"lr": lr, **arm})
    result = {"shape": dataclasses.asdict(shape) | {"block_schedule": shape.schedule()}, "prepare_s": round(prep_s, 1),
              "data": {k: data.recipe[k] for k in ("train_rows", "eval_rows", "train_tokens_eligible",
                                                    "eval_tokens_eligible", "vocab_size")},
              "ar": ar, "converted": conv, "scratch": scratch, "scratch_lr_sweep": sweep,
              "converted_config": {k: converted[k] for k in ("converted_from", "use_qk_norm", "vocab_size",
                                                             "num_hidden_layers", "hidden_size")}}
    result["summary"] = summarize(ar, conv, scratch, sweep)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="full")
    p.add_argument("--quick", action="store_true", help="the quick shape (1-2 minutes)")
    p.add_argument("--work-dir", default=None, help="where the runs go (default runs/convert_vs_scratch/SHAPE)")
    p.add_argument("--json", default=None, help="result JSON (default benchmarks/results/convert_vs_scratch*.json)")
    p.add_argument("--plot", default=None, help="PNG plot ('' for none; default docs/convert_vs_scratch.png for "
                                                "the full shape, none otherwise)")
    p.add_argument("--scratch-lr", type=float, action="append", default=[], metavar="LR",
                   help="also train the scratch arm at this learning rate (repeatable): a fairness check")
    p.add_argument("--replot", action="store_true", help="only redraw the plot from the existing --json result")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    args = p.parse_args(argv)
    shape = SHAPES["quick" if args.quick else args.shape]
    torch.set_num_threads(args.threads)
    suffix = "" if shape.name == "full" else f"_{shape.name}"
    work = Path(args.work_dir or ROOT / "runs" / "convert_vs_scratch" / shape.name)
    json_path = Path(args.json or ROOT / "benchmarks" / "results" / f"convert_vs_scratch{suffix}.json")
    plot_path = args.plot if args.plot is not None else (str(ROOT / "docs" / "convert_vs_scratch.png")
                                                         if shape.name == "full" else "")
    if args.replot:
        plot(json.loads(json_path.read_text()), Path(plot_path or ROOT / "docs" / "convert_vs_scratch.png"))
        return 0
    t0 = time.perf_counter()
    result = run(shape, work, args.scratch_lr)
    result["command"] = "python benchmarks/convert_vs_scratch.py " + " ".join(argv if argv is not None else
                                                                                 sys.argv[1:])
    result["total_s"] = round(time.perf_counter() - t0, 1)
    result["threads"] = args.threads
    result["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(table(result))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    if plot_path:
        plot(result, Path(plot_path))
    print(f"wrote {json_path}" + (f" and {plot_path}" if plot_path else "") + f" ({result['total_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
