"""im2col and col2im in plain NumPy: the reference every accelerated kernel is checked against.

A convolution slides a (C, KH, KW) filter over a zero-padded (C, H, W) image. im2col copies every
patch the filter sees into one column, and the columns of the whole batch side by side make one
matrix, so the whole convolution of the batch becomes one matrix product:

    x     (N, C, H, W)
    cols  (C*KH*KW, N*OH*OW)    cols[(c, i, j), (n, oh, ow)] = xpad[n, c, oh*s + i, ow*s + j]
    out   (F, N*OH*OW) = w.reshape(F, C*KH*KW) @ cols

with OH = (H + 2*pad - KH) / stride + 1 (and OW likewise), which must be a whole number. The
weight gradient and the column gradient are single products with the same matrix:
dW = dout2 @ cols.T and dcols = W.T @ dout2, with dout2 (F, N*OH*OW).

col2im is the adjoint (transpose) of im2col, not its inverse: it adds every column entry back onto
the pixel it came from, so pixels seen by several patches receive the sum. That is exactly what the
backward pass of a convolution needs (dx = col2im(W.T @ dout2)), and the identity

    <im2col(x), y> == <x, col2im(y)>

is a cheap, strong test.

The max-pool kernels below pool each (image, channel) plane through a strided view of the input,
so they accept an input stored in any order. The kernels a mask allows (a weight gradient
sampled at the mask's nonzeros, a pruned layer's products over its kept weights) have their own
NumPy reference, `kernels_sparse.py`. Everything here is plain NumPy on plainly shaped arrays; the layout tricks that make the Numba kernels fast live
in `kernels_numba.py`. Notebook 02 (`notebooks/02_im2col.ipynb`) walks through this file.
"""

from __future__ import annotations

import numpy as np


def conv_output_size(size: int, k: int, stride: int, pad: int, *, layer: str = "conv") -> int:
    """Output length of a window of length `k` sliding with `stride` over `size + 2*pad` samples.

    Raises ValueError when the window is larger than the padded input or when the windows do not
    tile the padded input exactly (a non-integer output size).
    """
    if k < 1 or stride < 1 or pad < 0:
        raise ValueError(f"{layer}: need kernel >= 1, stride >= 1 and pad >= 0, got kernel={k}, "
                         f"stride={stride}, pad={pad}")
    span = size + 2 * pad - k
    if span < 0:
        raise ValueError(f"{layer}: kernel {k} is larger than the padded input "
                         f"{size} + 2*{pad} = {size + 2 * pad}")
    if span % stride:
        raise ValueError(f"{layer}: output size ({size} + 2*{pad} - {k}) / {stride} + 1 = "
                         f"{span / stride + 1:g} is not an integer; change stride or padding")
    return span // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Unfold image patches into columns: x (N, C, H, W) -> cols (C*KH*KW, N*OH*OW)."""
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, pad, layer="im2col")
    ow = conv_output_size(w, kw, stride, pad, layer="im2col")
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x  # (N, C, H+2p, W+2p)
    sn, sc, sh, sw = xp.strides
    # A read-only strided view: patches[c, i, j, n, oh, ow] = xp[n, c, oh*s + i, ow*s + j].
    patches = np.lib.stride_tricks.as_strided(
        xp, shape=(c, kh, kw, n, oh, ow),
        strides=(sc, sh, sw, sn, sh * stride, sw * stride), writeable=False)
    cols = np.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)  # (C*KH*KW, N*OH*OW)
    cols.reshape(c, kh, kw, n, oh, ow)[...] = patches  # one copy, in the matrix's own order
    return cols


def check_col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kh: int, kw: int,
                 stride: int, pad: int) -> tuple[int, int]:
    """(OH, OW) for col2im's arguments; ValueError if cols does not have im2col's shape."""
    n, c, h, w = x_shape
    oh = conv_output_size(h, kh, stride, pad, layer="col2im")
    ow = conv_output_size(w, kw, stride, pad, layer="col2im")
    if cols.shape != (c * kh * kw, n * oh * ow):
        raise ValueError(f"col2im: expected cols of shape {(c * kh * kw, n * oh * ow)}, "
                         f"got {cols.shape}")
    return oh, ow


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kh: int, kw: int,
           stride: int = 1, pad: int = 0) -> np.ndarray:
    """Adjoint of im2col: scatter-add cols (C*KH*KW, N*OH*OW) back onto an (N, C, H, W) image."""
    n, c, h, w = x_shape
    oh, ow = check_col2im(cols, x_shape, kh, kw, stride, pad)
    cols6 = cols.reshape(c, kh, kw, n, oh, ow)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=cols.dtype)  # (N, C, H+2p, W+2p)
    # One strided add per kernel offset (KH*KW of them); overlapping patches accumulate.
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += \
                cols6[:, i, j].transpose(1, 0, 2, 3)  # (N, C, OH, OW)
    return xp[:, :, pad:pad + h, pad:pad + w]


def _windows(x: np.ndarray, kh: int, kw: int, stride: int, oh: int, ow: int) -> np.ndarray:
    """Read-only view (N, C, OH, OW, KH, KW) of the pooling windows of an unpadded x."""
    sn, sc, sh, sw = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(x.shape[0], x.shape[1], oh, ow, kh, kw),
        strides=(sn, sc, sh * stride, sw * stride, sh, sw), writeable=False)


def maxpool_forward(x: np.ndarray, kh: int, kw: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over each (KH, KW) window: x (N, C, H, W) -> out (N, C, OH, OW), argmax (N, C, OH, OW).

    argmax is the flat index i*KW + j of the winner inside its window; ties go to the first.
    Comparisons with NaN are false, so a NaN wins only from a window's first position; inputs
    are assumed finite.
    """
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, 0, layer="maxpool")
    ow = conv_output_size(w, kw, stride, 0, layer="maxpool")
    win = _windows(x, kh, kw, stride, oh, ow)  # (N, C, OH, OW, KH, KW), a view
    out = win[..., 0, 0].copy()  # (N, C, OH, OW): the running maximum
    argmax = np.zeros((n, c, oh, ow), dtype=np.int32)  # (N, C, OH, OW)
    # One comparison per window offset, in order; strict > keeps the first of equal values.
    for k in range(1, kh * kw):
        v = win[..., k // kw, k % kw]  # (N, C, OH, OW), a strided view
        better = v > out
        np.copyto(out, v, where=better)
        argmax[better] = k
    return out, argmax


def maxpool_backward(dout: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int],
                     kh: int, kw: int, stride: int) -> np.ndarray:
    """Route each output gradient to the input pixel that won its window: -> dx (N, C, H, W)."""
    oh, ow = argmax.shape[2:]
    dx = np.zeros(x_shape, dtype=dout.dtype)  # (N, C, H, W)
    for i in range(kh):
        for j in range(kw):
            # Windows overlap when stride < kernel: accumulate, never overwrite.
            dx[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += \
                np.where(argmax == i * kw + j, dout, 0)
    return dx
