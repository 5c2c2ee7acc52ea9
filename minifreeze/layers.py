"""Functional layers, each a forward/backward pair of plain functions (cs231n style).

    out, cache = conv_forward(x, w, b, stride=1, pad=0)
    dx, dw, db = conv_backward(dout, cache)

Activations are NCHW, convolution weights (F, C, KH, KW), linear weights (M, D) (out x in).
Nothing here keeps state: a cache holds exactly what the backward pass needs. Convolution and
pooling get their kernels from `backend.kernels()` (im2col, col2im, max-pool), so the same layer runs
on NumPy, Numba or CUDA; `conv_forward_naive` is the loop-by-loop oracle the tests compare against.

A convolution of the whole batch is one matrix product: im2col gives the (C*KH*KW, N*OH*OW)
matrix of patches, W (F, C*KH*KW) times it is the (F, N*OH*OW) output, and the layer returns that
product seen as (N, F, OH, OW) (a transposed view: NumPy operations do not care, and the next
layers' kernels read it as it is stored, see kernels_numba.py).

Weight-gradient masks: `linear_backward` and `conv_backward` take `w_mask` (m in FreezeNet; 1 =
trainable or kept, 0 = frozen or pruned) and return dw with the masked entries exactly 0: the dense
gradient times m, the one change FreezeNet needs in a layer.

These are the textbook pairs: one way to compute each, no speed branches. The fast paths a
masked network takes (the weight gradient sampled at the mask's nonzeros only, a pruned layer's
products over its kept weights only) are separate functions beside them in `fast_layers.py`
(cs231n's `layers.py` / `fast_layers.py` split), tested against these; `Model` picks them once
per layer where a mask asks for them. Each op's cache is one named type (`LinearCache`,
`ConvCache`, `PoolCache`).

Bad shapes raise ValueError naming the layer, the expected shape and the shape received; nothing
broadcasts silently. Notebook 01 (`notebooks/01_layers_and_gradcheck.ipynb`) walks through this file.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minifreeze import backend
from minifreeze.im2col import conv_output_size


def _fail(layer: str, what: str, expected: str, got: tuple) -> None:
    raise ValueError(f"{layer}: expected {what} of shape {expected}, got {tuple(got)}")


def _check_rank(layer: str, what: str, a: np.ndarray, ndim: int, expected: str) -> None:
    if np.ndim(a) != ndim:
        _fail(layer, what, expected, np.shape(a))


def _check_bias(layer: str, b: np.ndarray, n: int) -> None:
    if np.shape(b) != (n,):
        _fail(layer, "bias b", f"({n},)", np.shape(b))


def check_mask(layer: str, w_mask: np.ndarray | None, shape: tuple) -> None:
    if w_mask is not None and np.shape(w_mask) != tuple(shape):
        _fail(layer, "weight mask", str(tuple(shape)), np.shape(w_mask))


# --- linear -------------------------------------------------------------------------------------

class LinearCache(NamedTuple):
    """What linear_backward needs: the input, the weight, the layer's name (for errors)."""
    x: np.ndarray  # (N, D)
    w: np.ndarray  # (M, D)
    layer: str


def linear_forward(x, w, b, *, layer: str = "linear"):
    """out = x @ w.T + b: x (N, D), w (M, D), b (M,) -> out (N, M), LinearCache."""
    check_linear(layer, x, w, b)
    return x @ w.T + b, LinearCache(x, w, layer)  # (N, M)


def check_linear(layer, x, w, b):
    _check_rank(layer, "input x", x, 2, "(N, D)")
    _check_rank(layer, "weight w", w, 2, "(M, D)")
    if x.shape[1] != w.shape[1]:
        _fail(layer, "input x", f"(N, {w.shape[1]})", x.shape)
    _check_bias(layer, b, w.shape[0])


def check_linear_dout(dout, x_shape, w_shape, layer):
    if dout.shape != (x_shape[0], w_shape[0]):
        _fail(layer, "upstream gradient dout", str((x_shape[0], w_shape[0])), dout.shape)


def linear_backward(dout, cache: LinearCache, *, w_mask=None, need_dx: bool = True):
    """-> dx (N, D) (None if not need_dx), dw (M, D) (exactly 0 where w_mask == 0), db (M,)."""
    x, w, layer = cache
    check_linear_dout(dout, x.shape, w.shape, layer)
    check_mask(layer, w_mask, w.shape)
    dw = dout.T @ x  # (M, N) @ (N, D)
    if w_mask is not None:
        dw *= w_mask
    db = dout.sum(axis=0)  # (M,)
    dx = dout @ w if need_dx else None  # (N, D)
    return dx, dw, db


# --- ReLU ---------------------------------------------------------------------------------------

def relu_forward(x):
    """out = max(x, 0), any shape; a NaN stays NaN (as in PyTorch). Cache: the bool mask x > 0."""
    # np.maximum and a multiply by the mask, not np.where: where was 8-10x slower on float32.
    return np.maximum(x, 0), x > 0


