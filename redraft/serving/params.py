"""From a validated request to what the engine takes: prompt token ids (one per choice) and a `DecodeConfig`.

Checks that need the model or the tokenizer live here (vocabulary, mask token, context length) as well as OpenAI
options that parse but are not supported (logprobs, echo, penalties, logit_bias, suffix, best_of != n). Every
failure is an `APIError` (400) naming the request field.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from redraft.decoding import DecodeConfig, preset

from .errors import APIError, invalid
from .schemas import MAX_SEED, ChatCompletionRequest, CompletionRequest, DecodingFields

_EXTENSIONS = ("tau_mask", "tau_edit", "block_length", "max_post_steps", "mbe_blocks", "top_k", "editing",
               "temperature", "top_p", "trajectory")
_FIELD_OF = {"max_new_tokens": "max_tokens"}  # DecodeConfig field -> request field


@dataclass(frozen=True)
class Limits:
    """What a request may ask of this server (see `ServerSettings`)."""

    vocab_size: int
    mask_id: int
    max_model_len: int
    max_prompt_tokens: int
    default_max_tokens: int
    default_mode: str
    max_token_chars: int | None = None  # the tokenizer's longest vocabulary entry (see `check_prompt_chars`)

    @property
    def max_prompt_chars(self) -> int | None:
        """Text longer than this cannot fit in max_prompt_tokens (None: no bound)."""
        return None if self.max_token_chars is None else self.max_prompt_tokens * self.max_token_chars


@dataclass(frozen=True)
class Job:
    """One HTTP request's engine work: choice i decodes prompts[i] with configs[i]; prompt_tokens counts each
    distinct prompt once (OpenAI usage)."""

    prompts: list[list[int]]
    configs: list[DecodeConfig]
    prompt_tokens: int


def check_prompt_chars(req: CompletionRequest | ChatCompletionRequest, limits: Limits) -> None:
    """Reject text that cannot fit before tokenizing it (cheap: string lengths only). No token covers more than
    `limits.max_token_chars` characters, so a text longer than `max_prompt_tokens * max_token_chars` characters has
    more than `max_prompt_tokens` tokens."""
    bound = limits.max_prompt_chars
    if bound is None:
        return
    if isinstance(req, ChatCompletionRequest):
        chars, param = sum(len(m.text()) for m in req.messages), "messages"
    else:
        texts = [req.prompt] if isinstance(req.prompt, str) else [p for p in req.prompt if isinstance(p, str)]
        chars, param = max((len(t) for t in texts), default=0), "prompt"
    if chars > bound:
        raise invalid(param, f"the prompt has {chars} characters, more than {limits.max_prompt_tokens} tokens can "
                             f"hold (no token of this model spans more than {limits.max_token_chars} characters); "
                             f"this server accepts at most {limits.max_prompt_tokens} prompt tokens",
                      "context_length_exceeded")


def completion_prompts(req: CompletionRequest, tokenizer, limits: Limits) -> list[list[int]]:
    """Token ids of each prompt (text is encoded as plain text: special-token spellings stay text; all texts in one
    `encode_batch` call, which releases the GIL)."""
    raw = req.prompt
    if isinstance(raw, str) or (raw and isinstance(raw[0], int)):
        raw = [raw]
    texts = [p for p in raw if isinstance(p, str)]
    encoded = iter(tokenizer.encode_batch(texts) if texts else [])
    prompts = []
    for i, p in enumerate(raw):
        param = "prompt" if len(raw) == 1 else f"prompt[{i}]"
        ids = next(encoded) if isinstance(p, str) else list(p)
        if not ids:
            raise invalid(param, f"{param} must not be empty", "empty_prompt")
        if isinstance(p, list):
            bad = [t for t in ids if t >= limits.vocab_size or t == limits.mask_id]
            if bad:
                raise invalid(param, f"{param} holds token id {bad[0]}: ids must be in [0, {limits.vocab_size}) "
                                     f"and not the mask id {limits.mask_id}", "invalid_token_id")
        prompts.append(ids)
    return prompts


def chat_prompt(req: ChatCompletionRequest, tokenizer) -> list[int]:
    """The chat template applied to the messages (contents are plain text)."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, release_gil=True)
    except ValueError as e:
        raise invalid("messages", f"messages: {e}") from None


