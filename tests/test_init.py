"""Seed-based initialisation: the stream is pinned, regenerable and scheme-correct."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifreeze import init
from minifreeze.models import get_model

from .strategies import seeds


def test_splitmix64_matches_the_published_stream():
    # SplitMix64 with state 0 (our key for seed 0) starts 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4
    assert [int(w) for w in init.splitmix64(0, 0, 2)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_golden_values_lenet5_seed_42():
    p = init.init_params(get_model("lenet5"), 42)
    assert p["conv1.w"].dtype == np.float32
    golden = np.array([0.03351793810725212, 0.053084809333086014, 0.11161065101623535],
                      dtype=np.float32)
    assert np.array_equal(p["conv1.w"].ravel()[:3], golden)
    assert p["fc2.w"].ravel()[-1] == np.float32(0.024000952020287514)
    k = init.init_params(get_model("lenet5"), 42, "kaiming")
    assert k["conv1.w"].ravel()[0] == np.float32(0.15359848737716675)


@given(seeds, st.integers(0, 50), st.integers(1, 50))
def test_counter_continues_across_calls(seed, start, count):
    whole = init.splitmix64(seed, 0, start + count)
    assert np.array_equal(init.splitmix64(seed, start, count), whole[start:])


@given(seeds)
def test_theta0_regenerates_bit_for_bit_and_ignores_global_state(seed):
    model = get_model("lenet300")
    a = init.init_params(model, seed)
    np.random.seed(seed % 1000)  # global NumPy state must not matter
    np.random.random(10)
    b = init.init_params(model, seed)
    assert list(a) == list(model.param_shapes())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all((a[k] == 0).all() for k in a if k.endswith(".b"))


def test_schemes_have_the_expected_spread_and_bn_starts_at_identity():
    model = get_model("vgg", batch_norm=True, input_shape=(1, 28, 28))
    p = init.init_params(model, 7, "kaiming")
    w = p["conv3.w"]  # (64, 32, 3, 3): fan_in 288
    assert abs(w.std() / np.sqrt(2 / 288) - 1) < 0.02
    assert (p["bn1.gamma"] == 1).all() and (p["bn1.beta"] == 0).all()
    x = init.init_params(get_model("lenet300"), 7)["fc1.w"]  # (300, 784)
    assert abs(x.std() / np.sqrt(2 / (784 + 300)) - 1) < 0.01
    assert abs(x.mean()) < 1e-3


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_bad_seed_is_a_clear_error(seed):
    with pytest.raises(ValueError, match="seed: expected an integer in"):
        init.init_params(get_model("lenet300"), seed)


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown init scheme 'glorot'"):
        init.init_params(get_model("lenet300"), 0, "glorot")
