"""Evaluation: task suite, code sandbox, batched scoring harness and the `eval` / `bench` commands."""

from redraft.evaluation.tasks import Example, Task, get_task, list_tasks

__all__ = ["Example", "Task", "get_task", "list_tasks"]


def __getattr__(name: str):
    if name == "LMEvalModel":  # needs the optional `lm-eval` package: imported on first use
        from redraft.evaluation.lmeval import LMEvalModel

        return LMEvalModel
    raise AttributeError(f"module 'redraft.evaluation' has no attribute {name!r}")
