"""`ServerSettings`: the server's limits and defaults, validated once."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from redraft.decoding import PRESETS
from redraft.model.invariant import RowTiles


@dataclass(frozen=True)
class ServerSettings:
    """model_name: the id clients pass as `model` (None = the checkpoint directory's name).
    max_batch_size: rows decoded together by the engine. max_queue: requests waiting beyond the running batch;
    more get 429. max_model_len: prompt + max_tokens limit (None = the model's max_position_embeddings).
    max_prompt_tokens: prompt limit (None = max_model_len - 1). default_max_tokens: when a request gives none.
    default_mode: preset used when a request gives no `mode`. max_body_bytes: larger request bodies get 413.
    shutdown_timeout: seconds in-flight requests may still run at shutdown before they are cancelled.
    prefix_cache_slots: prompt prefixes whose K/V are kept for reuse by later requests (0 = no prefix reuse).
    device: where a checkpoint directory is loaded ("cpu", "cuda", "cuda:1"). dtype: parameter dtype (float32,
    bfloat16, float16; None = the checkpoint's). quantization: None, "fp8" or "fp8-all" (per-block FP8 weights, see
    `redraft.load_model`). batch_invariant: a request's tokens do not depend on what else is in
    the running batch, bit for bit (None = on CPU, off on CUDA; see `redraft.decoding.Engine`). row_tile: rows
    per GEMM tile of the batch-invariant forward (None = 32, one decode window; 64 decodes batches of 2+ faster
    on CPU and a lone request a little slower; CPU only, not with batch_invariant=False). adapter: a LoRA adapter
    directory (PEFT layout) merged into the checkpoint at load (None = none)."""

    model_name: str | None = None
    max_batch_size: int = 32
    max_queue: int = 256
    max_model_len: int | None = None
    max_prompt_tokens: int | None = None
    default_max_tokens: int = 256
    default_mode: str = "quality"
    max_body_bytes: int = 1 << 20
    shutdown_timeout: float = 10.0
    prefix_cache_slots: int = 32
    device: str = "cpu"
    dtype: str | None = None
    batch_invariant: bool | None = None
    row_tile: int | None = None
    quantization: str | None = None
    adapter: str | None = None

    def engine_batch_invariant(self) -> bool | RowTiles | None:
        """The `Engine(batch_invariant=...)` these settings ask for: a `RowTiles` when `row_tile` is set."""
        return RowTiles(dense=self.row_tile) if self.row_tile is not None else self.batch_invariant

    def __post_init__(self) -> None:
        for name, low in (("max_batch_size", 1), ("max_queue", 0), ("default_max_tokens", 1),
                          ("max_body_bytes", 1024), ("prefix_cache_slots", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"ServerSettings.{name} must be an integer >= {low}, got {v!r}")
        for name in ("max_model_len", "max_prompt_tokens"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"ServerSettings.{name} must be None or an integer >= 1, got {v!r}")
        if self.default_mode not in PRESETS:
            raise ValueError(f"ServerSettings.default_mode must be one of {sorted(PRESETS)}, got {self.default_mode!r}")
        if not self.shutdown_timeout >= 0:
            raise ValueError(f"ServerSettings.shutdown_timeout must be >= 0, got {self.shutdown_timeout!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"ServerSettings.device must be a torch device string, got {self.device!r}") from None
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"ServerSettings.dtype must be None, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.quantization not in (None, "fp8", "fp8-all"):
            raise ValueError(f"ServerSettings.quantization must be None, 'fp8' or 'fp8-all', got {self.quantization!r}")
        if not (self.batch_invariant is None or isinstance(self.batch_invariant, bool)):
            raise ValueError(f"ServerSettings.batch_invariant must be None, True or False, got {self.batch_invariant!r}")
        if self.row_tile is not None:
            if not isinstance(self.row_tile, int) or isinstance(self.row_tile, bool) or self.row_tile < 1:
                raise ValueError(f"ServerSettings.row_tile must be None or an integer >= 1, got {self.row_tile!r}")
            if self.batch_invariant is False:
                raise ValueError("ServerSettings.row_tile sets the tiles of the batch-invariant forward: it cannot "
                                 "be combined with batch_invariant=False")
            if torch.device(self.device).type != "cpu":
                raise ValueError(f"ServerSettings.row_tile is for CPU decoding (batch-invariant tiles); the device is "
                                 f"{self.device!r}")
        if self.model_name is not None and not self.model_name.strip():
            raise ValueError(f"ServerSettings.model_name must be a non-empty string, got {self.model_name!r}")
