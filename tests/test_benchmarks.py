"""The measuring scripts under benchmarks/ that feed committed numbers: what they time is what
the library runs, and they leave the library as they found it."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from minifreeze import layers

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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
