"""Every layer's backward pass against finite differences (float64), over drawn shapes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifreeze import layers as L
from minifreeze.gradcheck import (complex_step_gradient, numerical_gradient,
                                  numerical_gradient_array, rel_error)
from minifreeze.losses import softmax_cross_entropy
from tests.gradutil import assert_grad_close
from tests.strategies import (away_from_zero, conv_cases, distinct_values, pool_cases, rng_from,
                              seeds)

@given(n=st.integers(1, 4), d=st.integers(1, 6), m=st.integers(1, 5), seed=seeds)
def test_linear_backward(n, d, m, seed):
    rng = rng_from(seed)
    x, w, b = rng.standard_normal((n, d)), rng.standard_normal((m, d)), rng.standard_normal(m)
    dout = rng.standard_normal((n, m))
    _, cache = L.linear_forward(x, w, b)
    dx, dw, db = L.linear_backward(dout, cache)
    assert_grad_close(dx, numerical_gradient_array(lambda v: L.linear_forward(v, w, b)[0], x, dout))
    assert_grad_close(dw, numerical_gradient_array(lambda v: L.linear_forward(x, v, b)[0], w, dout))
    assert_grad_close(db, numerical_gradient_array(lambda v: L.linear_forward(x, w, v)[0], b, dout))
    # Linear is analytic: the complex step agrees to machine precision.
    cs = complex_step_gradient(lambda v: np.sum(L.linear_forward(x, v, b)[0] * dout), w)
    assert rel_error(dw, cs) < 1e-12


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=seeds)
def test_relu_backward(shape, seed):
    rng = rng_from(seed)
    x = away_from_zero(rng, shape)
    dout = rng.standard_normal(shape)
    _, cache = L.relu_forward(x)
    dx = L.relu_backward(dout, cache)
    assert_grad_close(dx, numerical_gradient_array(lambda v: L.relu_forward(v)[0], x, dout))


@given(case=conv_cases(), seed=seeds)
def test_conv_backward(case, seed):
    rng = rng_from(seed)
    x, w, b = case.arrays(rng)
    s, p = case.stride, case.pad
    out, cache = L.conv_forward(x, w, b, s, p)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = L.conv_backward(dout, cache)
    assert_grad_close(dx, numerical_gradient_array(lambda v: L.conv_forward(v, w, b, s, p)[0], x, dout))
    assert_grad_close(dw, numerical_gradient_array(lambda v: L.conv_forward(x, v, b, s, p)[0], w, dout))
    assert_grad_close(db, numerical_gradient_array(lambda v: L.conv_forward(x, w, v, s, p)[0], b, dout))


@given(case=conv_cases(), seed=seeds)
def test_conv_complex_step(case, seed):
    rng = rng_from(seed)
    x, w, b = case.arrays(rng)
    out, cache = L.conv_forward(x, w, b, case.stride, case.pad)
    dout = rng.standard_normal(out.shape)
    _, dw, _ = L.conv_backward(dout, cache)
    cs = complex_step_gradient(
        lambda v: np.sum(L.conv_forward(x.astype(v.dtype), v, b.astype(v.dtype),
                                        case.stride, case.pad)[0] * dout), w)
    assert rel_error(dw, cs) < 1e-12


@given(case=conv_cases(), seed=seeds)
def test_conv_matches_naive_loops(case, seed):
    rng = rng_from(seed)
    x, w, b = case.arrays(rng)
    out, cache = L.conv_forward(x, w, b, case.stride, case.pad)
    ref, ref_cache = L.conv_forward_naive(x, w, b, case.stride, case.pad)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(L.conv_backward(dout, cache), L.conv_backward_naive(dout, ref_cache)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@given(case=pool_cases(), seed=seeds)
def test_maxpool_backward(case, seed):
    shape, size, stride = case
    rng = rng_from(seed)
    x = distinct_values(rng, shape)
    out, cache = L.maxpool_forward(x, size, stride)
    dout = rng.standard_normal(out.shape)
    dx = L.maxpool_backward(dout, cache)
    num = numerical_gradient_array(lambda v: L.maxpool_forward(v, size, stride)[0], x, dout)
    assert_grad_close(dx, num)


@given(case=pool_cases(), seed=seeds)
def test_maxpool_forward_is_window_max(case, seed):
    shape, size, stride = case
    x = rng_from(seed).standard_normal(shape)
    out, _ = L.maxpool_forward(x, size, stride)
    n, c, oh, ow = out.shape
    for r in range(oh):
        for s in range(ow):
            window = x[:, :, r * stride:r * stride + size, s * stride:s * stride + size]
            np.testing.assert_array_equal(out[:, :, r, s], window.max(axis=(2, 3)))


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=seeds)
def test_flatten_roundtrip(shape, seed):
    x = rng_from(seed).standard_normal(shape)
    out, cache = L.flatten_forward(x)
    assert out.shape == (shape[0], int(np.prod(shape[1:])))
    np.testing.assert_array_equal(L.flatten_backward(out, cache), x)


@given(spatial=st.booleans(), train=st.booleans(), n=st.integers(3, 5), c=st.integers(1, 3),
       hw=st.integers(1, 3), seed=seeds)
def test_batchnorm_backward(spatial, train, n, c, hw, seed):
    # n >= 3: with two samples per channel xhat is always +-1 and dx vanishes, a degenerate case.
    rng = rng_from(seed)
    shape = (n, c, hw, hw) if spatial else (n, c)
    x = rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    dout = rng.standard_normal(shape)

    def f(xv, g, bt):
        return L.batchnorm_forward(xv, g, bt, rm.copy(), rv.copy(), train=train)[0]

    _, cache = L.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), train=train)
    dx, dgamma, dbeta = L.batchnorm_backward(dout, cache)
    assert_grad_close(dx, numerical_gradient_array(lambda v: f(v, gamma, beta), x, dout), rtol=1e-6)
    assert_grad_close(dgamma, numerical_gradient_array(lambda v: f(x, v, beta), gamma, dout))
    assert_grad_close(dbeta, numerical_gradient_array(lambda v: f(x, gamma, v), beta, dout))


def test_batchnorm_running_statistics():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 4, 4)) * 2 + 5
    rm, rv = np.zeros(3), np.ones(3)
    out, _ = L.batchnorm_forward(x, np.ones(3), np.zeros(3), rm, rv, train=True, momentum=0.1)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=(0, 2, 3)))
    m = 8 * 16
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * m / (m - 1))
    ev, _ = L.batchnorm_forward(x, np.ones(3), np.zeros(3), rm, rv, train=False)
    np.testing.assert_allclose(ev, (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5))
    with pytest.raises(ValueError, match="eval mode needs running_mean"):
        L.batchnorm_forward(x, np.ones(3), np.zeros(3), train=False)


@given(n=st.integers(1, 5), k=st.integers(1, 6), seed=seeds)
def test_softmax_cross_entropy_gradient(n, k, seed):
    rng = rng_from(seed)
    logits = rng.standard_normal((n, k)) * 3
    y = rng.integers(0, k, n)
    _, dlogits = softmax_cross_entropy(logits, y)
    assert_grad_close(dlogits, numerical_gradient(lambda v: softmax_cross_entropy(v, y)[0], logits))
    cs = complex_step_gradient(lambda v: softmax_cross_entropy(v, y)[0], logits)
    assert rel_error(dlogits, cs) < 1e-12


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 1e4 - 1.0, 0.0]])
    y = np.array([1, 0])
    loss, dlogits = softmax_cross_entropy(logits, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    # Row 0: log-prob of class 1 is -1e4; row 1: log(1 + e^-1).
    np.testing.assert_allclose(loss, (1e4 + np.log1p(np.exp(-1.0))) / 2, rtol=1e-12)
    shifted, dshifted = softmax_cross_entropy(logits - 1e4, y)
    np.testing.assert_allclose(shifted, loss, rtol=1e-12)
    np.testing.assert_allclose(dshifted, dlogits, atol=1e-15)
    assert np.isfinite(softmax_cross_entropy(np.float32([[1e4, -1e4]]), np.array([1]))[0])


@given(case=conv_cases(), seed=seeds)
def test_weight_mask_zeroes_exactly_the_masked_gradient(case, seed):
    rng = rng_from(seed)
    x, w, b = case.arrays(rng)
    out, cache = L.conv_forward(x, w, b, case.stride, case.pad)
    dout = rng.standard_normal(out.shape)
    m = (rng.random(w.shape) < 0.3).astype(w.dtype)
    _, dw_dense, _ = L.conv_backward(dout, cache)
    _, dw, _ = L.conv_backward(dout, cache, w_mask=m)
    np.testing.assert_allclose(dw, dw_dense * m, rtol=1e-12, atol=1e-12)
    assert np.all(dw[m == 0] == 0)
