"""The documented responses (OpenAPI): response bodies as models, every error status with the OpenAI error body,
and a schema without FastAPI's default 422 (validation failures are answered with 400, see `errors`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Closed):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Closed):
    """Every error (4xx, 5xx): {"error": {"message", "type", "param", "code"}}."""

    error: ErrorDetail


class Usage(_Closed):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    forwards: int  # model forwards summed over the choices (redraft)
    tpf: float     # tokens per forward (redraft)


class _Response(_Closed):
    id: str
    created: int
    model: str
    usage: Usage


class CompletionChoice(_Closed):
    index: int
    text: str
    finish_reason: str
    logprobs: None


class CompletionResponse(_Response):
    object: Literal["text_completion"]
    choices: list[CompletionChoice]


class AssistantMessage(_Closed):
    role: Literal["assistant"]
    content: str


class ChatChoice(_Closed):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None


class ChatCompletionResponse(_Response):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]


class CompletionChunkChoice(_Closed):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None


class CompletionChunk(_Closed):
    """One streamed event of /v1/completions (the last, with `stream_options.include_usage`, has no choices)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class Delta(_Closed):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Closed):
    index: int
    delta: Delta
    finish_reason: str | None
    logprobs: None


class ChatCompletionChunk(_Closed):
    """One streamed event of /v1/chat/completions."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(_Closed):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int


class ModelList(_Closed):
    object: Literal["list"]
    data: list[ModelCard]


class Health(_Closed):
    status: Literal["ok"]
    in_flight: int


class Unhealthy(_Closed):
    status: Literal["unavailable"]
    error: str


_RETRY = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}
_ERROR_STATUSES = {400: "Invalid request (the error names the field in `param`)", 404: "Unknown model or path",
                   413: "Request body too large", 429: "Server at capacity", 500: "Internal error",
                   503: "Shutting down or unavailable"}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses (default: all of them), with the error body."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses or tuple(_ERROR_STATUSES):
        out[status] = {"model": ErrorResponse, "description": _ERROR_STATUSES[status]}
        if status in (429, 503):
            out[status]["headers"] = _RETRY
    return out


_REF = "#/components/schemas/{model}"
_CHUNKS = {"CompletionResponse": CompletionChunk, "ChatCompletionResponse": ChatCompletionChunk}


def sse_event_schema(chunk: type[BaseModel]) -> dict[str, Any]:
    """One Server-Sent Event of a stream: `data:` holds a chunk or an error body (JSON), or `[DONE]` (the last)."""
    payload = {"anyOf": [{"$ref": _REF.format(model=chunk.__name__)},
                         {"$ref": _REF.format(model=ErrorResponse.__name__)}]}
    return {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
        {"const": "[DONE]"},
        {"type": "string", "contentMediaType": "application/json", "contentSchema": payload}]}}}


def generation_responses(body: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """200 as JSON (`body`) or, with `stream: true`, Server-Sent Events (one chunk per event); every error status."""
    sse = {"text/event-stream": {"schema": sse_event_schema(_CHUNKS[body.__name__])}}
    return {200: {"model": body, "content": sse, "description": "The completion (JSON), or its stream (SSE)"},
            **error_responses()}


def install_openapi(app: FastAPI) -> None:
    """Serve a schema without the 422 responses FastAPI adds to every route with a body (this server answers
    validation failures with 400 and the error body)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            for chunk in _CHUNKS.values():  # referenced from the SSE event schemas only
                defs = chunk.model_json_schema(ref_template=_REF)
                components.update(defs.pop("$defs", {}))
                components[chunk.__name__] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
