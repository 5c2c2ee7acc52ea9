"""LeNet-5 with conv ReLU as a recorded network, SNIP's checkpoint rule, and where a run ran."""

import json

import numpy as np
import pytest

from minifreeze.lab import environment, pages, results, runs as R, sweep, tables
from minifreeze.lab.cli import main
from minifreeze.data import load_dataset, limit_test, limit_train
from minifreeze.train import TrainConfig, protocol_config, train

BASE = TrainConfig(epochs=1, batch_size=50, warmup_steps=0, lr=0.05, shards=1)


def test_conv_relu_is_checked_named_and_defaulted():
    c = TrainConfig(model="lenet5", model_kwargs={"conv_relu": True}).resolved()
    assert c.model_kwargs == {"conv_relu": True}
    # conv_relu False is the default network: one config, one run folder
    assert TrainConfig(model_kwargs={"conv_relu": False}).resolved() == TrainConfig().resolved()
    with pytest.raises(ValueError, match="lenet300: unknown keyword argument 'conv_relu'"):
        TrainConfig(model="lenet300", model_kwargs={"conv_relu": True}).resolved()
    with pytest.raises(ValueError, match="conv_relu must be true or false"):
        TrainConfig(model_kwargs={"conv_relu": 1}).resolved()
    relu = sweep.expand_grid(["lenet5"], ["snip"], [0.99], [0],
                             base=TrainConfig(shards=1, model_kwargs={"conv_relu": True}))
    caffe = sweep.expand_grid(["lenet5"], ["snip"], [0.99], [0], base=TrainConfig(shards=1))
    assert relu[1].name.startswith("lenet5_relu-snip-q0.99-s0-")
    assert caffe[1].name.startswith("lenet5-snip-q0.99-s0-")
    with pytest.raises(sweep.SweepError, match="unknown keyword argument 'conv_relu'"):
        sweep.expand_grid(["lenet300"], ["snip"], [0.99], [0],
                          base=TrainConfig(model_kwargs={"conv_relu": True}))


