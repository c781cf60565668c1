"""Engine: continuous batching of Draft-and-Edit decoding. `step` = plan (scheduler) -> run (runner) -> apply.

Requests join at any step (their first forward also commits their prompt blocks), rows at different blocks share a
forward, finished rows leave the batch. Every step returns events with each row's newly final tokens and text
(blocks become final when they leave the editable window) and the result of rows that finished.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch

from redraft.host_memory import keep_freed_memory
from redraft.model.invariant import RowTiles

from .config import DecodeConfig
from .results import GenerationResult, StepEvent
from .row import Row
from .runner import ModelRunner, PrefixIndex
from .scheduler import Scheduler
from .stopping import find_stop, held_back


class Engine:
    """Decode many requests together. tokenizer: optional (text, stop strings, default mask/eos ids).
    use_cache: False recomputes every forward from position 0 (the official loop's cost; for checks).
    prefix_index: optional `PrefixIndex` (e.g. `redraft.serving.PrefixCache`): joining requests reuse the stored
    K/V of prompt prefixes they share with earlier requests (exact; needs use_cache).
    cuda_graphs: replay CUDA graphs for cached window forwards (None = on when the model is on CUDA; True with a
    model elsewhere is a ValueError).
    batch_invariant: a row's tokens never depend on the other rows of its batch, bit for bit (each row attends over
    its own keys, GEMMs on fixed row tiles: `redraft.model.invariant`). None = on for a model on CPU, off on CUDA
    (the fused kernels there round by batch shape; True there is untested and needs cuda_graphs=False). A
    `RowTiles` turns it on with other tile sizes: `RowTiles(dense=64)` runs batches of 2+ rows faster on CPU (batch
    8: ~1.15x per step) and a lone row a little slower (the 32-row window is padded to 64); tokens are invariant
    within one tile setting, and may differ between settings (bf16 rounding).
    keep_host_memory: make this process's malloc keep freed memory mapped (`redraft.host_memory`; process-wide, not
    undone), so each step's logits and activations reuse pages instead of faulting fresh ones in (CPU batch 8:
    ~1.1x per step). None = on for a model on CPU."""

    def __init__(self, model, tokenizer=None, max_batch_size: int = 32, *, use_cache: bool = True,
                 mask_id: int | None = None, prefix_index: PrefixIndex | None = None,
                 cuda_graphs: bool | None = None, batch_invariant: bool | RowTiles | None = None,
                 keep_host_memory: bool | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.scheduler = Scheduler(max_batch_size)
        self.mask_id = mask_id if mask_id is not None else getattr(tokenizer, "mask_id", None)
        self.runner: ModelRunner | None = None
        self.use_cache = use_cache
        self.prefix_index = prefix_index
        if cuda_graphs is not None and not isinstance(cuda_graphs, bool):
            raise ValueError(f"cuda_graphs must be True, False or None, got {cuda_graphs!r}")
        if cuda_graphs and self._device().type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a model on CUDA, got device {self._device()}")
        self.cuda_graphs = cuda_graphs
        if batch_invariant is not None and not isinstance(batch_invariant, (bool, RowTiles)):
            raise ValueError(f"batch_invariant must be True, False, None or a RowTiles, got {batch_invariant!r}")
        if batch_invariant and cuda_graphs:
            raise ValueError("batch_invariant and cuda_graphs=True cannot be combined (graphs replay one "
                             "shape for the whole batch); pass cuda_graphs=False")
        self.batch_invariant = batch_invariant
        if keep_host_memory is not None and not isinstance(keep_host_memory, bool):
            raise ValueError(f"keep_host_memory must be True, False or None, got {keep_host_memory!r}")
        if keep_host_memory or (keep_host_memory is None and self._device().type == "cpu"):
            keep_freed_memory()
        self.rows: dict[str, Row] = {}
        self._ids = itertools.count()
        self._pending: list[StepEvent] = []

    # ------------------------------------------------------------------------------------------------ requests
    def add_request(self, prompt_ids: Sequence[int], config: DecodeConfig | None = None,
                    request_id: str | None = None) -> str:
        """Queue a request; it joins the running batch at the next step. Returns its id."""
        config = config if config is not None else DecodeConfig()
        if not isinstance(config, DecodeConfig):
            raise ValueError(f"config must be a DecodeConfig, got {type(config).__name__}")
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("prompt_ids must hold at least one token, got []")
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt_ids must be ids in [0, {vocab}), got {min(prompt)}..{max(prompt)}")
        mask_id = self._resolve_mask_id(config)
        eos = config.eos_ids or tuple(getattr(self.tokenizer, "stop_ids", ()) or ())
        if config.stop and self.tokenizer is None:
            raise ValueError(f"stop strings need a tokenizer, got stop={config.stop!r} and tokenizer=None")
        request_id = str(next(self._ids)) if request_id is None else str(request_id)
        if request_id in self.rows and not self.rows[request_id].is_finished:
            raise ValueError(f"request_id {request_id!r} is already running")
        row = Row(request_id, config, prompt, mask_id, frozenset(eos))
        if config.temperature > 0:
            row.generator = torch.Generator(device=self._device()).manual_seed(config.seed or 0)
        self.rows[request_id] = row
        self.scheduler.add(row)
        return request_id

    def cancel(self, request_id: str) -> None:
        """Stop a request; its (final-so-far) result comes with the next step's events."""
        row = self.rows.get(str(request_id))
        if row is None:
            raise ValueError(f"unknown request_id {request_id!r}")
        if not row.is_finished:
            row.finish("cancelled")

    def has_work(self) -> bool:
        return self.scheduler.has_work() or bool(self._pending)

    # ------------------------------------------------------------------------------------------------ stepping
    def step(self) -> list[StepEvent]:
        """One scheduler step: at most one forward over the active rows of one batch."""
        events, self._pending = self._pending, []
        plan = self.scheduler.schedule()
        if plan is None:
            return events
        runner = self._runner()
        if not plan.join and plan.block_length:
            runner.keep_rows(plan.block_length, plan.keep)
        if plan.rows:
            result = runner.run(plan.rows, plan.had_mask, plan.join)
            for row, window, m2t, t2t, mask in zip(plan.rows, result.windows, result.m2t, result.t2t,
                                                   plan.had_mask):
                row.apply(window, m2t, t2t, mask)
            self.scheduler.admit(plan)
        for row in plan.rows:
            self._check_stop(row)
        dropped: list[Row] = []
        if plan.rows:
            keep, dropped = self.scheduler.remove_finished(plan.block_length)
            if keep is not None:
                runner.keep_rows(plan.block_length, keep)
        in_plan = {id(r) for r in plan.rows}
        # every row that leaves reports once: planned rows, and (join steps) batch rows cancelled meanwhile
        for row in plan.finished + plan.rows + [r for r in dropped if id(r) not in in_plan]:
            event = self._event(row)
            if event is not None:
                events.append(event)
        return events

    def stream(self, prompts: Sequence[Sequence[int]], configs: DecodeConfig | Sequence[DecodeConfig] | None = None,
               ) -> Iterator[list[StepEvent]]:
        """Add the prompts (token ids) and yield each step's events until all of them finished."""
        cfgs = _per_row(configs, len(prompts))
        for p, c in zip(prompts, cfgs):
            self.add_request(p, c)
        while self.has_work():
            events = self.step()
            if events:
                yield events

    def run_until_done(self) -> dict[str, GenerationResult]:
        """Step until no work is left; returns the results by request id."""
        results = {}
        while self.has_work():
            for e in self.step():
                if e.finished:
                    results[e.request_id] = e.result
        return results

    # ------------------------------------------------------------------------------------------------ helpers
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _resolve_mask_id(self, config: DecodeConfig) -> int:
        mask_id = config.mask_id if config.mask_id is not None else self.mask_id
        if mask_id is None:
            raise ValueError("mask_id is None: pass a tokenizer, Engine(mask_id=...) or DecodeConfig.mask_id")
        if self.mask_id is None:
            self.mask_id = mask_id
        if mask_id != self.mask_id:
            raise ValueError(f"DecodeConfig.mask_id must match the engine's mask id {self.mask_id}, got {mask_id}")
        return mask_id

    def _runner(self) -> ModelRunner:
        if self.runner is None:
            self.runner = ModelRunner(self.model, self.mask_id, self.use_cache, self.prefix_index,
                                      self.cuda_graphs, self.batch_invariant)
        return self.runner

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if self.tokenizer is not None else ""

    def _final(self, row: Row) -> tuple[list[int], str]:
        """The row's final ids and their text, decoded again only when more of the row became final (a block left
        the editable window, or the row finished): a step that only fills and edits costs no decode."""
        key = (row.final_blocks, row.is_finished)
        if row.final_memo is None or row.final_memo[0] != key:
            ids = row.final_ids()
            row.final_memo = (key, ids, self._text(ids))
        return row.final_memo[1], row.final_memo[2]

    def _check_stop(self, row: Row) -> None:
        """A stop string in the row's final text ends it (also a row that just ended on eos/length)."""
        if not row.config.stop or row.finish_reason == "cancelled":
            return
        if find_stop(self._final(row)[1], row.config.stop) is not None:
            if row.is_finished:
                row.finish_reason = "stop"
            else:
                row.finish("stop")

    def _event(self, row: Row) -> StepEvent | None:
        """The row's news: ids/text that became final since the last event, and its result once finished."""
        if not row.is_finished and row.final_blocks == row.event_blocks:
            return None  # nothing became final since the last look
        row.event_blocks = row.final_blocks
        ids, text = self._final(row)
        if row.finish_reason == "stop":
            text_end = find_stop(text, row.config.stop)
            ids, text = _cut_ids_at(ids, text_end, self._text), text[:text_end]
        elif not row.is_finished:
            text = text.rstrip("\ufffd")  # an incomplete multi-byte character waits for its next token
            if row.config.stop:
                text = text[:len(text) - held_back(text, row.config.stop)]
        new_ids = ids[row.emitted_tokens:]
        delta = text[len(row.emitted_text):] if text.startswith(row.emitted_text) else text
        if not new_ids and not delta and not row.is_finished:
            return None
        row.emitted_tokens, row.emitted_text = len(ids), text
        result = None
        if row.is_finished:
            row.stats.tokens = len(ids)
            result = GenerationResult(row.request_id, ids, text if self.tokenizer is not None else None,
                                      row.finish_reason, row.stats, row.trajectory)
            self.rows.pop(row.request_id, None)
        return StepEvent(row.request_id, new_ids, delta, row.is_finished, result)


def _cut_ids_at(ids: list[int], text_end: int, decode) -> list[int]:
    """The shortest prefix of ids whose text reaches past text_end (the ids that produced the stop string)."""
    for n in range(len(ids) + 1):
        if len(decode(ids[:n])) > text_end:
            return ids[:n]
    return ids


def _per_row(configs, n: int) -> list[DecodeConfig | None]:
    if configs is None or isinstance(configs, DecodeConfig):
        return [configs] * n
    configs = list(configs)
    if len(configs) != n:
        raise ValueError(f"config must be one DecodeConfig or one per prompt ({n}), got {len(configs)}")
    return configs
