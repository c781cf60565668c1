"""CLI verbs `redraft eval` and `redraft bench` (argument parsing and output files; the logic is the Python API)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redraft.evaluation.harness import MODES
from redraft.evaluation.tasks import list_tasks
from redraft.model.fp8.commands import add_quantization_argument

DEFAULT_EVAL_TASKS = "addition,sorting,sudoku4,reverse"


def _csv(kind: Callable[[str], Any], name: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of {kind.__name__}, "
                                             f"got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name} must not be empty, got {text!r}")
        return values
    return parse


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` DecodeConfig overrides; VALUE is read as JSON (numbers, true/false, lists), else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set must be FIELD=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def resolve_model(path: str | None) -> str:
    if path is not None:
        return path
    import redraft

    bundled = Path(redraft.__file__).parent / "assets" / "tiny"
    if not (bundled / "config.json").exists():
        raise FileNotFoundError(f"no bundled model at {bundled}; pass a checkpoint path as MODEL")
    return str(bundled)


def resolve_twin(path: str | None) -> str:
    """The M2T-only twin for `redraft results`: `path`, or the bundled model's twin in a source checkout."""
    if path is not None:
        return path
    import redraft

    twin = Path(redraft.__file__).resolve().parents[1] / "models" / "tiny-m2t-only"
    if not (twin / "config.json").exists():
        raise FileNotFoundError(f"no twin model at {twin} (it ships with the source checkout, not the package); "
                                "pass MODEL TWIN")
    return str(twin)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields the `progress(done, total)` callback the API takes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _common(p: argparse.ArgumentParser, default_tasks: str, default_n: int) -> None:
    if p.prog.split()[-1] == "results":
        p.add_argument("model", nargs="?", default=None,
                       help="checkpoint of the T2T-trained model (default: the bundled tiny model)")
        p.add_argument("twin", nargs="?", default=None,
                       help="checkpoint of its M2T-only twin (default: the bundled model's twin, "
                            "models/tiny-m2t-only in a source checkout)")
    else:
        p.add_argument("model", nargs="?", default=None,
                       help="checkpoint directory or hub id (default: the bundled tiny model)")
    p.add_argument("--tasks", type=_csv(str, "--tasks"), default=default_tasks.split(","),
                   help=f"comma-separated tasks from {', '.join(list_tasks())} (default {default_tasks})")
    p.add_argument("--n", type=int, default=default_n, help="eval examples per task and seed")
    p.add_argument("--seeds", type=_csv(int, "--seeds"), default=[0], help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per engine call")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="DecodeConfig override, repeatable (e.g. --set max_new_tokens=48 --set block_length=16)")
    p.add_argument("--device", default="cpu", help="torch device to load the model on")


def add_adapter_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", metavar="DIR", default=None,
                   help="LoRA adapter (PEFT layout) merged into the model at load, as generate/serve --adapter")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="score a model on tasks: score, TPF, tokens/s, edits per token",
                              description="Decode the eval split of each task in batches and score it exactly; "
                                          "writes eval.json and eval.md to --out.")
    _common(p, DEFAULT_EVAL_TASKS, 20)
    p.add_argument("--mode", choices=MODES, default="quality",
                   help="quality = Q Mode, speedy = S Mode, no-edit = Q Mode with T2T editing off")
    p.add_argument("--out", type=Path, default=Path("eval-out"), help="output directory")
    p.add_argument("--no-samples", action="store_true", help="leave per-example completions out of eval.json")
    add_quantization_argument(p)
    add_adapter_argument(p)
    p.set_defaults(func=run_eval)

    b = subparsers.add_parser("bench", help="paper-style tables and a speed/score Pareto plot",
                              description="Quality vs speedy vs no editing, MBE off vs on, and a tau_mask x tau_edit "
                                          "sweep; writes bench.json, bench.md and pareto.png to --out.")
    _common(b, DEFAULT_EVAL_TASKS, 20)
    b.add_argument("--tau-mask", type=_csv(float, "--tau-mask"), default=[0.3, 0.5, 0.7, 0.9],
                   help="sweep values of tau_mask")
    b.add_argument("--tau-edit", type=_csv(float, "--tau-edit"), default=[0.0, 0.5, 0.9],
                   help="sweep values of tau_edit (each tau_mask is also run with editing off)")
    b.add_argument("--mbe-blocks", type=int, default=1, help="k of the Multi-Block Editing rows")
    b.add_argument("--out", type=Path, default=Path("bench-out"), help="output directory")
    add_quantization_argument(b)
    add_adapter_argument(b)
    b.set_defaults(func=run_bench)

    r = subparsers.add_parser("results", help="reproduce the paper's claims C1-C3 into docs/RESULTS.md",
                              description="Fresh runs of a T2T-trained model and its M2T-only twin over several "
                                          "seeds: C1 speedy vs quality, C2 editing at matched TPF, C3 MBE off/on.")
    _common(r, DEFAULT_EVAL_TASKS, 50)
    r.set_defaults(seeds=[0, 1, 2])
    r.add_argument("--tau-mask", type=_csv(float, "--tau-mask"), default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                   help="tau_mask sweep of every arm (for the matched-TPF comparison)")
    r.add_argument("--mbe-blocks", type=int, default=1, help="k of the Multi-Block Editing rows")
    r.add_argument("--confidence-n", type=int, default=16,
                   help="eval examples per task (first seed) whose Q/S Mode trajectories are replayed for C1's "
                        "confidence histograms; 0 = none (default: 16)")
    r.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="Markdown file to write")
    r.set_defaults(func=run_results_cmd)


