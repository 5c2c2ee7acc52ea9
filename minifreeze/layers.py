"""Functional layers, each a forward/backward pair of plain functions (cs231n style).

    out, cache = conv_forward(x, w, b, stride=1, pad=0)
    dx, dw, db = conv_backward(dout, cache)

Activations are NCHW, convolution weights (F, C, KH, KW), linear weights (M, D) (out x in).
Nothing here keeps state: a cache holds exactly what the backward pass needs. Convolution and
pooling get their kernels from `backend.kernels()` (im2col, col2im, max-pool), so the same layer runs
on NumPy, Numba or CUDA; `conv_forward_naive` is the loop-by-loop oracle the tests compare against.

Weight-gradient masks: `linear_backward` and `conv_backward` take `w_mask` (m in FreezeNet; 1 =
trainable or kept, 0 = frozen or pruned) and return dw with the masked entries exactly 0. When the
mask's density is below the backend's threshold (`kernels().sparse_dw_density`: 10% on numba,
2% on numpy), dw is computed only at the mask's nonzeros (a sampled dense-dense product,
`kernels().sampled_weight_grad`) instead of densely and then masked: a layer with 0.5% of its
weights trainable skips 99.5% of its weight-gradient work. The nonzero indices of a mask are found
once per mask object and reused on every later step (see `mask_nonzeros`).

Memory order: activations have NCHW *shape* everywhere, but a convolution returns its output as a
view of the (F, N, OH, OW) matrix product, "channel-major", instead of copying it into (N, F, OH,
OW) order. Max-pool pools such an input as the (C, N, H, W) array it is stored as, and its
backward hands dx back in the same order, which is exactly the (F, N*OH*OW) layout the
convolution's backward multiplies with: no transposing copy either way. `channel_major(x)` tells
which order an array is in; NumPy operations do not care.

Bad shapes raise ValueError naming the layer, the expected shape and the shape received; nothing
broadcasts silently. Notebook 01 (`notebooks/01_layers_and_gradcheck.ipynb`) walks through this file.
"""

from __future__ import annotations

import weakref

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


def _check_mask(layer: str, w_mask: np.ndarray | None, shape: tuple) -> None:
    if w_mask is not None and np.shape(w_mask) != tuple(shape):
        _fail(layer, "weight mask", str(tuple(shape)), np.shape(w_mask))


# --- sparse weight gradients -------------------------------------------------------------------

SPARSE_DW_DENSITY: float | None = None
"""Masks with fewer trainable entries than this fraction get the sampled (sparse) dW; denser
masks get the dense product, then the mask. None: the active backend's threshold
(`kernels().sparse_dw_density`), measured where the sampled loop stops beating BLAS."""

_nonzeros: dict[int, tuple] = {}


def mask_nonzeros(w_mask: np.ndarray):
    """(rows, cols, flat, density) of a weight mask viewed as (out, rest): computed once per mask.

    The training loop passes the same mask arrays every step, so the indices are cached by the
    mask's identity (and dropped when the mask is garbage collected). Masks are treated as
    constants: after editing a mask in place, call `forget_mask_nonzeros()`.
    """
    key = id(w_mask)
    hit = _nonzeros.get(key)
    if hit is not None and hit[0]() is w_mask:
        return hit[1]
    m2 = np.asarray(w_mask).reshape(np.shape(w_mask)[0], -1)  # (F, C*KH*KW) or (M, D)
    rows, cols = np.nonzero(m2)
    info = (rows, cols, rows * m2.shape[1] + cols, rows.size / max(m2.size, 1))
    _nonzeros[key] = (weakref.ref(w_mask, lambda _, k=key: _nonzeros.pop(k, None)), info)
    return info


def forget_mask_nonzeros() -> None:
    """Drop every cached mask index (needed only after a mask was changed in place)."""
    _nonzeros.clear()


