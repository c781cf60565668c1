"""`Trainer`: the training recipe (one readable loop over small tested parts), single process or under torchrun.

setup: data (prepared folder, or built and packed into OUTPUT/data) -> model (fresh, `init_from`, or the latest
checkpoint on resume) -> FSDP2/DDP -> AdamW. train: for each step, the block length from the schedule, gradient
accumulation over micro-batches of the Mixture M2T + T2T (+ MTF) objective under bf16 autocast, clipping, the
learning rate of `schedule.lr_factor`, the expert-bias update; periodic metrics (JSONL), M2T eval loss and
checkpoints. The final model goes to OUTPUT/final in `save_dtype`. With a `lora:` section the `init_from` model is
frozen and wrapped with PEFT LoRA adapters, only they get gradients and optimiser state, and checkpoints and
OUTPUT/final hold the adapter (PEFT layout; `redraft merge` folds it into a full checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from redraft.model import LLaDA2MoeConfig, LLaDA2MoeModelLM, load_model
from redraft.model.lora import apply_lora, load_adapter_weights

from .balance import ExpertLoadBalancer
from .checkpoint import export_model, latest_checkpoint, load_trainer_state, save_checkpoint
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_mean, cleanup, init_distributed, unwrap, wrap_model
from redraft.host_memory import keep_freed_memory
from .noise import NoiseConfig
from .objective import DiffusionObjective, summarize_metrics
from .prepare import PreparedData, load_prepared, prepare_data
from .progress import ProgressLog
from .sampler import RowSampler
from .stop import StopRequest


def eval_noise(cfg: NoiseConfig) -> NoiseConfig:
    """The eval objective: M2T only (no T2T, keep term or MTF), same masking band, plain mean over masked tokens, so
    runs with different training mixtures (e.g. the M2T-only twin) report comparable numbers."""
    return NoiseConfig(mask_ratio_min=cfg.mask_ratio_min, mask_ratio_max=cfg.mask_ratio_max,
                       mask_ratio_per=cfg.mask_ratio_per, t2t_ratio=0.0, keep_weight=0.0, mtf_turns=1)


def build_model(cfg: TrainConfig, vocab_size: int, pad_id: int) -> LLaDA2MoeModelLM:
    if cfg.init_from:
        model = load_model(cfg.init_from, dtype=torch.float32)
        if model.config.vocab_size < vocab_size:
            raise ValueError(f"init_from: model vocab_size {model.config.vocab_size} < tokenizer's {vocab_size}")
        return model.train()
    mcfg = LLaDA2MoeConfig(**{**cfg.model, "vocab_size": vocab_size, "pad_token_id": pad_id,
                              "torch_dtype": "float32"})
    model = LLaDA2MoeModelLM(mcfg)
    model.init_weights(cfg.init_std, generator=torch.Generator().manual_seed(cfg.seed))
    return model.train()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices; none on norms, biases and embeddings. Frozen parameters (a LoRA run's base) get
    no optimiser state."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "word_embeddings" not in name else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.resume = resume
        self.info: DistInfo = init_distributed(cfg.device)
        self.out = Path(cfg.output_dir)

    # ------------------------------------------------------------------------------------------------ setup
    def load_data(self) -> PreparedData:
        if self.cfg.data.prepared:
            return load_prepared(self.cfg.data.prepared)
        folder = self.out / "data"
        if self.info.is_main and not (folder / "recipe.json").exists():
            prepare_data(self.cfg.data, folder)
        if self.info.is_distributed:
            torch.distributed.barrier()
        return load_prepared(folder)

    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        if cfg.keep_host_memory and info.device.type == "cpu":
            keep_freed_memory()
        self.data = self.load_data()
        tok = self.data.tokenizer
        if self.data.train.seq_len != cfg.data.seq_len:
            raise ValueError(f"data.seq_len is {cfg.data.seq_len} but the prepared rows have length "
                             f"{self.data.train.seq_len}")
        self.start_step = 0
        ckpt = latest_checkpoint(self.out) if self.resume else None
        if ckpt is not None and cfg.lora is None:
            model = load_model(ckpt, dtype=torch.float32).train()
        else:
            model = build_model(cfg, tok.vocab_size, tok.pad_id)
        if cfg.lora is not None:
            apply_lora(model, cfg.lora, seed=cfg.seed)
            if ckpt is not None:
                load_adapter_weights(model, ckpt)
        self.model_config = model.config
        model.gradient_checkpointing = cfg.gradient_checkpointing
        model.to(info.device)
        self.balancer = ExpertLoadBalancer(model, cfg.expert_bias_update_rate)
        self.model = wrap_model(model, cfg.parallel, info)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=o.lr,
                                           betas=(o.beta1, o.beta2), eps=o.eps)
        self.gen = torch.Generator(info.device).manual_seed(cfg.seed * 1000 + info.rank)
        if ckpt is not None:
            self.start_step = load_trainer_state(ckpt, info, self.optimizer, self.gen)
        special = set(tok.special_ids)
        allowed = torch.tensor([i for i in range(tok.vocab_size) if i not in special], dtype=torch.long)
        self.objective = DiffusionObjective(cfg.noise, tok.mask_id, allowed)
        self.eval_objective = DiffusionObjective(eval_noise(cfg.noise), tok.mask_id, allowed)
        self.sampler = RowSampler(len(self.data.train), cfg.seed, cfg.batch_size, cfg.micro_batch_size,
                                  info.world_size, info.rank)
        self.log = ProgressLog(self.out / "metrics.jsonl", cfg.steps, enabled=info.is_main,
                               truncate_after=self.start_step)

    def autocast(self):
        if self.cfg.autocast == "bf16":
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------------ loop
    def train_step(self, step: int) -> dict[str, Any]:
        block_length = self.cfg.block_length_at(step)
        accum = self.sampler.accumulation_steps
        sums: dict[str, Tensor] = {}
        loss_sum = torch.zeros((), device=self.info.device)
        for micro in range(accum):
            batch = self.data.train.batch(self.sampler.rows(step, micro)).to(self.info.device)
            with self.autocast():
                loss, metrics = self.objective(self.forward_model, batch, block_length, self.gen)
            (loss / accum).backward()
            loss_sum += loss.detach()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0) + v
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   self.cfg.optim.grad_clip or float("inf"))
        lr = self.cfg.optim.lr * lr_factor_at(step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        imbalance = self.balancer.step()
        return {"loss_sum": loss_sum / accum, "sums": sums, "grad_norm": grad_norm, "lr": lr,
                "block_length": block_length, "imbalance": imbalance}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        rows = self.data.eval
        if not len(rows) or not self.cfg.eval_batches:
            return {}
        gen = torch.Generator(self.info.device).manual_seed(12345 + self.info.rank)
        mb = self.cfg.micro_batch_size
        sums: dict[str, Tensor] = {}
        self.model.eval()
        for i in range(self.cfg.eval_batches):
            idx = [(j * self.info.world_size + self.info.rank) % len(rows) for j in range(i * mb, (i + 1) * mb)]
            batch = rows.batch(idx).to(self.info.device)
            with self.autocast():
                _, metrics = self.eval_objective(self.forward_model, batch, self.cfg.block_length, gen)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0) + all_reduce_mean(v, self.info)
        self.model.train()
        m = summarize_metrics(sums)
        return {"eval_loss": m.get("m2t_loss", float("nan")), "eval_acc": m.get("m2t_acc", float("nan"))}

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to `cfg.steps`; `max_time_s`, SIGTERM or Ctrl-C stop it early with a checkpoint at the step reached
        (see `stop.py`). `stop_after` stops after that many steps as if killed (used by the resume test)."""
        self.setup()
        cfg, info = self.cfg, self.info
        tokens_per_step = cfg.batch_size * cfg.data.seq_len
        t0 = time.perf_counter()
        last_t, last_step = t0, self.start_step
        step = self.start_step
        record: dict[str, Any] = {}
        pending: list[dict[str, Any]] = []
        with self.log, StopRequest(info, cfg.max_time_s) as stop:
            while step < cfg.steps:
                pending.append(self.train_step(step))
                step += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    record = self.summarize(step, pending, tokens_per_step * (step - last_step) / (now - last_t))
                    record["elapsed_s"] = round(now - t0, 3)
                    pending, last_t, last_step = [], now, step
                    self.log.write(record)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    self.log.write({"step": step, **self.evaluate()})
                if step % cfg.save_every == 0 and step < cfg.steps:
                    save_checkpoint(self.out, step, self.model, self.model_config, self.optimizer, self.gen,
                                    self.data.tokenizer, {"config": cfg.to_dict()}, info, cfg.keep_checkpoints,
                                    base_model=cfg.init_from)
                if stop_after is not None and step - self.start_step >= stop_after:
                    return record
                reason = stop.reason()
                if reason is not None and step < cfg.steps:
                    if step % cfg.save_every:  # so that --resume continues from here
                        save_checkpoint(self.out, step, self.model, self.model_config, self.optimizer, self.gen,
                                        self.data.tokenizer, {"config": cfg.to_dict()}, info, cfg.keep_checkpoints,
                                        base_model=cfg.init_from)
                    self.log.write({"step": step, "stopped": reason})
                    break
        final = self.out / "final"
        dtype = torch.float32 if cfg.save_dtype == "float32" else torch.bfloat16
        export_model(self.model, self.model_config, final, self.data.tokenizer, dtype, info,
                     base_model=cfg.init_from)
        summary = {"steps": step, "train_tokens": step * tokens_per_step, "time_s": round(time.perf_counter() - t0, 1),
                   "parameters": unwrap(self.model).num_parameters(),
                   "trainable_parameters": sum(p.numel() for p in unwrap(self.model).parameters() if p.requires_grad),
                   "lora": cfg.lora is not None, "last": record, "world_size": info.world_size}
        if info.is_main:
            (final / "training_summary.json").write_text(json.dumps(summary, indent=1))
        self.model = self.forward_model = unwrap(self.model)  # before the process group goes (see cleanup)
        cleanup(info)
        return summary

    def summarize(self, step: int, pending: list[dict[str, Any]], tok_per_s: float) -> dict[str, Any]:
        sums: dict[str, Tensor] = {}
        for p in pending:
            for k, v in p["sums"].items():
                sums[k] = sums.get(k, 0) + v
        sums = {k: all_reduce_mean(v, self.info) for k, v in sums.items()}
        loss = all_reduce_mean(torch.stack([p["loss_sum"] for p in pending]).mean(), self.info)
        last = pending[-1]
        gn = last["grad_norm"]
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
        return {"step": step, "loss": float(loss), **summarize_metrics(sums), "grad_norm": float(gn),
                "lr": last["lr"], "block_length": last["block_length"], "expert_imbalance": last["imbalance"],
                "tok_per_s": round(tok_per_s, 1), "epoch": round(self.sampler.epoch_at(step), 4)}


def lr_factor_at(step: int, cfg: TrainConfig) -> float:
    from .schedule import lr_factor

    return lr_factor(step, cfg.steps, cfg.optim)
