"""Rollouts: G samples per prompt through the Draft-and-Edit decoding engine, batched, as one typed record."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from redraft.decoding import DecodeConfig, GenerationResult, generate, preset

from .advantages import AdvantageConfig, group_advantages
from .likelihood import SequenceBatch
from .rewards import CombinedReward


@dataclass(frozen=True)
class RolloutConfig:
    """group_size G; mode: the decoding preset ("speedy" S Mode or "quality" Q Mode; editing on); temperature > 0
    (the policy must sample); max_new_tokens, block_length; decode: any further DecodeConfig fields;
    pad_to_block: append EOS after a response that stopped, up to its block end (the SFT target shape, which the
    decoder's final block also holds); max_batch_size: rows decoded together (None = all)."""

    group_size: int = 8
    mode: str = "speedy"
    temperature: float = 0.8
    max_new_tokens: int = 32
    block_length: int = 32
    decode: dict[str, Any] = field(default_factory=dict)
    pad_to_block: bool = True
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.group_size, int) or self.group_size < 2:
            raise ValueError(f"rollout.group_size must be an int >= 2, got {self.group_size!r}")
        if not self.temperature > 0:
            raise ValueError(f"rollout.temperature must be > 0 (on-policy sampling), got {self.temperature!r}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ValueError(f"rollout.max_batch_size must be >= 1 or None, got {self.max_batch_size!r}")
        self.decode_config(0)  # validates mode and the decode fields once

    def decode_config(self, seed: int, temperature: float | None = None) -> DecodeConfig:
        """The DecodeConfig of one row (its sampler seed)."""
        t = self.temperature if temperature is None else temperature
        return preset(self.mode, **{"max_new_tokens": self.max_new_tokens, "block_length": self.block_length,
                                    **self.decode, "temperature": t, "seed": int(seed)})


@dataclass
class RolloutBatch:
    """P prompts × G samples = B rows; row r is sample r % G of prompt r // G.

    sequences: prompt + response (+ EOS padding) per row: input_ids [B, L] int64, prompt_lens / lengths /
        mask_seeds [B] int64 (the ELBO noise seed of each row).
    response_lens: [B] int64, generated tokens (before EOS padding). group: [B] int64, the prompt index.
    seeds: [B] int64, decoding sampler seeds. rewards, advantages: [B] float32. keep: [B] bool (False = a
        zero-variance group left out of the loss). tpf: [B] float32 tokens per forward; forwards: [B] int64.
    reward_parts: {term: [B] float32}. completions, finish_reasons, samples: lists of length B.
    old_logp: [B] float32, the cached ELBO proxy log π_old(y|x) (no grad, filled by the recipe after rollout).
    ref_logp: [B] float32 under the reference policy, or None (only for the KL term).
    """

    sequences: SequenceBatch
    response_lens: Tensor
    group: Tensor
    seeds: Tensor
    rewards: Tensor
    advantages: Tensor
    keep: Tensor
    tpf: Tensor
    forwards: Tensor
    reward_parts: dict[str, Tensor]
    completions: list[str]
    finish_reasons: list[str]
    samples: list[Any]
    old_logp: Tensor | None = None
    ref_logp: Tensor | None = None

    @property
    def num_rows(self) -> int:
        return int(self.group.shape[0])

    def select(self, rows: Sequence[int]) -> "RolloutBatch":
        """The sub-batch of `rows` (for minibatches), padding trimmed to its longest row."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        pick = lambda t: None if t is None else t[idx.to(t.device)]  # noqa: E731
        return RolloutBatch(
            sequences=self.sequences.select(idx.to(self.sequences.input_ids.device)),
            response_lens=pick(self.response_lens), group=pick(self.group), seeds=pick(self.seeds),
            rewards=pick(self.rewards), advantages=pick(self.advantages), keep=pick(self.keep), tpf=pick(self.tpf),
            forwards=pick(self.forwards), reward_parts={k: pick(v) for k, v in self.reward_parts.items()},
            completions=[self.completions[i] for i in idx.tolist()],
            finish_reasons=[self.finish_reasons[i] for i in idx.tolist()],
            samples=[self.samples[i] for i in idx.tolist()], old_logp=pick(self.old_logp),
            ref_logp=pick(self.ref_logp))

    def to(self, device: torch.device | str) -> "RolloutBatch":
        seq = self.sequences
        moved = SequenceBatch(*(t.to(device) for t in (seq.input_ids, seq.prompt_lens, seq.lengths, seq.mask_seeds)))
        return dataclasses.replace(self, sequences=moved, advantages=self.advantages.to(device),
                                   old_logp=None if self.old_logp is None else self.old_logp.to(device),
                                   ref_logp=None if self.ref_logp is None else self.ref_logp.to(device))


def response_row(prompt: Sequence[int], result: GenerationResult, stop_ids: frozenset[int], eos_id: int,
                 block_length: int, pad_to_block: bool) -> list[int]:
    """prompt + response, with EOS up to the block end after a response that ended on a stop id."""
    row = list(prompt) + list(result.token_ids)
    if pad_to_block and result.token_ids and result.token_ids[-1] in stop_ids and len(row) % block_length:
        row += [eos_id] * (block_length - len(row) % block_length)
    return row


def pack_rows(rows: Sequence[Sequence[int]], prompt_lens: Sequence[int], mask_seeds: Sequence[int],
              pad_id: int) -> SequenceBatch:
    """Right-pad rows [x ; y] into a SequenceBatch."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
    return SequenceBatch(ids, torch.tensor(list(prompt_lens), dtype=torch.long),
                         torch.tensor([len(r) for r in rows], dtype=torch.long),
                         torch.tensor(list(mask_seeds), dtype=torch.long))


def collect_rollouts(model, tokenizer, prompt_ids: Sequence[Sequence[int]], samples: Sequence[Any],
                     reward: CombinedReward, cfg: RolloutConfig, seeds: Sequence[int], mask_seeds: Sequence[int],
                     advantages: AdvantageConfig = AdvantageConfig()) -> RolloutBatch:
    """Decode G samples of each of the P prompts in one engine batch, score them, and group-normalise.

    seeds, mask_seeds: B = P·G per-row seeds (decoding sampler; ELBO noise)."""
    num_prompts, g = len(prompt_ids), cfg.group_size
    if len(samples) != num_prompts:
        raise ValueError(f"samples has {len(samples)} items, prompt_ids has {num_prompts}")
    b = num_prompts * g
    for name, values in (("seeds", seeds), ("mask_seeds", mask_seeds)):
        if len(values) != b:
            raise ValueError(f"{name} must have P*G = {b} values, got {len(values)}")
    rows_prompt = [list(prompt_ids[r // g]) for r in range(b)]
    with torch.inference_mode():
        results = generate(model, tokenizer, rows_prompt, [cfg.decode_config(s) for s in seeds],
                           max_batch_size=cfg.max_batch_size)
    stop_ids = frozenset(getattr(tokenizer, "stop_ids", ()) or (tokenizer.eos_id,))
    rows = [response_row(p, res, stop_ids, tokenizer.eos_id, cfg.block_length, cfg.pad_to_block)
            for p, res in zip(rows_prompt, results)]
    completions = [res.text if res.text is not None else tokenizer.decode(res.token_ids, skip_special_tokens=True)
                   for res in results]
    row_samples = [samples[r // g] for r in range(b)]
    prompt_texts = [tokenizer.decode(p, skip_special_tokens=True) for p in rows_prompt]
    total, parts = reward.score(prompt_texts, completions, row_samples)
    rewards = torch.tensor(total, dtype=torch.float32)
    adv, keep = group_advantages(rewards.view(num_prompts, g), advantages.method,
                                 skip_zero_variance=advantages.skip_zero_variance,
                                 negative_scale=advantages.negative_scale)
    return RolloutBatch(
        sequences=pack_rows(rows, [len(p) for p in rows_prompt], mask_seeds, tokenizer.pad_id),
        response_lens=torch.tensor([len(res.token_ids) for res in results], dtype=torch.long),
        group=torch.arange(b) // g, seeds=torch.tensor(list(seeds), dtype=torch.long), rewards=rewards,
        advantages=adv.reshape(-1), keep=keep.reshape(-1),
        tpf=torch.tensor([res.stats.tpf for res in results], dtype=torch.float32),
        forwards=torch.tensor([res.stats.forwards for res in results], dtype=torch.long),
        reward_parts={k: torch.tensor(v, dtype=torch.float32) for k, v in parts.items()},
        completions=completions, finish_reasons=[res.finish_reason for res in results], samples=row_samples)
