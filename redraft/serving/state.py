"""`ServerState`: what the handlers share (kept on `app.state.server`): engine loop, tokenizer, limits, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from redraft.decoding import Engine

from .errors import APIError
from .loop import EngineLoop
from .metrics import ServingMetrics
from .params import Limits
from .prefix_cache import PrefixCache
from .settings import ServerSettings


@dataclass
class ServerState:
    loop: EngineLoop
    tokenizer: object
    limits: Limits
    metrics: ServingMetrics
    model_name: str
    settings: ServerSettings
    created: int

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")


def build_engine(engine_or_path: Engine | str | Path, settings: ServerSettings) -> tuple[Engine, str]:
    """An Engine (given, or loaded from a checkpoint directory, with a `PrefixCache` of
    `settings.prefix_cache_slots` slots) and the default model name."""
    if isinstance(engine_or_path, Engine):
        if engine_or_path.tokenizer is None:
            raise ValueError("create_app: the engine needs a tokenizer (text in, text out)")
        return engine_or_path, settings.model_name or "redraft"
    path = Path(engine_or_path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    from redraft.model.lora import load_merged
    from redraft.model.tokenizer import load_tokenizer

    model = load_merged(path, settings.adapter, dtype=settings.dtype, device=settings.device,
                        quantization=settings.quantization)
    tokenizer = load_tokenizer(path)
    prefix = PrefixCache(settings.prefix_cache_slots) if settings.prefix_cache_slots else None
    engine = Engine(model, tokenizer, max_batch_size=settings.max_batch_size, prefix_index=prefix,
                    batch_invariant=settings.engine_batch_invariant())
    return engine, settings.model_name or path.name


def make_limits(engine: Engine, settings: ServerSettings) -> Limits:
    cfg = engine.model.config
    max_len = min(settings.max_model_len or cfg.max_position_embeddings, cfg.max_position_embeddings)
    max_prompt = min(settings.max_prompt_tokens or max_len - 1, max_len - 1)
    return Limits(vocab_size=cfg.vocab_size, mask_id=engine.tokenizer.mask_id, max_model_len=max_len,
                  max_prompt_tokens=max_prompt, default_max_tokens=settings.default_max_tokens,
                  default_mode=settings.default_mode, max_token_chars=engine.tokenizer.max_token_chars)
