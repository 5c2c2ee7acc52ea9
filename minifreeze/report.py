"""What a run measured, and the tables and figures made from many runs.

The command line, the README and the notebooks call the same functions, so they print the same
table and draw the same picture:

    runs = load_runs("runs/mnist")                 # every runs/mnist/*/metrics.json
    print(markdown_table(summary_rows(runs), SUMMARY_COLUMNS))
    plot_history(runs, "runs/mnist/accuracy.png")  # test accuracy per epoch, one line per run

    groups = aggregate(runs)                       # mean and std over seeds per model, method, rate
    print(markdown_table(groups, AGGREGATE_COLUMNS)); write_csv("summary.csv", groups)
    compare(groups, "freezenet", "snip")           # the difference, its 95% interval, p, verdict
    plot_rates(groups, "rates.png")                # accuracy against 1 - q, a band per method
    plot_bytes(groups, "bytes.png")                # accuracy against the bytes stored

Spread: `std` is the sample standard deviation over seeds (ddof 1; 0 for a single seed), shown
beside every mean. Verdicts come from a test (`difference_test`): runs of two methods that share
a seed are a pair (same theta0 and data order; frozen against pruned, the same mask too), so the
comparison is a paired t-test over the seeds both have (scipy.stats), Welch's t-test where the
runs are not paired (against dense). A table gives the mean difference, its 95% interval and p;
"above" or "below" only at p < 0.05 (`ALPHA`), otherwise "not separable with n seeds". No run is
left out of a mean or a ratio after it ran.

`metrics.json` (one per run, written by `runs.run`, e.g. through `python -m minifreeze train`)
holds the keys of `runs.run_metrics`: test accuracy, parameter counts, compression, bytes on disk
against dense float32, seconds, the backend, the whole configuration, the per-epoch history and
where the run ran.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from minifreeze.methods import REGISTRY


SUMMARY_COLUMNS = ("method", "rate", "test_accuracy", "trained_params", "compression",
                   "file_bytes", "epochs", "wall_seconds", "backend")

def method_order() -> tuple[str, ...]:
    """Methods listed first, in the registry's order, in tables and legends; others (such as
    `elsa_gmp`, see `method_of`) follow by name."""
    return tuple(REGISTRY)


class ReportError(ValueError):
    """A results folder that holds no run, or a metrics file that cannot be read."""


def load_runs(root, *, skipped: list | None = None) -> list[dict]:
    """Every root/*/metrics.json whose checksum holds, ordered by model, method (METHOD_ORDER
    first), rate, seed. Unreadable or altered files are left out and, if `skipped` is a list,
    named there."""
    from minifreeze.runs import is_sealed
    root = Path(root)
    runs = []
    for path in sorted(root.glob("*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            metrics, why = None, f"unreadable ({err})"
        else:
            why = "its checksum does not match its contents"
        if is_sealed(metrics):
            runs.append(metrics)
        elif skipped is not None:
            skipped.append(f"{path}: {why}")
    if not runs:
        raise ReportError(f"{root}: no finished */metrics.json found (run `train --out "
                          f"{root}/NAME` or `sweep --out {root}` first)")
    for r in runs:  # runs recorded before the network was: it follows from the config
        r.setdefault("network", network_of(r))
    return sorted(runs, key=lambda r: (r["network"], _method_rank(r["method"]), r["method"],
                                       r["rate"], r.get("seed", 0)))


def method_of(run: dict) -> str:
    """The method a run's row is grouped under: the method's `group` of its config (its name;
    for ELSA with the first phase's sparsifier when it is not SNIP's, `elsa_gmp`, so two ELSA
    variants are never averaged); a method outside the registry, its name."""
    method = REGISTRY.get(run["method"])
    return run["method"] if method is None else method.group(run.get("config") or {})


def network_of(run: dict) -> str:
    """The network a run's metrics describe (`models.network_name`): `lenet5` is Caffe's
    LeNet-5, `lenet5_relu` the one with a ReLU after each convolution."""
    from minifreeze.models import network_name
    if "network" in run:
        return run["network"]
    return network_name(run["model"], (run.get("config") or {}).get("model_kwargs"))


def group_runs(runs) -> dict[tuple, list[dict]]:
    """Runs by (network, method, rate), in the order they come: the groups every table and
    figure averages over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((network_of(r), method_of(r), r["rate"]), []).append(r)
    return groups


def _method_rank(method: str) -> int:
    order = method_order()
    return order.index(method) if method in order else len(order)


def summary_rows(runs: list[dict], columns=SUMMARY_COLUMNS) -> list[dict]:
    """One row per run with the given columns."""
    return [{k: r.get(k) for k in columns} for r in runs]


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key.endswith("accuracy"):
        return f"{100 * value:.2f}%"
    if key == "compression":
        return f"{value:.1f}"
    if key.endswith("seconds"):
        return f"{value:.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


LEFT_COLUMNS = frozenset({"model", "network", "method", "backend", "verdict", "seeds", "score",
                          "mode", "alone_method", "a", "b", "dense_seeds"})
"""Columns of words, aligned left by `markdown_table`; every other column is numbers, aligned
right."""


def markdown_table(rows: list[dict], columns=SUMMARY_COLUMNS, *, left=LEFT_COLUMNS) -> str:
    """A Markdown table of `rows`: accuracies in percent, counts with thousands separators.
    Cells that are already strings (`format_rows`) are shown as they are. A column's heading is
    its key with spaces for underscores; the columns in `left` are aligned left."""
    head = "| " + " | ".join(k.replace("_", " ") for k in columns) + " |"
    rule = "| " + " | ".join("---" if k in left else "---:" for k in columns) + " |"
    body = ["| " + " | ".join(_cell(k, row.get(k)) for k in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def plot_history(runs: list[dict], path=None, *, ax=None):
    """Test accuracy per epoch: one colour per (network, method, rate), pruned methods dashed;
    each seed a thin line and, with several seeds, their mean a thick one (not for a group with a
    seed at chance: the mean would sit between the two, where no run is). Drawn twice: the whole
    0-100% range, where a run stuck at chance shows as such (and is named in the legend), and
    zoomed on the range where the runs that trained end, where they differ. Dotted verticals mark
    where a step schedule divides the learning rate. Legend outside the axes. `ax`: draw only the
    zoomed panel there. Saved to `path` if given; returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    groups = group_runs(runs)
    networks = sorted({k[0] for k in groups})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if ax is None:
        fig, (full, zoom) = plt.subplots(1, 2, figsize=(11, 4.2),
                                         gridspec_kw={"width_ratios": [1, 2]})
        panels = (full, zoom)
    else:
        fig, zoom, panels = ax.figure, ax, (ax,)
    finals = [r["history"][-1]["test_accuracy"] for r in runs if r["history"]]
    trained = [f for f in finals if f >= 0.5]
    handles = []
    for i, ((net, method, rate), rs) in enumerate(sorted(groups.items())):
        colour = colours[i % len(colours)]
        style = "--" if REGISTRY.get(method) is not None and REGISTRY[method].pruned else "-"
        dead = sorted(r.get("seed", 0) for r in rs if r["history"]
                      and r["history"][-1]["test_accuracy"] < 0.2)
        label = f"{method}, q = {rate}" + (f" ({net})" if len(networks) > 1 else "")
        label += f", {len(rs)} seed{'s' if len(rs) > 1 else ''}" if len(rs) > 1 else \
            f", seed {rs[0].get('seed', 0)}"
        if dead:
            label += f"; seed {', '.join(map(str, dead))} at chance"
        curves = [([h["epoch"] for h in r["history"]],
                   [100 * h["test_accuracy"] for h in r["history"]]) for r in rs]
        for a in panels:
            for x, y in curves:
                a.plot(x, y, color=colour, ls=style, lw=0.8 if len(rs) > 1 else 1.6,
                       alpha=0.45 if len(rs) > 1 else 1.0)
            if len(rs) > 1 and len({len(x) for x, _ in curves}) == 1 and not dead:
                a.plot(curves[0][0], np.mean([y for _, y in curves], axis=0), color=colour,
                       ls=style, lw=2.2)
        handles.append(plt.Line2D([], [], color=colour, ls=style, lw=2, label=label))
    stepped = [r for r in runs if (r.get("config") or {}).get("schedule") == "step"]
    drops = sorted({h["epoch"] for r in stepped for h0, h in zip(r["history"], r["history"][1:])
                    if h.get("lr_end") and h0.get("lr_end") and h["lr_end"] < 0.5 * h0["lr_end"]})
    for a in panels:
        for e in drops:
            a.axvline(e, color="grey", ls=":", lw=1)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    if drops:
        handles.append(plt.Line2D([], [], color="grey", ls=":", label="lr divided (step schedule)"))
    if len(panels) == 2:
        panels[0].set_ylim(0, 100)
        panels[0].set_ylabel("test accuracy (%)")
        panels[0].set_title("whole range")
    if trained:
        lo, hi = 100 * min(trained), 100 * max(f for r in runs for f in
                                                (h["test_accuracy"] for h in r["history"]))
        zoom.set_ylim(lo - max(0.5, 0.25 * (hi - lo)), hi + 0.2)
    zoom.set_ylabel("test accuracy (%)")
    if runs:
        zoom.set_title(f"{', '.join(networks)} on {runs[0]['dataset']}"
                       + (": where the runs that trained end" if len(panels) == 2 else ""))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


