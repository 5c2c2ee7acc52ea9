"""Does freezing beat pruning at equal *effective* density? Counted from the committed masks.

A pruned network may keep weights that no input-to-output path uses (`masks.effective`), so it
trains fewer weights that matter than its rate says; a frozen network uses every weight it trains
(its frozen weights are nonzero). This script sets each pruned network against the same mask
frozen *at the same number of used weights*: for every one-shot mask whose frozen and pruned runs
are in the folder, per seed, the pruned run's used weights E (counted from its `.mfz` masks) and
accuracy, against the frozen runs' accuracy read off at E on the line through the two frozen
rates that bracket it (log-linear in the trained weights: a frozen network at rate q trains
exactly keep_count(N, q) weights, all used). The difference, frozen at E minus pruned, is paired by
seed (`results.difference_test`). A pruned network outside the frozen rates' range (fewer used
weights than the sparsest frozen run trains) gets no comparison. Writes
notebooks/results/effective/effective.json (every number, the folder and command) and
effective.md, and prints the table:

    python benchmarks/effective_density.py                        # the collapse study's runs
    python benchmarks/effective_density.py --results DIR --out DIR2

Reading the committed runs takes seconds (LeNet-300-100's masks; LeNet-5's where their model files
were committed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from minifreeze import masks as M, storage
from minifreeze.lab import results as R
from minifreeze.lab.tables import format_rows, markdown_table
from minifreeze.models import get_model, network_name
from minifreeze.storage import write_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "notebooks" / "results" / "collapse"
OUT = ROOT / "notebooks" / "results" / "effective"


def used_weights(folder: Path, run: dict) -> int | None:
    """The weights a run trains that some input-to-output path uses: every trained weight of a
    frozen network, `masks.effective` of a pruned one's masks (from its model file); None when
    a pruned run's model file was not committed."""
    path = folder / run["run"] / "model.mfz"
    if run["mode"] == "freeze":
        return R.trained_weights(run)
    if not path.is_file():
        return None
    checkpoint = storage.load(path)
    model = get_model(run["model"], **checkpoint.model_kwargs)
    return int(sum(int(m.sum()) for m in M.effective(model, checkpoint.masks).values()))


def at(points: list[tuple[int, float]], x: float) -> float | None:
    """The accuracy at x used weights on the line through the two points (weights, accuracy)
    that bracket x, log-linear in the weights; None outside their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * math.log(x / x0) / math.log(x1 / x0)
    return None


def compare(folder) -> list[dict]:
    """One row per (network, mask, rate) with a pruned run: its used weights and accuracy (means
    over seeds), the frozen network's trained weights and accuracy at that rate, the frozen
    accuracy read off at the pruned run's used weights, and the paired difference."""
    folder = Path(folder)
    runs = R.load_runs(folder)
    groups = R.aggregate(runs)
    rows = []
    for frozen, pruned in R.freeze_prune_pairs(groups):
        for net in sorted({R.network_of(r) for r in runs}):
            mine = [r for r in runs if R.network_of(r) == net and "test_accuracy" in r]
            f_runs = [r for r in mine if R.method_of(r) == frozen]
            for q in sorted({r["rate"] for r in mine if R.method_of(r) == pruned}):
                p_runs = [r for r in mine if R.method_of(r) == pruned and r["rate"] == q]
                used = {r["seed"]: used_weights(folder, r) for r in p_runs}
                if not p_runs or None in used.values():
                    continue
                curve = {}  # seed -> [(trained weights, accuracy)] of the frozen runs
                for r in f_runs:
                    curve.setdefault(r["seed"], []).append((R.trained_weights(r), r["test_accuracy"]))
                by_pruned = {r["seed"]: r["test_accuracy"] for r in p_runs}
                by_frozen = {s: at(curve.get(s, []), used[s]) for s in by_pruned}
                same_rate = [r for r in f_runs if r["rate"] == q]
                row = {"model": net, "frozen": frozen, "pruned": pruned, "rate": q,
                       "seeds": sorted(by_pruned), "pruned_used": R.mean_std(used.values())[0],
                       "pruned_accuracy": R.mean_std(by_pruned.values())[0],
                       "frozen_trained": R.mean_std(R.trained_weights(r) for r in same_rate)[0]
                       if same_rate else None,
                       "frozen_accuracy": R.mean_std(r["test_accuracy"] for r in same_rate)[0]
                       if same_rate else None,
                       "frozen_at_used": None, "difference": None, "ci_low": None,
                       "ci_high": None, "p": None, "verdict": "outside the frozen runs' range"}
                if all(v is not None for v in by_frozen.values()):
                    test = R.difference_test({"by_seed": by_frozen}, {"by_seed": by_pruned}, paired=True)
                    row.update(frozen_at_used=R.mean_std(by_frozen.values())[0],
                               difference=test["difference"], ci_low=test["ci_low"],
                               ci_high=test["ci_high"], p=test["p"],
                               verdict=R._verdict("frozen", test))
                rows.append(row)
    return sorted(rows, key=lambda r: (r["model"], R._method_rank(r["pruned"]), r["rate"]))


COLUMNS = ("model", "pruned", "rate", "seeds", "pruned_used", "pruned_accuracy", "frozen",
           "frozen_trained", "frozen_accuracy", "frozen_at_used", "difference", "ci_low",
           "ci_high", "p", "verdict")


def effective_table(record: dict) -> str:
    """The record's rows as Markdown: accuracies in %, weights as whole numbers, the difference
    (frozen at the pruned network's used weights minus pruned) in points."""
    rows = [{**r, "seeds": ", ".join(map(str, r["seeds"])),
             "pruned_used": f"{r['pruned_used']:,.0f}",
             "frozen_trained": "-" if r["frozen_trained"] is None else f"{r['frozen_trained']:,.0f}"}
            for r in record["rows"]]
    return markdown_table(format_rows(rows, COLUMNS, percent=("pruned_accuracy", "frozen_accuracy",
                                                              "frozen_at_used")), COLUMNS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(RESULTS), help="a results folder with run files")
    p.add_argument("--out", default=str(OUT), help="where effective.json and effective.md go")
    ns = p.parse_args(argv)
    folder = Path(ns.results)
    record = {"results": folder.resolve().relative_to(ROOT).as_posix()
              if folder.resolve().is_relative_to(ROOT) else folder.name,
              "command": "python benchmarks/effective_density.py" + "".join(
                  f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
              "rows": compare(folder)}
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "effective.json", (json.dumps(record, indent=2) + "\n").encode())
    table = effective_table(record)
    write_atomic(out / "effective.md", (table + "\n").encode())
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
