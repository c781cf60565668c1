"""HTTP endpoints: /v1/completions, /v1/chat/completions (JSON or Server-Sent Events), /v1/models, /health,
/metrics. Handlers validate, tokenize and hand work to the engine loop; they never decode themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from .errors import APIError, error_body
from .generation import ClientGone, Generation
from .openapi import (ChatCompletionResponse, CompletionResponse, Health, ModelCard, ModelList, Unhealthy,
                      error_responses, generation_responses)
from .params import build_job, chat_prompt, check_prompt_chars, completion_prompts
from .responses import (Envelope, chat_body, chat_chunk, completion_body, completion_chunk, finish_reason, new_id,
                        sse, usage_chunk)
from .schemas import ChatCompletionRequest, CompletionRequest
from .state import ServerState
from .trajectory import TrajectoryDelta, TrajectoryEncoder, sse_event

router = APIRouter()
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _state(request: Request) -> ServerState:
    return request.app.state.server


@router.post("/v1/completions", responses=generation_responses(CompletionResponse))
async def completions(body: CompletionRequest, request: Request):
    state = _state(request)
    state.check_model(body.model)
    check_prompt_chars(body, state.limits)  # before tokenizing; tokenizing runs in a worker thread, without the GIL
    prompts = await run_in_threadpool(completion_prompts, body, state.tokenizer, state.limits)
    env = Envelope(new_id("cmpl"), "text_completion", state.model_name)
    return await _respond(request, state, body, prompts, env, "completions", completion_body,
                          lambda i, text, reason: completion_chunk(env, i, text, reason), None)


@router.post("/v1/chat/completions", responses=generation_responses(ChatCompletionResponse))
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = _state(request)
    state.check_model(body.model)
    check_prompt_chars(body, state.limits)
    prompt = await run_in_threadpool(chat_prompt, body, state.tokenizer)
    if not body.stream:
        env = Envelope(new_id("chatcmpl"), "chat.completion", state.model_name)
    else:
        env = Envelope(new_id("chatcmpl"), "chat.completion.chunk", state.model_name)

    def chunk(i: int, text: str, reason: str | None) -> dict[str, Any]:
        return chat_chunk(env, i, {"content": text} if text or reason is None else {}, reason)

    def opening(i: int) -> dict[str, Any]:
        return chat_chunk(env, i, {"role": "assistant", "content": ""})

    return await _respond(request, state, body, [prompt], env, "chat", chat_body, chunk, opening)


async def _respond(request: Request, state: ServerState, body: CompletionRequest | ChatCompletionRequest,
                   prompts: list[list[int]], env: Envelope, endpoint: str, make_body: Callable,
                   make_chunk: Callable, make_opening: Callable | None):
    job = build_job(body, prompts, state.tokenizer.stop_ids, state.limits)
    gen = Generation(state.loop, job, env.id, request.receive, state.metrics, endpoint)
    gen.submit()
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        trajectory = TrajectoryEncoder(state.tokenizer, state.limits.mask_id, job.configs[0].eos_ids) \
            if body.trajectory else None
        return GenerationStream(gen, _stream(gen, env, make_chunk, make_opening, include_usage, trajectory))
    try:
        results = await gen.collect()
    except ClientGone:
        return JSONResponse(error_body("client disconnected", "invalid_request_error"), status_code=499)
    return make_body(env, results, job.prompt_tokens)


class GenerationStream(StreamingResponse):
    """An SSE response that always closes its `Generation` (cancelling unfinished choices), however the response
    ends: also when the client leaves before the body generator first runs, or while a chunk is being sent (the
    generator is then abandoned, not closed, and its own `finally` would run only when it is garbage collected)."""

    def __init__(self, gen: Generation, body: AsyncIterator[bytes]):
        super().__init__(body, media_type="text/event-stream", headers=_SSE_HEADERS)
        self.generation = gen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.close()


async def _stream(gen: Generation, env: Envelope, make_chunk: Callable, make_opening: Callable | None,
                  include_usage: bool, trajectory: TrajectoryEncoder | None = None) -> AsyncIterator[bytes]:
    """SSE: (chat) an opening chunk per choice, then each choice's text as its blocks become final, a closing chunk
    with its finish_reason, (optionally) a usage chunk, and `data: [DONE]`. A failure mid-stream is an error event.
    With `trajectory` (the request's opt-in), `redraft.trajectory` events interleave (see `trajectory`)."""
    try:
        if make_opening is not None:
            for i in range(len(gen.ids)):
                yield sse(make_opening(i))
        async for index, event in gen.events():
            if isinstance(event, TrajectoryDelta):
                for data in trajectory.encode(index, event):
                    yield sse_event(data)
                continue
            if event.text:
                yield sse(make_chunk(index, event.text, None))
            if event.finished:
                yield sse(make_chunk(index, "", finish_reason(event.result)))
                if trajectory is not None:
                    yield sse_event(trajectory.end(index, event.result, finish_reason(event.result)))
        if include_usage:
            yield sse(usage_chunk(env, gen.job.prompt_tokens, gen.results))
    except ClientGone:
        return
    except APIError as e:
        yield sse(e.body())
    finally:
        gen.close()
    yield sse("[DONE]")


@router.get("/v1/models", responses={200: {"model": ModelList}, **error_responses()})
async def models(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {"object": "list", "data": [_model_card(state)]}


@router.get("/v1/models/{model_id:path}", responses={200: {"model": ModelCard}, **error_responses()})
async def model(model_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    state.check_model(model_id)
    return _model_card(state)


def _model_card(state: ServerState) -> dict[str, Any]:
    return {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "redraft",
            "max_model_len": state.limits.max_model_len}


@router.get("/health", responses={200: {"model": Health, "description": "The engine loop runs"},
                                   503: {"model": Unhealthy, "description": "The engine loop stopped"},
                                   **error_responses(400, 404, 413, 429, 500)})
async def health(request: Request) -> JSONResponse:
    loop = _state(request).loop
    if loop.is_alive:
        return JSONResponse({"status": "ok", "in_flight": loop.num_in_flight})
    return JSONResponse({"status": "unavailable", "error": loop.error or "engine loop not running"}, status_code=503)


@router.get("/metrics", response_class=PlainTextResponse, responses=error_responses(400, 404, 413, 429, 500, 503))
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(_state(request).metrics.render(), media_type="text/plain; version=0.0.4")
