"""Every available backend against the NumPy reference, the sparse weight gradient against the
masked dense one, and the fused masked SGD update against its contract.

Shapes are small and drawn by hypothesis; the numba kernels compile once per process (per dtype)
and load from the on-disk cache after that, so the examples cost microseconds each.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifreeze import backend
from minifreeze import fast_layers as F
from minifreeze import layers as L
from minifreeze.masks import Masks
from minifreeze.gradcheck import numerical_gradient_array
from minifreeze.optim import masked_sgd_update
from tests.gradutil import assert_grad_close
from tests.strategies import conv_cases, distinct_values, pool_cases, rng_from, seeds

OTHERS = [b for b, why in backend.available_backends().items() if why is None and b != "numpy"]
dtypes = st.sampled_from([np.float32, np.float64])
pytestmark = pytest.mark.skipif(not OTHERS, reason="no backend besides numpy is available")


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def both(name, *args):
    """Run kernel `name` under numpy and under every other backend: (reference, [others])."""
    with backend.use_backend("numpy") as k:
        want = getattr(k, name)(*args)
    got = []
    for b in OTHERS:
        with backend.use_backend(b) as k:
            got.append(getattr(k, name)(*args))
    return want, got


def stored_as(x, layout):
    """x's values stored (N, C, H, W), channel-major (C, N, H, W), or as a strided view."""
    if layout == "channel_major":
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    if layout == "strided":
        big = np.zeros((*x.shape[:3], 2 * x.shape[3]), x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    return x


layouts = st.sampled_from(["nchw", "channel_major", "strided"])


@given(case=conv_cases(max_n=3, max_c=4, max_k=5, max_out=5), dtype=dtypes, seed=seeds,
       layout=layouts)
def test_im2col_and_col2im_equal_the_reference(case, dtype, seed, layout):
    rng = rng_from(seed)
    x = stored_as(rng.standard_normal(case.x_shape).astype(dtype), layout)
    args = (case.kh, case.kw, case.stride, case.pad)
    want, got = both("im2col", x, *args)
    for g in got:
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, want)  # a copy: bit for bit
    y = rng.standard_normal(want.shape).astype(dtype)
    want, got = both("col2im", y, case.x_shape, *args)
    for g in got:
        assert g.dtype == dtype
        np.testing.assert_allclose(g, want, **tol(dtype))


