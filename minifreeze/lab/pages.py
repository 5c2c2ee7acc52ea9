"""Pages: a results folder's report (summary.md, CSV, JSON, figures), and the generated tables
of the README and docs/, rewritten from the committed runs.

    write_report(load_runs("runs/study"), "runs/study")     # what `python -m minifreeze report` writes
    fill_page(Path("README.md").read_text(), ".")           # every <!-- table: DIR KIND --> anew

A folder with runs gives the kinds of `page_tables`. A folder that holds a record instead (a
benchmark's or a study script's, under benchmarks/) gives the tables that script wrote beside it
as `KIND.md`: the script owns its renderer (`make bench`, `make conv-relu-table`,
`make dead-units-table`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from minifreeze.lab.results import (
    ALPHA, ReportError, is_baseline, against_pruned_pairs, aggregate, checkpoint_rows, compare,
    dataset_of, dead_unit_rows, elsa_comparison, elsa_costs, expand_levels, freeze_prune_pairs,
    group_runs, layer_rows, length_rows, load_runs, network_of, pair_rows, read_summary,
    several_budgets, steps_of, summary_rows, trained_dense, variant_pairs, _method_rank)
from minifreeze.lab.tables import (
    AGGREGATE_COLUMNS, RUN_COLUMNS, SUMMARY_COLUMNS, checkpoint_table, compare_markdown,
    dead_units_markdown, elsa_cost_markdown, elsa_markdown, environments_markdown, format_rows,
    layers_markdown, length_markdown, markdown_table, pairs_table, pivot_markdown,
    storage_markdown, write_csv)
from minifreeze.methods import HEADLINE
from minifreeze.lab.figures import (
    is_gradual, plot_bytes, plot_gap, plot_gradual, plot_history, plot_length, plot_rates)


MAX_CURVE_GROUPS = 8
"""The most (network, method, rate) groups a report's accuracy-per-epoch figure draws."""
REPORT_FIGURES = ("accuracy.png", "rates.png", "bytes.png", "gap.png")
"""The figures `write_report` owns by name, beside accuracy_<network>.png and
gradual_<network>.png."""

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
    against pruned), `against_pruned` (FreezeNet against every pruned method), `sanity` (each
    sanity-check variant against its mask as chosen, where they ran), `storage` (the
    bytes stored, gzipped, where the runs recorded them) and, with runs,
    `layers` (weights kept per layer: layer collapse), `length` (the gap per step budget,
    where the runs trained for several), `runs` (one row per run: accuracy,
    trained parameters, compression, bytes on disk, epochs, training seconds) and, where ELSA
    ran, `elsa` (each level against the best pruned method alone) and `elsa_cost` (its seconds
    and bytes against the levels trained alone)."""
    tables = {"pivot": pivot_tables(groups),
              "groups": markdown_table(format_rows(groups, AGGREGATE_COLUMNS), AGGREGATE_COLUMNS),
              "checkpoints": checkpoint_table(groups),
              "compare": compare_markdown(groups),
              "frozen_pruned": pairs_table(pair_rows(groups, freeze_prune_pairs(groups))),
              "against_pruned": pairs_table(pair_rows(groups, against_pruned_pairs(groups)))}
    if any("gzip_bytes" in g for g in groups):
        tables["storage"] = storage_markdown(groups)
    sanity = pair_rows(groups, variant_pairs(groups))
    if sanity:
        tables["sanity"] = pairs_table(sanity)
    if runs is not None and several_budgets(runs):
        tables["length"] = length_markdown(length_rows(runs))
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


def is_record_folder(root) -> bool:
    """A folder that holds a script's record (a JSON file and the tables its script rendered
    from it, `KIND.md`) rather than runs or a committed report."""
    root = Path(root)
    return (not any(root.glob("*/metrics.json")) and not (root / "summary.csv").is_file()
            and any(root.glob("*.md")))


def fill_page(text: str, folder) -> str:
    """`text` (a Markdown page in `folder`) with every generated table written anew from the
    committed runs it names, or from the `KIND.md` a record's script wrote (`is_record_folder`);
    ReportError for an unknown kind or a folder without runs."""
    folder, cache = Path(folder), {}

    def table(m):
        root = (folder / m["dir"]).resolve()
        if root not in cache and is_record_folder(root):
            cache[root] = ([], {p.stem: p.read_text().rstrip("\n") for p in root.glob("*.md")})
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


def named_dataset(runs: list[dict]) -> str | None:
    """The runs' data set where a report names it: any but MNIST (MNIST's reports and figures
    say nothing, as they always did)."""
    data = dataset_of(runs)
    return None if data == "mnist" else data


def report_markdown(runs: list[dict], groups: list[dict], comparison: list[dict],
                    compare=HEADLINE, elsa=(), elsa_cost=(), frozen_pruned=(),
                    against_pruned=(), layers=()) -> str:
    """The report as Markdown: accuracy by method and rate, mean +- std per group, the
    comparison, each mask frozen against pruned and FreezeNet against every pruned method (when
    there is more than the one comparison), the weights kept per layer, ELSA's levels against
    each level trained alone, one row per run."""
    a, b = compare
    diverged = [r for r in runs if "diverged" in r]
    parts = ["## Test accuracy (%) by method and rate: mean +- std over seeds"]
    data = named_dataset(runs)
    if data:
        parts = [f"Data set: {data} (every run)", ""] + parts
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
    sanity = pair_rows(groups, variant_pairs(groups))
    if sanity:
        parts += ["", "## Each sanity check (a) against its mask as chosen (b), in the same mode "
                      "(paired by seed: mean difference in points, its 95% interval and p)", "",
                  pairs_table(sanity)]
    if layers:
        parts += ["", "## Weights kept per layer", "", layers_markdown(list(layers))]
    if any("gzip_bytes" in g for g in groups):
        parts += ["", "## What each network costs to store (bytes, mean over seeds: the .mfz, it "
                      "gzipped, every parameter as float32 and that gzipped)", "",
                  storage_markdown(groups)]
        if any(g.get("sizes_priced_after") for g in groups):
            parts += ["", "Sizes of the runs that did not measure them as they finished were "
                          "computed afterwards from their committed model files "
                          "(`python -m minifreeze price`, storage_priced.json)."]
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


def curve_runs(runs: list[dict]) -> list[dict]:
    """The runs the figures of accuracy per epoch draw: each with a history that ended in a test
    accuracy or in a `diverged` record (named in the legend with where it stopped); ELSA's
    levels, which share one history, are left out."""
    return [r for r in runs if "history" in r and ("test_accuracy" in r or "diverged" in r)
            and "elsa_level" not in r]


def accuracy_figures(curves: list[dict]) -> list[tuple]:
    """[(file name, figure)] of test accuracy per epoch for `curves` (runs with a history): one
    colour and legend entry per (network, method, rate), each with all its seeds, readable up to
    MAX_CURVE_GROUPS groups however many seeds. All in accuracy.png when they fit; otherwise
    accuracy_<network>.png for each network whose own groups fit (a VGG beside a LeNet-5 grid too
    large to draw, Caffe's LeNet-5 beside the paper protocol's conv-ReLU runs), and for a network
    whose groups do not, accuracy_<network>_q<rate>.png per rate: that rate's groups with the
    network's baselines (dense), where they fit; none for the rest."""
    if not curves:
        return []
    if len(group_runs(curves)) <= MAX_CURVE_GROUPS:
        return [("accuracy.png", plot_history(curves))]
    by_network: dict[str, list[dict]] = {}
    for r in curves:
        by_network.setdefault(network_of(r), []).append(r)
    figures = []
    for net, rs in sorted(by_network.items()):
        if len(group_runs(rs)) <= MAX_CURVE_GROUPS:
            figures.append((f"accuracy_{net}.png", plot_history(rs)))
            continue
        base = [r for r in rs if is_baseline(r["method"])]
        sparse = [r for r in rs if not is_baseline(r["method"])]
        for rate in sorted({r["rate"] for r in sparse}):
            at = base + [r for r in sparse if r["rate"] == rate]
            if len(group_runs(at)) <= MAX_CURVE_GROUPS:
                figures.append((f"accuracy_{net}_q{rate:g}.png", plot_history(at)))
    return figures


