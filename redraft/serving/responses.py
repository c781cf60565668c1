"""OpenAI response bodies and streaming chunks (pure functions over finished results and text deltas)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from redraft.decoding import GenerationResult

_FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


def finish_reason(result: GenerationResult) -> str:
    """The engine's reason in OpenAI terms (eos and stop strings are both "stop")."""
    return _FINISH.get(result.finish_reason, result.finish_reason)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class Envelope:
    """What every body and chunk of one response repeats: id, object type, creation time, model."""

    id: str
    object: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def wrap(self, **fields: Any) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model, **fields}


def usage(prompt_tokens: int, results: list[GenerationResult]) -> dict[str, Any]:
    """OpenAI usage plus redraft's `forwards` (model forwards summed over choices) and `tpf` (tokens/forward)."""
    completion = sum(len(r.token_ids) for r in results)
    forwards = sum(r.stats.forwards for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion, "forwards": forwards,
            "tpf": round(completion / forwards, 4) if forwards else 0.0}


def completion_body(env: Envelope, results: list[GenerationResult], prompt_tokens: int) -> dict[str, Any]:
    choices = [{"index": i, "text": r.text or "", "finish_reason": finish_reason(r), "logprobs": None}
               for i, r in enumerate(results)]
    return env.wrap(choices=choices, usage=usage(prompt_tokens, results))


def chat_body(env: Envelope, results: list[GenerationResult], prompt_tokens: int) -> dict[str, Any]:
    choices = [{"index": i, "message": {"role": "assistant", "content": r.text or ""},
                "finish_reason": finish_reason(r), "logprobs": None} for i, r in enumerate(results)]
    return env.wrap(choices=choices, usage=usage(prompt_tokens, results))


def completion_chunk(env: Envelope, index: int, text: str, reason: str | None = None) -> dict[str, Any]:
    return env.wrap(choices=[{"index": index, "text": text, "finish_reason": reason, "logprobs": None}])


def chat_chunk(env: Envelope, index: int, delta: dict[str, str], reason: str | None = None) -> dict[str, Any]:
    return env.wrap(choices=[{"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}])


def usage_chunk(env: Envelope, prompt_tokens: int, results: list[GenerationResult]) -> dict[str, Any]:
    """The last chunk when `stream_options.include_usage` is set: no choices, the whole usage."""
    return env.wrap(choices=[], usage=usage(prompt_tokens, results))


def sse(data: dict[str, Any] | str) -> bytes:
    """One Server-Sent Event."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()
