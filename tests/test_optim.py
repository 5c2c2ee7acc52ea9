"""Masked SGD: frozen entries bit for bit, pruned entries exactly 0, the update formula, schedules."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifreeze import backend, optim

from .strategies import rng_from, seeds


def _case(seed, shape, density):
    rng = rng_from(seed)
    theta = rng.standard_normal(shape).astype(np.float32)
    mask = (rng.random(shape) < density).astype(np.float32)
    return rng, theta, mask


hyper = st.tuples(st.floats(1e-4, 0.5), st.floats(0.0, 0.99), st.floats(0.0, 1e-2), st.booleans())


@given(seeds, st.tuples(st.integers(1, 7), st.integers(1, 9)), st.floats(0.0, 1.0), hyper,
       st.integers(1, 6), st.booleans())
def test_frozen_and_pruned_entries_never_change(seed, shape, density, hp, steps, prune):
    rng, theta0, mask = _case(seed, shape, density)
    lr, momentum, wd, nesterov = hp
    theta = theta0 * mask if prune else theta0.copy()
    start = theta.copy()
    opt = optim.MaskedSGD({"w": theta}, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    for _ in range(steps):
        grad = rng.standard_normal(shape).astype(np.float32) * 10
        opt.step({"w": theta}, {"w": grad}, {"w": mask}, lr)
    off = mask == 0
    assert np.array_equal(theta[off].view(np.uint32), start[off].view(np.uint32))
    assert (opt.velocity["w"][off] == 0).all()
    if prune:
        assert (theta[off] == 0).all()


@given(seeds, hyper)
def test_update_matches_the_formula_and_a_full_mask_equals_none(seed, hp):
    lr, momentum, wd, nesterov = hp
    rng, theta, _ = _case(seed, (5, 4), 1.0)
    grad = rng.standard_normal((5, 4)).astype(np.float32)
    v0 = rng.standard_normal((5, 4)).astype(np.float32)
    a, va = theta.copy(), v0.copy()
    b, vb = theta.copy(), v0.copy()
    optim.masked_sgd_update(a, grad, va, None, lr, momentum, wd, nesterov)
    optim.masked_sgd_update(b, grad, vb, np.ones((5, 4), np.float32), lr, momentum, wd, nesterov)
    assert np.array_equal(a, b) and np.array_equal(va, vb)
    t64, g64, v64 = theta.astype(np.float64), grad.astype(np.float64), v0.astype(np.float64)
    g = g64 + wd * t64
    v = momentum * v64 + g
    step = g + momentum * v if nesterov else v
    np.testing.assert_allclose(a, t64 - lr * step, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(va, v, rtol=1e-5, atol=1e-6)


def test_optimiser_goes_through_the_backend_table():
    with backend.use_backend("numpy") as k:
        assert k.masked_sgd_update is optim.masked_sgd_update


def test_shape_mismatch_is_a_clear_error():
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected a mask of shape \(2, 3\)"):
        optim.masked_sgd_update(z, z, z.copy(), np.ones(3, np.float32), 0.1, 0.9, 0.0, False)


def test_schedules():
    assert optim.cosine_lr(0, 100, 0.1) == 0.1
    assert abs(optim.cosine_lr(50, 100, 0.1) - 0.05) < 1e-12
    assert optim.cosine_lr(100, 100, 0.1) == 0.0
    assert optim.step_lr(25, 100, 0.1, every=25) == pytest.approx(0.01)
    s = optim.make_schedule("step", 0.1, 90)
    assert s(29) == 0.1 and s(30) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        optim.make_schedule("linear", 0.1, 10)


def test_warmup_ramps_linearly_then_hands_over():
    s = optim.make_schedule("cosine", 0.1, 100, warmup=10)
    assert s(0) == pytest.approx(0.01) and s(4) == pytest.approx(0.05 * optim.cosine_lr(4, 100, 1))
    assert s(10) == optim.cosine_lr(10, 100, 0.1)
    assert optim.make_schedule("constant", 0.1, 100)(0) == 0.1
