"""Evaluation: task suite, code sandbox, batched scoring harness and the `eval` / `bench` commands."""

from redraft.evaluation.tasks import Example, Task, get_task, list_tasks

__all__ = ["Example", "Task", "get_task", "list_tasks"]
