"""The measuring scripts under benchmarks/ that feed committed numbers: what they time is what
the library runs, and they leave the library as they found it."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from minifreeze import layers
from minifreeze.lab import pages, results
from minifreeze.lab.results import ReportError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCHMARKS.parent / "notebooks" / "results"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levers_times_every_op_of_a_step_and_puts_the_ops_back():
    levers = _script("levers")
    before = {op: getattr(layers, op) for op in levers.OPS}
    step = levers.profile_step("lenet5", batch=4, steps=1, rounds=1)
    assert {op: getattr(layers, op) for op in levers.OPS} == before  # unwrapped again
    timed = {(r["op"], r["layer"]) for r in step["ops"]}
    assert {("conv_forward", "conv1"), ("conv_backward", "conv2"), ("linear_forward", ""),
            ("maxpool_backward", "")} <= timed
    # one shard, one thread: the ops are parts of the step, so their shares cannot exceed it
    assert 0 < sum(r["share"] for r in step["ops"]) <= 1.0 + 1e-3


def test_levers_blocked_conv1_weight_gradient_is_the_same_product():
    d = _script("levers").conv1_dw(batch=2, chunk=100, repeats=1)
    assert d["k"] == 2 * 24 * 24 and d["chunk"] == 100
    # same sum in another order: float32 rounding apart, both close to the float64 product
    assert d["max_abs_diff"] < 1e-3 and d["one_product_err"] < 1e-3 and d["blocked_err"] < 1e-3


def test_ab_step_refuses_a_folder_that_is_not_a_checkout(tmp_path, capsys):
    ab = _script("ab_step")
    with pytest.raises(SystemExit) as err:
        ab.main([str(tmp_path), str(BENCHMARKS.parent), "--rounds", "1"])
    assert err.value.code == 2
    assert "not a minifreeze checkout" in capsys.readouterr().err


def test_ab_step_times_both_checkouts_through_the_shared_api():
    ab = _script("ab_step")
    rates = ab.measure(str(BENCHMARKS.parent), 1, [["lenet5", None, "freeze"]])
    assert set(rates) == {"lenet5/dense/freeze"} and np.isfinite(rates["lenet5/dense/freeze"])
    assert rates["lenet5/dense/freeze"] > 0


def test_a_benchmark_run_feeds_its_tables(tmp_path):
    """bench.py writes its tables beside its record (`--out`, `--tables`): the speed and cost tables
    a page embeds; the ratios and the GEMM share are the record's, not recomputed."""
    row = {"model": "lenet5", "impl": "numba x2", "infer_img_s": None, "forward_macs": 2.29e6,
           "input_grad_macs": 2.0e6, "weight_grad_macs": 0.34e6, "total_macs": 4.63e6,
           "shards": 2, "stored_bytes": 14344, "step_ms": 14.04, "gemm_fraction": 0.123}
    bench = {"batch": 100, "steps": 20, "rounds": 7, "q": 0.995, "command": "x",
             "machine": {"cpus": 2, "gemm_gmacs": {"2": 150.0}, "torch": "2.13.0",
                         "environment": {"cpu": "CPU", "numba_cpu": "znver4",
                                         "blas": [{"version": "0.3", "architecture": "Zen"}]}},
             "rows": [{**row, "regime": "dense", "train_img_s": 6343.0, "infer_img_s": 17856.0,
                       "train_vs_torch": 1.13, "train_vs_own_dense": 1.0},
                      {**row, "regime": "freezenet", "train_img_s": 7125.0,
                       "train_vs_torch": 1.28, "train_vs_own_dense": 1.12},
                      {"model": "lenet5", "regime": "dense", "impl": "torch",
                       "train_img_s": 5608.0, "infer_img_s": 11801.0},
                      {"model": "lenet5", "regime": "freezenet", "impl": "torch",
                       "train_img_s": 5550.0, "infer_img_s": None}]}
    (tmp_path / "bench").mkdir()
    _script("bench").write_tables(tmp_path / "bench" / "bench.json", bench)
    page = ("<!-- table: bench bench -->\n<!-- /table -->\n"
            "<!-- table: bench bench_cost -->\n<!-- /table -->\n")
    new = pages.fill_page(page, tmp_path)
    assert "| lenet5 | freezenet | numba x2 | 7,125 | 5,550 | 1.28x | 1.12x | 12.3% |" in new
    assert "| lenet5 | dense | numba x2 | 6,343 | 5,608 | 1.13x |  | 12.3% |" in new
    assert "| lenet5 | freezenet | numba x2 | 2.29M + 2.00M + 0.34M | 14.0 | 14,344 |" in new
    assert "lenet5 numba x2 17,856 (torch 11,801)" in new and "2 threads 150.0 G" in new
    brief = pages.fill_page("<!-- table: bench bench_brief -->\n<!-- /table -->\n", tmp_path)
    assert "| lenet5 | dense | numba x2 | 12.3% | 1.13x |" in brief and "freezenet" not in brief
    assert pages.fill_page(new, tmp_path) == new
    with pytest.raises(ReportError, match="unknown kind"):
        pages.fill_page(page.replace("bench_cost", "pivot"), tmp_path)