def relu_backward(dout, cache):
    positive = cache
    if dout.shape != positive.shape:
        _fail("relu", "upstream gradient dout", str(positive.shape), dout.shape)
    return dout * positive  # dx = dout where x > 0, else 0


# --- convolution --------------------------------------------------------------------------------

def check_conv(layer, x, w, b, stride, pad):
    _check_rank(layer, "input x", x, 4, "(N, C, H, W)")
    _check_rank(layer, "weight w", w, 4, "(F, C, KH, KW)")
    f, c, kh, kw = w.shape
    if x.shape[1] != c:
        _fail(layer, "input x", f"(N, {c}, H, W) to match weights {w.shape}", x.shape)
    _check_bias(layer, b, f)
    oh = conv_output_size(x.shape[2], kh, stride, pad, layer=layer)
    ow = conv_output_size(x.shape[3], kw, stride, pad, layer=layer)
    return oh, ow


class ConvCache(NamedTuple):
    """What conv_backward needs: the input's shape, its im2col columns, the weight, the
    geometry and the layer's name (for errors)."""
    x_shape: tuple
    cols: np.ndarray  # (C*KH*KW, N*OH*OW)
    w: np.ndarray     # (F, C, KH, KW)
    stride: int
    pad: int
    layer: str


def conv_forward(x, w, b, stride: int = 1, pad: int = 0, *, layer: str = "conv"):
    """2-D convolution by im2col: x (N, C, H, W), w (F, C, KH, KW), b (F,) -> (N, F, OH, OW).

    The whole batch is one matrix product: W (F, C*KH*KW) @ cols (C*KH*KW, N*OH*OW).
    """
    oh, ow = check_conv(layer, x, w, b, stride, pad)
    n = x.shape[0]
    f, c, kh, kw = w.shape
    cols = backend.kernels().im2col(x, kh, kw, stride, pad)  # (C*KH*KW, N*OH*OW)
    out2 = w.reshape(f, -1) @ cols  # (F, N*OH*OW)
    out2 += b[:, None]
    out = out2.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)  # (N, F, OH, OW), a view
    return out, ConvCache(x.shape, cols, w, stride, pad, layer)


def check_conv_dout(dout, x_shape, w_shape, stride, pad, layer):
    expected = (x_shape[0], w_shape[0], *_out_hw(x_shape, w_shape, stride, pad))
    if dout.shape != expected:
        _fail(layer, "upstream gradient dout", str(expected), dout.shape)


def conv_backward(dout, cache: ConvCache, *, w_mask=None, need_dx: bool = True):
    """-> dx (N, C, H, W) (None if not need_dx), dw (F, C, KH, KW) (exactly 0 where
    w_mask == 0), db (F,).

    With the batch folded into the columns, dW = dout2 (F, N*OH*OW) @ cols.T and the column
    gradient dcols = W.T @ dout2 are single matrix products too; col2im turns dcols into dx.
    """
    x_shape, cols, w, stride, pad, layer = cache
    f = w.shape[0]
    check_conv_dout(dout, x_shape, w.shape, stride, pad, layer)
    check_mask(layer, w_mask, w.shape)
    d2 = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (F, N*OH*OW); free if dout is stored so
    db = d2.sum(axis=1)  # (F,)
    dw = (d2 @ cols.T).reshape(w.shape)  # (F, C, KH, KW)
    if w_mask is not None:
        dw *= w_mask
    dx = conv_input_grad(d2, w, x_shape, stride, pad) if need_dx else None
    return dx, dw, db


def conv_input_grad(d2, w, x_shape, stride, pad):
    """dx (N, C, H, W) from the output gradient seen as d2 (F, N*OH*OW): the column gradient
    dcols = W.T @ d2, then col2im."""
    f, c, kh, kw = w.shape
    dcols = w.reshape(f, -1).T @ d2  # (C*KH*KW, N*OH*OW)
    return backend.kernels().col2im(dcols, x_shape, kh, kw, stride, pad)  # (N, C, H, W)


def _out_hw(x_shape, w_shape, stride, pad):
    return ((x_shape[2] + 2 * pad - w_shape[2]) // stride + 1,
            (x_shape[3] + 2 * pad - w_shape[3]) // stride + 1)


def conv_forward_naive(x, w, b, stride: int = 1, pad: int = 0, *, layer: str = "conv"):
    """The same convolution as four nested loops: slow, obviously right, the tests' oracle."""
    oh, ow = check_conv(layer, x, w, b, stride, pad)
    n, f = x.shape[0], w.shape[0]
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, f, oh, ow), dtype=np.result_type(x, w))
    for i in range(n):
        for k in range(f):
            for r in range(oh):
                for s in range(ow):
                    patch = xp[i, :, r * stride:r * stride + kh, s * stride:s * stride + kw]
                    out[i, k, r, s] = np.sum(patch * w[k]) + b[k]
    return out, (x, w, stride, pad)


