"""The sweep: a deterministic grid, resumable from its files, the same results on a process pool and
on a Dask LocalCluster, and a report whose mean and std are the hand-computed ones."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from minifreeze import models, train as T
from minifreeze.lab import pages, results, runs as R, sweep, tables
from minifreeze.lab.cli import main
from minifreeze.train import TrainConfig, protocol_config

TINY = dict(limit_train=200, limit_test=100)
BASE = TrainConfig(epochs=1, batch_size=50, warmup_steps=0, lr=0.05, shards=1)


def tiny_grid(methods=("freezenet", "snip"), rates=(0.9,), seeds=(0,)):
    return sweep.expand_grid(["lenet300"], methods, rates, seeds, base=BASE, **TINY)


def test_grid_expansion_and_names_are_deterministic():
    a = sweep.expand_grid(["lenet5", "lenet300"], ["snip", "freezenet", "elsa"], [0.99, 0.9],
                          [0, 1], base=BASE)
    b = sweep.expand_grid(["lenet5", "lenet300"], ["snip", "freezenet", "elsa"], [0.99, 0.9],
                          [0, 1], base=BASE)
    assert [s.name for s in a] == [s.name for s in b]
    assert len({s.name for s in a}) == len(a) == 2 * (2 + 2 * 2 * 2 + 2)  # dense, 2x2x2, elsa
    assert a[0].config.method == "dense" and a[0].name.startswith("lenet5-dense-s0-")
    assert a[2].name.startswith("lenet5-snip-q0.99-s0-")
    assert R.RunSpec.from_dict(a[3].to_dict()) == a[3]
    other = sweep.expand_grid(["lenet5"], ["snip"], [0.99], [0],
                              base=TrainConfig(epochs=2, batch_size=50, warmup_steps=0, lr=0.05,
                                               shards=1))
    assert other[1].name != a[2].name  # another config: another folder


def test_seed_order_puts_whole_comparisons_first():
    grid = sweep.expand_grid(["lenet5"], ["freezenet", "snip"], [0.99], [2, 0], base=BASE)
    by_seed = sweep.expand_grid(["lenet5"], ["freezenet", "snip"], [0.99], [2, 0], base=BASE,
                                order="seed")
    assert sorted(s.name for s in grid) == sorted(s.name for s in by_seed)
    assert [s.config.seed for s in by_seed] == [2, 2, 2, 0, 0, 0]  # the seeds as given
    assert [s.config.method for s in by_seed[:3]] == ["dense", "freezenet", "snip"]
    with pytest.raises(sweep.SweepError, match="unknown order 'random'"):
        sweep.expand_grid(["lenet5"], ["snip"], [0.99], [0], base=BASE, order="random")


@pytest.mark.parametrize("kwargs, message", [
    (dict(methods=["lottery"]), "unknown method 'lottery'"),
    (dict(rates=[1.0]), r"rate: expected a number in \[0, 1\), got 1.0"),
    (dict(rates=[]), "need at least one rate"),
])
def test_bad_grids_are_refused_before_anything_runs(kwargs, message):
    args = dict(models=["lenet300"], methods=["snip"], rates=[0.9], seeds=[0]) | kwargs
    with pytest.raises(sweep.SweepError, match=message):
        sweep.expand_grid(**args, base=BASE)


def _mtimes(root):
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}


def test_resume_redoes_exactly_what_is_not_finished(tmp_path):
    specs = tiny_grid(methods=("freezenet", "snip", "random_prune"))
    first = sweep.sweep(specs, tmp_path, progress=False)
    assert first.ran == len(specs) == 4 and not first.failed
    before = _mtimes(tmp_path)
    again = sweep.sweep(specs, tmp_path, progress=False)
    assert again.ran == 0 and again.skipped == 4 and _mtimes(tmp_path) == before
    # a killed run (metrics never written), a truncated file, an edited one, a stray model file
    killed, cut, edited, stray = (tmp_path / s.name for s in specs)
    (killed / "metrics.json").unlink()
    text = (cut / "metrics.json").read_text()
    (cut / "metrics.json").write_text(text[:len(text) // 2])
    m = json.loads((edited / "metrics.json").read_text())
    m["test_accuracy"] = 0.999
    (edited / "metrics.json").write_text(json.dumps(m))
    (stray / "model.mfz").write_bytes(b"MFZ\0 not the model the metrics describe")
    third = sweep.sweep(specs, tmp_path, progress=False)
    assert third.ran == 4 and third.skipped == 0
    for s, want in zip(specs, first.metrics):
        got = R.finished(tmp_path / s.name, s)
        assert got is not None and got["test_accuracy"] == want["test_accuracy"]


def test_a_partial_run_never_counts_as_finished(tmp_path):
    spec = tiny_grid()[1]
    out = tmp_path / spec.name
    R.run(spec, out)
    assert R.finished(out, spec) is not None
    assert R.finished(out, tiny_grid()[2]) is None  # made from another spec
    (out / "model.mfz").write_bytes((out / "model.mfz").read_bytes()[:-1])
    assert R.finished(out, spec) is None


def _essence(metrics):
    """What must not depend on the worker: everything but times and the run's own folder."""
    return {k: v for k, v in metrics.items()
            if k not in ("wall_seconds", "train_seconds", "history", "checksum", "plan")} | {
        "history": [{k: v for k, v in h.items() if "seconds" not in k}
                    for h in metrics["history"]]}


