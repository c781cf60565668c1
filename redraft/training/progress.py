"""Metrics log: JSONL records (one per log/eval event) and a rich progress bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class ProgressLog:
    """`truncate_after`: on resume, drop earlier records of steps after the checkpoint so the log reads as one run."""

    def __init__(self, path: Path, total_steps: int, enabled: bool = True, truncate_after: int | None = None):
        self.path = Path(path)
        self.total = total_steps
        self.enabled = enabled
        self.progress = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if truncate_after is not None and self.path.exists():
                kept = [line for line in self.path.read_text().splitlines()
                        if line.strip() and json.loads(line).get("step", 0) <= truncate_after]
                self.path.write_text("".join(line + "\n" for line in kept))
            self.start = truncate_after or 0

    def __enter__(self) -> "ProgressLog":
        if self.enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled or len(record) <= 1:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        if self.progress is not None:
            self.progress.update(self.task, completed=record["step"],
                                 info=f"loss {record['loss']:.3f}" if "loss" in record else "")
            self.progress.console.print(text)
        else:
            print(text, flush=True)