def conv_backward_naive(dout, cache):
    """Loop-by-loop backward of conv_forward_naive: -> dx, dw, db."""
    x, w, stride, pad = cache
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    n, f, oh, ow = dout.shape
    for i in range(n):
        for k in range(f):
            for r in range(oh):
                for s in range(ow):
                    sl = (slice(r * stride, r * stride + kh), slice(s * stride, s * stride + kw))
                    dw[k] += dout[i, k, r, s] * xp[i, :, sl[0], sl[1]]
                    dxp[i, :, sl[0], sl[1]] += dout[i, k, r, s] * w[k]
    dx = dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))


# --- max-pool -----------------------------------------------------------------------------------

class PoolCache(NamedTuple):
    """What maxpool_backward needs: the input's shape, each window's winner, the geometry."""
    x_shape: tuple
    argmax: np.ndarray  # (N, C, OH, OW): i*KW + j of each window's maximum
    size: int
    stride: int
    layer: str


def maxpool_forward(x, size: int = 2, stride: int | None = None, *, layer: str = "maxpool"):
    """Max over size x size windows: x (N, C, H, W) -> (N, C, OH, OW). stride defaults to size."""
    stride = size if stride is None else stride
    _check_rank(layer, "input x", x, 4, "(N, C, H, W)")
    conv_output_size(x.shape[2], size, stride, 0, layer=layer)
    conv_output_size(x.shape[3], size, stride, 0, layer=layer)
    out, argmax = backend.kernels().maxpool_forward(x, size, size, stride)  # (N, C, OH, OW) each
    return out, PoolCache(x.shape, argmax, size, stride, layer)


def maxpool_backward(dout, cache):
    x_shape, argmax, size, stride, layer = cache
    if dout.shape != argmax.shape:
        _fail(layer, "upstream gradient dout", str(argmax.shape), dout.shape)
    return backend.kernels().maxpool_backward(dout, argmax, x_shape, size, size, stride)


# --- flatten ------------------------------------------------------------------------------------

def flatten_forward(x):
    """(N, C, H, W) -> (N, C*H*W); any (N, ...) works."""
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dout, cache):
    return dout.reshape(cache)


# --- batch norm ---------------------------------------------------------------------------------

def batchnorm_forward(x, gamma, beta, running_mean=None, running_var=None, *, train: bool = True,
                      momentum: float = 0.1, eps: float = 1e-5, layer: str = "batchnorm"):
    """Batch norm over N (and H, W for NCHW input): y = gamma * (x - mu) / sqrt(var + eps) + beta.

    x is (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var are (C,). In training mode
    the batch statistics are used and, if given, running_mean/running_var are updated in place:
    r <- (1 - momentum) * r + momentum * batch_stat (the unbiased variance, as PyTorch). In eval
    mode the running statistics are used and must be given.
    """
    if np.ndim(x) not in (2, 4):
        _fail(layer, "input x", "(N, C) or (N, C, H, W)", np.shape(x))
    c = x.shape[1]
    for what, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if a is not None and np.shape(a) != (c,):
            _fail(layer, what, f"({c},)", np.shape(a))
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    bshape = (1, c) if x.ndim == 2 else (1, c, 1, 1)
    if train:
        mu = x.mean(axis=axes)  # (C,)
        var = x.var(axis=axes)  # (C,)
        if running_mean is not None and running_var is not None:
            m = x.size // c
            running_mean *= 1 - momentum
            running_mean += momentum * mu
            running_var *= 1 - momentum
            running_var += momentum * var * (m / max(m - 1, 1))
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{layer}: eval mode needs running_mean and running_var")
        mu, var = running_mean, running_var
    inv_std = 1.0 / np.sqrt(var + eps)  # (C,)
    xhat = (x - mu.reshape(bshape)) * inv_std.reshape(bshape)
    out = gamma.reshape(bshape) * xhat + beta.reshape(bshape)
    return out.astype(x.dtype, copy=False), (xhat, gamma, inv_std, axes, bshape, train, layer)


def batchnorm_backward(dout, cache):
    """-> dx (shape of x), dgamma (C,), dbeta (C,)."""
    xhat, gamma, inv_std, axes, bshape, train, layer = cache
    if dout.shape != xhat.shape:
        _fail(layer, "upstream gradient dout", str(xhat.shape), dout.shape)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * gamma.reshape(bshape)
    if not train:  # the statistics are constants
        return dxhat * inv_std.reshape(bshape), dgamma, dbeta
    m = dout.size // dout.shape[1]
    # dx = inv_std / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
    dx = (inv_std.reshape(bshape) / m) * (
        m * dxhat - dxhat.sum(axis=axes).reshape(bshape)
        - xhat * (dxhat * xhat).sum(axis=axes).reshape(bshape))
    return dx, dgamma, dbeta
