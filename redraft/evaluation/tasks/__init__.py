"""Seeded, exactly scored evaluation tasks (also the training data generators) with disjoint train/eval splits."""

from redraft.evaluation.tasks.base import EVAL_FRACTION, SPLITS, Example, Task, normalize, split_of
from redraft.evaluation.tasks.code_exec import CodeExec
from redraft.evaluation.tasks.code_syntax import CodeSyntax
from redraft.evaluation.tasks.humaneval import HumanEval
from redraft.evaluation.tasks.registry import get_task, list_tasks
from redraft.evaluation.tasks.sudoku import Sudoku4
from redraft.evaluation.tasks.synthetic import Addition, AdditionLong, Reverse, ReverseLong, Sorting, SortingLong

__all__ = ["EVAL_FRACTION", "SPLITS", "Addition", "AdditionLong", "CodeExec", "CodeSyntax", "Example", "HumanEval",
           "Reverse", "ReverseLong", "Sorting", "SortingLong", "Sudoku4", "Task", "get_task", "list_tasks", "normalize",
           "split_of"]
