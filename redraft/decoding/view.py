"""`redraft generate --show`: render decoding live in the terminal (masks, fresh fills, edits in distinct colours)."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .config import DecodeConfig
from .results import GenerationResult, Trajectory

MASK_GLYPH = "░"
STYLES = {"mask": "dim", "final": "default", "fill": "bold green", "edit": "bold black on yellow"}


def render(traj: Trajectory, token_text, step: int | None = None) -> Text:
    """The generated part of the canvas after `step` (default: the last): masks dim, this step's M2T fills green,
    its T2T edits highlighted yellow. token_text: id -> str."""
    canvases = traj.canvases()
    step = len(traj.steps) if step is None else step
    canvas = canvases[step]
    last = traj.steps[step - 1] if step > 0 else None
    filled = {p for p, _ in last.filled} if last else set()
    edited = {p for p, _, _ in last.edited} if last else set()
    out = Text()
    for pos in range(traj.prompt_len, len(canvas)):
        tok = canvas[pos]
        if tok == traj.mask_id:
            out.append(MASK_GLYPH, STYLES["mask"])
        else:
            style = STYLES["edit"] if pos in edited else STYLES["fill"] if pos in filled else STYLES["final"]
            out.append(token_text(tok), style)
    return out


def legend() -> Text:
    return Text.assemble(("░ mask  ", STYLES["mask"]), ("fill (M2T)", STYLES["fill"]), "  ",
                         ("edit (T2T)", STYLES["edit"]))


def live_decode(engine, prompt_ids: list[int], config: DecodeConfig, tokenizer,
                console: Console | None = None) -> GenerationResult:
    """Decode one prompt, redrawing the canvas after every step; returns the result (with its trajectory)."""
    config = config if config.trajectory else config.replace(trajectory=True)
    rid = engine.add_request(prompt_ids, config)
    row = engine.rows[rid]

    def text(tok: int) -> str:
        return tokenizer.decode([tok], skip_special_tokens=False)

    result = None
    console = console or Console()
    console.print(legend())
    with Live(Text(), console=console, refresh_per_second=20, transient=False) as live:
        while engine.has_work():
            for e in engine.step():
                result = e.result or result
            live.update(render(row.trajectory, text))
    console.print()
    return result