def test_cli_conv_relu_applies_to_lenet5_only(tmp_path, capsys):
    status = main(["train", "--model", "lenet300", "--conv-relu", "--method", "dense",
                   "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert status == 2 and "--conv-relu applies to lenet5 only, not lenet300" in err


def _run(network_kwargs, method, seed, acc, env=None):
    return R.seal({"model": "lenet5", "method": method, "rate": 0.99, "seed": seed,
                        "test_accuracy": acc, "trained_params": 10, "compression": 2.0,
                        "file_bytes": 100, "epochs": 3, "train_seconds": 1.0,
                        "run": f"{method}-{seed}-{bool(network_kwargs)}",
                        "config": {"model_kwargs": network_kwargs}, "environment": env})


def test_report_keeps_caffes_network_and_the_conv_relu_one_apart():
    runs = [_run({}, "snip", 0, 0.90), _run({}, "snip", 1, 0.92),
            _run({"conv_relu": True}, "snip", 0, 0.98)]
    groups = results.aggregate(runs)
    by = {g["model"]: g for g in groups}
    assert set(by) == {"lenet5", "lenet5_relu"}
    assert by["lenet5"]["mean_accuracy"] == pytest.approx(0.91) and by["lenet5"]["seeds"] == [0, 1]
    assert by["lenet5_relu"]["mean_accuracy"] == 0.98


def test_report_says_when_runs_come_from_several_environments():
    env = environment.environment(shards=1, backend="numba")
    arch = "Prescott" if "Prescott" not in str(env["blas"]) else "Haswell"  # not this machine's
    other = {**env, "blas": [{"internal_api": "openblas", "version": "0.3.21",
                              "architecture": arch, "threading_layer": "pthreads"}]}
    one = [_run({}, "snip", 0, 0.9, env), _run({}, "snip", 1, 0.9, env)]
    assert "environments" not in tables.environments_markdown(one)
    assert tables.environments_markdown(one).startswith("- 2 runs: ")
    text = tables.environments_markdown(one + [_run({}, "snip", 2, 0.9, other)])
    assert "come from 2 environments" in text and arch in text
    assert results.environments([_run({}, "snip", 0, 0.9)]) == {"unrecorded": 1}
    assert env["shards"] == 1 and env["numpy"] == np.__version__ and env["blas"]


@pytest.fixture(scope="module")
def tiny():
    return limit_test(limit_train(load_dataset("mnist"), 200), 100)


def test_checkpoints_are_the_last_ones_and_change_nothing(tiny):
    # 200 images, batch 50: 4 steps an epoch, 8 in all; every 2 steps, the last 3: 4, 6, 8
    c = TrainConfig(model="lenet5", method="freezenet", rate=0.9, epochs=2, batch_size=50,
                    warmup_steps=0, lr=0.05, shards=1, model_kwargs={"conv_relu": True})
    with_ = train(TrainConfig(**{**c.__dict__, "checkpoint_every": 2, "checkpoint_last": 3}),
                  tiny, progress=False)
    without = train(c, tiny, progress=False)
    assert [r["step"] for r in with_.checkpoints] == [4, 6, 8]
    assert with_.checkpoints[-1]["test_accuracy"] == with_.history[-1]["test_accuracy"]
    assert without.checkpoints is None
    assert all(np.array_equal(with_.params[k], without.params[k]) for k in with_.params)
    with pytest.raises(ValueError, match="checkpoint_every: expected None or a whole number"):
        TrainConfig(checkpoint_every=0).resolved()
    assert protocol_config("paper").checkpoint_every == 1000


def test_a_run_records_its_network_environment_and_checkpoints(tmp_path):
    spec = sweep.expand_grid(["lenet5"], ["snip"], [0.9], [0],
                             base=TrainConfig(epochs=1, batch_size=50, warmup_steps=0, lr=0.05,
                                              shards=1, checkpoint_every=2,
                                              model_kwargs={"conv_relu": True}),
                             limit_train=200, limit_test=100)[1]
    m = R.run(spec, tmp_path / spec.name, progress=False)
    assert m["network"] == "lenet5_relu" and m["environment"]["shards"] == 1
    assert m["best_of_checkpoints"] == max(r["test_accuracy"] for r in m["checkpoints"])
    assert R.finished(tmp_path / spec.name, spec) == m
    saved = json.loads((tmp_path / spec.name / "metrics.json").read_text())
    assert saved["environment"]["cpu"] == environment.cpu_model()


def test_snips_rule_and_the_fraction_of_dense_are_reported():
    def run(method, seed, final, best):
        return {**_run({"conv_relu": True}, method, seed, final), "best_of_checkpoints": best,
                "rate": 0.0 if method == "dense" else 0.995}
    runs = [run("dense", 0, 0.990, 0.992), run("dense", 1, 0.994, 0.994),
            run("freezenet", 0, 0.980, 0.985), run("freezenet", 1, 0.984, 0.985)]
    rows = {r["method"]: r for r in results.checkpoint_rows(results.aggregate(runs))}
    assert rows["freezenet"]["final_of_dense"] == pytest.approx(0.982 / 0.992)
    assert rows["freezenet"]["best_of_last_of_dense"] == pytest.approx(0.985 / 0.993)
    assert rows["dense"]["final_of_dense"] is None and rows["freezenet"]["dense_seeds"] == [0, 1]
    text = pages.report_markdown(runs, results.aggregate(runs), [])
    assert "SNIP's rule" in text and "| 0.9899 |" in text  # 0.982 / 0.992
    # runs without checkpoints have no such table
    assert results.checkpoint_rows(results.aggregate([_run({}, "snip", 0, 0.9)])) == []
    # a dense seed the method has no run for is not mixed in
    stuck = runs + [run("dense", 2, 0.1135, 0.1135)]
    rows = {r["method"]: r for r in results.checkpoint_rows(results.aggregate(stuck))}
    assert rows["freezenet"]["final_of_dense"] == pytest.approx(0.982 / 0.992)
    assert rows["dense"]["final"] == pytest.approx((0.990 + 0.994 + 0.1135) / 3)
    # but one that did not train (here one that never left chance) counts: no rule leaves a
    # run out after it ran
    third = stuck + [run("freezenet", 2, 0.983, 0.986)]
    rows = {r["method"]: r for r in results.checkpoint_rows(results.aggregate(third))}
    dense3 = (0.990 + 0.994 + 0.1135) / 3
    assert rows["freezenet"]["final_of_dense"] == pytest.approx(0.982333 / dense3, rel=1e-5)
    assert rows["freezenet"]["dense_seeds"] == [0, 1, 2]
    # a dense seed with no finished run (diverged, or not run): no baseline, no ratio
    alone = [{**_run({"conv_relu": True}, "dense", 3, 0.1), "diverged": {"step": 13}},
             run("freezenet", 3, 0.983, 0.986)]
    del alone[0]["test_accuracy"]
    rows = {r["method"]: r for r in results.checkpoint_rows(results.aggregate(alone))}
    assert rows["freezenet"]["final_of_dense"] is None and rows["freezenet"]["dense_seeds"] == []
    assert "| - | none |" in tables.checkpoint_table(results.aggregate(alone)).splitlines()[-1]


def test_elsa_variants_are_grouped_apart():
    def elsa(sparsifier, seed, acc):
        return {**_run({}, "elsa", seed, acc), "rate": 0.0,
                "config": {"model_kwargs": {}, "sparsifier": sparsifier}}
    groups = results.aggregate([elsa("snip", 0, 0.9), elsa("gmp", 0, 0.95), elsa("gmp", 1, 0.97)])
    by = {g["method"]: g for g in groups}
    assert set(by) == {"elsa_snip", "elsa_gmp"} and by["elsa_gmp"]["seeds"] == [0, 1]
