"""Training-objective throughput of the tiny config on CPU, and the FLOP model behind the GPU utilisation numbers.

Measures trained tokens/s (rows x seq_len per second, forward + backward + AdamW step) of the vectorised
[x_t ; x_0] objective (`redraft.training.objective`) for the model of configs/tiny.yaml on synthetic rows, in three
variants: M2T only, M2T + T2T, and the shipped config (M2T + T2T + keep + MTF, whose extra turn is a no-grad forward),
timed round-robin and reported as the best step (and the median) because the CPU may be shared.
For context it also times the per-block loop that the two-stream mask replaces (one forward per block over the clean
prefix + that noisy block, M2T only). It then reads the committed GPU training summaries of the bundled model and its
twin and converts them to hardware FLOP/s with the FLOP model below (matmul FLOPs of the active parameters over both
streams, attention over the dense 2L x 2L mask as SDPA computes it, and the MTF forward).

    python benchmarks/train_speed.py [--quick] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from redraft.model import BlockLayout, LLaDA2MoeConfig, LLaDA2MoeModelLM
from redraft.training import load_config
from redraft.training.noise import NoiseConfig
from redraft.training.objective import DiffusionObjective, TrainBatch

ROOT = Path(__file__).resolve().parents[1]
H100_BF16_DENSE_PEAK = 989e12  # H100 SXM dense bf16 tensor-core peak, FLOP/s
MASK_ID = 1
N_SPECIAL = 8


def active_matmul_params(c: LLaDA2MoeConfig) -> int:
    """Weights multiplied per token: attention, dense/MoE MLPs (routed top-k + shared + router), the LM head."""
    attn = c.hidden_size * c.head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    dense = 3 * c.hidden_size * c.intermediate_size
    moe = 3 * c.hidden_size * c.moe_intermediate_size * (c.num_experts_per_tok + c.num_shared_experts)
    moe += c.hidden_size * c.num_experts
    k = c.first_k_dense_replace
    return c.num_hidden_layers * attn + k * dense + (c.num_hidden_layers - k) * moe + c.hidden_size * c.vocab_size


def flops_per_trained_token(c: LLaDA2MoeConfig, seq_len: int, block_length: int, noise: NoiseConfig) -> float:
    """Hardware FLOPs per trained token: forward+backward (x3) over the input, plus (mtf_turns - 1) no-grad forwards.

    The input is 2L long when the blocks are shorter than the row (the [x_t ; x_0] stream), else L.
    """
    streams = 2 if block_length < seq_len else 1
    n = streams * seq_len
    matmul_fwd = 2 * active_matmul_params(c) * streams
    attn_fwd = 4 * n * n * c.num_attention_heads * c.head_dim * c.num_hidden_layers / seq_len
    fwd = matmul_fwd + attn_fwd
    return 3 * fwd + (noise.mtf_turns - 1) * fwd


def synthetic_batch(bsz: int, length: int, vocab: int, prompt: int, gen: torch.Generator) -> TrainBatch:
    x0 = torch.randint(N_SPECIAL, vocab, (bsz, length), generator=gen)
    pos = torch.arange(length).expand(bsz, length).contiguous()
    return TrainBatch(x0, pos, torch.zeros_like(x0), pos >= prompt)


def loop_loss(model, batch: TrainBatch, block_length: int, gen: torch.Generator) -> torch.Tensor:
    """The reference the vectorised objective replaces: per block, the clean prefix + the masked block."""
    x0 = batch.input_ids
    t = torch.rand((x0.shape[0], 1), generator=gen)
    masked = batch.eligible & (torch.rand(x0.shape, generator=gen) < t)
    x_t = torch.where(masked, torch.full_like(x0, MASK_ID), x0)
    total = torch.zeros(())
    for b in range(x0.shape[1] // block_length):
        s, e = b * block_length, (b + 1) * block_length
        logits = model(torch.cat([x0[:, :s], x_t[:, s:e]], 1), layout=BlockLayout(block_length)).logits[:, s:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x0[:, s:e].reshape(-1), reduction="none")
        total = total + (ce * masked[:, s:e].reshape(-1).float()).sum()
    return total / masked.float().sum().clamp(min=1)


def make_step(model, bsz: int, seq_len: int, block_length: int, noise: NoiseConfig, loop: bool):
    """One training step (loss, backward, AdamW) of a variant on a fixed synthetic batch."""
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    batch = synthetic_batch(bsz, seq_len, vocab, seq_len // 8, gen)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    objective = DiffusionObjective(noise, MASK_ID, torch.arange(N_SPECIAL, vocab))

    def step() -> None:
        loss = loop_loss(model, batch, block_length, gen) if loop else objective(model, batch, block_length, gen)[0]
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    return step


def measure(steps: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per step of every variant, interleaved round by round after one warm-up each, so that load from other
    processes on a shared machine hits every variant alike; the minimum is the least disturbed estimate."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def gpu_runs(cfg, model_cfg: LLaDA2MoeConfig) -> list[dict]:
    """Trained tokens/s and hardware FLOP/s of the committed GPU runs (both ran concurrently on one H100)."""
    twin = load_config(ROOT / "configs" / "tiny-m2t-only.yaml")
    out = []
    for name, folder, c in (("tiny (M2T+T2T+MTF)", "redraft/assets/tiny", cfg),
                            ("tiny-m2t-only", "models/tiny-m2t-only", twin)):
        s = json.loads((ROOT / folder / "training_summary.json").read_text())
        tps = s["train_tokens"] / s["time_s"]
        fpt = flops_per_trained_token(model_cfg, c.data.seq_len, c.block_length, c.noise)
        out.append({"run": name, "steps": s["steps"], "train_tokens": s["train_tokens"], "time_s": s["time_s"],
                    "tokens_per_s": round(tps), "flops_per_token": round(fpt), "tflops": round(tps * fpt / 1e12, 2),
                    "mfu_vs_h100_bf16_peak": round(tps * fpt / H100_BF16_DENSE_PEAK, 4)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batch, short rows, two timed steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    vocab = json.loads((ROOT / "redraft/assets/tiny/config.json").read_text())["vocab_size"]
    model_cfg = LLaDA2MoeConfig(**{**cfg.model, "vocab_size": vocab, "torch_dtype": "float32"})
    model = LLaDA2MoeModelLM(model_cfg).train()
    bsz, seq_len, repeats = (2, 128, 2) if args.quick else (8, cfg.data.seq_len, 4)
    bl = cfg.block_length
    m2t = replace(cfg.noise, t2t_ratio=0.0, keep_weight=0.0, mtf_turns=1)
    variants = [("vectorised M2T", m2t, False), ("vectorised M2T+T2T", replace(cfg.noise, mtf_turns=1), False),
                ("vectorised M2T+T2T+MTF (config)", cfg.noise, False), ("per-block loop M2T (reference)", m2t, True)]
    steps = {name: make_step(model, bsz, seq_len, bl, noise, loop) for name, noise, loop in variants}
    times = measure(steps, repeats)
    rows = [{"objective": name, "tokens_per_s": round(bsz * seq_len / min(ts), 1),
             "tokens_per_s_median": round(bsz * seq_len / statistics.median(ts), 1),
             "seconds": [round(t, 3) for t in ts]} for name, ts in times.items()]
    base = rows[0]["tokens_per_s"]
    print(f"CPU, {args.threads} threads, batch {bsz} x {seq_len}, block {bl}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params (train step: fwd+bwd+AdamW)")
    print(f"{'objective':36s} {'tokens/s':>10s} {'median':>8s} {'vs M2T':>7s}")
    for r in rows:
        print(f"{r['objective']:36s} {r['tokens_per_s']:10.0f} {r['tokens_per_s_median']:8.0f} "
              f"{r['tokens_per_s'] / base:7.2f}")
    gpu = gpu_runs(cfg, model_cfg)
    print("\nGPU runs (committed summaries; both ran at once on one H100, so each had part of it):")
    print(f"{'run':22s} {'tokens':>10s} {'time_s':>7s} {'tokens/s':>9s} {'FLOP/token':>11s} {'TFLOP/s':>8s} {'MFU':>6s}")
    for g in gpu:
        print(f"{g['run']:22s} {g['train_tokens']:10d} {g['time_s']:7.1f} {g['tokens_per_s']:9d} "
              f"{g['flops_per_token'] / 1e6:10.1f}M {g['tflops']:8.2f} {100 * g['mfu_vs_h100_bf16_peak']:5.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": "cpu", "threads": args.threads, "batch": bsz,
                                               "seq_len": seq_len, "block_length": bl, "quick": args.quick,
                                               "cpu": rows, "gpu_runs": gpu,
                                               "h100_peak_flops": H100_BF16_DENSE_PEAK}, indent=1))


if __name__ == "__main__":
    main()