@given(case=conv_cases(max_n=3, max_c=4, max_k=5, max_out=5), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col_on_every_backend(case, seed):
    rng = rng_from(seed)
    x = rng.standard_normal(case.x_shape)
    args = (case.kh, case.kw, case.stride, case.pad)
    for b in OTHERS:
        with backend.use_backend(b) as k:
            cols = k.im2col(x, *args)
            y = rng.standard_normal(cols.shape)
            np.testing.assert_allclose(np.vdot(cols, y), np.vdot(x, k.col2im(y, x.shape, *args)),
                                       rtol=1e-10, atol=1e-10)


@given(case=pool_cases(), dtype=dtypes, seed=seeds, ties=st.booleans())
def test_maxpool_equals_the_reference(case, dtype, seed, ties):
    shape, size, stride = case
    rng = rng_from(seed)
    # With ties (a coarse grid of values) both must pick the first maximum of the window.
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    (out, arg), got = both("maxpool_forward", x, size, size, stride)
    for o, a in got:
        np.testing.assert_array_equal(o, out)
        np.testing.assert_array_equal(a, arg)
        assert o.dtype == dtype and a.dtype == np.int32
    dout = rng.standard_normal(out.shape).astype(dtype)
    want, got = both("maxpool_backward", dout, arg, shape, size, size, stride)
    for g in got:
        np.testing.assert_allclose(g, want, **tol(dtype))


@given(n=st.integers(1, 3), c=st.integers(1, 3), oh=st.integers(1, 4), ow=st.integers(1, 4),
       dtype=dtypes, seed=seeds, ties=st.booleans(), layout=layouts)
def test_2x2_pooling_of_any_layout_equals_the_reference(n, c, oh, ow, dtype, seed, ties, layout):
    """2x2 windows with stride 2 take the numba tournament; the layer pools channel-major
    input as (C, N, H, W) and must return what it returns for the same values stored NCHW."""
    rng = rng_from(seed)
    shape = (n, c, 2 * oh, 2 * ow)
    x = (rng.integers(0, 2, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    (out, arg), got = both("maxpool_forward", x, 2, 2, 2)
    for o, a in got:
        np.testing.assert_array_equal(o, out)
        np.testing.assert_array_equal(a, arg)
    dout = rng.standard_normal(out.shape).astype(dtype)
    want_dx = L.maxpool_backward(dout, L.maxpool_forward(x, 2)[1])
    for b in ["numpy", *OTHERS]:
        with backend.use_backend(b):
            o, cache = L.maxpool_forward(stored_as(x, layout), 2)
            np.testing.assert_array_equal(o, out)
            np.testing.assert_allclose(L.maxpool_backward(stored_as(dout, layout), cache), want_dx,
                                       **tol(dtype))


@given(case=conv_cases(), seed=seeds)
def test_conv_and_pool_gradients_on_every_backend(case, seed):
    rng = rng_from(seed)
    x, w, b = case.arrays(rng)
    s, p = case.stride, case.pad
    for name in OTHERS:
        with backend.use_backend(name):
            out, cache = L.conv_forward(x, w, b, s, p)
            dout = rng.standard_normal(out.shape)
            dx, dw, db = L.conv_backward(dout, cache)
            f = lambda xv, wv: L.conv_forward(xv, wv, b, s, p)[0]  # noqa: E731
            assert_grad_close(dx, numerical_gradient_array(lambda v: f(v, w), x, dout), what=name)
            assert_grad_close(dw, numerical_gradient_array(lambda v: f(x, v), w, dout), what=name)
            xp = distinct_values(rng, (case.n, case.c, 4, 4))
            pout, pcache = L.maxpool_forward(xp, 2, 2)
            pd = rng.standard_normal(pout.shape)
            num = numerical_gradient_array(lambda v: L.maxpool_forward(v, 2, 2)[0], xp, pd)
            assert_grad_close(L.maxpool_backward(pd, pcache), num, what=name)


# --- sparse weight gradients --------------------------------------------------------------------

ALWAYS_SPARSE = 1.1
"""A sparse_dw_density above any mask's density: the sparse weight-gradient path every time."""


def sparse_mask(rng, shape, dtype, nnz_max=3):
    """A mask with 0..nnz_max ones: below any sensible sparse-gradient threshold."""
    m = np.zeros(int(np.prod(shape)), dtype)
    m[rng.choice(m.size, min(m.size, int(rng.integers(0, nnz_max + 1))), replace=False)] = 1
    return m.reshape(shape)


@given(case=conv_cases(max_f=4), dtype=dtypes, seed=seeds,
       be=st.sampled_from(["numpy", *OTHERS]))
def test_sparse_conv_weight_gradient_equals_masked_dense(case, dtype, seed, be):
    rng = rng_from(seed)
    x, w, b = (rng.standard_normal(case.x_shape).astype(dtype),
               rng.standard_normal(case.w_shape).astype(dtype), np.zeros(case.f, dtype))
    m = sparse_mask(rng, w.shape, dtype)
    with backend.use_backend(be):
        out, cache = L.conv_forward(x, w, b, case.stride, case.pad)
        dout = rng.standard_normal(out.shape).astype(dtype)
        _, dense, _ = L.conv_backward(dout, cache)
        _, sparse, _ = F.conv_backward_masked(dout, cache, w_mask=m,
                                              sparse_dw_density=ALWAYS_SPARSE)
    assert sparse.shape == w.shape and sparse.dtype == dtype
    np.testing.assert_allclose(sparse, dense * m, **tol(dtype))
    assert np.all(sparse[m == 0] == 0)


@given(n=st.integers(1, 5), d=st.integers(1, 7), k=st.integers(1, 6), dtype=dtypes, seed=seeds,
       be=st.sampled_from(["numpy", *OTHERS]))
def test_sparse_linear_weight_gradient_equals_masked_dense(n, d, k, dtype, seed, be):
    rng = rng_from(seed)
    x, w = rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((k, d)).astype(dtype)
    dout = rng.standard_normal((n, k)).astype(dtype)
    m = sparse_mask(rng, w.shape, dtype)
    with backend.use_backend(be):
        _, cache = L.linear_forward(x, w, np.zeros(k, dtype))
        _, dense, _ = L.linear_backward(dout, cache)
        _, sparse, _ = F.linear_backward_masked(dout, cache, w_mask=m,
                                                sparse_dw_density=ALWAYS_SPARSE)
    np.testing.assert_allclose(sparse, dense * m, **tol(dtype))


def test_mask_indices_are_computed_once_per_mask():
    m = np.zeros((4, 5), np.float32)
    m[1, 2] = m[3, 0] = 1
    masks = Masks({"w": m})
    first = masks.index("w")
    assert masks.index("w") is first  # the same index: no second np.nonzero
    np.testing.assert_array_equal(first.flat, [7, 15])
    assert first.density == pytest.approx(2 / 20)
    m[0, 0] = 1  # the source array is not the mask: the Masks made its own copy
    assert masks.index("w") is first and masks["w"][0, 0] == 0


def test_dense_masks_take_the_dense_path(monkeypatch):
    calls = []
    monkeypatch.setattr(F, "_sparse_dw", lambda *a: calls.append(a) or None)
    x, w = np.ones((2, 3)), np.ones((4, 3))
    _, cache = L.linear_forward(x, w, np.zeros(4))
    _, dw, _ = F.linear_backward_masked(np.ones((2, 4)), cache, w_mask=np.ones((4, 3)))
    assert len(calls) == 1 and np.all(dw == 2)


# --- the fused masked SGD update ----------------------------------------------------------------

@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), dtype=dtypes, seed=seeds,
       masked=st.booleans(), nesterov=st.booleans(),
       momentum=st.sampled_from([0.0, 0.9]), weight_decay=st.sampled_from([0.0, 5e-4]))
def test_masked_sgd_update_follows_the_contract(shape, dtype, seed, masked, nesterov, momentum,
                                                weight_decay):
    rng = rng_from(seed)
    theta, grad, vel = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    mask = (rng.random(shape) < 0.3).astype(dtype) if masked else None
    want_t, want_v = theta.copy(), vel.copy()
    masked_sgd_update(want_t, grad, want_v, mask, 0.1, momentum, weight_decay, nesterov)
    for b in OTHERS:
        got_t, got_v = theta.copy(), vel.copy()
        with backend.use_backend(b) as k:
            k.masked_sgd_update(got_t, grad, got_v, mask, 0.1, momentum, weight_decay, nesterov)
        assert got_t.dtype == dtype and got_v.dtype == dtype
        np.testing.assert_allclose(got_t, want_t, **tol(dtype))
        np.testing.assert_allclose(got_v, want_v, **tol(dtype))
        if mask is not None:  # frozen entries: bit for bit untouched
            frozen = mask == 0
            assert np.array_equal(got_t[frozen].view(np.uint8), theta[frozen].view(np.uint8))
            assert np.array_equal(got_v[frozen].view(np.uint8), vel[frozen].view(np.uint8))


def test_masked_sgd_update_rejects_bad_shapes():
    t = np.zeros(3, np.float32)
    for b in OTHERS:
        with backend.use_backend(b) as k:
            with pytest.raises(ValueError, match=r"expected grad of shape \(3,\), got \(4,\)"):
                k.masked_sgd_update(t, np.zeros(4, np.float32), np.zeros(3, np.float32), None,
                                    0.1, 0.9, 0.0, False)


# --- pruned layers computing over their kept weights -------------------------------------------

@given(f=st.integers(1, 6), k=st.integers(1, 9), p=st.integers(1, 7), dtype=dtypes, seed=seeds,
       transpose=st.booleans(), be=st.sampled_from(["numpy", *OTHERS]))
def test_sparse_matmul_equals_the_dense_product(f, k, p, dtype, seed, transpose, be):
    rng = rng_from(seed)
    w = rng.standard_normal((f, k)).astype(dtype) * sparse_mask(rng, (f, k), dtype)
    rows, cols = np.nonzero(w)
    b = rng.standard_normal((f if transpose else k, p)).astype(dtype)
    with backend.use_backend(be) as kern:
        got = kern.sparse_matmul(w[rows, cols], rows, cols, k if transpose else f, b,
                                 transpose=transpose)
    want = (w.T if transpose else w) @ b
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, **tol(dtype))


