"""Tables: rows of `results` as Markdown (and CSV), the same text for the CLI, pages and notebooks.

    print(markdown_table(summary_rows(runs), SUMMARY_COLUMNS))
    print(markdown_table(format_rows(groups, AGGREGATE_COLUMNS), AGGREGATE_COLUMNS))
    print(compare_markdown(groups))                # "+0.42 [+0.10, +0.74] p 0.02 (above)" cells
    write_csv("summary.csv", groups, AGGREGATE_COLUMNS)
    print(length_markdown(length_rows(runs)))      # the gap per step budget
"""

from __future__ import annotations

import csv
import io

from minifreeze.methods import HEADLINE
from minifreeze.lab.results import (
    DEAD_POINTS, SUMMARY_COLUMNS, checkpoint_rows, compare, environments, method_order)


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


AGGREGATE_COLUMNS = ("model", "method", "rate", "seeds", "mean_accuracy", "std_accuracy",
                     "min_accuracy", "max_accuracy", "trained_params", "compression",
                     "file_bytes", "epochs", "train_seconds")


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


PAIR_COLUMNS = ("model", "rate", "seeds", "a", "mean_a", "std_a", "b", "mean_b", "std_b",
                "difference", "ci_low", "ci_high", "p", "verdict")


def pairs_table(rows: list[dict]) -> str:
    return markdown_table(format_rows(rows, PAIR_COLUMNS, percent=("mean_a", "std_a", "mean_b",
                                                                   "std_b")), PAIR_COLUMNS)


STORAGE_COLUMNS = ("model", "method", "rate", "seeds", "mean_accuracy", "std_accuracy",
                   "file_bytes", "gzip_bytes", "dense_bytes", "dense_gzip_bytes")


def storage_markdown(groups: list[dict]) -> str:
    """What each group's trained network costs to store (mean over seeds): the .mfz (seed, mask
    indices, trained values), it gzipped, every parameter as float32 (4 bytes each: what a dense
    network, or a frozen or pruned one kept as a plain array, costs) and that gzipped. The groups
    that recorded it (`storage.stored_sizes`)."""
    rows = [g for g in groups if "gzip_bytes" in g]
    return markdown_table(format_rows(rows, STORAGE_COLUMNS), STORAGE_COLUMNS)


LENGTH_COLUMNS = ("model", "rate", "steps", "seeds", "dense", "mean_a", "std_a", "mean_b", "std_b",
                  "difference", "ci_low", "ci_high", "p", "verdict")


def length_markdown(rows: list[dict], a: str = HEADLINE[0], b: str = HEADLINE[1]) -> str:
    """`length_rows` as Markdown: per network and rate, one row per step budget: dense's mean, a
    and b with their spreads, a - b in points with its 95% interval, p and the verdict."""
    body = [{**r, "mean_a": r[a], "std_a": r[f"{a}_std"], "mean_b": r[b], "std_b": r[f"{b}_std"]}
            for r in rows]
    table = markdown_table(format_rows(body, LENGTH_COLUMNS, percent=("dense", "mean_a", "std_a",
                                                                      "mean_b", "std_b")),
                           LENGTH_COLUMNS)
    return table.replace("| mean a | std a | mean b | std b |",
                         f"| {a} | {a} std | {b} | {b} std |", 1)


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
            eff = r.get("effective") or {}
            cells = [f"{r['kept'][n]:.0f} ({r['fewest'][n]}{'!' if r['fewest'][n] == 0 else ''})"
                     + (f", {eff[n]:.0f} used" if n in eff and eff[n] != r["kept"][n] else "")
                     for n in names]
            body.append({"method": r["method"], "rate": repr(r["rate"]),
                         "seeds": len(r["seeds"]), **dict(zip(names, cells))})
        used = ("; \"used\": the kept weights some input-to-output path uses, where fewer"
                if any(r.get("effective") for r in mine) else "")
        parts.append(f"{model}: weights kept per layer, mean over seeds (fewest in any seed; "
                     f"0! = a layer emptied{used})\n\n" + markdown_table(body, head))
    return "\n\n".join(parts)


def compare_markdown(groups: list[dict], a: str = HEADLINE[0], b: str = HEADLINE[1]) -> str:
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


RUN_COLUMNS = ("network", "method", "rate", "seed", "test_accuracy", "trained_params",
               "compression", "file_bytes", "epochs", "train_seconds", "backend")


def environments_markdown(runs: list[dict]) -> str:
    """One line per environment with its run count, and a warning when there are several."""
    counts = environments(runs)
    lines = [f"- {n} run{'s' if n != 1 else ''}: {key}" for key, n in counts.items()]
    if len(counts) > 1:
        lines.insert(0, f"These runs come from {len(counts)} environments: results agree bit for "
                        f"bit only within one (same CPU type, kernels, versions and shard count); "
                        f"across them expect differences in the last digits.\n")
    return "\n".join(lines)


def pivot_markdown(groups: list[dict], model: str, methods=None) -> str:
    """One model's groups as a Markdown table: a row per method, a column per rate, cells
    "mean +- std" test accuracy in percent (the most seeds of a cell in the header; a cell with
    fewer, as while a grid trains, says which seeds); dense gets its own row."""
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
        cells = [_pivot_cell(next((g for g in rows if g["method"] == method and g["rate"] == q),
                                  None), seeds) for q in rates]
        out.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _pivot_cell(group: dict | None, header_seeds: int) -> str:
    """One `pivot_markdown` cell: empty without a group, "mean (seed s)" over one seed,
    "mean +- std" over several, naming them when fewer than the header's `header_seeds`."""
    if group is None:
        return ""
    seeds, mean = group["seeds"], 100 * group["mean_accuracy"]
    if len(seeds) == 1:
        return f"{mean:.2f} (seed {seeds[0]})"
    cell = f"{mean:.2f} +- {100 * group['std_accuracy']:.2f}"
    return cell if len(seeds) == header_seeds else \
        f"{cell} (seeds {', '.join(str(s) for s in seeds)})"


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
