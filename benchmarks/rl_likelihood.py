"""Cost of the block-level ELBO (eq. 5): vectorised (one two-stream forward per level) vs one forward per block.

    python benchmarks/rl_likelihood.py --length 256 --block 32 --rows 8      # prints JSON (seconds, forwards, max |diff|)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from redraft.model import BlockLayout
from redraft.model.config import LLaDA2MoeConfig
from redraft.model.testing import TINY_CONFIG, random_model
from redraft.rl.likelihood import ElboConfig, SequenceBatch, block_terms, noise_level


def blockwise(model, batch: SequenceBatch, cfg: ElboConfig, mask_id: int) -> tuple[torch.Tensor, int]:
    bsz, length = batch.input_ids.shape
    nb, bl = batch.num_blocks(cfg.block_length), cfg.block_length
    out, forwards = torch.zeros(bsz, cfg.num_levels, nb), 0
    for n in range(cfg.num_levels):
        lv = noise_level(batch, n, cfg, mask_id)
        for b in range(int(batch.prompt_lens.min()) // bl, nb):
            ids = torch.cat([batch.input_ids[:, :b * bl], lv.x_t[:, b * bl:(b + 1) * bl]], dim=1)
            logp = model(ids, layout=BlockLayout(bl)).logits[:, b * bl:].log_softmax(-1)
            tok = logp.gather(-1, batch.input_ids[:, b * bl:(b + 1) * bl, None])[..., 0]
            out[:, n, b] = (tok * lv.masked[:, b * bl:(b + 1) * bl]).sum(-1) * lv.scale
            forwards += 1
    return out, forwards


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=32)
    args = ap.parse_args()
    model = random_model(LLaDA2MoeConfig(**{**TINY_CONFIG, "vocab_size": 512}), seed=0)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 511, (args.rows, args.length), generator=gen)
    full = torch.full((args.rows,), args.length)
    batch = SequenceBatch(ids, torch.full((args.rows,), args.prompt), full, torch.arange(args.rows))
    cfg = ElboConfig(block_length=args.block)
    with torch.no_grad():
        block_terms(model, batch, cfg, 511)  # warm-up
        t0 = time.perf_counter()
        fast = block_terms(model, batch, cfg, 511).terms
        t1 = time.perf_counter()
        slow, forwards = blockwise(model, batch, cfg, 511)
        t2 = time.perf_counter()
    print(json.dumps({"rows": args.rows, "length": args.length, "block": args.block, "levels": cfg.num_levels,
                      "vectorised_s": round(t1 - t0, 4), "vectorised_forwards": cfg.num_levels,
                      "blockwise_s": round(t2 - t1, 4), "blockwise_forwards": forwards,
                      "speedup": round((t2 - t1) / (t1 - t0), 2),
                      "max_abs_diff": float((fast - slow).abs().max())}))


if __name__ == "__main__":
    main()