def run_eval(args: argparse.Namespace) -> int:
    from redraft.evaluation.harness import evaluate

    model = resolve_model(args.model)
    with progress_bar(f"eval {args.mode}") as progress:
        report = evaluate(model, args.tasks, mode=args.mode, overrides=parse_sets(args.set), n=args.n,
                          seeds=args.seeds, batch_size=args.batch_size, keep_samples=not args.no_samples,
                          progress=progress, device=args.device, quantization=args.quantization,
                          adapter=args.adapter)
    js = report.write_json(args.out / "eval.json")
    md = report.write_markdown(args.out / "eval.md")
    print(report.to_markdown())
    print(f"wrote {js} and {md}", file=sys.stderr)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from redraft.evaluation.bench import BenchSettings, bench
    from redraft.evaluation.bench_output import plot_pareto, to_markdown, write_markdown

    settings = BenchSettings(tasks=tuple(args.tasks), n=args.n, seeds=tuple(args.seeds), batch_size=args.batch_size,
                             tau_masks=tuple(args.tau_mask), tau_edits=tuple(args.tau_edit),
                             mbe_blocks=args.mbe_blocks, overrides=parse_sets(args.set))
    model = resolve_model(args.model)
    with progress_bar("bench") as progress:
        report = bench(model, settings, progress=progress, device=args.device, quantization=args.quantization,
                       adapter=args.adapter)
    js = report.write_json(args.out / "bench.json")
    png = plot_pareto(report, args.out / "pareto.png")
    md = write_markdown(report, args.out / "bench.md", png.name)
    print(to_markdown(report, png.name))
    print(f"wrote {js}, {md} and {png}", file=sys.stderr)
    return 0


def _command_line(args: argparse.Namespace) -> str:
    parts = ["redraft results", args.model, args.twin, f"--tasks {','.join(args.tasks)}", f"--n {args.n}",
             f"--seeds {','.join(map(str, args.seeds))}", f"--tau-mask {','.join(f'{t:g}' for t in args.tau_mask)}",
             f"--mbe-blocks {args.mbe_blocks}", f"--confidence-n {args.confidence_n}",
             f"--batch-size {args.batch_size}", f"--device {args.device}",
             *(f"--set {s}" for s in args.set), f"--out {args.out}"]
    return " ".join(p for p in parts if p)


def run_results_cmd(args: argparse.Namespace) -> int:
    from redraft.evaluation.results import ResultsSettings, run_results
    from redraft.evaluation.results_output import write_results

    settings = ResultsSettings(tasks=tuple(args.tasks), n=args.n, seeds=tuple(args.seeds),
                               batch_size=args.batch_size, tau_masks=tuple(args.tau_mask),
                               mbe_blocks=args.mbe_blocks, overrides=parse_sets(args.set),
                               confidence_n=args.confidence_n)
    model, twin = resolve_model(args.model), resolve_twin(args.twin)
    with progress_bar("results") as progress:
        res = run_results(model, twin, settings, progress=progress, device=args.device)
    path = write_results(res, args.out, _command_line(args), args.device)
    print(path.read_text())
    print(f"wrote {path}", file=sys.stderr)
    return 0
