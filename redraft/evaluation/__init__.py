"""Evaluation: task suite, code sandbox, batched scoring harness and the `eval` / `bench` commands."""

from redraft._lazy import lazy_package

# public names, imported on first use (the CLI imports this package without torch); LMEvalModel needs the
# optional `lm-eval` package
lazy_package(__name__, {
    "Example": "redraft.evaluation.tasks", "Task": "redraft.evaluation.tasks",
    "get_task": "redraft.evaluation.tasks", "list_tasks": "redraft.evaluation.tasks",
    "LMEvalModel": "redraft.evaluation.lmeval",
})
