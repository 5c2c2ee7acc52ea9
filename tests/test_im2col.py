"""im2col / col2im: shapes, the adjoint identity and the output-size rule."""

import numpy as np
import pytest
from hypothesis import given

from minifreeze.im2col import col2im, conv_output_size, im2col
from tests.strategies import conv_cases, rng_from, seeds


@given(case=conv_cases(max_n=3, max_c=4, max_k=5, max_out=5), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col(case, seed):
    rng = rng_from(seed)
    x = rng.standard_normal(case.x_shape)
    cols = im2col(x, case.kh, case.kw, case.stride, case.pad)
    y = rng.standard_normal(cols.shape)
    lhs = np.vdot(cols, y)
    rhs = np.vdot(x, col2im(y, case.x_shape, case.kh, case.kw, case.stride, case.pad))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@given(case=conv_cases(), seed=seeds)
def test_im2col_columns_are_the_patches(case, seed):
    x = rng_from(seed).standard_normal(case.x_shape)
    cols = im2col(x, case.kh, case.kw, case.stride, case.pad)
    oh = (case.h + 2 * case.pad - case.kh) // case.stride + 1
    ow = (case.w + 2 * case.pad - case.kw) // case.stride + 1
    assert cols.shape == (case.c * case.kh * case.kw, case.n * oh * ow)
    assert cols.flags.c_contiguous  # the matrix the layer multiplies, stored as it is shaped
    xp = np.pad(x, ((0, 0), (0, 0), (case.pad,) * 2, (case.pad,) * 2))
    r, s = oh - 1, ow - 1  # the last patch of every image
    patch = xp[:, :, r * case.stride:r * case.stride + case.kh, s * case.stride:s * case.stride + case.kw]
    last = cols.reshape(-1, case.n, oh * ow)[:, :, -1]  # (C*KH*KW, N)
    np.testing.assert_array_equal(last.T, patch.reshape(case.n, -1))


def test_output_size_rule():
    assert conv_output_size(28, 5, 1, 0) == 24
    assert conv_output_size(28, 3, 1, 1) == 28
    with pytest.raises(ValueError, match=r"\(7 \+ 2\*0 - 2\) / 2 \+ 1 = 3.5 is not an integer"):
        conv_output_size(7, 2, 2, 0)
    with pytest.raises(ValueError, match="kernel 5 is larger than the padded input"):
        conv_output_size(3, 5, 1, 0)


def test_col2im_rejects_wrong_cols_shape():
    with pytest.raises(ValueError, match=r"expected cols of shape \(9, 4\), got \(9, 5\)"):
        col2im(np.zeros((9, 5)), (1, 1, 4, 4), 3, 3, 1, 0)
