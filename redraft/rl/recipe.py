"""The EBPO recipe: rollout → rewards → advantages → cached log π_old → epochs of clipped updates (eq. 4-5).

One step: P prompts (a pure function of (seed, step)) are sampled G times each through the decoding engine; rewards
are group-normalised; log π_old (and log π_ref with a KL term) are computed once under no_grad; then `epochs` passes
over the kept rows in minibatches, each an optimiser step whose gradient `ebpo_backward` accumulates level by level.
Checkpoints are the trainer's (HF folder + optimiser state, exact resume: every seed is derived from (seed, step)).
Multi-process under torchrun: each rank decodes its share of prompts; DDP or FSDP2 (the trainer's wrapping) reduces
gradients; ranks pad their rows with zero-weight rows so every rank runs the same number of forwards.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from redraft.evaluation.tasks import get_task
from redraft.model import load_model
from redraft.model.lora import apply_lora, load_adapter_weights
from redraft.model.tokenizer import load_tokenizer
from redraft.training.checkpoint import export_model, latest_checkpoint, load_trainer_state, save_checkpoint
from redraft.training.distributed import cleanup, full_state, init_distributed, load_full_state, unwrap, wrap_model
from redraft.host_memory import keep_freed_memory
from redraft.training.progress import ProgressLog
from redraft.training.schedule import lr_factor
from redraft.training.stop import StopRequest
from redraft.training.trainer import param_groups

from .config import RLConfig
from .evaluate import heldout_accuracy
from .likelihood import block_terms, normalizer, sequence_logp
from .loss import StepStats, ebpo_backward
from .prompts import PromptPool, derive_seed, shard
from .rewards import CombinedReward
from .rollout import RolloutBatch, collect_rollouts


class EBPORecipe:
    def __init__(self, cfg: RLConfig, resume: bool = False):
        self.cfg = cfg
        self.resume = resume
        self.out = Path(cfg.output_dir)

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        self.info = info = init_distributed(cfg.device)
        if cfg.keep_host_memory and info.device.type == "cpu":
            keep_freed_memory()
        ckpt = latest_checkpoint(self.out) if self.resume else None
        source = ckpt or cfg.init_from
        self.tokenizer = load_tokenizer(source)
        if cfg.lora is not None:  # frozen base + adapter (a checkpoint holds the adapter only)
            model = load_model(cfg.init_from, dtype=torch.float32).train()
            apply_lora(model, cfg.lora, seed=cfg.seed)
            if ckpt is not None:
                load_adapter_weights(model, ckpt)
            model = model.to(info.device)
        else:
            model = load_model(source, dtype=torch.float32).to(info.device).train()
        self.model_config = model.config
        sharded = info.is_distributed and cfg.parallel == "fsdp"
        # decoding runs rank-locally (rows differ per rank), so under FSDP2 it uses an unsharded copy (made before
        # `fully_shard`, which works in place; refreshed from the sharded model before each rollout)
        plain = copy.deepcopy(model) if sharded else None
        self.model = wrap_model(model, cfg.parallel, info)
        self.rollout_model = plain if plain is not None else unwrap(self.model)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=o.lr,
                                           betas=(o.beta1, o.beta2), eps=o.eps)
        self.start_step = 0
        # every seed is derived from (seed, step, row): this generator only fills the trainer's checkpoint slot
        self.gen = torch.Generator().manual_seed(cfg.seed)
        if ckpt is not None:
            self.start_step = load_trainer_state(ckpt, info, self.optimizer, self.gen)
        self.ref_model = None
        if cfg.loss.kl_coef > 0:
            ref = load_model(cfg.reference_from or cfg.init_from, dtype=torch.float32).to(info.device).eval()
            self.ref_model = ref.requires_grad_(False)
        self.task = get_task(cfg.task, **cfg.task_config)
        self.reward = CombinedReward.from_specs(cfg.reward_specs())
        train = self.task.examples(cfg.train_pool, cfg.seed, split="train")
        self.pool = PromptPool(train, [self.task.prompt_ids(e, self.tokenizer) for e in train], cfg.seed)
        held = self.task.examples(cfg.eval_size, cfg.eval_seed, split="eval") if cfg.eval_size else []
        self.eval_rows = list(range(info.rank, len(held), info.world_size))
        self.eval_samples = [held[i] for i in self.eval_rows]
        self.eval_prompts = [self.task.prompt_ids(e, self.tokenizer) for e in self.eval_samples]
        self.log = ProgressLog(self.out / "metrics.jsonl", cfg.steps, enabled=info.is_main,
                               truncate_after=self.start_step if self.resume else None)

    # ------------------------------------------------------------------------------------------------ helpers
    def _sum(self, value: float, op: str = "sum") -> float:
        if not self.info.is_distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.info.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return float(t)

    def _no_sync(self):
        """A context that defers the gradient reduction across processes (None on one process)."""
        if not self.info.is_distributed:
            return None
        if hasattr(self.model, "no_sync"):
            return self.model.no_sync

        @contextlib.contextmanager
        def fsdp_no_sync():
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)
        return fsdp_no_sync

    @torch.no_grad()
    def _logp(self, model: nn.Module, batch: RolloutBatch) -> Tensor:
        """[B] ELBO proxy log π(y|x) of every row, in micro-batches (eq. 5)."""
        out = []
        mb = self.cfg.micro_batch_size
        for start in range(0, batch.num_rows, mb):
            seq = batch.select(range(start, min(start + mb, batch.num_rows))).to(self.info.device).sequences
            elbo = block_terms(model, seq, self.cfg.elbo, self.tokenizer.mask_id)
            out.append(sequence_logp(elbo, normalizer(seq, self.cfg.elbo).to(self.info.device)))
        return torch.cat(out)

    # ------------------------------------------------------------------------------------------------ phases
    def rollout(self, step: int) -> RolloutBatch:
        cfg, info = self.cfg, self.info
        if self.rollout_model is not unwrap(self.model):
            load_full_state(self.rollout_model, full_state(self.model))  # collective
        local = shard(self.pool.indices(step, cfg.prompts_per_step), info.rank, info.world_size)
        g = cfg.rollout.group_size
        first = info.rank * len(local) * g
        rows = range(first, first + len(local) * g)
        self.rollout_model.eval()
        batch = collect_rollouts(
            self.rollout_model, self.tokenizer, [self.pool.prompt_ids[i] for i in local],
            [self.pool.samples[i] for i in local], self.reward, cfg.rollout,
            seeds=[derive_seed(cfg.seed, "decode", step, r) for r in rows],
            mask_seeds=[derive_seed(cfg.seed, "mask", step, r // g if cfg.group_noise else r) for r in rows],
            advantages=cfg.advantages)
        batch.old_logp = self._logp(self.rollout_model, batch)
        if self.ref_model is not None:
            batch.ref_logp = self._logp(self.ref_model, batch)
        self.rollout_model.train()
        return batch

    def optimise(self, step: int, batch: RolloutBatch) -> dict[str, float]:
        """`epochs` passes over the kept rows; one optimiser step per minibatch (eq. 4 gradient, exact)."""
        cfg, info = self.cfg, self.info
        kept = [i for i in range(batch.num_rows) if bool(batch.keep[i])]
        width = int(self._sum(len(kept), "max"))
        if width == 0:
            return {"optimizer_steps": 0}
        mb_size = cfg.minibatch_size or width
        totals = {"loss": 0.0, "rows": 0, "clipped": 0, "ratio_sum": 0.0, "kl_sum": 0.0}
        ratio_min, ratio_max, grad_norm, updates = math.inf, -math.inf, 0.0, 0
        lr = cfg.optim.lr * lr_factor(step, cfg.steps, cfg.optim)
        for epoch in range(cfg.epochs):
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "order", step, epoch, info.rank))
            order = [kept[i] for i in torch.randperm(len(kept), generator=gen).tolist()]
            real = [True] * len(order) + [False] * (width - len(order))  # zero-weight padding rows (lockstep)
            order += [order[0] if order else 0] * (width - len(order))
            for start in range(0, width, mb_size):
                rows, is_real = order[start:start + mb_size], real[start:start + mb_size]
                count = self._sum(sum(is_real))
                weight = torch.tensor([info.world_size / count if r else 0.0 for r in is_real],
                                      device=info.device) if count else torch.zeros(len(rows), device=info.device)
                micro = range(0, len(rows), cfg.micro_batch_size)
                for k, m0 in enumerate(micro):
                    sub = batch.select(rows[m0:m0 + cfg.micro_batch_size]).to(info.device)
                    w = weight[m0:m0 + cfg.micro_batch_size]
                    no_sync = self._no_sync()
                    last = k == len(micro) - 1
                    with no_sync() if (no_sync is not None and not last) else contextlib.nullcontext():
                        stats = ebpo_backward(self.model, sub.sequences, sub.old_logp, sub.advantages, w, cfg.elbo,
                                              cfg.loss, self.tokenizer.mask_id, sub.ref_logp, no_sync=no_sync)
                    self._accumulate(totals, stats, w)
                    ratio_min, ratio_max = min(ratio_min, stats.ratio_min), max(ratio_max, stats.ratio_max)
                gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip or float("inf"))
                grad_norm = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                updates += 1
        rows = max(self._sum(totals["rows"]), 1.0)
        out = {"loss": self._sum(totals["loss"]) / (info.world_size * cfg.epochs * math.ceil(width / mb_size)),
               "clip_frac": self._sum(totals["clipped"]) / rows, "ratio_mean": self._sum(totals["ratio_sum"]) / rows,
               "ratio_min": -self._sum(-ratio_min, "max"), "ratio_max": self._sum(ratio_max, "max"),
               "grad_norm": grad_norm, "lr": lr, "optimizer_steps": updates}
        if self.ref_model is not None:
            out["kl"] = self._sum(totals["kl_sum"]) / rows
        return out

    @staticmethod
    def _accumulate(totals: dict[str, float], stats: StepStats, weight: Tensor) -> None:
        real = int((weight > 0).sum())
        totals["loss"] += stats.loss  # already weighted (padding rows weigh 0)
        totals["rows"] += real
        totals["clipped"] += stats.clipped
        # padding rows are copies of real rows: scale their share out of the ratio and KL sums
        share = real / stats.rows if stats.rows else 0.0
        totals["ratio_sum"] += stats.ratio_sum * share
        totals["kl_sum"] += stats.kl_sum * share

    def rollout_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        n = max(self._sum(batch.num_rows), 1.0)
        groups = batch.num_rows // self.cfg.rollout.group_size
        zero_var = sum(1 for p in range(groups) if not bool(batch.keep[p * self.cfg.rollout.group_size]))
        out = {"reward": self._sum(float(batch.rewards.sum())) / n,
               "accuracy": self._sum(float(batch.reward_parts["task"].sum())) / n,
               "rollout_tpf": self._sum(float(batch.response_lens.sum())) / max(self._sum(float(batch.forwards.sum())), 1.0),
               "response_len": self._sum(float(batch.response_lens.sum())) / n,
               "eos_frac": self._sum(sum(r == "eos" for r in batch.finish_reasons)) / n,
               "zero_var_groups": self._sum(zero_var) / max(self._sum(groups), 1.0)}
        for name, values in batch.reward_parts.items():
            if name != "task":
                out[f"reward_{name}"] = self._sum(float(values.sum())) / n
        return out

    def evaluate(self) -> dict[str, float]:
        if not self.cfg.eval_size:
            return {}
        model = self.rollout_model
        if model is not unwrap(self.model):
            load_full_state(model, full_state(self.model))
        model.eval()
        k = len(self.eval_samples)
        total = max(self._sum(k), 1.0)
        out: dict[str, float] = {}
        temperatures = [(0.0, "")] + ([(self.cfg.rollout.temperature, "_sampled")] if self.cfg.eval_sampled else [])
        for temperature, suffix in temperatures:
            m = heldout_accuracy(model, self.tokenizer, self.task, self.eval_samples, self.eval_prompts,
                                 self.cfg.rollout, temperature=temperature)
            for key in ("eval_accuracy", "eval_tpf", "eval_forwards", "eval_tokens"):
                out[key + suffix] = self._sum(m.get(key, 0.0) * k) / total
        model.train()
        return out

    # ------------------------------------------------------------------------------------------------ loop
    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Run to `cfg.steps`; `max_time_s`, SIGTERM or Ctrl-C stop it early with a checkpoint at the step reached
        (see `redraft.training.stop`). `stop_after` stops after that many steps as if killed (the resume test)."""
        self.setup()
        cfg, info = self.cfg, self.info
        t0 = time.perf_counter()
        step, record = self.start_step, {}
        with self.log, StopRequest(info, cfg.max_time_s) as stop:
            if step == 0:
                self.log.write({"step": 0, **self.evaluate(), "elapsed_s": 0.0})
            while step < cfg.steps:
                t1 = time.perf_counter()
                batch = self.rollout(step)
                t2 = time.perf_counter()
                metrics = self.optimise(step, batch)
                step += 1
                record = {"step": step, **self.rollout_metrics(batch), **metrics,
                          "rollout_s": round(t2 - t1, 2), "train_s": round(time.perf_counter() - t2, 2)}
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    record.update(self.evaluate())
                record["elapsed_s"] = round(time.perf_counter() - t0, 1)
                self.log.write(record)
                if step % cfg.save_every == 0 or step == cfg.steps:
                    save_checkpoint(self.out, step, self.model, self.model_config, self.optimizer, self.gen,
                                    self.tokenizer,
                                    {"config": cfg.to_dict(), "recipe": "ebpo"}, info, cfg.keep_checkpoints,
                                    base_model=cfg.init_from)
                if stop_after is not None and step - self.start_step >= stop_after:
                    return record
                reason = stop.reason()
                if reason is not None and step < cfg.steps:
                    if step % cfg.save_every:  # so that --resume continues from here
                        save_checkpoint(self.out, step, self.model, self.model_config, self.optimizer, self.gen,
                                        self.tokenizer, {"config": cfg.to_dict(), "recipe": "ebpo"}, info,
                                        cfg.keep_checkpoints, base_model=cfg.init_from)
                    self.log.write({"step": step, "stopped": reason})
                    break
        final = self.out / "final"
        export_model(self.model, self.model_config, final, self.tokenizer, torch.float32, info,
                     base_model=cfg.init_from)
        summary = {"steps": step, "time_s": round(time.perf_counter() - t0, 1), "last": record,
                   "world_size": info.world_size}
        if info.is_main:
            (final / "rl_summary.json").write_text(json.dumps(summary, indent=1, default=str))
        self.model = unwrap(self.model)  # before the process group goes (see cleanup)
        cleanup(info)
        return summary