def _sparse_dw(dout3, cols3, w_shape, w_mask):
    """dW (w_shape) from the sampled product at the mask's nonzeros, or None if the mask is dense.

    dout3 (N, F, P), cols3 (N, K, P): the dense dW would be sum_n dout3[n] @ cols3[n].T.
    """
    rows, cols, flat, density = mask_nonzeros(w_mask)
    k = backend.kernels()
    if density >= (k.sparse_dw_density if SPARSE_DW_DENSITY is None else SPARSE_DW_DENSITY):
        return None
    dw = np.zeros(w_shape, dtype=np.result_type(dout3, cols3))  # (F, ...) zeros off the mask
    dw.reshape(-1)[flat] = k.sampled_weight_grad(dout3, cols3, rows, cols)
    return dw


# --- linear -------------------------------------------------------------------------------------

def linear_forward(x, w, b, *, layer: str = "linear"):
    """out = x @ w.T + b: x (N, D), w (M, D), b (M,) -> out (N, M)."""
    _check_rank(layer, "input x", x, 2, "(N, D)")
    _check_rank(layer, "weight w", w, 2, "(M, D)")
    if x.shape[1] != w.shape[1]:
        _fail(layer, "input x", f"(N, {w.shape[1]})", x.shape)
    _check_bias(layer, b, w.shape[0])
    out = x @ w.T + b  # (N, M)
    return out, (x, w, layer)


def linear_backward(dout, cache, *, w_mask=None, need_dx: bool = True):
    """-> dx (N, D) (None if not need_dx), dw (M, D), db (M,)."""
    x, w, layer = cache
    if dout.shape != (x.shape[0], w.shape[0]):
        _fail(layer, "upstream gradient dout", str((x.shape[0], w.shape[0])), dout.shape)
    _check_mask(layer, w_mask, w.shape)
    # As a sampled product over one "image" whose N rows are the positions: (1, M, N), (1, D, N).
    dw = None if w_mask is None else _sparse_dw(dout.T[None], x.T[None], w.shape, w_mask)
    if dw is None:
        dw = dout.T @ x  # (M, D)
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

def _check_conv(layer, x, w, b, stride, pad):
    _check_rank(layer, "input x", x, 4, "(N, C, H, W)")
    _check_rank(layer, "weight w", w, 4, "(F, C, KH, KW)")
    f, c, kh, kw = w.shape
    if x.shape[1] != c:
        _fail(layer, "input x", f"(N, {c}, H, W) to match weights {w.shape}", x.shape)
    _check_bias(layer, b, f)
    oh = conv_output_size(x.shape[2], kh, stride, pad, layer=layer)
    ow = conv_output_size(x.shape[3], kw, stride, pad, layer=layer)
    return oh, ow


def conv_forward(x, w, b, stride: int = 1, pad: int = 0, *, layer: str = "conv"):
    """2-D convolution by im2col: x (N, C, H, W), w (F, C, KH, KW), b (F,) -> (N, F, OH, OW).

    The whole batch is one matrix product: W (F, C*KH*KW) @ cols2 (C*KH*KW, N*OH*OW). im2col
    stores its columns in exactly that order (im2col.py, MEMORY ORDER), so cols2 is a free view;
    a backend that returns (N, C*KH*KW, OH*OW)-ordered columns gets one copy here instead.
    """
    oh, ow = _check_conv(layer, x, w, b, stride, pad)
    n = x.shape[0]
    f, c, kh, kw = w.shape
    cols = backend.kernels().im2col(x, kh, kw, stride, pad)  # (N, C*KH*KW, OH*OW)
    cols2 = cols.transpose(1, 0, 2).reshape(c * kh * kw, n * oh * ow)  # (C*KH*KW, N*OH*OW)
    out2 = w.reshape(f, -1) @ cols2  # (F, N*OH*OW)
    out2 += b[:, None]
    # (N, F, OH, OW), a view of the (F, N, OH, OW) product: channel-major, no transposing copy.
    return out2.reshape(f, n, oh, ow).transpose(1, 0, 2, 3), (x.shape, cols2, w, stride, pad, layer)