# --- many seeds: mean and spread ----------------------------------------------------------------

AGGREGATE_COLUMNS = ("model", "method", "rate", "seeds", "mean_accuracy", "std_accuracy",
                     "min_accuracy", "max_accuracy", "trained_params", "compression",
                     "file_bytes", "epochs", "train_seconds")


def mean_std(values) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof 1; 0 for one value)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_std: no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def expand_levels(runs: list[dict]) -> list[dict]:
    """ELSA runs as one row per level (method "elsa", the level's rate, the accuracy, trained
    parameters and bytes of the network extracted from the final one); other runs as they are."""
    out = []
    for r in runs:
        if "levels" not in r or "test_accuracy" not in r:
            out.append(r)
            continue
        for lv in r["levels"]:
            out.append({**{k: v for k, v in r.items() if k not in ("levels", "history", "density")},
                        "rate": lv["rate"], "test_accuracy": lv["test_accuracy"],
                        "trained_params": lv["trained_params"],
                        "compression": r["total_params"] / lv["trained_params"],
                        "file_bytes": lv["extracted_bytes"], "elsa_level": lv["level"]})
    return out


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (network, method, rate) (the row's "model" is the network, `network_of`, so
    LeNet-5 with and without conv ReLU are never averaged together): the seeds, mean / std /
    min / max test accuracy, and the means of the counts and times. Diverged runs are counted in
    `diverged`, not averaged."""
    groups = group_runs(runs)
    rows = []
    for (model, method, rate), rs in groups.items():
        ok = [r for r in rs if "test_accuracy" in r]
        row = {"model": model, "method": method, "rate": rate,
               "seeds": sorted(r.get("seed", 0) for r in ok), "diverged": len(rs) - len(ok)}
        if ok:
            acc = [r["test_accuracy"] for r in ok]
            row["mean_accuracy"], row["std_accuracy"] = mean_std(acc)
            row["min_accuracy"], row["max_accuracy"] = min(acc), max(acc)
            for key in ("trained_params", "compression", "file_bytes", "epochs", "train_seconds"):
                row[key] = mean_std([r[key] for r in ok])[0]
            for key in ("trained_params", "file_bytes", "epochs"):
                row[key] = int(round(row[key]))
            weights = [trained_weights(r) for r in ok]
            if all(w is not None for w in weights):
                row["trained_weights"] = int(round(mean_std(weights)[0]))
            row["by_seed"] = {r.get("seed", 0): r["test_accuracy"] for r in ok}
            best = [r.get("best_of_checkpoints") for r in ok]
            if all(b is not None for b in best):  # SNIP's rule: the best of the last checkpoints
                row["mean_best_of_checkpoints"], row["std_best_of_checkpoints"] = mean_std(best)
                row["best_by_seed"] = {r.get("seed", 0): r["best_of_checkpoints"] for r in ok}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["model"], _method_rank(r["method"]), r["method"],
                                       r["rate"]))


def trained_weights(run: dict) -> int | None:
    """The trained *weights* of a run (conv and linear weights with m == 1), beside its trained
    parameters, which count the biases too: FreezeNet's x157 at q = 0.995 is 431,080 / 2,732
    parameters (2,152 weights + 580 biases); SNIP's code masks the biases, so it trains weights
    alone. None for a run that recorded no per-tensor counts."""
    rows = run.get("density")
    if not rows:
        return None
    return sum(d["trained"] for d in rows if d["name"].endswith(".w"))


def checkpoint_rows(groups: list[dict]) -> list[dict]:
    """The groups that recorded checkpoints (`checkpoint_every`): the final epoch's and SNIP's
    rule's mean and std, each also divided by the baseline, dense's mean on the same network over
    the same seeds (FreezeNet's "99.2% of the baseline" is such a ratio: 0.992). Every dense seed
    counts, trained or not: no rule leaves a run out after it ran; a seed dense has no finished
    run for (none, or diverged) cannot count, and `dense_seeds` names the seeds the ratio used.
    Dense's own row has no ratio. Groups read back from a summary.csv have no per-seed values:
    then dense's mean over all its seeds."""
    dense = {g["model"]: g for g in groups if g["method"] == "dense" and "mean_accuracy" in g}

    def baseline(d, seeds):
        by = d.get("by_seed")
        if not by:  # from a summary.csv
            return d.get("mean_accuracy"), d.get("mean_best_of_checkpoints"), d.get("seeds")
        used = [s for s in seeds if s in by]
        if not used:
            return None, None, []
        best = d.get("best_by_seed") or {}
        return (sum(by[s] for s in used) / len(used),
                sum(best[s] for s in used) / len(used) if all(s in best for s in used) else None,
                used)

    rows = []
    for g in groups:
        if "mean_best_of_checkpoints" not in g:
            continue
        is_dense = g["method"] == "dense"
        d = None if is_dense else dense.get(g["model"])
        final, best, used = baseline(d, g["seeds"]) if d else (None, None, [])
        rows.append({"model": g["model"], "method": g["method"], "rate": g["rate"],
                     "seeds": g["seeds"], "trained_params": g.get("trained_params"),
                     "trained_weights": g.get("trained_weights"), "final": g["mean_accuracy"],
                     "final_std": g["std_accuracy"],
                     "final_of_dense": g["mean_accuracy"] / final if final else None,
                     "best_of_last": g["mean_best_of_checkpoints"],
                     "best_of_last_std": g["std_best_of_checkpoints"],
                     "best_of_last_of_dense": g["mean_best_of_checkpoints"] / best if best
                     else None, "dense_seeds": None if is_dense else used})
    return rows


CHECKPOINT_COLUMNS = ("model", "method", "rate", "seeds", "trained_params", "trained_weights",
                      "final", "final_std", "final_of_dense",
                      "best_of_last", "best_of_last_std", "best_of_last_of_dense", "dense_seeds")


def checkpoint_table(groups: list[dict]) -> str:
    """`checkpoint_rows` as Markdown: accuracies in percent, fractions of dense to 4 decimals;
    "none" in `dense_seeds` where dense has no finished run on the row's seeds (Caffe's LeNet-5
    under the paper's protocol diverges), so no ratio."""
    rows = checkpoint_rows(groups)
    shown = format_rows(rows, CHECKPOINT_COLUMNS, percent=(
        "final", "final_std", "best_of_last", "best_of_last_std"))
    for row, cells in zip(rows, shown):
        if row["dense_seeds"] == []:
            cells["dense_seeds"] = "none"
    return markdown_table(shown, CHECKPOINT_COLUMNS)


# --- tables in pages (README.md, docs/) ---------------------------------------------------------

BLOCK = re.compile(r"(?P<head><!-- table: (?P<dir>\S+) (?P<kind>\w+)(?P<args>(?: [\w.]+)*) -->\n)"
                   r"(?P<body>.*?)(?P<end><!-- /table -->)", re.S)
"""A generated table in a Markdown page: `<!-- table: DIR KIND -->`, the table, `<!-- /table -->`;
DIR relative to the page's folder, KIND one of `page_tables`' keys; `compare A B` compares two
other methods than FreezeNet and SNIP, `pivot A B ...` shows only those methods, in that order;
a folder holding a benchmark's `bench.json` gives `bench`, `bench_cost` and `bench_brief`
(`bench_tables`), one holding `divergence.json` gives `divergence`."""


def folder_groups(root) -> tuple[list[dict], list[dict] | None]:
    """(groups, runs) of a results folder: from its runs, or, where only a report was committed
    (no run files), from its `summary.csv` (runs None)."""
    root = Path(root)
    if not any(root.glob("*/metrics.json")) and (root / "summary.csv").is_file():
        return read_summary(root / "summary.csv"), None
    runs = load_runs(root)
    return aggregate(expand_levels(runs)), runs


def folder_tables(root) -> dict[str, str]:
    """`page_tables` of a results folder (`folder_groups`)."""
    return page_tables(*folder_groups(root))


def pivot_tables(groups: list[dict], methods=None) -> str:
    """`pivot_markdown` for every network of `groups`, in rows `methods` (all when None) and the
    rates at which they ran."""
    if methods:
        groups = [g for g in groups if g["method"] in methods]
    return "\n\n".join(pivot_markdown(groups, m, methods or None)
                       for m in sorted({g["model"] for g in groups}))


def page_tables(groups: list[dict], runs: list[dict] | None = None) -> dict[str, str]:
    """The tables a page may embed, by kind, from one results folder's groups (and runs, for the
    kinds that need them): `pivot` (accuracy by method and rate, one table per network),
    `groups` (mean and std per group), `checkpoints` (final epoch and SNIP's rule against
    dense), `compare` (FreezeNet - SNIP per network and rate), `frozen_pruned` (each mask frozen
    against pruned), `against_pruned` (FreezeNet against every pruned method) and, with runs,
    `layers` (weights kept per layer: layer collapse), `runs` (one row per run: accuracy,
    trained parameters, compression, bytes on disk, epochs, training seconds) and, where ELSA
    ran, `elsa` (each level against the best pruned method alone) and `elsa_cost` (its seconds
    and bytes against the levels trained alone)."""
    tables = {"pivot": pivot_tables(groups),
              "groups": markdown_table(format_rows(groups, AGGREGATE_COLUMNS), AGGREGATE_COLUMNS),
              "checkpoints": checkpoint_table(groups),
              "compare": compare_markdown(groups),
              "frozen_pruned": pairs_table(pair_rows(groups, freeze_prune_pairs(groups))),
              "against_pruned": pairs_table(pair_rows(groups, against_pruned_pairs(groups)))}
    if runs is not None:
        tables["layers"] = layers_markdown(layer_rows(runs))
        dead = dead_unit_rows(runs)
        if dead:
            tables["dead_units"] = dead_units_markdown(dead)
        tables["runs"] = markdown_table(summary_rows(runs), SUMMARY_COLUMNS)
        elsa = elsa_comparison(expand_levels(runs), groups)
        if elsa:
            tables["elsa"] = elsa_markdown(elsa)
            tables["elsa_cost"] = elsa_cost_markdown(elsa_costs(runs, elsa))
    return tables


BENCH_FILE = "bench.json"
"""The file `benchmarks/bench.py --out` writes: a results folder holding it feeds the `bench`,
`bench_cost` and `bench_brief` tables of a page (`bench_tables`)."""


def bench_tables(bench: dict) -> dict[str, str]:
    """The tables of one benchmark run (`benchmarks/bench.py --out`): `bench`, per model, regime
    and minifreeze runner, images per second training (and PyTorch's in the same run), the
    ratios to PyTorch and to the runner's own dense step, and the share of the machine's float32
    GEMM rate the step reaches; `bench_cost`, the multiply-adds per image a step computes
    (forward + input gradient + weight gradient), the step in ms and the bytes the model
    stores. Inference, memory and compile times follow as one line each. `bench_brief`, for a
    front page: the dense and the SNIP-pruned rows, their share of the GEMM rate and the ratio to
    PyTorch."""
    rows = bench["rows"]
    torch = {(r["model"], r["regime"]): r for r in rows if r["impl"] == "torch"}
    ours = [r for r in rows if r["impl"] != "torch"]

    def num(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)
    speed, costs = [], []
    for r in ours:
        t = torch.get((r["model"], r["regime"]))
        row = {"model": r["model"], "regime": r["regime"], "runner": r["impl"]}
        speed.append({**row, "train_img/s": num(r["train_img_s"]),
                      "torch_img/s": num(t and t["train_img_s"]),
                      "vs_torch": num(r["train_vs_torch"], "{:.2f}x"),
                      "vs_own_dense": "" if r["regime"] == "dense" else
                      num(r["train_vs_own_dense"], "{:.2f}x"),
                      "of_GEMM": num(r.get("gemm_fraction"), "{:.1%}")})
        costs.append({**row, "MAC_per_image_(fwd_+_dx_+_dW)": " + ".join(
            f"{r[k] / 1e6:.2f}M" for k in ("forward_macs", "input_grad_macs", "weight_grad_macs")),
            "step_ms": f"{r['step_ms']:.1f}", "stored_bytes": f"{r['stored_bytes']:,}"})
    left = ("model", "regime", "runner")
    speed_cols = (*left, "train_img/s", "torch_img/s", "vs_torch", "vs_own_dense", "of_GEMM")
    brief_cols = (*left, "of_GEMM", "vs_torch")
    cost_cols = (*left, "MAC_per_image_(fwd_+_dx_+_dW)", "step_ms", "stored_bytes")
    brief = [r for r in speed if r["regime"] in ("dense", "snip")]
    infer = [f"{r['model']} {r['impl']} {num(r['infer_img_s'])}" +
             ("" if torch.get((r["model"], "dense")) is None else
              f" (torch {num(torch[(r['model'], 'dense')]['infer_img_s'])})")
             for r in ours if r["regime"] == "dense" and r.get("infer_img_s")]
    machine = bench["machine"]
    env = machine.get("environment") or {}
    blas = (env.get("blas") or [{}])[0]
    notes = [f"Batch {bench['batch']}, median of {bench['rounds']} interleaved rounds of "
             f"{bench['steps']} steps (`{bench.get('command', 'benchmarks/bench.py')}`); "
             f"{machine['cpus']} CPUs ({env.get('cpu', 'CPU not recorded')}, OpenBLAS "
             f"{blas.get('version', '?')} {blas.get('architecture', '?')} kernels, Numba for "
             f"{env.get('numba_cpu', '?')}); PyTorch {machine.get('torch') or 'not installed'}; "
             f"float32 GEMM rate " + ", ".join(f"{t} thread{'s' if int(t) > 1 else ''} {v} G "
                                               f"multiply-adds/s"
                                               for t, v in machine["gemm_gmacs"].items()) + ".",
             "Inference, dense, images/s: " + "; ".join(infer) + "."]
    if bench.get("peak_rss_mb"):
        notes.append("Peak resident memory training (fresh process, MB): " + ", ".join(
            f"{k} {v}" for k, v in bench["peak_rss_mb"].items()) + ".")
    if bench.get("compile_s"):
        notes.append(f"Numba kernels of all models: {bench['compile_s']['cold_cache']} s to "
                     f"compile with a cold cache, {bench['compile_s']['warm_cache']} s to load "
                     f"from a warm one.")
    return {"bench": markdown_table(speed, speed_cols, left=left) + "\n\n" + "\n".join(notes),
            "bench_cost": markdown_table(costs, cost_cols, left=left),
            "bench_brief": markdown_table(brief, brief_cols, left=left)}


DIVERGENCE_FILE = "divergence.json"
"""The file `benchmarks/conv_relu_divergence.py` writes: a folder holding it feeds the
`divergence` table of a page."""


def divergence_cell(r: dict) -> str:
    """One seed of one row of the divergence table: where it diverged, or stuck, or how it did."""
    if "diverged_at_step" in r:
        return f"NaN at step {r['diverged_at_step']}"
    if r["loss_last_50"] > 2.2:
        return f"stuck at loss {r['loss_last_50']:.3f}"
    return f"loss {r['loss_last_50']:.2f}, {100 * r['test_accuracy']:.1f}%"


def divergence_table(record: dict) -> str:
    """Dense LeNet-5 at lr 0.1 with and without conv ReLU, per initialisation and seed
    (`benchmarks/conv_relu_divergence.py`'s record) as Markdown."""
    seeds = [k for k in record["rows"][0] if k.startswith("seed ")]
    columns = ("conv_ReLU", "init", *(s.replace(" ", "_") for s in seeds))
    rows = [{"conv_ReLU": "yes" if row["conv_relu"] else "no", "init": row["init"],
             **{s.replace(" ", "_"): divergence_cell(row[s]) for s in seeds}}
            for row in record["rows"]]
    return markdown_table(rows, columns, left=columns)


DEAD_UNITS_FILE = "dead_units.json"
"""The file `benchmarks/dead_units_init.py` writes: a folder holding it feeds the `dead_units`
table of a page."""


def dead_units_table(record: dict) -> str:
    """Dense LeNet-5 (conv ReLU), the paper protocol's first epoch, per initialisation and seed
    (`benchmarks/dead_units_init.py`'s record): the share of conv2's channels dead at each probe
    step, of every layer's units dead after the epoch, the epoch's train loss and the test
    accuracy after it, as Markdown."""
    def share(probe, layer):
        return f"{100 * probe['dead'][layer] / probe['units'][layer]:.0f}%"

    rows = []
    for r in record["rows"]:
        probes = {p["at"]: p for p in r["probes"]}
        end = r["probes"][-1]
        row = {"init": r["variant"], "seed": r["seed"]}
        for s in record["probe_steps"]:
            p = probes.get(f"step {s}")
            row[f"conv2_at_step_{s}"] = "-" if p is None else share(p, "conv2")
        row.update({f"{k}_after_epoch_1": share(end, k) for k in end["dead"]})
        if "diverged" in r:
            row.update(train_loss=f"NaN at step {r['diverged']['step']}", test_accuracy="-")
        else:
            row.update(train_loss=f"{r['train_loss']:.3f}",
                       test_accuracy=f"{100 * r['test_accuracy']:.1f}%")
        rows.append(row)
    return markdown_table(rows, tuple(rows[0]), left=("init",))


RECORD_TABLES = {BENCH_FILE: bench_tables,
                 DIVERGENCE_FILE: lambda record: {"divergence": divergence_table(record)},
                 DEAD_UNITS_FILE: lambda record: {"dead_units": dead_units_table(record)}}
"""Record files that feed a page's tables in place of runs, and the tables each gives."""


def fill_page(text: str, folder) -> str:
    """`text` (a Markdown page in `folder`) with every generated table written anew from the
    committed runs it names; ReportError for an unknown kind or a folder without runs."""
    folder, cache = Path(folder), {}

    def table(m):
        root = (folder / m["dir"]).resolve()
        for name, tables_of in RECORD_TABLES.items():
            if root not in cache and (root / name).is_file():
                cache[root] = ([], tables_of(json.loads((root / name).read_text())))
        if root not in cache:
            groups, runs = folder_groups(root)
            cache[root] = (groups, page_tables(groups, runs))
        groups, tables = cache[root]
        args = m["args"].split()
        if m["kind"] not in tables:
            raise ReportError(f"<!-- table: {m['dir']} {m['kind']} -->: unknown kind; expected "
                              f"one of {', '.join(tables)}")
        if args and not (m["kind"] == "compare" and len(args) == 2 or m["kind"] == "pivot"):
            raise ReportError(f"<!-- table: {m['dir']} {m['kind']}{m['args']} -->: only compare "
                              f"(two method names) and pivot (the methods to show) take "
                              f"arguments")
        ran = {g["method"] for g in groups}
        if m["kind"] == "pivot" and not set(args) <= ran:
            raise ReportError(f"<!-- table: {m['dir']} pivot{m['args']} -->: no run of "
                              f"{', '.join(sorted(set(args) - ran))} there; it holds "
                              f"{', '.join(sorted(ran))}")
        body = (compare_markdown(groups, *args) if m["kind"] == "compare" and args else
                pivot_tables(groups, args) if args else tables[m["kind"]])
        return m["head"] + body + "\n" + m["end"]
    return BLOCK.sub(table, text)


ALPHA = 0.05
"""A verdict says ahead or behind only when the test's p is below this; otherwise the two are
"not separable" with the seeds there are."""


def difference_test(a: dict, b: dict, *, paired: bool) -> dict:
    """The test behind every verdict, between two groups (`aggregate` rows) of runs.

    paired: the runs of one seed are a pair (they share theta0 and the data order, and frozen
    against pruned also the mask), so the test is on the per-seed differences over the seeds
    both have: scipy.stats.ttest_rel, the mean difference with its 95% interval
    (t quantile, n - 1 degrees of freedom). Not paired (against dense, or groups read back from a
    summary.csv without per-seed values): Welch's t-test on the two groups' means and standard
    deviations (Welch-Satterthwaite degrees of freedom). Returns {"test", "n", "difference",
    "ci_low", "ci_high", "p"}; with fewer than two values a side (two pairs) there is no
    interval and no p (None)."""
    from scipy import stats
    by_a, by_b = a.get("by_seed"), b.get("by_seed")
    if paired and by_a and by_b:
        seeds = sorted(set(by_a) & set(by_b))
        d = np.array([by_a[s] - by_b[s] for s in seeds], dtype=np.float64)  # (n,)
        out = {"test": "paired", "n": len(d), "difference": float(d.mean()) if len(d) else None,
               "ci_low": None, "ci_high": None, "p": None}
        if len(d) >= 2:
            sd = float(d.std(ddof=1))
            half = float(stats.t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
            p = (1.0 if d.mean() == 0 else 0.0) if sd == 0 else \
                float(stats.ttest_rel([by_a[s] for s in seeds], [by_b[s] for s in seeds]).pvalue)
            out.update(ci_low=out["difference"] - half, ci_high=out["difference"] + half, p=p)
        return out
    na, nb = len(a["seeds"]), len(b["seeds"])
    diff = a["mean_accuracy"] - b["mean_accuracy"]
    out = {"test": "welch", "n": min(na, nb), "difference": diff, "ci_low": None,
           "ci_high": None, "p": None}
    if na >= 2 and nb >= 2:
        va, vb = a["std_accuracy"] ** 2 / na, b["std_accuracy"] ** 2 / nb
        se = math.sqrt(va + vb)
        if se == 0:
            out.update(ci_low=diff, ci_high=diff, p=1.0 if diff == 0 else 0.0)
        else:
            df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
            half = float(stats.t.ppf(0.975, df)) * se
            out.update(ci_low=diff - half, ci_high=diff + half,
                       p=float(2 * stats.t.sf(abs(diff) / se, df)))
    return out


def _verdict(a: str, test: dict) -> str:
    """"a above" / "a below" when p < ALPHA, else "not separable with n seeds"; with one seed
    (or one pair) there is no test."""
    if test["p"] is None:
        return f"{a} {'above' if (test['difference'] or 0) > 0 else 'below'}, one seed: no test"
    if test["p"] < ALPHA:
        return f"{a} above" if test["difference"] > 0 else f"{a} below"
    return f"not separable with {test['n']} seeds"


def is_baseline(method: str) -> bool:
    """Dense, the network every sparse one is measured against: its runs are not paired with a
    sparse network's by seed (a Welch test, not a paired one)."""
    return method == "dense"


def compare(groups: list[dict], a: str = "freezenet", b: str = "snip") -> list[dict]:
    """Per model and rate where both ran: a - b, its 95% interval and p (`difference_test`:
    paired by seed unless one side is dense) and the verdict (`ALPHA`)."""
    index = {(g["model"], g["method"], g["rate"]): g for g in groups if "mean_accuracy" in g}
    rows = []
    for (model, method, rate), ga in sorted(index.items()):
        gb = index.get((model, b, rate))
        if method != a or gb is None:
            continue
        test = difference_test(ga, gb, paired=not (is_baseline(a) or is_baseline(b)))
        rows.append({"model": model, "rate": rate, f"{a}": ga["mean_accuracy"],
                     f"{a}_std": ga["std_accuracy"], f"{b}": gb["mean_accuracy"],
                     f"{b}_std": gb["std_accuracy"], "difference": test["difference"],
                     "ci_low": test["ci_low"], "ci_high": test["ci_high"], "p": test["p"],
                     "test": test["test"], "seeds": test["n"], "verdict": _verdict(a, test)})
    return rows


def pair_rows(groups: list[dict], pairs) -> list[dict]:
    """`compare` for several (a, b) pairs in one table: columns a and b name the methods, mean_a
    and mean_b their means (same test and verdict)."""
    rows = []
    for a, b in pairs:
        for r in compare(groups, a, b):
            rows.append({"model": r["model"], "rate": r["rate"], "a": a, "b": b,
                         "seeds": r["seeds"], "mean_a": r[a], "std_a": r[f"{a}_std"],
                         "mean_b": r[b], "std_b": r[f"{b}_std"], "difference": r["difference"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p": r["p"],
                         "verdict": r["verdict"].replace(a, "a")})
    return sorted(rows, key=lambda r: (r["model"], -r["rate"], _method_rank(r["a"]),
                                       _method_rank(r["b"])))


def freeze_prune_pairs(groups: list[dict]) -> list[tuple[str, str]]:
    """(frozen, pruned) for every mask in the registry whose two methods both ran: the same mask,
    frozen against pruned (FreezeNet against SNIP, synflow_freeze against synflow_prune, ...)."""
    ran = {g["method"] for g in groups}
    by_mask: dict[str, dict[str, str]] = {}
    for m in REGISTRY.values():
        if m.uses_rate and m.name in ran:
            by_mask.setdefault(m.mask_key, {})[m.mode] = m.name
    return [(d["freeze"], d["prune"]) for d in by_mask.values() if len(d) == 2]


def against_pruned_pairs(groups: list[dict], frozen: str = "freezenet") -> list[tuple[str, str]]:
    """(frozen, every pruned method that ran): FreezeNet against each way of pruning."""
    ran = {g["method"] for g in groups}
    if frozen not in ran:
        return []
    return [(frozen, m.name) for m in REGISTRY.values() if m.pruned and m.name in ran]


PAIR_COLUMNS = ("model", "rate", "seeds", "a", "mean_a", "std_a", "b", "mean_b", "std_b",
                "difference", "ci_low", "ci_high", "p", "verdict")


def pairs_table(rows: list[dict]) -> str:
    return markdown_table(format_rows(rows, PAIR_COLUMNS, percent=("mean_a", "std_a", "mean_b",
                                                                   "std_b")), PAIR_COLUMNS)


def layer_rows(runs: list[dict]) -> list[dict]:
    """Per (network, method, rate) of runs with masks: the weights kept in each masked layer
    (mean over seeds) and the fewest in any seed; `emptied` names the layers some seed left
    with no trainable weight (pruned, such a layer cuts the network: layer collapse)."""
    groups = group_runs(r for r in runs if r.get("density") and
                        any(d["masked"] for d in r["density"]) and "elsa_level" not in r)
    rows = []
    for (model, method, rate), rs in groups.items():
        names = [d["name"] for d in rs[0]["density"] if d["masked"]]
        kept = {n: [next(d["trained"] for d in r["density"] if d["name"] == n) for r in rs]
                for n in names}
        rows.append({"model": model, "method": method, "rate": rate,
                     "seeds": sorted(r.get("seed", 0) for r in rs),
                     "kept": {n: float(np.mean(v)) for n, v in kept.items()},
                     "fewest": {n: int(min(v)) for n, v in kept.items()},
                     "emptied": [n for n, v in kept.items() if min(v) == 0]})
    return sorted(rows, key=lambda r: (r["model"], -r["rate"], _method_rank(r["method"]),
                                       r["method"]))


DEAD_POINTS = ("step 100", "epoch 1", "end")
"""Where every run records its dead units (`dead_units.DeadUnitsProbe`)."""


def dead_unit_rows(runs: list[dict]) -> list[dict]:
    """Per (network, method, rate) of runs that recorded dead units: at each recorded point
    (`DEAD_POINTS`), each ReLU layer's dead share, mean over seeds, and the largest in any seed."""
    groups = group_runs(r for r in runs if r.get("dead_units") and "elsa_level" not in r)
    rows = []
    for (model, method, rate), rs in groups.items():
        at = {}
        for point in DEAD_POINTS:
            probes = [p for r in rs for p in r["dead_units"] if p["at"] == point]
            if not probes:
                continue
            layers = list(probes[0]["units"])
            at[point] = {k: (float(np.mean([p["dead"][k] / p["units"][k] for p in probes])),
                             max(p["dead"][k] / p["units"][k] for p in probes)) for k in layers}
        rows.append({"model": model, "method": method, "rate": rate,
                     "seeds": sorted(r.get("seed", 0) for r in rs), "at": at})
    return sorted(rows, key=lambda r: (r["model"], _method_rank(r["method"]), r["method"],
                                       r["rate"]))


def dead_units_markdown(rows: list[dict]) -> str:
    """`dead_unit_rows` as Markdown: a column per recorded point, cells "layer mean% (max%)"."""
    body = []
    for r in rows:
        cells = {p.replace(" ", "_"): ", ".join(f"{k} {100 * m:.0f}% ({100 * x:.0f}%)"
                                                for k, (m, x) in r["at"][p].items())
                 if p in r["at"] else "-" for p in DEAD_POINTS}
        body.append({"model": r["model"], "method": r["method"], "rate": repr(r["rate"]),
                     "seeds": ", ".join(map(str, r["seeds"])), **cells})
    cols = ("model", "method", "rate", "seeds", *(p.replace(" ", "_") for p in DEAD_POINTS))
    return markdown_table(body, cols, left=("model", "method", "seeds", *cols[4:]))


def layers_markdown(rows: list[dict]) -> str:
    """`layer_rows` as one Markdown table per network: a column per masked layer, cells
    "mean kept (fewest)"; an emptied layer is marked 0!."""
    parts = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        names = list(mine[0]["kept"])
        head = ["method", "rate", "seeds", *names]
        body = []
        for r in mine:
            cells = [f"{r['kept'][n]:.0f} ({r['fewest'][n]}{'!' if r['fewest'][n] == 0 else ''})"
                     for n in names]
            body.append({"method": r["method"], "rate": repr(r["rate"]),
                         "seeds": len(r["seeds"]), **dict(zip(names, cells))})
        parts.append(f"{model}: weights kept per layer, mean over seeds (fewest in any seed; "
                     f"0! = a layer emptied)\n\n" + markdown_table(body, head))
    return "\n\n".join(parts)


def compare_markdown(groups: list[dict], a: str = "freezenet", b: str = "snip") -> str:
    """`compare` as one compact table: a row per network, a column per rate, cells "difference
    [95% interval] p (verdict)" in points."""
    rows = compare(groups, a, b)
    if not rows:
        return f"no rate where both {a} and {b} ran"
    rates = sorted({r["rate"] for r in rows})
    short = {f"{a} above": "above", f"{a} below": "below"}
    out = [f"| {a} - {b} | " + " | ".join(f"q = {q!r}" for q in rates) + " |",
           "| --- | " + " | ".join("---:" for _ in rates) + " |"]
    for model in sorted({r["model"] for r in rows}):
        cells = []
        for q in rates:
            r = next((r for r in rows if r["model"] == model and r["rate"] == q), None)
            cells.append("" if r is None else compare_cell(r, short))
        out.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def compare_cell(r: dict, short: dict) -> str:
    """One comparison in points: "+0.42 [+0.10, +0.74] p 0.02 (above)"; "(one seed)" alone
    where there is no test."""
    if r["p"] is None:
        return f"{100 * r['difference']:+.2f} (one seed)"
    verdict = short.get(r["verdict"], "not separable")
    return (f"{100 * r['difference']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}] "
            f"p {format_p(r['p'])} ({verdict})")


def format_p(p: float | None) -> str:
    """p to two significant digits ("<0.001" below that), three near 0.05, where the second
    digit decides the verdict."""
    if p is None:
        return ""
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if 0.04 <= p < 0.06 else f"{p:.2g}"


def _fmt(key: str, value, percent=()) -> str:
    if key.endswith("_of_dense") and isinstance(value, float):
        return f"{value:.4f}"
    if key == "p":
        return format_p(value)
    if isinstance(value, float) and (key.endswith("accuracy") or key in (
            "difference", "ci_low", "ci_high") or key.endswith("_std") or key in percent):
        return f"{100 * value:.2f}"
    if key == "rate" and isinstance(value, float):
        return repr(value)
    return _cell(key, value)


def format_rows(rows: list[dict], columns, *, percent=()) -> list[dict]:
    """Rows as the strings a table shows: accuracies (and the `percent` columns) in percent
    with two decimals, lists joined by commas."""
    return [{k: ("-" if r.get(k) is None else
                 ", ".join(map(str, r[k])) if isinstance(r.get(k), list)
                 else _fmt(k, r[k], percent)) for k in columns} for r in rows]


def write_csv(path, rows: list[dict], columns) -> None:
    """Rows as CSV (raw numbers; lists joined by spaces), written atomically."""
    from minifreeze.storage import write_atomic
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: " ".join(map(str, r[k])) if isinstance(r.get(k), list) else r.get(k)
                    for k in columns})
    write_atomic(path, buf.getvalue().encode())


def _lines(groups, model):
    """{method: rows sorted by rate} for one model, dense apart."""
    out: dict[str, list[dict]] = {}
    for g in groups:
        if g["model"] == model and "mean_accuracy" in g:
            out.setdefault(g["method"], []).append(g)
    return {m: sorted(v, key=lambda g: g["rate"]) for m, v in out.items()}


MARKERS = "osDv^<>pPX*h"


def method_style(method: str) -> dict:
    """Colour by mask (FreezeNet and SNIP alike: `Method.mask_key`, numbered in the registry's
    order after dense), a dashed line for a pruned method; a name outside the registry gets a
    colour from its letters."""
    import matplotlib.pyplot as plt
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = list(dict.fromkeys(m.mask_key for m in REGISTRY.values() if m.name != "dense"))
    m = REGISTRY.get(method)
    i = keys.index(m.mask_key) if m is not None else len(keys) + sum(map(ord, method)) % 4
    pruned = m is not None and m.pruned
    j = list(REGISTRY).index(method) if m is not None else sum(map(ord, method))
    return {"color": colours[i % len(colours)], "ls": "--" if pruned else "-",
            "marker": MARKERS[j % len(MARKERS)]}  # a marker per method: none hides another


def _figure(groups, path, draw):
    import matplotlib.pyplot as plt
    models = sorted({g["model"] for g in groups})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        draw(ax, model, _lines(groups, model))
        ax.set_title(model)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_rates(groups: list[dict], path=None):
    """Test accuracy against the trained share 1 - q (log axis), one line per method with a
    band of +- one std over seeds, dense as a horizontal line. Returns the figure."""
    def draw(ax, model, lines):
        for method, rows in lines.items():
            mean = [100 * g["mean_accuracy"] for g in rows]
            std = [100 * g["std_accuracy"] for g in rows]
            if method == "dense":
                ax.axhline(mean[0], color="black", lw=1, ls="--", label="dense")
                ax.axhspan(mean[0] - std[0], mean[0] + std[0], color="black", alpha=0.08)
                continue
            x = [1 - g["rate"] for g in rows]
            style = method_style(method)
            ax.plot(x, mean, label=method, **style)
            ax.fill_between(x, [max(m - s, 0) for m, s in zip(mean, std)],  # accuracy in [0, 100]
                            [min(m + s, 100) for m, s in zip(mean, std)], color=style["color"],
                            alpha=0.15)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("trained share of the weights, 1 - q (log)")
        ax.set_ylabel("test accuracy (%), mean +- std over seeds")
    return _figure(groups, path, draw)


def plot_gap(groups: list[dict], path=None, *, reference: float | None = 0.992):
    """The gap to dense in points (dense's mean - the method's, log axis) against the trained
    share 1 - q (log axis), one line per method with a band of +- one std; `reference` draws
    the gap a method at that fraction of dense would have (FreezeNet's "99.2% of the baseline").
    On a log axis a small gap (q = 0.9) and a collapse (q = 0.999) are both readable, and a
    method above dense shows as a missing point, said in the legend. Returns the figure."""
    def draw(ax, model, lines):
        dense = lines.get("dense")
        if not dense:
            return
        d = 100 * dense[0]["mean_accuracy"]
        floor = 0.01  # points: a gap below it (or a method above dense) is drawn at the floor
        for method, rows in lines.items():
            if method == "dense":
                continue
            x = [1 - g["rate"] for g in rows]
            gap = [d - 100 * g["mean_accuracy"] for g in rows]
            std = [100 * g["std_accuracy"] for g in rows]
            style = method_style(method)
            above = sum(v <= 0 for v in gap)
            label = method + (f" ({above} rate{'s' if above > 1 else ''} at or above dense)"
                              if above else "")
            ax.plot(x, [max(v, floor) for v in gap], label=label, **style)
            ax.fill_between(x, [max(v - s, floor) for v, s in zip(gap, std)],
                            [max(v + s, floor) for v, s in zip(gap, std)], color=style["color"],
                            alpha=0.15)
        if reference is not None:
            ax.axhline((1 - reference) * d, color="grey", lw=1, ls=":",
                       label=f"{reference:.1%} of dense")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("trained share of the weights, 1 - q (log)")
        ax.set_ylabel("dense - method, test accuracy points (log)")
    return _figure(groups, path, draw)


def read_summary(path) -> list[dict]:
    """The groups of a committed `summary.csv` (as `aggregate` gave them): numbers as numbers,
    seeds as a list. For pages and notebooks that read a report whose run files are not there."""
    ints = ("diverged", "trained_params", "file_bytes", "epochs")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        g = {}
        for k, v in r.items():
            if v in (None, ""):
                continue
            if k in ("model", "method"):
                g[k] = v
            elif k == "seeds":
                g[k] = [int(s) for s in v.split()]
            elif k in ints:
                g[k] = int(float(v))
            else:
                g[k] = float(v)
        out.append(g)
    return out


def plot_bytes(groups: list[dict], path=None):
    """Test accuracy against the bytes of the stored model (log axis), one line per method."""
    def draw(ax, model, lines):
        for method, rows in lines.items():
            x = [g["file_bytes"] for g in rows]
            mean = [100 * g["mean_accuracy"] for g in rows]
            std = [100 * g["std_accuracy"] for g in rows]
            style = method_style(method) if method != "dense" else {"color": "black", "ls": "none",
                                                                    "marker": "o"}
            ax.errorbar(x, mean, yerr=std, capsize=3, label=method, **style)
        ax.set_xscale("log")
        ax.set_xlabel("bytes on disk (.mfz, log)")
        ax.set_ylabel("test accuracy (%)")
    return _figure(groups, path, draw)


RUN_COLUMNS = ("network", "method", "rate", "seed", "test_accuracy", "trained_params",
               "compression", "file_bytes", "epochs", "train_seconds", "backend")


def report_markdown(runs: list[dict], groups: list[dict], comparison: list[dict],
                    compare=("freezenet", "snip"), elsa=(), elsa_cost=(), frozen_pruned=(),
                    against_pruned=(), layers=()) -> str:
    """The report as Markdown: accuracy by method and rate, mean +- std per group, the
    comparison, each mask frozen against pruned and FreezeNet against every pruned method (when
    there is more than the one comparison), the weights kept per layer, ELSA's levels against
    each level trained alone, one row per run."""
    a, b = compare
    diverged = [r for r in runs if "diverged" in r]
    parts = ["## Test accuracy (%) by method and rate: mean +- std over seeds"]
    for model in sorted({g["model"] for g in groups}):
        parts += ["", pivot_markdown(groups, model)]
    parts += ["", "## Mean over seeds (test accuracy in %, std: sample standard deviation)", "",
              markdown_table(format_rows(groups, AGGREGATE_COLUMNS), AGGREGATE_COLUMNS)]
    if checkpoint_rows(groups):
        parts += ["", "## Final epoch and SNIP's rule (the best of the last checkpoints), each "
                      "also as a fraction of dense's mean on the same network and seeds", "",
                  checkpoint_table(groups)]
    if comparison:
        cols = ("model", "rate", "seeds", a, f"{a}_std", b, f"{b}_std", "difference", "ci_low",
                "ci_high", "p", "test", "verdict")
        parts += ["", f"## {a} against {b} (difference in points with its 95% interval; "
                      f"paired t-test by seed, Welch's against dense; a verdict needs "
                      f"p < {ALPHA})", "",
                  markdown_table(format_rows(comparison, cols, percent=(a, b)), cols)]
    if len({(r["a"], r["b"]) for r in frozen_pruned}) > 1:
        parts += ["", "## The same mask, frozen (a) against pruned (b), for each score "
                      "(paired by seed: mean difference in points, its 95% interval and p)", "",
                  pairs_table(list(frozen_pruned))]
    if len({(r["a"], r["b"]) for r in against_pruned}) > 1:
        parts += ["", "## FreezeNet (a) against each pruned method (b)", "",
                  pairs_table(list(against_pruned))]
    if layers:
        parts += ["", "## Weights kept per layer", "", layers_markdown(list(layers))]
    dead = dead_unit_rows(runs)
    if dead:
        parts += ["", "## Dead ReLU units (no positive output on the first 1,000 training "
                      "images): share per layer, mean over seeds (largest in any seed)", "",
                  dead_units_markdown(dead)]
    if elsa:
        parts += ["", "## ELSA: each level extracted from the final network, against the best "
                      "pruned method trained alone at that rate (q = 0: the final dense network "
                      "against dense; difference in points, its 95% interval and p: paired by "
                      "seed, Welch's against dense)", "", elsa_markdown(list(elsa))]
    if elsa_cost:
        parts += ["", "ELSA's cost: one run and one file, against training and storing each "
                      "level alone (seconds of training, mean over seeds; bytes on disk)", "",
                  elsa_cost_markdown(list(elsa_cost))]
    parts += ["", "## Every run", "",
              markdown_table(format_rows([r for r in runs if "diverged" not in r], RUN_COLUMNS),
                             RUN_COLUMNS)]
    if diverged:
        parts += ["", "Diverged: " + ", ".join(
            f"{network_of(r)} {r['method']} rate {r['rate']} seed {r['seed']} (epoch "
            f"{r['diverged']['epoch']}, step {r['diverged']['step']})" for r in diverged)]
    parts += ["", "## Where the runs ran", "", environments_markdown(runs)]
    return "\n".join(parts)


def environments(runs: list[dict]) -> dict[str, int]:
    """How many runs ran in each environment (`environment.environment_key`): runs agree bit for
    bit only within one."""
    from minifreeze.environment import environment_key
    counts: dict[str, int] = {}
    seen = set()
    for r in runs:
        if r.get("run") is not None:  # an ELSA run's levels are one run
            if r["run"] in seen:
                continue
            seen.add(r["run"])
        key = environment_key(r.get("environment"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def environments_markdown(runs: list[dict]) -> str:
    """One line per environment with its run count, and a warning when there are several."""
    counts = environments(runs)
    lines = [f"- {n} run{'s' if n != 1 else ''}: {key}" for key, n in counts.items()]
    if len(counts) > 1:
        lines.insert(0, f"These runs come from {len(counts)} environments: results agree bit for "
                        f"bit only within one (same CPU type, kernels, versions and shard count); "
                        f"across them expect differences in the last digits.\n")
    return "\n".join(lines)


def write_report(runs: list[dict], root, *, pair=("freezenet", "snip")) -> dict:
    """Write the report of `runs` into folder `root`: summary.md, summary.csv (one row per
    group), runs.csv, results.json, and figures: accuracy.png (per epoch, up to 12 runs),
    rates.png, bytes.png and gap.png (the gap to dense; when some method ran at two rates or
    more). Returns
    {"markdown": the Markdown text, "files": the names written}."""
    import matplotlib.pyplot as plt
    from minifreeze.storage import write_atomic
    root = Path(root)
    original, runs = runs, expand_levels(runs)
    groups = aggregate(runs)
    comparison = compare(groups, *pair)
    elsa = elsa_comparison(runs, groups)
    elsa_cost = elsa_costs(original, elsa)
    frozen_pruned = pair_rows(groups, freeze_prune_pairs(groups))
    against_pruned = pair_rows(groups, against_pruned_pairs(groups))
    layers = layer_rows(runs)
    text = report_markdown(runs, groups, comparison, pair, elsa, elsa_cost, frozen_pruned,
                           against_pruned, layers)
    files = ["summary.md", "summary.csv", "runs.csv", "results.json"]
    write_atomic(root / "summary.md", (text + "\n").encode())
    write_csv(root / "summary.csv", groups, ("diverged",) + AGGREGATE_COLUMNS)
    write_csv(root / "runs.csv", [r for r in runs if "diverged" not in r], RUN_COLUMNS)
    write_atomic(root / "results.json", (json.dumps(
        {"runs": summary_rows(runs, RUN_COLUMNS), "groups": groups, "comparison": comparison,
         "elsa": elsa, "elsa_costs": elsa_cost, "frozen_pruned": frozen_pruned,
         "against_pruned": against_pruned, "layers": layers}, indent=2) + "\n").encode())
    figures = []
    curves = [r for r in runs if "history" in r and "test_accuracy" in r
              and "elsa_level" not in r]
    if curves and len(runs) <= 16:
        figures.append(("accuracy.png", plot_history(curves)))
    rates = {(g["model"], g["method"]) for g in groups if g["method"] != "dense"}
    if any(sum(1 for g in groups if (g["model"], g["method"]) == k) > 1 for k in rates):
        figures += [("rates.png", plot_rates(groups)), ("bytes.png", plot_bytes(groups))]
        if any(g["method"] == "dense" for g in groups):
            figures.append(("gap.png", plot_gap(groups)))
    for model in sorted({network_of(r) for r in runs if r["method"] == "weightmom"
                         and "history" in r and "test_accuracy" in r}):
        figures.append((f"gradual_{model}.png", plot_gradual(original, model=model)))
    for name, fig in figures:
        fig.savefig(root / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
        files.append(name)
    return {"markdown": text, "files": files}


def pivot_markdown(groups: list[dict], model: str, methods=None) -> str:
    """One model's groups as a Markdown table: a row per method, a column per rate, cells
    "mean +- std" test accuracy in percent (the most seeds of a cell in the header; a cell of one
    seed says which); dense gets its own row."""
    rows = [g for g in groups if g["model"] == model and "mean_accuracy" in g]
    if not rows:
        return f"{model}: no run finished (see Diverged below)"
    rates = sorted({g["rate"] for g in rows})
    order = methods or [m for m in method_order() if any(g["method"] == m for g in rows)] + \
        sorted({g["method"] for g in rows} - set(method_order()))
    seeds = max((len(g["seeds"]) for g in rows), default=0)
    head = f"| {model} ({seeds} seed{'' if seeds == 1 else 's'}) | " + " | ".join(
        "q = 0 (dense)" if q == 0 else f"q = {q!r}" for q in rates) + " |"
    out = [head, "| --- | " + " | ".join("---:" for _ in rates) + " |"]
    for method in order:
        cells = []
        for q in rates:
            g = next((g for g in rows if g["method"] == method and g["rate"] == q), None)
            cells.append("" if g is None else
                         f"{100 * g['mean_accuracy']:.2f} (seed {g['seeds'][0]})"
                         if len(g["seeds"]) == 1 else
                         f"{100 * g['mean_accuracy']:.2f} +- {100 * g['std_accuracy']:.2f}")
        out.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# --- methods that prune during training, and ELSA's levels ---------------------------------------

def pruned_methods() -> tuple[str, ...]:
    """The methods whose network is pruned (`Method.pruned`): what an ELSA level, itself pruned,
    is compared with."""
    return tuple(m.name for m in REGISTRY.values() if m.pruned)


def elsa_comparison(runs: list[dict], groups: list[dict]) -> list[dict]:
    """Per model and ELSA level: the extracted level's accuracy against the best pruned method
    trained on its own at that rate (and FreezeNet there), the final dense network against
    dense; then the time and bytes of one ELSA run against training and storing each level on
    its own (the best pruned method's runs, and dense)."""
    index = {(g["model"], g["method"], g["rate"]): g for g in groups if "mean_accuracy" in g}
    rows = []
    for (model, method, rate), g in sorted(index.items(), key=lambda kv: (kv[0][0], -kv[0][2])):
        if not method.startswith("elsa"):
            continue
        alone = [index[(model, m, rate)] for m in (("dense",) if rate == 0 else pruned_methods())
                 if (model, m, rate) in index]
        best = max(alone, key=lambda a: a["mean_accuracy"], default=None)
        fz = index.get((model, "freezenet", rate))
        test = None if best is None else difference_test(
            g, best, paired=not is_baseline(best["method"]))
        rows.append({"model": model, "method": method, "rate": rate, "elsa": g["mean_accuracy"],
                     "elsa_std": g["std_accuracy"], "elsa_seeds": len(g["seeds"]),
                     "alone_method": None if best is None else best["method"],
                     "alone": None if best is None else best["mean_accuracy"],
                     "alone_std": None if best is None else best["std_accuracy"],
                     "alone_seeds": None if best is None else len(best["seeds"]),
                     "alone_train_seconds": None if best is None else best["train_seconds"],
                     "alone_file_bytes": None if best is None else best["file_bytes"],
                     "freezenet": None if fz is None else fz["mean_accuracy"],
                     "freezenet_std": None if fz is None else fz["std_accuracy"],
                     "elsa_file_bytes": g["file_bytes"],
                     **{k: None if test is None else test[k]
                        for k in ("difference", "ci_low", "ci_high", "p")},
                     "verdict": None if test is None else _verdict("elsa", test)})
    return rows


ELSA_COLUMNS = ("model", "method", "rate", "elsa_seeds", "elsa", "elsa_std", "alone_method",
                "alone", "alone_std", "difference", "ci_low", "ci_high", "p", "verdict", "freezenet",
                "freezenet_std")
ELSA_COST_COLUMNS = ("model", "method", "levels", "elsa_train_seconds", "alone_train_seconds",
                     "elsa_file_bytes", "alone_file_bytes")


def elsa_markdown(rows: list[dict]) -> str:
    """`elsa_comparison` as Markdown, accuracies in percent."""
    return markdown_table(format_rows(rows, ELSA_COLUMNS, percent=("elsa", "alone", "freezenet")),
                          ELSA_COLUMNS)


def elsa_cost_markdown(rows: list[dict]) -> str:
    """`elsa_costs` as Markdown."""
    return markdown_table(format_rows(rows, ELSA_COST_COLUMNS), ELSA_COST_COLUMNS)


def elsa_costs(runs: list[dict], comparison: list[dict]) -> list[dict]:
    """Per model: mean training seconds and bytes of one ELSA run (its .mfz) against the sum over
    its levels of the methods trained alone that `elsa_comparison` picked."""
    out = []
    for model, method in sorted({(r["model"], r["method"]) for r in comparison}):
        elsa = [r for r in runs if network_of(r) == model and method_of(r) == method
                and "test_accuracy" in r and "levels" in r]
        rows = [r for r in comparison if (r["model"], r["method"]) == (model, method)]
        if not elsa or any(r["alone"] is None for r in rows):
            continue
        out.append({"model": model, "method": method, "levels": len(rows),
                    "elsa_train_seconds": mean_std([r["train_seconds"] for r in elsa])[0],
                    "alone_train_seconds": sum(r["alone_train_seconds"] for r in rows),
                    "elsa_file_bytes": int(mean_std([r["file_bytes"] for r in elsa])[0]),
                    "alone_file_bytes": int(sum(r["alone_file_bytes"] for r in rows))})
    return out


def plot_gradual(runs: list[dict], path=None, *, model: str = "lenet5", rate: float | None = None,
                 methods=("freezenet", "snip", "weightmom", "gmp")):
    """At one rate (default: the sparsest at which weightmom ran): left, the rate each method
    has reached after each epoch (one-shot methods sit at q from the start); right, test accuracy
    per epoch, mean over seeds, a band of one std. Returns the figure."""
    import matplotlib.pyplot as plt
    mine = [r for r in runs if network_of(r) == model and "history" in r
            and "test_accuracy" in r]
    if rate is None:
        rates = [r["rate"] for r in mine if r["method"] == "weightmom"]
        if not rates:
            raise ReportError(f"plot_gradual: no weightmom run of {model}")
        rate = max(rates)
    fig, (ax_q, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for method in methods:
        rs = [r for r in mine if r["method"] == method and r["rate"] == rate]
        if not rs:
            continue
        style = method_style(method)
        epochs = [h["epoch"] for h in rs[0]["history"]]
        q = [h.get("rate", rate) for h in rs[0]["history"]]
        ax_q.plot([0] + epochs, [0.0 if "rate" in rs[0]["history"][0] else rate] + q,
                  label=method, **style)
        acc = np.array([[100 * h["test_accuracy"] for h in r["history"]] for r in rs])
        n = len(rs)
        mean, std = acc.mean(axis=0), acc.std(axis=0, ddof=1) if n > 1 else 0 * acc[0]
        ax_a.plot(epochs, mean, label=f"{method} ({n} seed{'' if n == 1 else 's'})", **style)
        ax_a.fill_between(epochs, mean - std, mean + std, color=style["color"], alpha=0.15)
    ax_q.set_xlabel("epoch")
    ax_q.set_ylabel("rate q reached (share of weights pruned or frozen)")
    ax_q.set_title(f"{model}: the schedule to q = {rate!r}")
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("test accuracy (%)")
    ax_a.set_title(f"{model}, q = {rate!r}: test accuracy per epoch")
    for ax in (ax_q, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