def check_supported(req: DecodingFields) -> None:
    """OpenAI options that parse but that this server does not implement: a clear 400 instead of silence."""
    if req.presence_penalty or req.frequency_penalty:
        name = "presence_penalty" if req.presence_penalty else "frequency_penalty"
        raise invalid(name, f"{name} is not supported (only 0)", "unsupported_parameter")
    if req.logit_bias:
        raise invalid("logit_bias", "logit_bias is not supported", "unsupported_parameter")
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options", "stream_options is only allowed with stream: true")
    if req.trajectory and not req.stream:
        raise invalid("trajectory", "trajectory (per-step events) is only allowed with stream: true")
    if isinstance(req, CompletionRequest):
        if req.echo:
            raise invalid("echo", "echo is not supported", "unsupported_parameter")
        if req.logprobs is not None:
            raise invalid("logprobs", "logprobs are not supported", "unsupported_parameter")
        if req.suffix:
            raise invalid("suffix", "suffix is not supported", "unsupported_parameter")
        if req.best_of is not None and req.best_of != req.n:
            raise invalid("best_of", f"best_of must equal n ({req.n}) when given", "unsupported_parameter")
    if isinstance(req, ChatCompletionRequest):
        if req.logprobs:
            raise invalid("logprobs", "logprobs are not supported", "unsupported_parameter")
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise invalid("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")


def build_job(req: DecodingFields, prompts: list[list[int]], stop_ids: list[int], limits: Limits) -> Job:
    """One (prompt, config) per choice: prompts x n, choice-major like OpenAI's `index` (prompt i, sample j ->
    index i * n + j). Sampling without a seed draws one per choice; with a seed, choice j uses seed + j."""
    check_supported(req)
    longest = max(len(p) for p in prompts)
    if longest > limits.max_prompt_tokens:
        raise invalid("prompt" if isinstance(req, CompletionRequest) else "messages",
                      f"the prompt has {longest} tokens; this server accepts at most {limits.max_prompt_tokens}",
                      "context_length_exceeded")
    requested = req.max_tokens
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        requested = req.max_completion_tokens
    max_tokens_param = "max_completion_tokens" if isinstance(req, ChatCompletionRequest) and \
        req.max_completion_tokens is not None else "max_tokens"
    base = _base_config(req, stop_ids, limits, requested or 1, max_tokens_param)
    L = base.block_length
    room = (limits.max_model_len // L) * L - longest  # the canvas is padded to whole blocks
    if requested is None:
        if room < 1:
            raise invalid("messages" if isinstance(req, ChatCompletionRequest) else "prompt",
                          f"the prompt has {longest} tokens and leaves no room to generate within the context "
                          f"of {limits.max_model_len} tokens (block length {L})", "context_length_exceeded")
        base = base.replace(max_new_tokens=min(limits.default_max_tokens, room))
    elif requested > room:
        raise invalid(max_tokens_param, f"{max_tokens_param} is {requested} but the prompt ({longest} tokens) "
                      f"leaves room for at most {max(room, 0)} within the context of {limits.max_model_len} tokens "
                      f"(block length {L})", "context_length_exceeded")
    sampling = base.temperature > 0
    out_prompts, configs = [], []
    for p in prompts:
        for j in range(req.n):
            if sampling:
                seed = secrets.randbits(63) if req.seed is None else (req.seed + j) % (MAX_SEED + 1)
                configs.append(base.replace(seed=seed))
            else:
                configs.append(base)
            out_prompts.append(p)
    return Job(out_prompts, configs, sum(len(p) for p in prompts))


def _base_config(req: DecodingFields, stop_ids: list[int], limits: Limits, max_new_tokens: int,
                 max_tokens_param: str) -> DecodeConfig:
    overrides: dict = {name: getattr(req, name) for name in _EXTENSIONS if getattr(req, name) is not None}
    if req.seed is not None:
        overrides["seed"] = req.seed
    if req.stop is not None:
        overrides["stop"] = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop)
    overrides["eos_ids"] = tuple(stop_ids)
    overrides["max_new_tokens"] = max_new_tokens
    try:
        return preset(req.mode or limits.default_mode, **overrides)
    except ValueError as e:
        m = re.search(r"DecodeConfig\.(\w+)", str(e))
        field = _FIELD_OF.get(m.group(1), m.group(1)) if m else None
        if field == "max_tokens":
            field = max_tokens_param
        raise APIError(400, str(e).replace("DecodeConfig.", ""), param=field, code="invalid_value") from None