def _pruned(rng, shape, dtype):
    m = sparse_mask(rng, shape, dtype)
    return m, Masks({"w": m}).index("w")


@given(case=conv_cases(max_f=4), dtype=dtypes, seed=seeds,
       be=st.sampled_from(["numpy", *OTHERS]), layout=layouts)
def test_a_pruned_conv_computes_sparsely_as_it_would_densely(case, dtype, seed, be, layout):
    rng = rng_from(seed)
    m, index = _pruned(rng, case.w_shape, dtype)
    x = stored_as(rng.standard_normal(case.x_shape).astype(dtype), layout)
    w = rng.standard_normal(case.w_shape).astype(dtype) * m  # pruned: exactly 0 off the mask
    b = rng.standard_normal(case.f).astype(dtype)
    with backend.use_backend(be):
        out, cache = L.conv_forward(x, w, b, case.stride, case.pad)
        dout = stored_as(rng.standard_normal(out.shape).astype(dtype), layout)
        dx, dw, db = L.conv_backward(dout, cache, w_mask=m)
        with pytest.MonkeyPatch.context() as mp:  # the sparse path whatever the density
            mp.setattr(F, "_sparse_index", lambda sparse: sparse)
            out_s, cache_s = F.conv_forward_pruned(x, w, b, case.stride, case.pad, index)
            dx_s, dw_s, db_s = F.conv_backward_masked(dout, cache_s, w_mask=m)
    assert isinstance(cache_s, F.PrunedConvCache) and cache_s.index is index  # no im2col
    for got, want in ((out_s, out), (dx_s, dx), (dw_s, dw), (db_s, db)):
        np.testing.assert_allclose(got, want, **tol(dtype))


