"""Conformance: run every case of a parity directory (the `../shared/parity` format) through the public API.

Each case runs three ways: batch 1 with the KV cache, batch 1 without it, and batched (the cases that share a
block length in one batch, each row with its own settings). `forward` cases compare logits (max abs diff < 1e-4):
a full forward, a block-by-block forward over the KV cache, and a right-padded batch. `generate` cases compare ids
token for token.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from redraft.model import BlockLayout, KVCache, load_model

from .config import DecodeConfig
from .generate import generate

FORWARD_TOLERANCE = 1e-4
WAYS = ("cache", "no-cache", "batch")
_OFFICIAL_KEYS = {"gen_length", "block_length", "threshold", "editing_threshold", "max_post_steps", "temperature",
                  "eos_id", "mask_id", "eos_early_stop", "num_to_transfer", "steps", "minimal_topk", "top_p", "top_k"}


@dataclass
class CaseReport:
    name: str
    kind: str
    ways: dict[str, str] = field(default_factory=dict)  # way -> "ok" or the failure

    @property
    def passed(self) -> bool:
        return all(v == "ok" for v in self.ways.values()) and len(self.ways) == len(WAYS)

    def line(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return f"{status} {self.name} [{self.kind}] " + " | ".join(f"{w}: {self.ways.get(w, 'not run')}"
                                                                   for w in WAYS)


def config_from_official(params: dict, mask_id: int) -> DecodeConfig:
    """DecodeConfig equal to the official `generate(**params)` (greedy only)."""
    unknown = set(params) - _OFFICIAL_KEYS
    if unknown:
        raise ValueError(f"params has unsupported official arguments {sorted(unknown)}")
    if params.get("temperature", 0.0) != 0.0:
        raise ValueError(f"params.temperature must be 0 for a token-exact case, got {params['temperature']!r}")
    return DecodeConfig(tau_mask=params.get("threshold", 0.95), tau_edit=params.get("editing_threshold", 0.9),
                        max_post_steps=params.get("max_post_steps", 16), block_length=params.get("block_length", 32),
                        num_to_transfer=params.get("num_to_transfer", 1), max_new_tokens=params["gen_length"],
                        eos_ids=(params.get("eos_id", 156892),), eos_early_stop=params.get("eos_early_stop", False),
                        mask_id=params.get("mask_id", mask_id), temperature=0.0)


def _mismatch(got: list[int], want: list[int]) -> str:
    if got == want:
        return "ok"
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"mismatch at token {first} (got {len(got)} tokens, expected {len(want)})"


def _logit_check(got: torch.Tensor, want: torch.Tensor) -> str:
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got - want).abs().max().item()
    return "ok" if diff < FORWARD_TOLERANCE else f"max abs diff {diff:.2e} >= {FORWARD_TOLERANCE:g}"


@torch.inference_mode()
def _forward_full(model, ids: torch.Tensor, block_length: int) -> torch.Tensor:
    return model(ids, None, BlockLayout(block_length)).logits


@torch.inference_mode()
def _forward_cached(model, ids: torch.Tensor, block_length: int) -> torch.Tensor:
    """Block by block: each block attends the cache of the blocks before it, then commits its own K/V."""
    cache = KVCache.for_model(model, ids.shape[0])
    outs = []
    for s in range(0, ids.shape[1], block_length):
        chunk = ids[:, s:s + block_length]
        pos = torch.arange(s, s + chunk.shape[1])[None].expand_as(chunk)
        out = model(chunk, pos, BlockLayout(block_length), cache=cache)
        cache.commit(out.new_kv, [chunk.shape[1]] * ids.shape[0])
        outs.append(out.logits)
    return torch.cat(outs, dim=1)


@torch.inference_mode()
def _forward_batch(model, seqs: list[torch.Tensor], block_length: int) -> list[torch.Tensor]:
    width = max(s.shape[-1] for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    valid = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, :s.shape[-1]], valid[i, :s.shape[-1]] = s.flatten(), True
    pos = torch.arange(width)[None].expand_as(ids)
    logits = model(ids, pos, BlockLayout(block_length, valid=valid)).logits
    return [logits[i:i + 1, :s.shape[-1]] for i, s in enumerate(seqs)]


def model_dir(root: Path, spec: dict) -> Path:
    """The checkpoint directory a cases.json names (relative to its directory)."""
    return root / spec.get("model_dir", "model")


def run_conformance(directory: str | Path, emit: Callable[[str], None] = print, model=None,
                    kinds: tuple[str, ...] | None = None) -> tuple[int, int]:
    """Run every case; emit one line per case and the closing `N passed, M failed`. Returns (passed, failed).
    model: the model to check (default: the directory's checkpoint loaded in float32; a tensor-parallel rank's model
    from `redraft.decoding.parallel_run`). kinds: run only the cases of these kinds (None: all)."""
    from safetensors.torch import load_file

    root = Path(directory)
    spec_file = root / "cases.json"
    if not spec_file.exists():
        raise FileNotFoundError(f"no cases.json in {root}")
    spec = json.loads(spec_file.read_text())
    tensors = load_file(str(root / spec.get("expected_file", "expected.safetensors")))
    if model is None:
        model = load_model(model_dir(root, spec), dtype=torch.float32)
    mask_id = spec["mask_id"]
    cases = [c for c in spec["cases"] if kinds is None or c["kind"] in kinds]
    reports = {c["name"]: CaseReport(c["name"], c["kind"]) for c in cases}

    fwd_groups, gen_groups = defaultdict(list), defaultdict(list)
    for c in cases:
        rep = reports[c["name"]]
        try:
            if c["kind"] == "forward":
                ids, want = tensors[c["input"]], tensors[c["logits"]]
                rep.ways["no-cache"] = _logit_check(_forward_full(model, ids, c["block_length"]), want)
                rep.ways["cache"] = _logit_check(_forward_cached(model, ids, c["block_length"]), want)
                fwd_groups[c["block_length"]].append(c)
            elif c["kind"] == "generate":
                cfg = config_from_official(c["params"], mask_id)
                prompt, want = tensors[c["prompt"]].flatten().tolist(), tensors[c["output"]].flatten().tolist()
                for way, use_cache in (("cache", True), ("no-cache", False)):
                    got = generate(model, None, [prompt], cfg, use_cache=use_cache)[0].token_ids
                    rep.ways[way] = _mismatch(got, want)
                gen_groups[cfg.block_length].append((c, cfg, prompt, want))
            else:
                rep.ways["cache"] = f"unknown case kind {c['kind']!r}"
        except (KeyError, ValueError) as e:
            rep.ways.setdefault("cache", f"error: {e}")

    for L, group in fwd_groups.items():
        outs = _forward_batch(model, [tensors[c["input"]] for c in group], L)
        for c, out in zip(group, outs):
            reports[c["name"]].ways["batch"] = _logit_check(out, tensors[c["logits"]])
    for L, group in gen_groups.items():
        results = generate(model, None, [g[2] for g in group], [g[1] for g in group])
        for (c, _, _, want), res in zip(group, results):
            reports[c["name"]].ways["batch"] = _mismatch(res.token_ids, want)

    passed = sum(r.passed for r in reports.values())
    for r in reports.values():
        emit(r.line())
    failed = len(reports) - passed
    emit(f"{passed} passed, {failed} failed")
    return passed, failed