def test_a_local_cluster_gives_the_pool_results_bit_for_bit(tmp_path):
    pytest.importorskip("distributed")
    specs = tiny_grid(methods=("freezenet", "snip"), seeds=(0, 1))
    with sweep.make_executor("process", workers=2) as ex:
        pool = sweep.sweep(specs, tmp_path / "pool", ex, progress=False)
    with sweep.make_executor("dask", workers=2) as ex:
        dask = sweep.sweep(specs, tmp_path / "dask", ex, progress=False)
    assert not pool.failed and not dask.failed and pool.ran == dask.ran == len(specs)
    for s, a, b in zip(specs, pool.metrics, dask.metrics):
        assert _essence(a) == _essence(b)
        assert (tmp_path / "pool" / s.name / "model.mfz").read_bytes() == \
            (tmp_path / "dask" / s.name / "model.mfz").read_bytes()


def test_unreachable_scheduler_is_one_line_before_any_run(tmp_path, capsys):
    pytest.importorskip("distributed")
    status = main(["sweep", "--models", "lenet300", "--methods", "snip", "--rates", "0.9",
                   "--epochs", "1", "--limit-train", "100", "--executor", "dask",
                   "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert status == 2 and "no Dask scheduler at tcp://127.0.0.1:1" in err
    assert err.count("\n") == 1 and not list((tmp_path / "s").glob("*/metrics.json"))


@pytest.mark.parametrize("argv, message", [
    (["--methods", "lottery", "--rates", "0.9"], "unknown method 'lottery'"),
    (["--methods", "snip", "--rates", "1.5"], "rate: expected a number in [0, 1), got 1.5"),
    (["--methods", "snip", "--rates", "0.9", "--executor", "thread", "--scheduler", "x"],
     "a scheduler address needs --executor dask"),
])
def test_cli_bad_grids_exit_2_in_one_line(tmp_path, capsys, argv, message):
    status = main(["sweep", "--models", "lenet300", "--out", str(tmp_path / "s"), *argv])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_cli_state_interval_below_one_epoch_exits_2_in_one_line(tmp_path, capsys, command):
    what = ["--models", "lenet300", "--methods", "snip"] if command == "sweep" else \
        ["--model", "lenet300", "--method", "snip"]
    with pytest.raises(SystemExit) as exit_:
        main([command, *what, "--state-every", "0", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "--state-every: expected a whole number of epochs >= 1, got '0'" in err
    assert not (tmp_path / "s").exists()


def test_cli_sweep_then_report(tmp_path, capsys):
    root = tmp_path / "study"
    argv = ["sweep", "--models", "lenet300", "--methods", "freezenet", "snip", "--rates", "0.9",
            "0.99", "--seeds", "0", "1", "--epochs", "1", "--batch-size", "50", "--lr", "0.05",
            "--limit-train", "200", "--limit-test", "100", "--executor", "thread",
            "--out", str(root)]
    assert main(argv) == 0
    assert "10 runs" in capsys.readouterr().out
    assert main(argv) == 0
    assert "10 already finished, 0 ran" in capsys.readouterr().out
    assert main(["report", str(root)]) == 0
    text = capsys.readouterr().out
    assert "freezenet against snip" in text
    for name in ("summary.md", "summary.csv", "runs.csv", "results.json", "rates.png",
                 "bytes.png"):
        assert (root / name).is_file(), name
    results = json.loads((root / "results.json").read_text())
    assert len(results["groups"]) == 5 and len(results["comparison"]) == 2


def _run(method, rate, seed, acc, model="lenet5"):
    return R.seal({"model": model, "method": method, "rate": rate, "seed": seed,
                        "test_accuracy": acc, "trained_params": 10, "compression": 2.0,
                        "file_bytes": 100 + seed, "epochs": 3, "train_seconds": 1.0 + seed})


def test_report_mean_and_std_are_the_hand_computed_ones():
    runs = [_run("freezenet", 0.99, s, a) for s, a in enumerate([0.97, 0.98, 0.99])]
    runs += [_run("snip", 0.99, s, a) for s, a in enumerate([0.95, 0.97])]
    runs += [_run("dense", 0.0, 0, 0.993)]
    groups = results.aggregate(runs)
    fz = next(g for g in groups if g["method"] == "freezenet")
    assert fz["mean_accuracy"] == pytest.approx(0.98)
    assert fz["std_accuracy"] == pytest.approx(0.01)  # sqrt(((-.01)^2 + 0 + .01^2) / 2)
    assert fz["seeds"] == [0, 1, 2] and fz["min_accuracy"] == 0.97 and fz["max_accuracy"] == 0.99
    assert fz["file_bytes"] == 101 and fz["train_seconds"] == pytest.approx(2.0)
    sn = next(g for g in groups if g["method"] == "snip")
    assert sn["std_accuracy"] == pytest.approx(math.sqrt(0.0002))
    dense = next(g for g in groups if g["method"] == "dense")
    assert dense["std_accuracy"] == 0.0
    [row] = results.compare(groups, "freezenet", "snip")
    # paired over the seeds both have (0 and 1): differences 0.02 and 0.01, mean 0.015, sd
    # 0.01 / sqrt(2), t = 3 with 1 degree of freedom: p = 1 - 2 atan(3) / pi, interval
    # 0.015 +- 12.706 * 0.005
    assert row["test"] == "paired" and row["seeds"] == 2
    assert row["difference"] == pytest.approx(0.015)
    assert row["p"] == pytest.approx(1 - 2 * math.atan(3) / math.pi)
    assert row["ci_high"] - row["difference"] == pytest.approx(12.7062047 * 0.005)
    assert row["verdict"] == "not separable with 2 seeds"
    # the means beside a paired difference are over the same seeds (0 and 1), so they add up
    assert row["freezenet"] == pytest.approx(0.975) and row["snip"] == pytest.approx(0.96)
    assert row["freezenet"] - row["snip"] == pytest.approx(row["difference"])
    assert row["freezenet_std"] == pytest.approx(math.sqrt(0.00005))
    fz_sn = [next(g for g in groups if g["method"] == m) for m in ("freezenet", "snip")]
    assert results.difference_test(*fz_sn, paired=True)["seeds"] == [0, 1]
    assert results.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    table = tables.pivot_markdown(groups, "lenet5").splitlines()
    assert table[0] == "| lenet5 (3 seeds) | q = 0 (dense) | q = 0.99 |"
    assert table[2] == "| dense | 99.30 (seed 0) |  |"  # one seed: no spread, and which one
    assert table[3] == "| freezenet |  | 98.00 +- 1.00 |"
    # fewer seeds than the header's (a grid still training): the cell says which
    assert table[4] == "| snip |  | 96.00 +- 1.41 (seeds 0, 1) |"


def test_report_leaves_out_altered_metrics(tmp_path):
    for i, r in enumerate([_run("snip", 0.9, 0, 0.9), _run("snip", 0.9, 1, 0.8)]):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "metrics.json").write_text(json.dumps(r))
    bad = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    bad["test_accuracy"] = 1.0
    (tmp_path / "r1" / "metrics.json").write_text(json.dumps(bad))
    skipped = []
    runs = results.load_runs(tmp_path, skipped=skipped)
    assert [r["seed"] for r in runs] == [0] and "checksum does not match" in skipped[0]


def test_protocols_are_presets_any_field_overrides():
    paper = protocol_config("paper")
    assert (paper.lr, paper.schedule, paper.lr_step_every, paper.epochs, paper.warmup_steps,
            paper.weight_decay, paper.momentum, paper.batch_size) == \
        (0.1, "step", 25_000, 250, 0, 5e-4, 0.9, 100)
    assert protocol_config("paper", epochs=3).epochs == 3
    assert protocol_config("short") == TrainConfig()
    with pytest.raises(ValueError, match="unknown protocol 'long'"):
        protocol_config("long")
    np.testing.assert_equal(paper.resolved().rate, 0.995)


def test_cli_sweep_keeps_the_fields_each_method_uses(tmp_path, monkeypatch):
    from minifreeze.lab import cli
    seen = []
    monkeypatch.setattr(sweep, "sweep", lambda specs, *a, **k: seen.extend(specs) or
                        sweep.SweepResult([], 0, {}, 0.0))
    assert cli.main(["sweep", "--models", "lenet300", "--methods", "weightmom", "elsa",
                     "--rates", "0.9", "--prune-every", "7", "--levels", "0.99", "0.5",
                     "--epochs", "1", "--limit-train", "100", "--out", str(tmp_path)]) == 0
    by_method = {s.config.method: s.config for s in seen}
    assert by_method["weightmom"].options.prune_every == 7
    elsa = by_method["elsa"].options  # the default first phase, GMP, with the flag's schedule
    assert elsa.levels == (0.99, 0.5) and elsa.sparsifier == "gmp" and elsa.gradual.prune_every == 7
    assert by_method["dense"].options is None


def _elsa_run(seed, levels):
    """A sealed ELSA run on lenet5 (final dense network 99%) with `levels` as recorded."""
    return R.seal({"model": "lenet5", "method": "elsa", "rate": 0.0, "seed": seed,
                   "test_accuracy": 0.99, "total_params": 100, "trained_params": 100,
                   "compression": 1.0, "file_bytes": 500, "epochs": 4, "train_seconds": 40.0,
                   "levels": levels})


def test_elsa_levels_are_compared_with_the_best_pruned_method_alone():
    elsa = _elsa_run(0, [{"level": 1, "rate": 0.9, "test_accuracy": 0.95,
                          "trained_params": 10, "extracted_bytes": 80},
                         {"level": 2, "rate": 0.0, "test_accuracy": 0.99,
                          "trained_params": 100, "extracted_bytes": 450}])
    runs = [elsa, _run("snip", 0.9, 0, 0.94), _run("gmp", 0.9, 0, 0.96),
            _run("freezenet", 0.9, 0, 0.93), _run("dense", 0.0, 0, 0.992)]
    expanded = results.expand_levels(runs)
    assert [(r["method"], r["rate"], r["file_bytes"]) for r in expanded[:2]] == \
        [("elsa", 0.9, 80), ("elsa", 0.0, 450)]
    groups = results.aggregate(expanded)
    rows = results.elsa_comparison(expanded, groups)
    assert {r["method"] for r in rows} == {"elsa_snip"}  # recorded no sparsifier: SNIP's
    assert [(r["rate"], r["alone_method"], r["alone"], r["elsa"]) for r in rows] == \
        [(0.9, "gmp", 0.96, 0.95), (0.0, "dense", 0.992, 0.99)]
    assert rows[0]["freezenet"] == 0.93
    assert rows[0]["difference"] == pytest.approx(-0.01) and rows[0]["p"] is None
    assert rows[0]["verdict"] == "elsa below, one seed: no test"
    table = pages.page_tables(groups, runs)["elsa"]
    assert "| lenet5 | elsa_snip | 0.9 | 1 | 95.00 |" in table and "| gmp | 96.00 |" in table
    [cost] = results.elsa_costs(runs, rows)
    assert cost["elsa_file_bytes"] == 500 and cost["alone_file_bytes"] == 100 + 100
    assert cost["elsa_train_seconds"] == 40.0 and cost["alone_train_seconds"] == 2.0


def test_elsa_level_beside_a_method_with_fewer_seeds_is_read_over_the_paired_seeds():
    """An ELSA level over seeds 0-2 beside a method alone over seeds 0-1: the paired difference is
    over seeds 0-1, so the two means beside it are over those seeds too (the table's seed count
    says so), not the level's mean over its three."""
    def elsa(seed, level_accuracy):
        return _elsa_run(seed, [{"level": 1, "rate": 0.9, "test_accuracy": level_accuracy,
                                 "trained_params": 10, "extracted_bytes": 80}])
    runs = [elsa(0, 0.95), elsa(1, 0.97), elsa(2, 0.50),
            _run("gmp", 0.9, 0, 0.96), _run("gmp", 0.9, 1, 0.97)]
    expanded = results.expand_levels(runs)
    [row] = [r for r in results.elsa_comparison(expanded, results.aggregate(expanded))
             if r["rate"] == 0.9]
    assert row["elsa_seeds"] == 2 and row["alone_seeds"] == 2
    assert row["elsa"] == pytest.approx(0.96) and row["alone"] == pytest.approx(0.965)
    assert row["difference"] == pytest.approx(-0.005)


def test_one_seed_has_no_test():
    groups = results.aggregate([_run("freezenet", 0.99, 0, 0.97), _run("snip", 0.99, 0, 0.95)])
    [row] = results.compare(groups)
    assert row["verdict"] == "freezenet above, one seed: no test" and row["p"] is None
    assert "+2.00 (one seed)" in tables.compare_markdown(groups)


def test_a_verdict_needs_p_below_005_and_pairs_by_seed():
    """Three seeds that differ by nearly the same amount: paired, the test sees it (p < 0.05);
    Welch's unpaired test on the same numbers does not (the seeds' spread hides it)."""
    fz = [_run("freezenet", 0.99, s, a) for s, a in enumerate([0.90, 0.95, 0.99])]
    sn = [_run("snip", 0.99, s, a - d) for s, (a, d) in
          enumerate(zip([0.90, 0.95, 0.99], [0.010, 0.011, 0.012]))]
    groups = results.aggregate(fz + sn)
    [row] = results.compare(groups)
    assert row["test"] == "paired" and row["p"] < 0.05 and row["verdict"] == "freezenet above"
    assert row["ci_low"] > 0
    from scipy import stats
    welch = results.difference_test(*[g for g in groups], paired=False)
    assert welch["p"] == pytest.approx(stats.ttest_ind([r["test_accuracy"] for r in fz],
                                                       [r["test_accuracy"] for r in sn],
                                                       equal_var=False).pvalue)
    assert welch["p"] > 0.5 and welch["ci_low"] < 0 < welch["ci_high"]
    # against dense: never paired
    dense = [_run("dense", 0.0, s, a + 0.001) for s, a in enumerate([0.90, 0.95, 0.99])]
    groups = results.aggregate(fz + dense)
    by = {g["method"]: g for g in groups}
    test = results.difference_test(by["dense"], by["freezenet"], paired=False)
    assert test["test"] == "welch" and test["p"] > 0.5
    level = [{**r, "rate": 0.0} for r in fz]  # a sparse method set beside dense at one rate
    [row] = results.compare(results.aggregate(level + dense), "freezenet", "dense")
    assert row["test"] == "welch"  # compare never pairs a run with dense's


@given(d=st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=2, max_size=6),
       base=st.floats(0.5, 0.9))
def test_the_interval_excludes_zero_exactly_when_p_is_below_005(d, base):
    n = len(d)
    a = {"by_seed": {s: base + x for s, x in enumerate(d)}, "seeds": list(range(n))}
    b = {"by_seed": {s: base for s in range(n)}, "seeds": list(range(n))}
    t = results.difference_test(a, b, paired=True)
    if t["ci_low"] == t["ci_high"]:
        return  # every difference equal: no spread at all
    assume(min(abs(t["ci_low"]), abs(t["ci_high"])) > 1e-12 and abs(t["p"] - 0.05) > 1e-9)
    assert (t["ci_low"] > 0 or t["ci_high"] < 0) == (t["p"] < 0.05)


def test_trained_weights_are_reported_beside_trained_parameters():
    """x157 counts parameters (2,152 weights + 580 biases at q = 0.995); SNIP's code trains
    weights alone: the checkpoints table shows both."""
    density = [{"name": "conv1.w", "trained": 10, "total": 500},
               {"name": "conv1.b", "trained": 20, "total": 20},
               {"name": "bn1.gamma", "trained": 20, "total": 20},
               {"name": "fc1.w", "trained": 5, "total": 400}]
    runs = [{**_run("freezenet", 0.99, s, 0.98), "density": density, "best_of_checkpoints": 0.98,
             "trained_params": 55} for s in (0, 1)]
    [g] = results.aggregate(runs)
    assert g["trained_weights"] == 15 and g["trained_params"] == 55
    [row] = results.checkpoint_rows([g])
    assert (row["trained_params"], row["trained_weights"]) == (55, 15)
    assert results.trained_weights({"density": None}) is None


def test_every_run_records_its_effective_weights(tmp_path):
    """Pruned: the kept weights some input-to-output path uses (masks.effective), per layer and
    in all; frozen: every trained weight is used (its frozen weights are nonzero). At q = 0.999
    SNIP's LeNet-300-100 keeps weights no path uses."""
    from minifreeze.train import TrainConfig
    specs = sweep.expand_grid(["lenet300"], ["freezenet", "snip"], [0.999], [0],
                              base=TrainConfig(epochs=1, shards=1), limit_train=200,
                              limit_test=100)
    sweep.sweep(specs, tmp_path, progress=False)
    runs = {r["method"]: r for r in results.load_runs(tmp_path)}
    fz, snip = runs["freezenet"], runs["snip"]
    assert fz["effective_weights"] == fz["trained_weights"] == 266
    assert snip["trained_weights"] == 266 and snip["effective_weights"] < 266
    for d in snip["density"]:
        if d["masked"]:
            assert 0 <= d["effective"] <= d["trained"]
    rows = {r["method"]: r for r in results.layer_rows(list(runs.values()))}
    assert sum(rows["snip"]["effective"].values()) == snip["effective_weights"]
    assert "used" in tables.layers_markdown(list(rows.values()))
    # what each costs to store: the .mfz gzipped, and every parameter as float32 gzipped
    for r in (fz, snip):
        assert 0 < r["gzip_bytes"] <= r["file_bytes"] + 64
        assert r["dense_gzip_bytes"] <= r["dense_bytes"] + 64
    assert snip["dense_gzip_bytes"] < fz["dense_gzip_bytes"]  # pruned zeros compress, theta0 not
    text = pages.page_tables(results.aggregate(list(runs.values())))["storage"]
    assert "| lenet300 | snip | 0.999 |" in text and "dense gzip bytes" in text
    assert "| dense bytes |" in text and "1,066,440" in text  # 4 x 266,610 parameters


def test_a_vgg_run_takes_its_input_shape_from_the_data_set():
    """`--dataset fashion-mnist --model vgg` needs no --input-shape: the spec records 1x28x28;
    CIFAR-10's shape is the builder's default, so its config (and run name) gains nothing."""
    vgg = T.TrainConfig(model="vgg", method="dense", shards=1).resolved()
    spec = R.RunSpec(vgg, "fashion-mnist")
    assert spec.config.model_kwargs == {"input_shape": [1, 28, 28]}
    assert models.get_model("vgg", **spec.config.model_kwargs).input_shape == (1, 28, 28)
    assert R.RunSpec(vgg, "cifar10").config.model_kwargs == {}
    given = dataclasses.replace(vgg, model_kwargs={"input_shape": [3, 32, 32]})
    assert R.RunSpec(given, "fashion-mnist").config.model_kwargs == {"input_shape": [3, 32, 32]}
    lenet = T.TrainConfig(model="lenet5", shards=1).resolved()
    assert R.RunSpec(lenet, "fashion-mnist").config is lenet
    [spec] = [s for s in sweep.expand_grid(["vgg"], ["freezenet"], [0.99], [0], dataset="fashion-mnist")
              if s.config.method == "freezenet"]
    assert spec.config.model_kwargs == {"input_shape": [1, 28, 28]}


def test_sparse_compute_is_part_of_a_pruned_run_only():
    """`--sparse-compute` changes how a pruned network computes (to float rounding), so it names a
    different pruned run; a dense or frozen network computes densely either way, so asking for it
    there resolves to the default: the same config and name as a run without it (a sweep given
    the flag keeps the finished dense and frozen runs)."""
    for method in ("dense", "freezenet", "random_freeze"):
        plain = R.RunSpec(TrainConfig(model="vgg", method=method, rate=0.99), "fashion-mnist")
        asked = R.RunSpec(TrainConfig(model="vgg", method=method, rate=0.99,
                                      sparse_compute=True), "fashion-mnist")
        assert asked.config.sparse_compute is False and asked == plain
        assert asked.name == plain.name
    plain = R.RunSpec(TrainConfig(model="vgg", method="snip", rate=0.99), "fashion-mnist")
    asked = R.RunSpec(TrainConfig(model="vgg", method="snip", rate=0.99, sparse_compute=True),
                      "fashion-mnist")
    assert asked.config.sparse_compute is True and asked.name != plain.name


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_a_pool_worker_exits_when_its_sweep_is_killed():
    """A sweep killed by SIGKILL runs no clean-up; its pool's worker, busy with a long task, must
    not go on as an orphan (it would train into folders a restarted sweep writes too)."""
    import signal
    import subprocess
    import sys
    import time
    script = (
        "import os, time\n"
        "from minifreeze.lab import sweep\n"
        "with sweep.make_executor('process', workers=1) as ex:\n"
        "    pid = ex.submit(os.getpid).result()\n"
        "    ex.submit(time.sleep, 120)\n"
        "    print(pid, flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert not _gone(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(worker), "the worker outlived its sweep"
    finally:
        parent.kill()
