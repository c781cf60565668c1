"""`create_app`: the FastAPI application (routes in `routes`), its engine loop thread and its lifespan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from redraft import __version__
from redraft.decoding import Engine

from .errors import install_error_handlers
from .loop import EngineLoop
from .metrics import ServingMetrics
from .middleware import BodyLimitMiddleware, ErrorCountMiddleware
from .playground import router as playground_router
from .openapi import install_openapi
from .routes import router
from .settings import ServerSettings
from .state import ServerState, build_engine, make_limits


def create_app(engine_or_model_path: Engine | str | Path, settings: ServerSettings | None = None,
               **overrides) -> FastAPI:
    """An OpenAI-compatible app serving one model.

    engine_or_model_path: an `Engine` (with a tokenizer) or a checkpoint directory. settings / overrides: see
    `ServerSettings` (e.g. `create_app(path, max_batch_size=8, max_queue=16)`). The engine loop thread starts with
    the app's lifespan and stops with it (in-flight requests get `shutdown_timeout` s, then are cancelled).
    """
    if settings is not None and overrides:
        raise ValueError("create_app: pass settings or keyword overrides, not both")
    settings = settings if settings is not None else ServerSettings(**overrides)
    engine, default_name = build_engine(engine_or_model_path, settings)
    metrics = ServingMetrics()
    loop = EngineLoop(engine, settings.max_batch_size + settings.max_queue, metrics)
    state = ServerState(loop=loop, tokenizer=engine.tokenizer, limits=make_limits(engine, settings),
                        metrics=metrics, model_name=settings.model_name or default_name, settings=settings,
                        created=int(time.time()))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop.start()
        try:
            yield
        finally:
            await asyncio.to_thread(loop.stop, settings.shutdown_timeout)

    app = FastAPI(title="redraft", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible server for editable block-diffusion LMs (LLaDA2.1).")
    app.state.server = state
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(playground_router)
    install_openapi(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ErrorCountMiddleware, metrics=metrics)
    return app
