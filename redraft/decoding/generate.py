"""`generate`: decode a list of prompts together and return one `GenerationResult` per prompt, in order."""

from __future__ import annotations

from collections.abc import Sequence

from redraft.model.invariant import RowTiles

from .config import DecodeConfig
from .engine import Engine, _per_row
from .results import GenerationResult


def generate(model, tokenizer, prompts: str | Sequence[str] | Sequence[Sequence[int]],
             config: DecodeConfig | Sequence[DecodeConfig] | None = None, *, max_batch_size: int | None = None,
             use_cache: bool = True, mask_id: int | None = None,
             cuda_graphs: bool | None = None, batch_invariant: bool | RowTiles | None = None) -> list[GenerationResult]:
    """Decode `prompts` (text, a list of texts, or lists of token ids) in one batch.

    config: one DecodeConfig for all rows or one per row (rows may differ in every setting; rows of different
    block lengths run as separate batches). tokenizer may be None when prompts are ids (then give `mask_id` here
    or in the config, and `eos_ids` in the config). use_cache=False recomputes every forward from position 0.
    cuda_graphs: see `Engine` (None = CUDA-graph replay of cached forwards when the model is on CUDA).
    batch_invariant: see `Engine` (None = a row's tokens do not depend on its batch, bit for bit, on CPU; a
    `RowTiles` sets the tile sizes).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        return []
    ids = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if tokenizer is None:
                raise ValueError(f"prompts[{i}] is text but tokenizer is None")
            ids.append(tokenizer.encode(p))
        else:
            ids.append([int(t) for t in p])
    configs = _per_row(config, len(ids))
    engine = Engine(model, tokenizer, max_batch_size=max_batch_size or len(ids), use_cache=use_cache,
                    mask_id=mask_id, cuda_graphs=cuda_graphs, batch_invariant=batch_invariant)
    request_ids = [engine.add_request(p, c) for p, c in zip(ids, configs)]
    results = engine.run_until_done()
    return [results[r] for r in request_ids]
