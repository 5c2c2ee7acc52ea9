"""Winograd's F(2x2, 3x3) against the im2col reference: forward, input gradient and weight
gradient over shapes and paddings (odd output sizes included), its adjointness, and the float32
error it makes.

Tolerances. In float64 both algorithms are exact up to rounding, so they agree to 1e-12 (relative,
`rel_error`). In float32 each output sums 9 C products after transforms of up to 9 terms; the
error measured on standard-normal data was at most 1.4e-7 (im2col's at most 2.6e-7) for up to 16
channels. The float32 test allows 2e-6 against the float64 reference: ten times the measured
error, still far below what a wrong transform entry gives (a missing term is an O(1) error).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minifreeze import layers as L, winograd as W
from minifreeze.gradcheck import rel_error

from .strategies import rng_from, seeds

shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4),  # n, c, f
                   st.integers(1, 9), st.integers(1, 9), st.integers(0, 2))  # h, w, pad


def _case(seed, shape, dtype=np.float64):
    n, c, f, h, w, pad = shape
    rng = rng_from(seed)
    x = rng.standard_normal((n, c, h + 2, w + 2)).astype(dtype)  # (N, C, H, W), H >= 3 - 2 pad
    k = rng.standard_normal((f, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    return x, k, b, pad


@settings(deadline=None)
@given(seeds, shapes)
def test_forward_and_both_gradients_equal_im2col(seed, shape):
    x, w, b, pad = _case(seed, shape)
    ref, cache = L.conv_forward(x, w, b, 1, pad)
    out = W.conv_forward(x, w, b, pad)
    assert out.shape == ref.shape and rel_error(out, ref) < 1e-12
    dout = rng_from(seed + 1).standard_normal(ref.shape)
    for name, a, r in zip(("dx", "dw", "db"), W.conv_backward(dout, x, w, pad),
                          L.conv_backward(dout, cache)):
        assert a.shape == r.shape and rel_error(a, r) < 1e-12, name


@settings(deadline=None)
@given(seeds, shapes)
def test_backward_is_the_adjoint_of_forward(seed, shape):
    """<conv(x) - b, y> = <x, dx(y)> and = <w, dw(y)>: both gradients are transposes."""
    x, w, b, pad = _case(seed, shape)
    y = rng_from(seed + 2).standard_normal(W.conv_forward(x, w, b, pad).shape)
    dx, dw, _ = W.conv_backward(y, x, w, pad)
    lhs = np.vdot(W.conv_forward(x, w, 0 * b, pad), y)
    scale = np.linalg.norm(W.conv_forward(x, w, 0 * b, pad)) * np.linalg.norm(y)
    assert abs(lhs - np.vdot(x, dx)) <= 1e-12 * scale
    assert abs(lhs - np.vdot(w, dw)) <= 1e-12 * scale


@pytest.mark.parametrize("c, f", [(1, 4), (16, 32)])
def test_float32_error_stays_within_the_stated_bound(c, f):
    x, w, b, pad = _case(7, (2, c, f, 10, 7, 1))
    ref, cache = L.conv_forward(x, w, b, 1, pad)
    dout = rng_from(8).standard_normal(ref.shape)
    rdx, rdw, _ = L.conv_backward(dout, cache)
    x32, w32, b32, d32 = (a.astype(np.float32) for a in (x, w, b, dout))
    out = W.conv_forward(x32, w32, b32, pad)
    dx, dw, _ = W.conv_backward(d32, x32, w32, pad)
    assert out.dtype == dx.dtype == dw.dtype == np.float32
    for a, r in ((out, ref), (dx, rdx), (dw, rdw)):
        assert rel_error(a.astype(np.float64), r) < 2e-6


def test_what_it_fits_and_clear_errors():
    assert W.fits((8, 4, 3, 3), 1) and not W.fits((8, 4, 5, 5), 1) and not W.fits((8, 4, 3, 3), 2)
    x, w, b, _ = _case(0, (1, 2, 3, 4, 4, 0))
    with pytest.raises(ValueError, match="3x3 filters"):
        W.conv_forward(x, np.zeros((3, 2, 5, 5)), b, 0)
    with pytest.raises(ValueError, match="same C"):
        W.conv_forward(x, np.zeros((3, 5, 3, 3)), b, 0)
    with pytest.raises(ValueError, match="dout expected"):
        W.conv_backward(np.zeros((1, 3, 2, 2)), x, w, 0)
    # 16 multiplications per 2x2 tile against 36: 2.25x fewer for even output sizes
    wino, im2col = W.multiplications((1, 8, 18, 18), (8, 8, 3, 3), 1)
    assert im2col / wino == 2.25


@settings(deadline=None)
@given(seeds, shapes, st.sampled_from([np.float32, np.float64]))
def test_numba_transforms_equal_the_reference(seed, shape, dtype):
    """The Numba loops compute the same transforms as the NumPy reference, bit for bit (each
    output is the same few additions in the same order)."""
    from minifreeze import kernels_numba as K
    x, w, _, pad = _case(seed, shape, dtype)
    oh, ow, th, tw = W.tiles_for(x.shape, w.shape, pad)
    v = W.input_transform(x, pad, th, tw).reshape(16, x.shape[1], -1)
    assert np.array_equal(K.winograd_input_transform(x, pad, th, tw), v)
    m = rng_from(seed + 3).standard_normal((16, w.shape[0], x.shape[0] * th * tw)).astype(dtype)
    out = K.winograd_output_transform(m, x.shape[0], th, tw, oh, ow)
    assert out.dtype == dtype and np.array_equal(out, W.output_transform(m, x.shape[0], th, tw, oh, ow))
