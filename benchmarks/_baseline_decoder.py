"""The plain recompute-everything decoder of the official LLaDA2.1 `generate` loop (one sequence, no KV cache).

Written from the rule in ../shared/parity/README.md, independently of `redraft.decoding`: it is the speed baseline
of `decode_speed.py` and the token-exact reference of the decoding tests. Greedy only.
"""

from __future__ import annotations

import torch

from redraft.model import BlockLayout


@torch.inference_mode()
def official_generate(model, prompt: list[int], *, mask_id: int, gen_length: int, block_length: int = 32,
                      threshold: float = 0.7, editing_threshold: float = 0.5, max_post_steps: int = 16,
                      num_to_transfer: int = 1, eos_id: int | None = None, eos_early_stop: bool = False,
                      editing: bool = True, batch_invariant: bool | None = None) -> tuple[list[int], int]:
    """Returns (generated ids, number of forwards). Every forward runs the model on the whole canvas up to and
    including the current block with the block-causal mask, like the official release. batch_invariant: passed to
    the model (False: plain GEMMs, as the official code runs; None: the model's default)."""
    device = next(model.parameters()).device
    n, L = len(prompt), block_length
    total = -(-(n + gen_length) // L) * L
    canvas = torch.full((1, total), mask_id, dtype=torch.long, device=device)
    canvas[0, :n] = torch.tensor(prompt, dtype=torch.long, device=device)
    is_prompt = torch.zeros(total, dtype=torch.bool, device=device)
    is_prompt[:n] = True
    forwards = 0
    for b in range(n // L, total // L):
        s, e = b * L, (b + 1) * L
        post = 0
        while True:
            block = canvas[0, s:e]
            masked = (block == mask_id) & ~is_prompt[s:e]
            had_mask = bool(masked.any())
            if not had_mask:
                post += 1
                if post > max_post_steps:
                    break
            logits = model(canvas[:, :e], None, BlockLayout(L), batch_invariant=batch_invariant).logits[0, s:e].float()
            forwards += 1
            top_logit, top = logits.max(-1)
            # the top softmax value 1 / sum(exp(logit - max)), exp's subnormal range clamped (as redraft's policy:
            # the same probabilities, so the token check tests the loop, and the same cost per position)
            prob = (logits - top_logit[:, None]).clamp_(min=-87.0).exp_().sum(-1).reciprocal_()
            fill = masked & (prob > threshold)
            if int(fill.sum()) < num_to_transfer:
                conf = torch.where(masked, prob, torch.full_like(prob, -1.0))
                k = min(num_to_transfer, int(masked.sum()))
                fill = torch.zeros_like(masked)
                fill[torch.topk(conf, k).indices] = True
                fill &= masked
            edit = ~masked & ~is_prompt[s:e] & (top != block) & (prob > editing_threshold) & editing
            new = torch.where(fill | edit, top, block)
            canvas[0, s:e] = new
            if not had_mask and not bool(edit.any()):
                break
        if eos_early_stop and eos_id is not None:
            gen = canvas[0, n:e]
            if not bool((gen == mask_id).any()) and bool((gen == eos_id).any()):
                break
    out = canvas[0, n:n + gen_length].tolist()
    if eos_id is not None and eos_id in out:
        out = out[:out.index(eos_id) + 1]
    return out, forwards
