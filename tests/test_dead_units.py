"""Dead units: counted per ReLU layer on a probe batch, recorded by runs, changing nothing."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifreeze import init, models
from minifreeze import train as T
from minifreeze.data import limit_train, load_dataset
from minifreeze.dead_units import DeadUnitsProbe, dead_share, dead_units, relu_layers
from tests.strategies import rng_from


def test_the_units_are_those_a_relu_reads():
    assert list(relu_layers(models.get_model("lenet5")).values()) == ["fc1"]  # Caffe's: no conv ReLU
    assert list(relu_layers(models.get_model("lenet5", conv_relu=True)).values()) == \
        ["conv1", "conv2", "fc1"]
    assert list(relu_layers(models.get_model("lenet300")).values()) == ["fc1", "fc2"]
    vgg = models.get_model("vgg", input_shape=(1, 28, 28), batch_norm=True)
    assert list(relu_layers(vgg).values()) == [f"conv{i}" for i in range(1, 7)] + ["fc1"]


def test_hand_made_dead_channels_and_neurons_are_counted_exactly():
    model = models.get_model("lenet5", conv_relu=True)
    params = init.init_params(model, 0, "lecun")
    x = rng_from(1).standard_normal((64, 1, 28, 28)).astype(np.float32)
    assert dead_units(model, params, x)["conv2"][0] == 0
    for k in (3, 17, 40):  # a channel with no weights and a negative bias never fires
        params["conv2.w"][k] = 0
        params["conv2.b"][k] = -1.0
    params["fc1.b"][:] = 10.0  # every other neuron fires
    params["fc1.w"][:10] = 0
    params["fc1.b"][:10] = -0.5
    params["fc1.b"][10] = 0.0  # zero input and zero bias: output 0, not positive: dead too
    params["fc1.w"][10] = 0
    counts = dead_units(model, params, x)
    assert counts["conv2"] == (3, 50) and counts["fc1"] == (11, 500) and counts["conv1"] == (0, 20)
    assert dead_share(counts)["conv2"] == pytest.approx(0.06)
    params["conv2.b"][3] = 1e-3  # a positive bias alone keeps a channel alive
    assert dead_units(model, params, x)["conv2"] == (2, 50)


@given(n=st.integers(1, 40), batch=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_more_probe_images_never_raise_the_count_and_batches_do_not_matter(n, batch, seed):
    model = models.get_model("lenet300")
    rng = rng_from(seed)
    params = {k: (rng.standard_normal(s) * 0.3 - (0.2 if k.endswith(".b") else 0)
                  ).astype(np.float32) for k, s in model.param_shapes().items()}
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    few, all_ = dead_units(model, params, x[: max(1, n // 2)]), dead_units(model, params, x)
    assert all(all_[k][0] <= few[k][0] for k in all_)
    assert dead_units(model, params, x, batch_size=batch) == all_
    z = x.reshape(n, -1) @ params["fc1.w"].T + params["fc1.b"]  # (n, 300), fc1's input to relu1
    assert all_["fc1"] == (int((z.max(axis=0) <= 0).sum()), 300)


@pytest.fixture(scope="module")
def small():
    ds = load_dataset("mnist")
    return dataclasses.replace(limit_train(ds, 500), x_test=ds.x_test[:200], y_test=ds.y_test[:200])


def test_a_run_records_dead_units_at_step_100_epoch_1_and_the_end(small):
    c = T.TrainConfig(model="lenet5", method="freezenet", rate=0.9, epochs=3, batch_size=10,
                      seed=0, model_kwargs={"conv_relu": True}, shards=1)
    result = T.train(c, small, progress=False)
    assert [(r["at"], r["step"]) for r in result.dead_units] == \
        [("epoch 1", 50), ("step 100", 100), ("end", 150)]
    for r in result.dead_units:
        assert r["units"] == {"conv1": 20, "conv2": 50, "fc1": 500}
        assert all(0 <= r["dead"][k] <= r["units"][k] for k in r["units"])
    end = dead_units(result.model, result.params, small.x_train[:1000])
    assert result.dead_units[-1]["dead"] == {k: d for k, (d, _) in end.items()}


def test_the_probe_changes_nothing(small):
    c = T.TrainConfig(model="lenet5", method="snip", rate=0.9, epochs=1, seed=3,
                      model_kwargs={"conv_relu": True}, shards=1).resolved()
    a = T.train_steps(c, small, T.prepare(c, small), progress=False)
    setup = T.prepare(c, small)
    probe = DeadUnitsProbe(setup.model, small.x_train[:100], steps=(1, 2, 3))
    b = T.train_steps(c, small, setup, progress=False, hooks=[probe])
    assert len(probe.rows) == 4
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_the_report_shows_dead_units_per_group():
    from minifreeze.lab import results, tables

    def run(seed, conv2_end):
        probes = [{"at": at, "step": t, "dead": {"conv2": d, "fc1": 0}, "units": {"conv2": 50, "fc1": 500}}
                  for at, t, d in (("step 100", 100, 10), ("epoch 1", 600, 20), ("end", 1200, conv2_end))]
        return {"model": "lenet5", "network": "lenet5_relu", "method": "dense", "rate": 0.0,
                "seed": seed, "test_accuracy": 0.99, "dead_units": probes}
    rows = results.dead_unit_rows([run(0, 25), run(1, 50), {"method": "dense", "rate": 0.0}])
    [row] = rows
    assert row["seeds"] == [0, 1] and row["at"]["end"]["conv2"] == (0.75, 1.0)
    table = tables.dead_units_markdown(rows).splitlines()
    assert table[0] == "| model | method | rate | seeds | step 100 | epoch 1 | end |"
    assert table[2] == ("| lenet5_relu | dense | 0.0 | 0, 1 | conv2 20% (20%), fc1 0% (0%) | "
                        "conv2 40% (40%), fc1 0% (0%) | conv2 75% (100%), fc1 0% (0%) |")
