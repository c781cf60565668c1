"""Plot held-out accuracy and TPF against RL step from one or more `metrics.jsonl` of `redraft rl` runs.

    python scripts/plot_rl.py LABEL=runs/rl/x/metrics.jsonl [LABEL=...] --out docs/rl_curve.png
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=path/to/metrics.jsonl")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fig, (acc_ax, tpf_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for spec in args.runs:
        label, _, path = spec.partition("=")
        rows = [json.loads(line) for line in open(path) if line.strip()]
        evals = [r for r in rows if "eval_accuracy" in r]
        steps = [r["step"] for r in evals]
        acc_ax.plot(steps, [r["eval_accuracy"] for r in evals], marker="o", label=label)
        tpf_ax.plot(steps, [r["eval_tpf"] for r in evals], marker="o", label=label)
    acc_ax.set(xlabel="EBPO step", ylabel="held-out accuracy (greedy)", title="accuracy")
    tpf_ax.set(xlabel="EBPO step", ylabel="tokens per forward", title="decoding speed (TPF)")
    for ax in (acc_ax, tpf_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
