"""The kernels a mask allows, in plain NumPy: the references the Numba kernels are checked against.

A mask that trains few weights (FreezeNet at q = 0.995 trains 0.5% of them) or a pruned layer
whose weights are mostly 0 need not pay for the dense products:

    sampled_weight_grad   dW only at the trainable positions: one dot product over the batch
                          positions per kept weight, instead of the whole (F, K) product
    sparse_matmul         a pruned W times a dense matrix over W's nonzeros (nnz * P
                          multiply-adds instead of F * K * P): a pruned linear layer's forward
                          product and input gradient
    sparse_conv_forward   a pruned convolution without im2col: each nonzero adds one shifted,
    sparse_conv_backward  strided plane of the input to one output channel, and back

`fast_layers.py` chooses them per layer (through the backend's table, `backend.kernels()`); the
lesson on im2col itself is `im2col.py`. The Numba versions (`kernels_numba.py`) are tested
against these.
"""

from __future__ import annotations

import numpy as np

from minifreeze.im2col import conv_output_size


def sampled_weight_grad(d2: np.ndarray, cols: np.ndarray, rows: np.ndarray, cidx: np.ndarray,
                        chunk: int = 1024) -> np.ndarray:
    """dW at chosen entries only: out[k] = d2[rows[k]] . cols[cidx[k]] (a dot product over P).

    d2 (F, P) and cols (K, P) -> (len(rows),). The dense weight gradient is dW (F, K) =
    d2 @ cols.T; this samples that product at (rows[k], cidx[k]), costing P multiply-adds per
    entry instead of F*K*P for the whole matrix. For a conv P = N*OH*OW; for a linear layer
    d2 = dout.T (M, N) and cols = x.T (D, N). Rows are gathered `chunk` entries at a time to
    bound the temporary memory.
    """
    out = np.empty(len(rows), dtype=np.result_type(d2, cols))  # (nnz,)
    for s in range(0, len(rows), chunk):
        a = d2[rows[s:s + chunk]]  # (chunk, P)
        b = cols[cidx[s:s + chunk]]  # (chunk, P)
        out[s:s + chunk] = np.einsum("kp,kp->k", a, b)
    return out


def sparse_matmul(vals: np.ndarray, rows: np.ndarray, cidx: np.ndarray, n_rows: int,
                  b: np.ndarray, *, transpose: bool = False) -> np.ndarray:
    """A pruned weight times a dense matrix, over the weight's nonzeros only.

    W (n_rows, K) is zero except W[rows[e], cidx[e]] = vals[e]. transpose False: W @ b, with b
    (K, P) -> (n_rows, P); transpose True: W.T @ b, with b (n_rows, P) -> (K, P), K = n_rows given.
    Costs nnz * P multiply-adds instead of n_rows * K * P: what a pruned layer's forward pass
    (W @ cols) and input gradient (W.T @ dout) need. Row by row: out[rows[e]] += vals[e] * b[cidx[e]]
    (or the other way round), accumulated in b's dtype.
    """
    src, dst = (rows, cidx) if transpose else (cidx, rows)
    out = np.zeros((n_rows, b.shape[1]), dtype=np.result_type(vals, b))  # (n_rows, P)
    np.add.at(out, dst, vals[:, None] * b[src])  # (nnz, P) products scattered onto their rows
    return out


def filter_positions(cidx, w_shape):
    """(c, i, j) of flat positions into a filter's (C, KH, KW): three index arrays (nnz,)."""
    return np.unravel_index(np.asarray(cidx, dtype=np.int64), tuple(w_shape[1:]))


def sparse_conv_forward(x: np.ndarray, vals: np.ndarray, rows: np.ndarray, cidx: np.ndarray,
                        w_shape: tuple, stride: int = 1, pad: int = 0) -> np.ndarray:
    """A pruned convolution, over its nonzeros only and without im2col (no bias).

    W (F, C, KH, KW) is zero except at nonzero e: W[rows[e], c, i, j] = vals[e] with
    (c, i, j) = cidx[e] unravelled over (C, KH, KW). Each nonzero adds one shifted, strided plane
    of the input to one output channel: out[:, f] += v * xpad[:, c, i::stride, j::stride], so
    x (N, C, H, W) -> out (N, F, OH, OW) costs nnz * N * OH * OW multiply-adds.
    """
    n, _, h, w = x.shape
    f, _, kh, kw = w_shape
    oh = conv_output_size(h, kh, stride, pad, layer="sparse conv")
    ow = conv_output_size(w, kw, stride, pad, layer="sparse conv")
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    out = np.zeros((n, f, oh, ow), dtype=np.result_type(x, vals))  # (N, F, OH, OW)
    for e, (c, i, j) in enumerate(zip(*filter_positions(cidx, w_shape))):
        out[:, rows[e]] += vals[e] * xp[:, c, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return out


def sparse_conv_backward(dout: np.ndarray, x: np.ndarray, vals: np.ndarray, rows: np.ndarray,
                         cidx: np.ndarray, w_shape: tuple, stride: int = 1, pad: int = 0,
                         need_dx: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """The backward pass of `sparse_conv_forward`: -> dx (N, C, H, W) or None, and the weight
    gradient at the nonzeros only, dw (nnz,): dw[e] = sum(dout[:, f] * the plane nonzero e read);
    dx scatters v * dout[:, f] back onto that plane (the adjoint)."""
    n, c_in, h, w = x.shape
    oh, ow = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    dw = np.empty(len(vals), dtype=np.result_type(dout, x))  # (nnz,)
    dxp = np.zeros(xp.shape, dtype=dw.dtype) if need_dx else None  # (N, C, H+2p, W+2p)
    for e, (c, i, j) in enumerate(zip(*filter_positions(cidx, w_shape))):
        plane = (slice(None), c, slice(i, i + stride * oh, stride), slice(j, j + stride * ow, stride))
        dw[e] = np.sum(dout[:, rows[e]] * xp[plane])
        if need_dx:
            dxp[plane] += vals[e] * dout[:, rows[e]]
    dx = None if dxp is None else dxp[:, :, pad:pad + h, pad:pad + w]
    return dx, dw
