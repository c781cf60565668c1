"""`LMEvalModel`: a redraft model for EleutherAI's lm-evaluation-harness (`lm-eval`), registered as `redraft`.

* `generate_until` decodes through the batched Draft-and-Edit engine (`redraft.decoding.generate`) with the task's
  stop sequences (`until`) and its `max_gen_toks`; `mode` / `tau_mask` / `tau_edit` / `block_length` /
  `mbe_blocks` / `max_gen_toks` come from `model_args`. With `--apply_chat_template` the prompt is the model's chat
  template (the special tokens come from the template, never from text).
* `loglikelihood` and `loglikelihood_rolling` are ESTIMATES: the block-level ELBO of LLaDA2.1 eq. 5
  (`redraft.rl.likelihood`), Monte Carlo over `mc_samples` noise levels (stratified, exact-k masking, weight
  m/k), a lower bound of log p(continuation | context) in expectation, as the LLaDA papers report. Every request
  uses the same seed (`mc_seed`), so the choices of one question see the same noise levels. `is_greedy` says
  whether the model's argmax at every position, with the whole continuation masked, is the continuation.

Python: `lm_eval.simple_evaluate(model=LMEvalModel("redraft/assets/tiny"), tasks=[...])`.
CLI: `redraft lm-eval --model_args pretrained=PATH,mode=speedy --tasks TASKS [any lm-eval flag]`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from redraft.decoding.config import DecodeConfig
from redraft.evaluation.harness import completion_text, decode_config, load
from redraft.rl.likelihood import ElboConfig, SequenceBatch, block_terms, normalizer, sequence_logp
from redraft.training.objective import two_stream_logits

log = logging.getLogger("redraft.evaluation")
_DECODE_ARGS = ("tau_mask", "tau_edit", "block_length", "mbe_blocks", "max_post_steps", "editing")


def _default_model() -> str:
    from redraft.evaluation.commands import resolve_model

    return resolve_model(None)


def _device(device: str | None) -> str:
    """lm-eval passes `--device` (default "cuda"): use CUDA when it is there, else say so and run on CPU."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s is not available (no CUDA); running on cpu", device)
        return "cpu"
    return str(device)


def _int_arg(name: str, value: Any, low: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"LMEvalModel {name} must be an int >= {low}, got {value!r}")
    return value


