"""What a run measured, and the tables and figures made from many runs.

The command line and the notebooks call the same functions, so they print the same table and draw
the same picture:

    metrics = run_metrics(result, dataset="mnist", file_bytes=14_192, wall_seconds=180.0)
    runs = load_runs("runs/mnist")                 # every runs/mnist/*/metrics.json
    print(markdown_table(summary_rows(runs), SUMMARY_COLUMNS))
    plot_history(runs, "runs/mnist/accuracy.png")  # test accuracy per epoch, one line per run

`metrics.json` (one per run, written by `python -m minifreeze train`) holds the keys of
`run_metrics`: test accuracy, parameter counts, compression, bytes on disk against dense float32,
seconds, the backend, the whole configuration and the per-epoch history.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from minifreeze import masks as M

SUMMARY_COLUMNS = ("method", "rate", "test_accuracy", "trained_params", "compression",
                   "file_bytes", "epochs", "wall_seconds", "backend")

METHOD_ORDER = ("dense", "freezenet", "snip")
"""Methods listed first, in this order, in tables and legends; others follow by name."""


class ReportError(ValueError):
    """A results folder that holds no run, or a metrics file that cannot be read."""


def run_metrics(result, *, dataset: str, file_bytes: int, wall_seconds: float,
                backend: str | None = None, plan: dict | None = None) -> dict:
    """The metrics of one finished run (a `train.TrainResult`) as a JSON-ready dict."""
    c = result.config
    shapes = result.model.param_shapes()
    total = result.model.num_params()
    trained = M.count_trained(shapes, result.masks)
    return {
        "model": c.model, "method": c.method, "score": c.score, "mode": c.mode, "rate": c.rate,
        "seed": c.seed, "init": c.init, "dataset": dataset, "backend": backend,
        "epochs": c.epochs, "test_accuracy": result.history[-1]["test_accuracy"],
        "total_params": total, "trained_params": trained, "compression": total / trained,
        "file_bytes": file_bytes, "dense_bytes": 4 * total, "wall_seconds": wall_seconds,
        "train_seconds": result.seconds, "plan": plan, "config": dataclasses.asdict(c),
        "history": result.history, "density": M.density_report(result.model, result.masks),
    }


def load_runs(root) -> list[dict]:
    """Every root/*/metrics.json, ordered by method (METHOD_ORDER first) then rate."""
    root = Path(root)
    runs = []
    for path in sorted(root.glob("*/metrics.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ReportError(f"{path}: unreadable metrics ({err})") from None
    if not runs:
        raise ReportError(f"{root}: no */metrics.json found (run `train --out {root}/NAME` first)")
    return sorted(runs, key=lambda r: (_method_rank(r["method"]), r["method"], r["rate"]))


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def summary_rows(runs: list[dict], columns=SUMMARY_COLUMNS) -> list[dict]:
    """One row per run with the given columns."""
    return [{k: r.get(k) for k in columns} for r in runs]


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("accuracy"):
        return f"{100 * value:.2f}%"
    if key == "compression":
        return f"{value:.1f}"
    if key.endswith("seconds"):
        return f"{value:.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict], columns=SUMMARY_COLUMNS) -> str:
    """A Markdown table of `rows`: accuracies in percent, counts with thousands separators."""
    right = [not isinstance(rows[0].get(k) if rows else "", str) for k in columns]
    head = "| " + " | ".join(k.replace("_", " ") for k in columns) + " |"
    rule = "| " + " | ".join("---:" if r else "---" for r in right) + " |"
    body = ["| " + " | ".join(_cell(k, row.get(k)) for k in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def plot_history(runs: list[dict], path=None, *, ax=None):
    """Test accuracy per epoch, one line per run; saved to `path` if given. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        ax.plot([h["epoch"] for h in r["history"]], [100 * h["test_accuracy"] for h in r["history"]],
                marker="o", label=f"{r['method']} (rate {r['rate']})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    if runs:
        ax.set_title(f"{runs[0]['model']} on {runs[0]['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig = fig or ax.figure
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
