"""OpenAI-compatible HTTP serving over the decoding engine: continuous batching, streaming, strict validation.

`create_app(engine_or_model_path, ...)` builds the FastAPI app; `redraft serve MODEL` runs it with uvicorn. One engine
loop thread owns the model and steps the engine's scheduler; HTTP handlers only validate, tokenize, submit and
stream (see docs/serving.md).
"""

from .app import create_app
from .prefix_cache import PrefixCache
from .settings import ServerSettings

__all__ = ["create_app", "PrefixCache", "ServerSettings"]
