"""Results read back: every run's metrics.json, grouped over seeds, and the test behind every verdict.

    runs = load_runs("runs/mnist")                 # every runs/mnist/*/metrics.json, checksums held
    groups = aggregate(runs)                       # mean and std over seeds per network, method, rate
    compare(groups, "freezenet", "snip")           # the difference, its 95% interval, p, verdict
    length_rows(runs)                              # the same per step budget (a study of length)

Spread: `std` is the sample standard deviation over seeds (ddof 1; 0 for a single seed), shown
beside every mean. Verdicts come from a test (`difference_test`): runs of two methods that share
a seed are a pair (same theta0 and data order; frozen against pruned, the same mask too), so the
comparison is a paired t-test over the seeds both have (scipy.stats), Welch's t-test where the
runs are not paired (against the baseline, dense). A verdict says "above" or "below" only at
p < 0.05 (`ALPHA`), otherwise "not separable with n seeds". No run is left out of a mean or a
ratio after it ran.

`metrics.json` (one per run, written by `lab.runs.run`, e.g. through `python -m minifreeze train`)
holds the keys of `runs.run_metrics`: test accuracy, parameter counts, compression, bytes on disk
against dense float32, seconds, the backend, the whole configuration, the per-epoch history and
where the run ran. No method is named here: the registry says which method is the baseline
(`Method.baseline`), which are pruned, which share a mask.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from minifreeze.methods import HEADLINE, REGISTRY, VARIANTS, baseline, variant_group


SUMMARY_COLUMNS = ("method", "rate", "test_accuracy", "trained_params", "compression",
                   "file_bytes", "epochs", "wall_seconds", "backend")


def method_order() -> tuple[str, ...]:
    """Methods listed first, in the registry's order, in tables and legends; others (such as
    `elsa_gmp`, see `method_of`) follow by name."""
    return tuple(REGISTRY)


class ReportError(ValueError):
    """A results folder that holds no run, holds runs of several data sets, or a metrics file
    that cannot be read."""


def load_runs(root, *, skipped: list | None = None) -> list[dict]:
    """Every root/*/metrics.json whose checksum holds, ordered by model, method (METHOD_ORDER
    first), rate, seed. Unreadable or altered files are left out and, if `skipped` is a list,
    named there."""
    from minifreeze.lab.runs import is_sealed
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
    _add_priced_sizes(root, runs)
    return sorted(runs, key=lambda r: (r["network"], _method_rank(r["method"]), r["method"],
                                       r["rate"], r.get("seed", 0)))


def _add_priced_sizes(root: Path, runs: list[dict]) -> None:
    """Stored sizes that `runs.price` computed afterwards (root/storage_priced.json) join the
    runs that recorded none, where the entry names the same model file (its SHA-256); such a
    run says so (`sizes_priced_after`)."""
    from minifreeze.lab.runs import PRICED
    try:
        priced = json.loads((root / PRICED).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as err:
        raise ReportError(f"{root / PRICED}: unreadable ({err}); run `price {root}` again") \
            from None
    for r in runs:
        entry = priced.get(r.get("run"))
        if "gzip_bytes" not in r and entry and entry.get("model_sha256") == r.get("model_sha256"):
            r.update(gzip_bytes=entry["gzip_bytes"], dense_gzip_bytes=entry["dense_gzip_bytes"],
                     sizes_priced_after=True)


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
    figure averages over seeds. Runs of different data sets are never averaged together: a
    folder that mixes them is refused (`dataset_of`)."""
    runs = list(runs)
    dataset_of(runs)
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((network_of(r), method_of(r), r["rate"]), []).append(r)
    return groups


def dataset_of(runs) -> str | None:
    """The one data set the runs trained on (runs recorded before the field existed trained on
    MNIST; None for no runs); ReportError when they are more than one, since every table of a
    folder averages its runs by network, method and rate."""
    counts = Counter(r.get("dataset", "mnist") for r in runs)
    if len(counts) > 1:
        raise ReportError("these runs mix data sets (" + ", ".join(
            f"{d}: {n} runs" for d, n in sorted(counts.items())) + "); a results folder holds "
            "one data set: sweep and report each into its own folder")
    return next(iter(counts), None)


def _method_rank(method: str) -> int:
    order = method_order()
    return order.index(method) if method in order else len(order)


def summary_rows(runs: list[dict], columns=SUMMARY_COLUMNS) -> list[dict]:
    """One row per run with the given columns."""
    return [{k: r.get(k) for k in columns} for r in runs]


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
            for key in ("gzip_bytes", "dense_gzip_bytes"):  # runs that recorded them
                sizes = [r.get(key) for r in ok]
                if all(v is not None for v in sizes):
                    row[key] = int(round(mean_std(sizes)[0]))
            if any(r.get("sizes_priced_after") for r in ok):  # by `runs.price`, afterwards
                row["sizes_priced_after"] = True
            if "gzip_bytes" in row:  # beside them every parameter as float32, 4 bytes each
                row["dense_bytes"] = int(round(mean_std([r["dense_bytes"] for r in ok])[0]))
            effective = [r.get("effective_weights") for r in ok]
            if all(e is not None for e in effective):  # runs that recorded it (masks.effective)
                row["effective_weights"] = int(round(mean_std(effective)[0]))
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
    dense = trained_dense(groups)

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
        is_dense = is_baseline(g["method"])
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
    "ci_low", "ci_high", "p"} and, paired, "seeds" (the seeds it paired, sorted); with fewer
    than two values a side (two pairs) there is no interval and no p (None)."""
    from scipy import stats
    by_a, by_b = a.get("by_seed"), b.get("by_seed")
    if paired and by_a and by_b:
        seeds = sorted(set(by_a) & set(by_b))
        d = np.array([by_a[s] - by_b[s] for s in seeds], dtype=np.float64)  # (n,)
        out = {"test": "paired", "n": len(d), "difference": float(d.mean()) if len(d) else None,
               "ci_low": None, "ci_high": None, "p": None, "seeds": seeds}
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
    """Whether `method` is the baseline (`Method.baseline`: dense), the network every sparse one
    is measured against: its runs are not paired with a sparse network's by seed (a Welch test,
    not a paired one)."""
    m = REGISTRY.get(method)
    return m is not None and m.baseline


def trained_dense(groups: list[dict]) -> dict[str, dict]:
    """{network: its dense group} for the networks whose dense runs trained (a group with an
    accuracy: one whose runs all diverged has none), the baseline a ratio or a gap needs."""
    return {g["model"]: g for g in groups if is_baseline(g["method"]) and "mean_accuracy" in g}


def compare(groups: list[dict], a: str = HEADLINE[0], b: str = HEADLINE[1]) -> list[dict]:
    """Per model and rate where both ran: a - b, its 95% interval and p (`difference_test`:
    paired by seed unless one side is dense) and the verdict (`ALPHA`). The means and standard
    deviations beside a paired difference are over the seeds it pairs (while a grid is still
    training one side may have more), so that a - b is the difference."""
    index = {(g["model"], g["method"], g["rate"]): g for g in groups if "mean_accuracy" in g}
    rows = []
    for (model, method, rate), ga in sorted(index.items()):
        gb = index.get((model, b, rate))
        if method != a or gb is None:
            continue
        test = difference_test(ga, gb, paired=not (is_baseline(a) or is_baseline(b)))
        (mean_a, std_a), (mean_b, std_b) = (_mean_std_over(g, test.get("seeds")) for g in (ga, gb))
        rows.append({"model": model, "rate": rate, f"{a}": mean_a, f"{a}_std": std_a,
                     f"{b}": mean_b, f"{b}_std": std_b, "difference": test["difference"],
                     "ci_low": test["ci_low"], "ci_high": test["ci_high"], "p": test["p"],
                     "test": test["test"], "seeds": test["n"], "verdict": _verdict(a, test)})
    return rows


def _mean_std_over(group: dict, seeds: list | None) -> tuple[float, float]:
    """A group's mean and standard deviation over `seeds` (`mean_std`); as aggregated (over all
    its seeds) when `seeds` is None or empty."""
    if not seeds:
        return group["mean_accuracy"], group["std_accuracy"]
    return mean_std([group["by_seed"][s] for s in seeds])


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
    frozen against pruned (FreezeNet against SNIP, synflow_freeze against synflow_prune, ...);
    then the same for each sanity-check variant that ran (freezenet_shuffled against
    snip_shuffled, ...)."""
    ran = {g["method"] for g in groups}
    by_mask: dict[str, dict[str, str]] = {}
    for m in REGISTRY.values():
        if m.uses_rate:
            by_mask.setdefault(m.mask_key, {})[m.mode] = m.name
    pairs = []
    for variant in VARIANTS:  # the mask as chosen, then each sanity check of it (`--variant`)
        groups_ = [(variant_group(d["freeze"], variant), variant_group(d["prune"], variant))
                   for d in by_mask.values() if len(d) == 2]
        pairs += [(a, b) for a, b in groups_ if {a, b} <= ran]
    return pairs


def variant_pairs(groups: list[dict]) -> list[tuple[str, str]]:
    """(sanity check, the mask as chosen) for every method whose variant ran beside it, in the
    same mode: `snip_shuffled` against `snip`, `freezenet_redrawn` against `freezenet`, ... Does
    shuffling, re-drawing or inverting the mask hurt, frozen and pruned alike? Paired by seed:
    the runs of one seed share the data order (and, but for `redrawn`, theta0)."""
    ran = {g["method"] for g in groups}
    return [(variant_group(m.name, variant), m.name) for variant in VARIANTS if variant != "chosen"
            for m in REGISTRY.values()
            if m.uses_rate and {m.name, variant_group(m.name, variant)} <= ran]


def against_pruned_pairs(groups: list[dict], frozen: str = HEADLINE[0]) -> list[tuple[str, str]]:
    """(frozen, every pruned method that ran): FreezeNet against each way of pruning."""
    ran = {g["method"] for g in groups}
    if frozen not in ran:
        return []
    return [(frozen, m.name) for m in REGISTRY.values() if m.pruned and m.name in ran]


def layer_rows(runs: list[dict]) -> list[dict]:
    """Per (network, method, rate) of runs with masks: the weights kept in each masked layer
    (mean over seeds) and the fewest in any seed; `emptied` names the layers some seed left
    with no trainable weight (pruned, such a layer cuts the network: layer collapse); where
    every seed recorded it, `effective`: the kept weights some input-to-output path uses
    (`masks.effective`; all of them in a frozen network), mean over seeds."""
    groups = group_runs(r for r in runs if r.get("density") and
                        any(d["masked"] for d in r["density"]) and "elsa_level" not in r)
    rows = []
    for (model, method, rate), rs in groups.items():
        names = [d["name"] for d in rs[0]["density"] if d["masked"]]
        kept = {n: [next(d["trained"] for d in r["density"] if d["name"] == n) for r in rs]
                for n in names}
        row = {"model": model, "method": method, "rate": rate,
               "seeds": sorted(r.get("seed", 0) for r in rs),
               "kept": {n: float(np.mean(v)) for n, v in kept.items()},
               "fewest": {n: int(min(v)) for n, v in kept.items()},
               "emptied": [n for n, v in kept.items() if min(v) == 0]}
        eff = {n: [next(d.get("effective") for d in r["density"] if d["name"] == n) for r in rs]
               for n in names}
        if all(v is not None for vs in eff.values() for v in vs):  # recorded by every seed
            row["effective"] = {n: float(np.mean(v)) for n, v in eff.items()}
        rows.append(row)
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


def environments(runs: list[dict]) -> dict[str, int]:
    """How many runs ran in each environment (`environment.environment_key`): runs agree bit for
    bit only within one."""
    from minifreeze.lab.environment import environment_key
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


def pruned_methods() -> tuple[str, ...]:
    """The methods whose network is pruned (`Method.pruned`): what an ELSA level, itself pruned,
    is compared with."""
    return tuple(m.name for m in REGISTRY.values() if m.pruned)


def steps_of(run: dict) -> int | None:
    """The optimiser steps a finished run made: the step of its last dead-unit probe (taken at
    the end), else epochs x ceil(training images / batch) from its spec (runs recorded before
    the probe); None for a run that did not finish or recorded neither."""
    ends = [d["step"] for d in run.get("dead_units") or () if d.get("at") == "end"]
    if ends:
        return int(ends[-1])
    config, spec = run.get("config"), run.get("spec") or {}
    if "test_accuracy" not in run or not config or "epochs" not in run:
        return None
    from minifreeze.data import TRAIN_IMAGES
    n = TRAIN_IMAGES[spec.get("dataset", run.get("dataset", "mnist"))]
    n = min(n, spec.get("limit_train") or n)
    n -= int(round((spec.get("val_fraction") or 0.0) * n))
    return run["epochs"] * math.ceil(n / config["batch_size"])


def length_rows(runs: list[dict], a: str = HEADLINE[0], b: str = HEADLINE[1]) -> list[dict]:
    """The gap against training length: per network, step budget (`steps_of`) and rate where
    both ran, `compare`'s row of a against b (paired by seed), with dense's mean at that budget
    beside it ("dense", None where dense did not run). Sorted by network, rate, steps."""
    budgets: dict[tuple, list[dict]] = {}
    for r in runs:
        steps = steps_of(r)
        if steps is not None:
            budgets.setdefault((network_of(r), steps), []).append(r)
    rows = []
    for (model, steps), rs in budgets.items():
        groups = aggregate(rs)
        base = trained_dense(groups).get(model)
        for row in compare(groups, a, b):
            rows.append({**row, "steps": steps,
                         "dense": None if base is None else base["mean_accuracy"],
                         "dense_std": None if base is None else base["std_accuracy"]})
    return sorted(rows, key=lambda r: (r["model"], r["rate"], r["steps"]))


def several_budgets(runs: list[dict]) -> bool:
    """Whether one (network, method, rate) group of `runs` holds runs of different lengths:
    a study of training length, whose groups must not be averaged over budgets."""
    return any(len({steps_of(r) for r in rs} - {None}) > 1 for rs in group_runs(runs).values())


def on_length_curve(rows: list[dict], model: str, rate: float, steps: int,
                    a: str = HEADLINE[0]) -> str:
    """Where a run of `steps` steps sits on the committed curve of `length_rows` (network
    `model`, rate `rate`): the measured gap at the nearest budgets, with its interval, p and
    verdict, in one sentence."""
    line = [r for r in rows if r["model"] == model and r["rate"] == rate]
    if not line:
        raise ReportError(f"on_length_curve: no committed budget for {model} at q = {rate}")

    def cell(r):
        ci = ("" if r["ci_low"] is None else
              f", 95% interval [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}], p = {r['p']:.2g}")
        return (f"{r['steps']:,} steps: {a} - pruned {100 * r['difference']:+.2f} points{ci} "
                f"({r['verdict']})")
    below = [r for r in line if r["steps"] <= steps]
    above = [r for r in line if r["steps"] >= steps]
    if not below:
        return f"{steps:,} steps is shorter than the shortest budget measured; at " + cell(above[0])
    if not above:
        return f"{steps:,} steps is longer than the longest budget measured; at " + cell(below[-1])
    if below[-1]["steps"] == steps:
        return "on the committed curve at " + cell(below[-1])
    return f"{steps:,} steps lies between {cell(below[-1])} and {cell(above[0])}"


def elsa_comparison(runs: list[dict], groups: list[dict]) -> list[dict]:
    """Per model and ELSA level: the extracted level's accuracy against the best pruned method
    trained on its own at that rate (best by its mean over all its seeds; the two sides then read
    over the seeds their paired difference is over), FreezeNet there (over all its seeds), the
    final dense network against dense; then the time and bytes of one ELSA run against training
    and storing each level on its own (the best pruned method's runs, and dense)."""
    index = {(g["model"], g["method"], g["rate"]): g for g in groups if "mean_accuracy" in g}
    nested = {(network_of(r), method_of(r)) for r in runs if "elsa_level" in r}  # levels' groups
    rows = []
    for (model, method, rate), g in sorted(index.items(), key=lambda kv: (kv[0][0], -kv[0][2])):
        if (model, method) not in nested:
            continue
        candidates = (baseline(),) if rate == 0 else pruned_methods()
        alone = [index[(model, m, rate)] for m in candidates if (model, m, rate) in index]
        best = max(alone, key=lambda a: a["mean_accuracy"], default=None)
        fz = index.get((model, HEADLINE[0], rate))
        test = None if best is None else difference_test(
            g, best, paired=not is_baseline(best["method"]))
        seeds = None if test is None else test.get("seeds")  # paired: both sides over these
        elsa = _mean_std_over(g, seeds)
        alone = (None, None) if best is None else _mean_std_over(best, seeds)
        rows.append({"model": model, "method": method, "rate": rate, "elsa": elsa[0],
                     "elsa_std": elsa[1], "elsa_seeds": len(seeds or g["seeds"]),
                     "alone_method": None if best is None else best["method"],
                     "alone": alone[0], "alone_std": alone[1],
                     "alone_seeds": None if best is None else len(seeds or best["seeds"]),
                     "alone_train_seconds": None if best is None else best["train_seconds"],
                     "alone_file_bytes": None if best is None else best["file_bytes"],
                     "freezenet": None if fz is None else fz["mean_accuracy"],
                     "freezenet_std": None if fz is None else fz["std_accuracy"],
                     "elsa_file_bytes": g["file_bytes"],
                     **{k: None if test is None else test[k]
                        for k in ("difference", "ci_low", "ci_high", "p")},
                     "verdict": None if test is None else _verdict("elsa", test)})
    return rows


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