@given(n=st.integers(1, 5), d=st.integers(1, 7), k=st.integers(1, 6), dtype=dtypes, seed=seeds,
       be=st.sampled_from(["numpy", *OTHERS]))
def test_a_pruned_linear_computes_sparsely_as_it_would_densely(n, d, k, dtype, seed, be):
    rng = rng_from(seed)
    m, index = _pruned(rng, (k, d), dtype)
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((k, d)).astype(dtype) * m
    b = rng.standard_normal(k).astype(dtype)
    dout = rng.standard_normal((n, k)).astype(dtype)
    with backend.use_backend(be):
        out, cache = L.linear_forward(x, w, b)
        dx, dw, db = L.linear_backward(dout, cache, w_mask=m)
        with pytest.MonkeyPatch.context() as mp:  # the sparse path whatever the density
            mp.setattr(F, "_sparse_index", lambda sparse: sparse)
            out_s, cache_s = F.linear_forward_pruned(x, w, b, index)
            dx_s, dw_s, db_s = F.linear_backward_masked(dout, cache_s, w_mask=m)
    assert isinstance(cache_s, F.PrunedLinearCache) and cache_s.index is index
    for got, want in ((out_s, out), (dx_s, dx), (dw_s, dw), (db_s, db)):
        np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("be", ["numpy", *OTHERS])
def test_pruned_layers_go_sparse_below_the_backends_density(be):
    with backend.use_backend(be) as kern:
        for density, sparse in ((1.0, False), (kern.sparse_compute_density / 2, True)):
            m = np.zeros(2000, np.float32)
            m[:int(density * m.size)] = 1
            index = Masks({"w": m.reshape(40, 50)}).index("w")
            _, cache = F.linear_forward_pruned(np.ones((2, 50), np.float32), m.reshape(40, 50),
                                               np.zeros(40, np.float32), index)
            assert isinstance(cache, F.PrunedLinearCache) == sparse, density
