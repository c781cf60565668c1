"""Plain code-syntax task: complete a held-out Python function header from the standard library; scored by `ast`."""

from __future__ import annotations

import ast
import os
import random
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from redraft.evaluation.tasks.base import Example, Task, check_count, check_split, split_of, user


CODE_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@")
# Fraction of standard-library modules held out for evaluation. The split is shared: the code tasks evaluate only on
# these modules and the training corpus (redraft/training/data.py) keeps them out of CPT, so an eval function was
# never trained on, neither as a task example nor as source text.
STDLIB_EVAL_FRACTION = 0.1


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a stdlib file (`json/decoder.py` -> `json.decoder`, packages end in `.__init__`)."""
    return ".".join(path.relative_to(root).with_suffix("").parts)


def stdlib_split(module: str) -> str:
    """Split ("train"/"eval") of a stdlib module, shared by the code tasks and the CPT corpus."""
    return split_of("stdlib", module, STDLIB_EVAL_FRACTION)


def parses(source: str) -> bool:
    """True if `source` is syntactically valid Python (no code is executed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def extract_functions(source: str, max_body_lines: int, max_body_chars: int) -> list[tuple[str, str]]:
    """(header, body) pairs for the module-level, undecorated functions of `source` whose signature fits on one
    line and whose body (docstring dropped) is short. header ends with a newline; header + body parses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.decorator_list:
            continue
        body = node.body
        has_doc = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                   and isinstance(body[0].value.value, str))
        if has_doc:
            body = body[1:]
        if not body or node.body[0].lineno != node.lineno + 1 or node.end_lineno is None:
            continue
        header = lines[node.lineno - 1]
        if not header.rstrip().endswith(":"):
            continue
        body_text = "".join(lines[body[0].lineno - 1:node.end_lineno])
        if (node.end_lineno - body[0].lineno + 1 > max_body_lines or len(body_text) > max_body_chars
                or "\t" in body_text or not body_text.endswith("\n")):
            continue
        if parses(header + body_text):
            out.append((header, body_text))
    return out


_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo"}


def stdlib_files(root: Path) -> list[Path]:
    """The stdlib's .py files (packages included; test suites, demos and third-party dirs left out), sorted."""
    return sorted(p for p in root.rglob("*.py")
                  if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]))


@dataclass
class CodeSyntax(Task):
    """Prompt: `def name(args):` (a one-line header of a standard-library function); reference answer: the real body.

    Score 1.0 if header + completion parses as Python (`ast.parse`), else 0.0 (nothing is executed). The split is by
    source module (`stdlib_split`, shared with the CPT corpus, which holds the eval modules out), so eval headers come
    from stdlib modules never seen in training; an eval function whose header line also occurs in a train module
    (copies such as `def main():`) is dropped. The running interpreter's stdlib is read (test suites left out)
    (`sysconfig.get_paths()["stdlib"]`), so examples depend on the Python version.
    """

    max_body_lines: int = 3
    max_body_chars: int = 120
    stdlib: str = field(default_factory=lambda: sysconfig.get_paths()["stdlib"])
    name = "code_syntax"
    chat = False
    max_new_tokens = 64
    stop = CODE_STOP

    def __post_init__(self) -> None:
        for field_name in ("max_body_lines", "max_body_chars"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field_name} must be an int >= 1, got {value!r}")
        if not os.path.isdir(self.stdlib):
            raise ValueError(f"stdlib must be a directory, got {self.stdlib!r}")
        self._pool: dict[str, list[Example]] | None = None

    def config_id(self) -> str:
        return f"lines={self.max_body_lines},chars={self.max_body_chars}"

    def pool(self, split: str) -> list[Example]:
        """All examples of a split, in a fixed order (read once from the stdlib, then kept on the instance)."""
        check_split(split)
        if self._pool is None:
            pool: dict[str, list[Example]] = {"train": [], "eval": []}
            train_lines: set[str] = set()
            for path in stdlib_files(Path(self.stdlib)):
                try:
                    source = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                module = module_name(path, Path(self.stdlib))
                side = stdlib_split(module)
                if side == "train":
                    train_lines.update(line.strip() for line in source.splitlines())
                for header, body in extract_functions(source, self.max_body_lines, self.max_body_chars):
                    example = Example(user(header), body, {"key": f"{module}:{header.strip()}", "split_key": module,
                                                           "module": module, "prompt": header})
                    pool[side].append(example)
            pool["eval"] = [e for e in pool["eval"] if e.meta["prompt"].strip() not in train_lines]
            self._pool = pool
        return self._pool[split]

    def examples(self, n: int, seed: int, split: str = "train") -> list[Example]:
        check_count(n, seed)
        pool = self.pool(split)
        if n > len(pool):
            raise ValueError(f"n={n} exceeds the {len(pool)} {split} examples of task {self.name!r}")
        return random.Random(f"{self.name}|{self.config_id()}|{split}|{seed}").sample(pool, n)

    def _sample(self, rng: random.Random) -> Example:
        return rng.choice(self.pool("train") + self.pool("eval"))

    def score(self, example: Example, completion: str) -> float:
        if not completion.strip():
            return 0.0
        return 1.0 if parses(example.meta["prompt"] + completion) else 0.0
