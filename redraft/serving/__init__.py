"""OpenAI-compatible HTTP serving over the decoding engine: continuous batching, streaming, strict validation.

`create_app(engine_or_model_path, ...)` builds the FastAPI app; `redraft serve MODEL` runs it with uvicorn. One engine
loop thread owns the model and steps the engine's scheduler; HTTP handlers only validate, tokenize, submit and
stream (see docs/serving.md).
"""

from redraft._lazy import lazy_package

# public names, imported on first use (the CLI imports this package without torch)
lazy_package(__name__, {
    "create_app": ".app", "PrefixCache": ".prefix_cache", "ServerSettings": ".settings"
})
