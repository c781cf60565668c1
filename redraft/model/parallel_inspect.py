"""`redraft inspect PATH --tp N [--ep M] [--dtype D]`: memory per rank of a tensor-/expert-parallel layout, computed
from config.json alone (PATH may be a checkpoint directory, a hub id, or a config.json file; no weight is read)."""

from __future__ import annotations

import json
from pathlib import Path

from .config import LLaDA2MoeConfig
from .loading import resolve_checkpoint
from .parallel import ParallelConfig, rank_memory

GIB = 1 << 30


def load_config(path: str) -> LLaDA2MoeConfig:
    """A config.json file, a checkpoint directory or hub id, or a released shape name (`mini`, `flash`)."""
    from .shapes import SHAPES, shape_config

    p = Path(path).expanduser()
    if not p.exists() and path in SHAPES:
        return shape_config(path)
    if p.is_file():
        return LLaDA2MoeConfig.from_file(p)
    return LLaDA2MoeConfig.from_file(resolve_checkpoint(path) / "config.json")


def memory_report(path: str, config: ParallelConfig, dtype: str | None = None) -> dict:
    """{"tp", "ep", "dtype", "parameters", "ranks": [{"rank", "weights", "kv_per_1k_tokens"}], "max_weights"}."""
    cfg = load_config(path)
    dtype = dtype or cfg.torch_dtype
    ranks = rank_memory(cfg, config, dtype)
    return {"path": str(path), "tp": config.tp, "ep": config.ep, "dtype": dtype, "parameters": cfg.num_parameters(),
            "ranks": [{"rank": r, **m} for r, m in enumerate(ranks)],
            "max_weights": max(m["weights"] for m in ranks)}


def print_memory_report(report: dict, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['path']}: {report['parameters'] / 1e9:.1f}B parameters, tp={report['tp']} "
                        f"ep={report['ep']}, {report['dtype']}")
    for col in ("rank", "weights (GiB)", "weights (GB)", "KV cache per 1k tokens (MiB)"):
        table.add_column(col, justify="right")
    for r in report["ranks"]:
        table.add_row(str(r["rank"]), f"{r['weights'] / GIB:.2f}", f"{r['weights'] / 1e9:.2f}",
                      f"{r['kv_per_1k_tokens'] / (1 << 20):.1f}")
    Console().print(table)
    print(f"largest rank: {report['max_weights'] / GIB:.2f} GiB of weights (activations, KV cache and the CUDA "
          "context come on top)")