@register_model("redraft")
class LMEvalModel(LM):
    """pretrained: checkpoint directory (default: the bundled model) or a loaded model (then give tokenizer).
    mode: "quality" (Q Mode) | "speedy" (S Mode) | "no-edit"; tau_mask, tau_edit, block_length, mbe_blocks,
    max_post_steps, editing: DecodeConfig overrides. max_gen_toks: the budget when a task gives none.
    batch_size: rows per engine batch and per likelihood forward ("auto" = 16). mc_samples: noise levels of the
    ELBO estimate; mc_seed: its seed (the same for every request). max_length: context limit (default: the
    model's max_position_embeddings)."""

    def __init__(self, pretrained: Any = None, tokenizer: Any = None, mode: str = "quality",
                 max_gen_toks: int = 256, batch_size: int | str = 16, max_batch_size: int | None = None,
                 mc_samples: int = 8, mc_seed: int = 0, device: str | None = None, max_length: int | None = None,
                 **decode_args: Any):
        super().__init__()
        unknown = sorted(set(decode_args) - set(_DECODE_ARGS))
        if unknown:
            raise ValueError(f"LMEvalModel has no argument {unknown[0]!r} (decoding arguments: {_DECODE_ARGS})")
        self.config: DecodeConfig = decode_config(mode, decode_args)
        self.max_gen_toks = _int_arg("max_gen_toks", max_gen_toks, 1)
        self.batch_size = 16 if str(batch_size).startswith("auto") else _int_arg("batch_size", batch_size, 1)
        if max_batch_size is not None:
            self.batch_size = min(self.batch_size, _int_arg("max_batch_size", max_batch_size, 1))
        self.mc_samples = _int_arg("mc_samples", mc_samples, 1)
        self.mc_seed = _int_arg("mc_seed", mc_seed, 0)
        model, tok, name = load(pretrained if pretrained is not None else _default_model(), tokenizer,
                                _device(device))
        self.model, self.tok, self.name = model.eval(), tok, name
        self._device = next(model.parameters()).device
        limit = model.config.max_position_embeddings
        self.max_length = limit if max_length is None else min(_int_arg("max_length", max_length, 2), limit)
        self._chat_ids: dict[str, list[int]] = {}  # rendered chat prompt -> its ids (special tokens from template)

    # ------------------------------------------------------------------------------------------ chat template
    @property
    def tokenizer_name(self) -> str:
        return os.path.basename(str(self.name).rstrip("/")) or "redraft"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tok.chat_template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = self.tok.render_chat(chat_history, add_generation_prompt=add_generation_prompt)
        self._chat_ids[text] = list(self.tok.apply_chat_template(chat_history,
                                                                 add_generation_prompt=add_generation_prompt))
        return text

    def encode_context(self, text: str) -> list[int]:
        """Ids of a context: a chat prompt made by `apply_chat_template` (plus any text lm-eval appended) keeps its
        special tokens; anything else is plain text."""
        if text in self._chat_ids:
            return list(self._chat_ids[text])
        best = max((t for t in self._chat_ids if text.startswith(t)), key=len, default=None)
        if best is None:
            return self.tok.encode(text)
        rest = text[len(best):]
        return self._chat_ids[best] + (self.tok.encode(rest) if rest else [])

    # ------------------------------------------------------------------------------------------ generation
    def generation_config(self, gen_kwargs: dict[str, Any]) -> DecodeConfig:
        """The request's DecodeConfig: this model's settings, the task's `until` as stop strings, its
        `max_gen_toks`, and temperature/top_p/top_k when the task samples (`do_sample`)."""
        kw = dict(gen_kwargs or {})
        until = kw.pop("until", None) or ()
        until = (until,) if isinstance(until, str) else tuple(u for u in until if u)
        changes: dict[str, Any] = {"stop": tuple(dict.fromkeys(self.config.stop + until)),
                                   "max_new_tokens": _int_arg("max_gen_toks", kw.pop("max_gen_toks",
                                                                                    self.max_gen_toks), 1)}
        if kw.pop("do_sample", False) and float(kw.get("temperature", 1.0) or 0.0) > 0:
            changes["temperature"] = float(kw.pop("temperature", 1.0))
            for name in ("top_p", "top_k"):
                if name in kw:
                    changes[name] = kw.pop(name)
        return self.config.replace(**changes)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from redraft.decoding import generate

        jobs = []
        for req in requests:
            context, gen_kwargs = req.args
            config = self.generation_config(gen_kwargs)
            ids = self.encode_context(context)
            keep = (self.max_length // config.block_length) * config.block_length - config.max_new_tokens
            if keep < 1:
                raise ValueError(f"max_gen_toks {config.max_new_tokens} leaves no room for a prompt within "
                                 f"max_length {self.max_length} (block length {config.block_length})")
            ids = ids[-keep:]  # left-truncate: the canvas (prompt + budget, whole blocks) fits max_length
            jobs.append((ids, config))
        # longest first: batches of similar cost; results go back in request order
        order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0]))
        out: list[str] = [""] * len(jobs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            with torch.inference_mode():
                results = generate(self.model, self.tok, [jobs[i][0] for i in chunk], [jobs[i][1] for i in chunk],
                                   max_batch_size=len(chunk))
            for i, res in zip(chunk, results):
                text = completion_text(res, self.tok)
                for stop in jobs[i][1].stop:  # the engine already cut at finalised stop strings; be exact
                    text = text.split(stop)[0]
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    # ------------------------------------------------------------------------------------------ likelihoods
    def elbo_config(self) -> ElboConfig:
        return ElboConfig(num_levels=self.mc_samples, levels="stratified", masking="exact_k", normalizer="none",
                          elbo_weight=True, block_length=self.config.block_length)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for req in requests:
            context, continuation = req.args
            ctx = self.encode_context(context) if context else [self.tok.eos_id]  # empty context: eos, as lm-eval
            pairs.append((ctx, self.tok.encode(continuation)))
        out = self.loglikelihood_tokens(pairs)
        for req, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            (text,) = req.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                self.tok.encode(text), prefix_token=self.tok.eos_id, max_seq_len=self.max_length, context_len=1)]
            total = sum(lp for lp, _ in self.loglikelihood_tokens(windows))
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    def loglikelihood_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(ELBO estimate of log p(continuation | context), is_greedy) per (context ids, continuation ids)."""
        cfg = self.elbo_config()
        fitted = [self._fit(c, y) for c, y in pairs]
        order = sorted(range(len(fitted)), key=lambda i: -sum(map(len, fitted[i])))  # similar lengths per batch
        out: list[tuple[float, bool]] = [(0.0, False)] * len(fitted)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = self._batch([fitted[i] for i in rows])
            with torch.inference_mode():
                logp = sequence_logp(block_terms(self.model, batch, cfg, self.tok.mask_id), normalizer(batch, cfg))
                greedy = self._is_greedy(batch)
            for i, lp, g in zip(rows, logp.tolist(), greedy.tolist()):
                out[i] = (float(lp), bool(g))
        return out

    def _fit(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Left-truncate the context so context + continuation fit in max_length (the continuation is kept)."""
        if len(continuation) >= self.max_length:
            raise ValueError(f"continuation of {len(continuation)} tokens does not fit max_length "
                             f"{self.max_length}")
        keep = self.max_length - len(continuation)
        return (context[-keep:] if len(context) > keep else context) or [self.tok.eos_id], continuation

    def _batch(self, pairs: list[tuple[list[int], list[int]]]) -> SequenceBatch:
        lengths = [len(c) + len(y) for c, y in pairs]
        ids = torch.full((len(pairs), max(lengths)), self.tok.pad_id, dtype=torch.long)
        for row, (c, y) in enumerate(pairs):
            ids[row, :len(c) + len(y)] = torch.tensor(c + y, dtype=torch.long)
        dev = self._device
        return SequenceBatch(ids.to(dev), torch.tensor([len(c) for c, _ in pairs], device=dev),
                             torch.tensor(lengths, device=dev), torch.full((len(pairs),), self.mc_seed, device=dev))

    def _is_greedy(self, batch: SequenceBatch) -> torch.Tensor:
        """[B] bool: with every continuation token masked, the argmax is the continuation at every position."""
        resp = batch.response_mask
        x_t = torch.where(resp, torch.full_like(batch.input_ids, self.tok.mask_id), batch.input_ids)
        logits = two_stream_logits(self.model, x_t, batch.input_ids, batch.position_ids, batch.segment_ids,
                                   self.config.block_length)
        hit = (logits.argmax(-1) == batch.input_ids) | ~resp
        return hit.all(-1)


__all__ = ["LMEvalModel"]
