"""Task registry: build a task by name with keyword configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from redraft.evaluation.tasks.base import Task
from redraft.evaluation.tasks.code_exec import CodeExec
from redraft.evaluation.tasks.code_syntax import CodeSyntax
from redraft.evaluation.tasks.humaneval import HumanEval
from redraft.evaluation.tasks.synthetic import Addition, AdditionLong, Reverse, ReverseLong, Sorting, SortingLong
from redraft.evaluation.tasks.sudoku import Sudoku4

TASKS: MappingProxyType[str, Callable[..., Task]] = MappingProxyType({
    "addition": Addition,
    "sorting": Sorting,
    "sudoku4": Sudoku4,
    "reverse": Reverse,
    "addition_long": AdditionLong,
    "sorting_long": SortingLong,
    "reverse_long": ReverseLong,
    "code_syntax": CodeSyntax,
    "code_exec": CodeExec,
    "humaneval": HumanEval,
})


def list_tasks() -> list[str]:
    """Names accepted by `get_task`, sorted."""
    return sorted(TASKS)


def get_task(name: str, **kwargs: Any) -> Task:
    """A new task instance; kwargs are the task's config fields (e.g. `get_task("addition", digits=6)`)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {list_tasks()}, got {name!r}")
    factory = TASKS[name]
    if dataclasses.is_dataclass(factory):
        known = {f.name for f in dataclasses.fields(factory) if f.init}
        for key in kwargs:
            if key not in known:
                raise ValueError(f"{key} is not a config field of task {name!r} (fields: {sorted(known)})")
    return factory(**kwargs)