RECORDS = [("bench", "bench", "bench.json"), ("bench", "paths", "paths.json"),
           ("conv_relu_divergence", "conv_relu", "divergence.json"),
           ("dead_units_init", "dead_units", "dead_units.json"),
           ("effective_density", "effective", "effective.json")]


@pytest.mark.parametrize("script,folder,record", RECORDS, ids=[r[1] for r in RECORDS])
def test_a_committed_records_tables_are_what_its_script_renders(script, folder, record):
    """Each record's script owns its renderer: the KIND.md files committed beside the record are
    what the script renders from it now, and a page embeds them as they are."""
    module = _script(script)
    data = json.loads((RESULTS / folder / record).read_text())
    made = {"bench": lambda: module.bench_tables(data),
            "conv_relu_divergence": lambda: {"divergence": module.divergence_table(data)},
            "dead_units_init": lambda: {"dead_units": module.dead_units_table(data)},
            "effective_density": lambda: {"effective": module.effective_table(data)}}[script]()
    for kind, table in made.items():
        assert (RESULTS / folder / f"{kind}.md").read_text() == table + "\n", kind
        page = f"<!-- table: {folder} {kind} -->\n<!-- /table -->\n"
        assert pages.fill_page(page, RESULTS) == page.replace("\n<!--", "\n" + table + "\n<!--")
    if script == "conv_relu_divergence":
        assert "| no | xavier | NaN at step 13 | NaN at step 15 |" in made["divergence"]


def test_effective_density_reads_the_frozen_line_log_linearly():
    at = _script("effective_density").at
    points = [(100, 0.80), (400, 0.90), (1_600, 0.94)]
    assert at(points, 200) == pytest.approx(0.85)          # halfway in log(weights)
    assert at(points, 400) == pytest.approx(0.90) and at(points, 800) == pytest.approx(0.92)
    assert at(points, 99) is None and at(points, 1_601) is None  # no extrapolation


def test_effective_density_counts_a_pruned_runs_used_weights_from_its_masks():
    module = _script("effective_density")
    [row] = [r for r in json.loads((RESULTS / "effective" / "effective.json").read_text())["rows"]
             if (r["model"], r["pruned"], r["rate"]) == ("lenet300", "snip", 0.995)]
    folder = RESULTS / "collapse"
    runs = [r for r in results.load_runs(folder) if r["network"] == "lenet300"
            and r["method"] == "snip" and r["rate"] == 0.995]
    used = [module.used_weights(folder, r) for r in runs]
    assert len(used) == 3 and all(u < 1_331 for u in used), "a pruned network leaves kept weights unused"
    assert row["pruned_used"] == pytest.approx(sum(used) / 3)
    frozen = [r for r in results.load_runs(folder) if r["method"] == "freezenet" and r["rate"] == 0.995
              and r["network"] == "lenet300"]
    assert {module.used_weights(folder, r) for r in frozen} == {1_331}, "a frozen network uses all"