def conv_backward(dout, cache, *, w_mask=None, need_dx: bool = True):
    """-> dx (N, C, H, W) (None if not need_dx), dw (F, C, KH, KW), db (F,).

    With the batch folded into the columns, dW = dout2 (F, N*OH*OW) @ cols2.T and the column
    gradient W.T @ dout2 are single matrix products too. dout2 is free when dout is channel-major
    (as max-pool's backward returns it for a channel-major input); otherwise one transposing copy.
    """
    x_shape, cols2, w, stride, pad, layer = cache
    n = x_shape[0]
    f, c, kh, kw = w.shape
    expected = (n, f, *_out_hw(x_shape, w.shape, stride, pad))
    if dout.shape != expected:
        _fail(layer, "upstream gradient dout", str(expected), dout.shape)
    _check_mask(layer, w_mask, w.shape)
    d2 = np.ascontiguousarray(dout.reshape(n, f, -1).transpose(1, 0, 2)).reshape(f, -1)  # (F, N*OH*OW)
    db = d2.sum(axis=1)  # (F,)
    # As a sampled product over one "image" whose N*OH*OW columns are the positions.
    dw = None if w_mask is None else _sparse_dw(d2[None], cols2[None], w.shape, w_mask)
    if dw is None:
        dw = (d2 @ cols2.T).reshape(w.shape)  # (F, C, KH, KW)
        if w_mask is not None:
            dw *= w_mask
    dx = None
    if need_dx:
        dcols2 = w.reshape(f, -1).T @ d2  # (C*KH*KW, N*OH*OW)
        dcols = dcols2.reshape(c * kh * kw, n, -1).transpose(1, 0, 2)  # (N, C*KH*KW, OH*OW) view
        dx = backend.kernels().col2im(dcols, x_shape, kh, kw, stride, pad)  # (N, C, H, W)
    return dx, dw, db


def _out_hw(x_shape, w_shape, stride, pad):
    return ((x_shape[2] + 2 * pad - w_shape[2]) // stride + 1,
            (x_shape[3] + 2 * pad - w_shape[3]) // stride + 1)


def conv_forward_naive(x, w, b, stride: int = 1, pad: int = 0, *, layer: str = "conv"):
    """The same convolution as four nested loops: slow, obviously right, the tests' oracle."""
    oh, ow = _check_conv(layer, x, w, b, stride, pad)
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

def channel_major(x) -> bool:
    """True when x (N, C, H, W) is a view of a C-contiguous (C, N, H, W) buffer."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(1, 0, 2, 3).flags.c_contiguous


def maxpool_forward(x, size: int = 2, stride: int | None = None, *, layer: str = "maxpool"):
    """Max over size x size windows: x (N, C, H, W) -> (N, C, OH, OW). stride defaults to size.

    Each (image, channel) plane is pooled on its own, so a channel-major x (a convolution's
    output) is pooled as the (C, N, H, W) array it is stored as: no copy, and the output and the
    backward's dx come out channel-major too.
    """
    stride = size if stride is None else stride
    _check_rank(layer, "input x", x, 4, "(N, C, H, W)")
    conv_output_size(x.shape[2], size, stride, 0, layer=layer)
    conv_output_size(x.shape[3], size, stride, 0, layer=layer)
    swap = channel_major(x)
    xs = x.transpose(1, 0, 2, 3) if swap else x  # (C, N, H, W) if swap
    out, argmax = backend.kernels().maxpool_forward(xs, size, size, stride)
    out = out.transpose(1, 0, 2, 3) if swap else out  # (N, C, OH, OW)
    return out, (xs.shape, argmax, size, stride, swap, layer)


def maxpool_backward(dout, cache):
    xs_shape, argmax, size, stride, swap, layer = cache
    out_shape = (argmax.shape[1], argmax.shape[0], *argmax.shape[2:]) if swap else argmax.shape
    if dout.shape != out_shape:
        _fail(layer, "upstream gradient dout", str(out_shape), dout.shape)
    ds = dout.transpose(1, 0, 2, 3) if swap else dout
    dx = backend.kernels().maxpool_backward(ds, argmax, xs_shape, size, size, stride)
    return dx.transpose(1, 0, 2, 3) if swap else dx  # (N, C, H, W)


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
