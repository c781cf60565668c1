"""Request bodies of the OpenAI API (completions, chat completions) with strict types, plus redraft's extensions.

Strict: no coercion ("1" is not an int, 1.0 is not an int, 0 is not a bool), unknown fields are rejected, floats must
be finite, strings must be valid Unicode (no lone surrogates). Bounds here are the static ones; limits that depend
on the model or the server (context length, prompt length, vocabulary) and accepted-but-unsupported OpenAI options
(logprobs, echo, penalties, ...) are checked in `params`, so their errors can say why.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_N = 8                # choices per request
MAX_PROMPTS = 32         # prompts in one completions request
MAX_STOP = 4             # stop strings (the OpenAI limit)
MAX_STOP_CHARS = 256
MAX_BLOCK_LENGTH = 256
MAX_POST_STEPS = 128
MAX_MBE_BLOCKS = 8
MAX_SEED = 2**63 - 1


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return text


def _stop_string(text: str) -> str:
    if not text:
        raise ValueError("an empty stop string is not allowed (it would end every completion at once)")
    if len(text) > MAX_STOP_CHARS:
        raise ValueError(f"a stop string may have at most {MAX_STOP_CHARS} characters, got {len(text)}")
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
StopText = Annotated[Text, AfterValidator(_stop_string)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(Strict):
    include_usage: bool = False


class DecodingFields(Strict):
    """Fields shared by both endpoints: OpenAI sampling parameters and redraft's decoding extensions."""

    model: Annotated[Text, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    temperature: Annotated[Finite | None, Field(ge=0.0, le=2.0)] = None
    top_p: Annotated[Finite | None, Field(gt=0.0, le=1.0)] = None
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED)] = None
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Annotated[Text | None, Field(max_length=256)] = None
    presence_penalty: Annotated[Finite | None, Field(ge=-2.0, le=2.0)] = None
    frequency_penalty: Annotated[Finite | None, Field(ge=-2.0, le=2.0)] = None
    logit_bias: Annotated[dict[str, Finite] | None, Field(max_length=300)] = None
    # redraft extensions (LLaDA2.1 decoding)
    mode: Literal["quality", "speedy"] | None = None
    tau_mask: Annotated[Finite | None, Field(ge=0.0, le=1.0)] = None
    tau_edit: Annotated[Finite | None, Field(ge=0.0, le=1e6)] = None
    block_length: Annotated[int | None, Field(ge=1, le=MAX_BLOCK_LENGTH)] = None
    max_post_steps: Annotated[int | None, Field(ge=0, le=MAX_POST_STEPS)] = None
    mbe_blocks: Annotated[int | None, Field(ge=0, le=MAX_MBE_BLOCKS)] = None
    top_k: Annotated[int | None, Field(ge=0, le=1_000_000)] = None
    editing: bool | None = None
    # redraft streaming extension: per-step `redraft.trajectory` SSE events (needs stream: true; off by default)
    trajectory: bool | None = None


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1)]


class CompletionRequest(DecodingFields):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    echo: bool = False
    logprobs: Annotated[int | None, Field(ge=0, le=5)] = None
    best_of: Annotated[int | None, Field(ge=1, le=MAX_N)] = None
    suffix: Annotated[Text | None, Field(max_length=MAX_STOP_CHARS)] = None


class TextPart(Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(min_length=1)]
    name: Annotated[Text | None, Field(max_length=64)] = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(Strict):
    type: Literal["text"]


class ChatCompletionRequest(DecodingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    logprobs: bool | None = None
    response_format: ResponseFormat | None = None