def write_report(runs: list[dict], root, *, pair=HEADLINE) -> dict:
    """Write the report of `runs` into folder `root`: summary.md, summary.csv (one row per
    group), runs.csv, results.json, and figures: accuracy.png or accuracy_<network>.png (per
    epoch, `accuracy_figures`), rates.png, bytes.png and gap.png (the gap to dense; when some
    method ran at two rates or more), gradual_<network>.png. A figure of these names that an earlier
    report drew and this one does not is removed, so no figure outlives the runs it showed.
    Returns {"markdown": the Markdown text, "files": the names written}."""
    import matplotlib.pyplot as plt
    from minifreeze.storage import write_atomic
    root = Path(root)
    if several_budgets(runs):
        return write_length_report(runs, root, pair=pair)
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
    figures += accuracy_figures(curve_runs(runs))
    rates = {(g["model"], g["method"]) for g in groups if not is_baseline(g["method"])}
    if any(sum(1 for g in groups if (g["model"], g["method"]) == k) > 1 for k in rates):
        data = named_dataset(runs)  # the titles name it
        figures += [("rates.png", plot_rates(groups, data=data)),
                    ("bytes.png", plot_bytes(groups, data=data))]
        if trained_dense(groups):
            figures.append(("gap.png", plot_gap(groups, data=data)))
    for model in sorted({network_of(r) for r in runs if is_gradual(r["method"])
                         and "history" in r and "test_accuracy" in r}):
        figures.append((f"gradual_{model}.png", plot_gradual(original, model=model)))
    for name, fig in figures:
        fig.savefig(root / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
        files.append(name)
    drawn = {name for name, _ in figures}
    for old in [*(root / name for name in REPORT_FIGURES), *root.glob("accuracy_*.png"),
                *root.glob("gradual_*.png")]:
        if old.name not in drawn and old.is_file():
            old.unlink()
    return {"markdown": text, "files": files}


def length_report_markdown(runs: list[dict], rows: list[dict], pair=HEADLINE) -> str:
    """The report of a study of training length (`several_budgets`): the gap per network, rate
    and step budget, every run with its steps, and where the runs ran."""
    a, b = pair
    with_steps = [{**r, "network": network_of(r), "steps": steps_of(r)} for r in runs
                  if "diverged" not in r]
    cols = ("network", "method", "rate", "seed", "steps", "epochs", "test_accuracy",
            "train_seconds")
    return "\n".join([
        f"## {a} against {b} by training length (difference in points with its 95% interval; "
        f"paired t-test by seed; a verdict needs p < {ALPHA}; dense: its mean at that budget)",
        "", length_markdown(rows, a, b), "", "## Every run", "",
        markdown_table(format_rows(sorted(with_steps, key=lambda r: (
            r["network"], r["steps"], _method_rank(r["method"]), r["rate"], r["seed"])), cols),
            cols), "", "## Where the runs ran", "", environments_markdown(runs)])


def write_length_report(runs: list[dict], root, *, pair=HEADLINE) -> dict:
    """`write_report` for a study of training length: summary.md, summary.csv (the rows of
    `length_rows`), runs.csv, results.json and length.png (`plot_length`)."""
    import matplotlib.pyplot as plt
    from minifreeze.storage import write_atomic
    root = Path(root)
    rows = length_rows(runs, *pair)
    text = length_report_markdown(runs, rows, pair)
    write_atomic(root / "summary.md", (text + "\n").encode())
    write_csv(root / "summary.csv", rows, ("model", "rate", "steps", "seeds", "dense", *pair,
                                            "difference", "ci_low", "ci_high", "p", "verdict"))
    write_csv(root / "runs.csv", [r for r in runs if "diverged" not in r], RUN_COLUMNS)
    write_atomic(root / "results.json", (json.dumps(
        {"runs": summary_rows(runs, RUN_COLUMNS), "length": rows}, indent=2) + "\n").encode())
    fig = plot_length(rows, a=pair[0], b=pair[1])
    fig.savefig(root / "length.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"markdown": text, "files": ["summary.md", "summary.csv", "runs.csv", "results.json",
                                        "length.png"]}
