"""One contract, every trainer: `trainer.Trainer` checked on `HostTrainer` and on
`cuda_train.DeviceTrainer` (the latter on a GPU or Numba's simulator, `make test-cuda-sim`).

A difference between the two trainers in defaults, in what `params` gives, in what `last_good()`
holds after a divergence at any step, in the finiteness checks or in `set_masks` is a failing test
here."""

import inspect
import os

import numpy as np
import pytest

from minifreeze import backend
from minifreeze.masks import Masks
from minifreeze.models import Model, conv, flatten, linear, maxpool, relu
from minifreeze.trainer import OPTIMISER_DEFAULTS, HostTrainer, NonFiniteStep, Trainer
from tests.strategies import rng_from

_cuda = backend.available_backends()["cuda"]


def _device_param():
    if _cuda is not None and os.environ.get("MINIFREEZE_REQUIRE_CUDA") == "1":
        raise RuntimeError(f"MINIFREEZE_REQUIRE_CUDA=1 but the cuda backend cannot run: {_cuda}")
    return pytest.param("device", marks=[pytest.mark.cuda, pytest.mark.skipif(
        _cuda is not None, reason=f"cuda: {_cuda}")])


KINDS = ["host", _device_param()]


def make(kind, model, params, masks=None, **hp):
    if kind == "host":
        return HostTrainer(model, params, masks, shards=1, **hp)
    from minifreeze.cuda_train import DeviceTrainer
    return DeviceTrainer(model, params, masks, **hp)


def tiny():
    model = Model("tiny", (1, 5, 5), (conv("conv1", 1, 2, 3), relu("relu1"),
                                       maxpool("pool1", 3), flatten(), linear("fc1", 2, 3)))
    rng = rng_from(11)
    params = {k: (rng.standard_normal(s) * 0.5).astype(np.float32)
              for k, s in model.param_shapes().items()}
    masks = Masks({k: (rng.random(model.param_shapes()[k]) < 0.5).astype(np.float32)
                   for k in model.weight_names()})
    x = rng.standard_normal((4, 1, 5, 5)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    return model, params, masks, x, y


def same(a, b):
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_both_trainers_have_the_same_optimiser_defaults():
    from minifreeze import cuda_train
    for cls in (HostTrainer, cuda_train.DeviceTrainer):
        sig = inspect.signature(cls.__init__).parameters
        assert {k: sig[k].default for k in OPTIMISER_DEFAULTS} == OPTIMISER_DEFAULTS, cls


@pytest.mark.parametrize("kind", KINDS)
def test_params_are_copies_in_the_models_order(kind):
    model, params, masks, x, y = tiny()
    t = make(kind, model, params, masks)
    assert isinstance(t, Trainer)
    before = t.params
    assert list(before) == list(model.param_shapes()) and same(before, params)
    before["conv1.w"][...] = 123.0  # writing into a snapshot reaches nothing
    assert same(t.params, params)
    t.step(x, y, 0.1)
    assert (before["conv1.w"] == 123.0).all()  # and a step does not reach the snapshot
    assert np.array_equal(before["fc1.w"], params["fc1.w"])
    assert not same(t.params, params)  # it trained
    assert same(params, tiny()[1])  # the caller's arrays are untouched


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("at", [1, 2, 3])
def test_last_good_after_a_nan_loss_at_any_step(kind, at):
    model, params, masks, x, y = tiny()
    t = make(kind, model, params, masks)
    seen = [t.params]
    for _ in range(at - 1):
        t.step(x, y, 0.05)
        seen.append(t.params)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteStep, match="loss is nan"):
        t.step(bad, y, 0.05)
    # nothing applied: the parameters are those after step at - 1, whose loss was finite
    assert same(t.params, seen[-1]) and same(t.last_good(), seen[-2] if at > 1 else seen[0])


@pytest.mark.parametrize("kind", KINDS)
def test_an_update_that_overflows_is_caught_and_last_good_is_before_it(kind):
    model, params, masks, x, y = tiny()
    t = make(kind, model, params, masks)
    t.step(x, y, 0.05)
    good = t.params
    with pytest.raises(NonFiniteStep, match="the update made a parameter NaN or infinite"):
        t.step(x, y, float("inf"))  # a finite loss, an update to +-inf
    assert same(t.last_good(), good)


@pytest.mark.parametrize("kind", KINDS)
def test_set_masks_prunes_and_clears_velocity_the_same_way(kind):
    model, params, masks, x, y = tiny()
    t = make(kind, model, params, None)
    t.step(x, y, 0.1)
    t.set_masks(masks, prune=True)
    assert t.masks is not None and list(t.masks) == list(masks)
    p = t.params
    for k, m in masks.items():
        assert (p[k][m == 0] == 0).all() and not np.signbit(p[k][m == 0]).any()
    t.step(x, y, 0.1)
    p2 = t.params
    for k, m in masks.items():  # pruned entries stay exactly +0.0; kept ones train
        assert (p2[k][m == 0] == 0).all() and not np.signbit(p2[k][m == 0]).any()
        assert not np.array_equal(p2[k][m == 1], p[k][m == 1])
    assert t.last_grads is None or set(t.last_grads) == set(params)


@pytest.mark.parametrize("kind", KINDS)
def test_both_trainers_take_the_same_steps(kind):
    """Three steps with the default optimiser: the host's numbers, to float32 rounding."""
    model, params, masks, x, y = tiny()
    host = make("host", model, params, masks)
    other = make(kind, model, params, masks)
    for lr in (0.1, 0.05, 0.02):
        a, b = host.step(x, y, lr), other.step(x, y, lr)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
        assert a[1] == b[1]
    for k, v in host.params.items():
        np.testing.assert_allclose(other.params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(other.predict(x), host.predict(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prune", [False, True])
def test_a_trainer_loaded_from_state_goes_on_bit_for_bit(kind, prune):
    """state() after some steps, load_state into a fresh trainer: the next steps are equal, bit
    for bit (what a resumed run relies on), and the state holds copies, not views."""
    model, params, masks, x, y = tiny()
    a = make(kind, model, params, masks)
    a.step(x, y, 0.1)
    a.set_masks(Masks({k: m * (np.arange(m.size).reshape(m.shape) % 3 > 0)
                       for k, m in masks.items()}), prune=prune)
    a.step(x, y, 0.1)
    state = a.state()
    b = make(kind, model, params, masks)
    b.load_state(state)
    assert same(b.params, a.params) and same(dict(b.masks), dict(a.masks))
    for _ in range(3):
        a.step(x, y, 0.05)
        b.step(x, y, 0.05)
    assert same(a.params, b.params)
    assert same(b.state()["velocity"], a.state()["velocity"])
    assert not same(state["params"], a.params)  # the saved state did not move with the trainer
    bad = {**state, "velocity": {k: v[..., :1] for k, v in state["velocity"].items()}}
    with pytest.raises(ValueError, match="velocity must be"):
        b.load_state(bad)
