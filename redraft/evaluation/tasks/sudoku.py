"""4x4 sudoku chat task: a puzzle with blanks that has exactly one solution; the answer is the full grid."""

from __future__ import annotations

import random
from dataclasses import dataclass

from redraft.evaluation.tasks.base import Example, Task, user

Grid = tuple[int, ...]  # 16 cells, row-major, 0 = blank


def _peers(cell: int) -> set[int]:
    r, c = divmod(cell, 4)
    box = {(r // 2 * 2 + i) * 4 + (c // 2 * 2 + j) for i in range(2) for j in range(2)}
    return ({r * 4 + j for j in range(4)} | {i * 4 + c for i in range(4)} | box) - {cell}


PEERS = tuple(frozenset(_peers(i)) for i in range(16))


def count_solutions(grid: Grid, limit: int = 2) -> int:
    """Number of completions of `grid` (stops counting at `limit`)."""
    cells = list(grid)
    try:
        i = cells.index(0)
    except ValueError:
        return 1 if is_solved(grid) else 0
    total = 0
    for v in range(1, 5):
        if all(cells[p] != v for p in PEERS[i]):
            cells[i] = v
            total += count_solutions(tuple(cells), limit - total)
            if total >= limit:
                break
    return total


def is_solved(grid: Grid) -> bool:
    return len(grid) == 16 and all(1 <= v <= 4 for v in grid) and all(
        grid[p] != grid[i] for i in range(16) for p in PEERS[i])


def all_solutions() -> list[Grid]:
    """All 288 valid 4x4 sudoku grids, in lexicographic order (depth-first fill of an empty grid)."""
    out: list[Grid] = []
    cells = [0] * 16

    def fill(i: int) -> None:
        if i == 16:
            out.append(tuple(cells))
            return
        for v in range(1, 5):
            if all(cells[p] != v for p in PEERS[i]):
                cells[i] = v
                fill(i + 1)
                cells[i] = 0

    fill(0)
    return out


def format_grid(grid: Grid) -> str:
    """Rows separated by spaces, blanks as '_': e.g. `1_3_ _4_1 3___ _1_4`."""
    return " ".join("".join(str(v) if v else "_" for v in grid[r * 4:r * 4 + 4]) for r in range(4))


@dataclass
class Sudoku4(Task):
    """`sudoku: 1_3_ _4_1 ...` -> `1234 3421 ...`. Puzzles keep removing clues (random order) while the solution stays
    unique, down to at most max_clues and never below min_clues given cells. Train/eval split on the solution grid:
    an eval puzzle's grid never appears in training, whatever its clues (65 of the 288 grids are eval grids)."""

    min_clues: int = 4
    max_clues: int = 10
    name = "sudoku4"

    def __post_init__(self) -> None:
        for field_name in ("min_clues", "max_clues"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or not 4 <= value <= 15:
                raise ValueError(f"{field_name} must be an int in [4, 15], got {value!r}")
        if self.min_clues > self.max_clues:
            raise ValueError(f"min_clues={self.min_clues} must be <= max_clues={self.max_clues}")
        self._solutions = all_solutions()

    def config_id(self) -> str:
        return f"clues={self.min_clues}-{self.max_clues}"

    def _sample(self, rng: random.Random) -> Example:
        solution = rng.choice(self._solutions)
        target = rng.randint(self.min_clues, self.max_clues)
        puzzle = list(solution)
        order = list(range(16))
        rng.shuffle(order)
        for cell in order:
            if sum(1 for v in puzzle if v) <= target:
                break
            kept = puzzle[cell]
            puzzle[cell] = 0
            if count_solutions(tuple(puzzle)) != 1:
                puzzle[cell] = kept
        key = format_grid(tuple(puzzle))
        answer = format_grid(solution)
        # the same grid with other clues is the same problem (same answer): split on the solution grid
        return Example(user(f"sudoku: {key}"), answer,
                       {"key": key, "split_key": answer, "puzzle": list(puzzle), "solution": list(solution)})
