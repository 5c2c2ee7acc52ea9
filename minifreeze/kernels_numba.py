"""The NumPy reference kernels rewritten as Numba loops: same signatures, same cache layout.

Every function here has a twin in `im2col.py` (or, for the training-only kernels, in the numpy
table of `backend.py`) and the tests check each pair for equality over drawn shapes, strides,
paddings and windows, in float32 and float64. What changes is only *how* the loops run:

- col2im reads the padded image's bounds instead of materialising it (a bounds check replaces
  `np.pad`) and accumulates in one pass instead of KH*KW strided adds; im2col is the reference's
  strided copy, which measured faster than any loop here (see `im2col`);
- max-pool forward finds the winner and backward routes the gradient in one loop each, with no
  (N, C, OH, OW, KH*KW) window copy;
- `sampled_weight_grad` computes dW only at the trainable positions of a sparse mask (FreezeNet's
  "sparse gradient computations"): one dot product per nonzero instead of a full matrix product;
- `masked_sgd_update` fuses weight decay, momentum and the step into one pass that never touches a
  frozen or pruned entry.

The outer loops are `prange` over independent (image, channel) pairs or nonzeros, so each thread
writes a disjoint part of the output and no atomics are needed. Every kernel is compiled lazily
for the dtypes it meets (float32 for training, float64 for gradient checks) and cached on disk
(`cache=True`), so a second process loads machine code instead of compiling again. Shape checks
happen in the small Python wrappers, which reuse the reference's error messages.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from minifreeze import im2col as ref
from minifreeze.im2col import check_col2im, conv_output_size
from minifreeze.layers import mask_nonzeros

_jit = dict(cache=True, nogil=True)

PARALLEL_MIN_SIZE = 1 << 24
"""Arrays with fewer elements than this run on one thread. Measured on 2 cores in one interleaved
run (LeNet-5, batch 100, q = 0.995): serial loops 2,552 images/s, a thread team from 2^15
elements on 1,106. The team competes with BLAS's threads (which spin for a while after each
product) and with other processes; at these sizes the loops are memory-bound and a second thread
buys little. Every LeNet and small-VGG kernel at batch 100 stays under this size (the largest,
VGG conv1's columns, has 2.8M elements); lower it on a many-core machine."""


def _twin(**options):
    """Compile a loop twice: with prange across threads, and serially (prange acts as range).

    `kernel.pick(size)` returns the one to use for an output of `size` elements. Each twin is
    compiled lazily on its first call and cached on disk.
    """
    def wrap(fn):
        par = njit(parallel=True, **options, **_jit)(fn)
        # A copy under its own name: numba's disk cache is keyed by the function's qualified
        # name and signature, not by its options, so the twins must not share a name.
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
        serial.__qualname__ = fn.__qualname__ + "_serial"
        ser = njit(**options, **_jit)(serial)
        par.pick = lambda size: par if size >= PARALLEL_MIN_SIZE else ser
        return par
    return wrap


# --- im2col / col2im ----------------------------------------------------------------------------

def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Unfold image patches into columns: (N, C, H, W) -> (N, C*KH*KW, OH*OW), stored in
    (C*KH*KW, N, OH*OW) order (see im2col.py, MEMORY ORDER).

    This one is the NumPy reference itself: its strided copy (one `reshape` of a 6-D view) ran
    1.7-2.8x faster than every Numba loop we measured for the LeNet-5 and VGG shapes (the inner
    runs are only OW = 8-32 elements long, and NumPy's copy loop is specialised for them).
    """
    return ref.im2col(x, kh, kw, stride, pad)


@_twin()
def _col2im(cols_t, kh, kw, stride, pad, oh, ow, dx):
    n, c, h, w = dx.shape
    for nc in prange(n * c):  # each (image, channel) owns its own slice of dx: no races
        i_n, i_c = nc // c, nc % c
        d = dx[i_n, i_c]  # (H, W)
        for i in range(kh):
            for j in range(kw):
                src = cols_t[(i_c * kh + i) * kw + j, i_n]  # (OH*OW,): row (c, i, j), image n
                # Output columns s whose input column s*stride + j - pad lies inside the image.
                s_lo = min(max(0, (pad - j + stride - 1) // stride), ow)
                s_hi = max(min(ow, (w - 1 + pad - j) // stride + 1), s_lo)
                for r in range(oh):
                    y = r * stride + i - pad
                    if y < 0 or y >= h:
                        continue
                    drow, base, shift = d[y], r * ow, j - pad
                    if stride == 1:  # unit stride: a loop LLVM can vectorise
                        for s in range(s_lo, s_hi):
                            drow[s + shift] += src[base + s]
                    else:
                        for s in range(s_lo, s_hi):  # no bounds test inside the add loop
                            drow[s * stride + shift] += src[base + s]


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kh: int, kw: int,
           stride: int = 1, pad: int = 0) -> np.ndarray:
    """Adjoint of im2col: scatter-add columns (N, C*KH*KW, OH*OW) back onto an (N, C, H, W) image.

    The loop reads the columns in (C*KH*KW, N, OH*OW) order, im2col's memory order and the order
    the layers' one-GEMM backward produces; columns stored otherwise are copied into it first.
    """
    oh, ow = check_col2im(cols, x_shape, kh, kw, stride, pad)
    cols_t = np.ascontiguousarray(cols.transpose(1, 0, 2))  # (C*KH*KW, N, OH*OW), free if ordered
    dx = np.zeros(x_shape, dtype=cols.dtype)  # (N, C, H, W)
    _col2im.pick(cols.size)(cols_t, kh, kw, stride, pad, oh, ow, dx)
    return dx


# --- max-pool -----------------------------------------------------------------------------------

@_twin()
def _maxpool_forward(x, kh, kw, stride, out, argmax):
    n, c, oh, ow = out.shape
    for nc in prange(n * c):
        i_n, i_c = nc // c, nc % c
        for r in range(oh):
            for s in range(ow):
                best = x[i_n, i_c, r * stride, s * stride]
                arg = 0
                for i in range(kh):
                    for j in range(kw):
                        v = x[i_n, i_c, r * stride + i, s * stride + j]
                        if v > best:  # strict: ties go to the first, as np.argmax
                            best = v
                            arg = i * kw + j
                out[i_n, i_c, r, s] = best
                argmax[i_n, i_c, r, s] = arg


def maxpool_forward(x: np.ndarray, kh: int, kw: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over each (KH, KW) window: x (N, C, H, W) -> out (N, C, OH, OW), argmax (N, C, OH, OW).

    argmax is the flat index i*KW + j of the winner inside its window; ties go to the first.
    NaN handling differs from np.argmax (which picks the first NaN); inputs are assumed finite.
    """
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, 0, layer="maxpool")
    ow = conv_output_size(w, kw, stride, 0, layer="maxpool")
    out = np.empty((n, c, oh, ow), dtype=x.dtype)  # (N, C, OH, OW)
    argmax = np.empty((n, c, oh, ow), dtype=np.int32)  # (N, C, OH, OW)
    _maxpool_forward.pick(x.size)(np.ascontiguousarray(x), kh, kw, stride, out, argmax)
    return out, argmax


@_twin()
def _maxpool_backward(dout, argmax, kw, stride, dx):
    n, c, oh, ow = dout.shape
    for nc in prange(n * c):
        i_n, i_c = nc // c, nc % c
        for r in range(oh):
            for s in range(ow):
                a = argmax[i_n, i_c, r, s]
                # Windows overlap when stride < kernel: accumulate, never overwrite.
                dx[i_n, i_c, r * stride + a // kw, s * stride + a % kw] += dout[i_n, i_c, r, s]


def maxpool_backward(dout: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int],
                     kh: int, kw: int, stride: int) -> np.ndarray:
    """Route each output gradient to the input pixel that won its window: -> dx (N, C, H, W)."""
    dx = np.zeros(x_shape, dtype=dout.dtype)  # (N, C, H, W)
    _maxpool_backward.pick(dx.size)(np.ascontiguousarray(dout), np.ascontiguousarray(argmax),
                                    kw, stride, dx)
    return dx


# --- sparse weight gradient ---------------------------------------------------------------------

# fastmath lets LLVM reorder the sum into SIMD lanes; the result still matches to float tolerance.
@_twin(fastmath=True)
def _sampled_weight_grad(dout3, cols3, rows, cidx, out):
    n, _, p = dout3.shape
    for k in prange(rows.shape[0]):
        r, q = rows[k], cidx[k]
        acc = 0.0  # float64 accumulator: the sum runs over N*P terms
        for i in range(n):
            for t in range(p):
                acc += dout3[i, r, t] * cols3[i, q, t]
        out[k] = acc


def sampled_weight_grad(dout3: np.ndarray, cols3: np.ndarray, rows: np.ndarray,
                        cidx: np.ndarray) -> np.ndarray:
    """dW at chosen entries only: out[k] = sum_{n,p} dout3[n, rows[k], p] * cols3[n, cidx[k], p].

    dout3 (N, F, P) and cols3 (N, K, P) -> (len(rows),). The dense dW (F, K) would be
    sum_n dout3[n] @ cols3[n].T; this is that product sampled at (rows[k], cidx[k]).
    """
    out = np.empty(rows.shape[0], dtype=np.result_type(dout3, cols3))  # (nnz,)
    work = rows.shape[0] * dout3.shape[0] * dout3.shape[2]
    _sampled_weight_grad.pick(work)(np.ascontiguousarray(dout3), np.ascontiguousarray(cols3),
                         rows, cidx, out)
    return out


# --- fused masked SGD ---------------------------------------------------------------------------

@njit(**_jit)
def _sgd_masked(theta, grad, velocity, idx, lr, momentum, weight_decay, nesterov):
    for i in idx:  # only the trainable entries: frozen or pruned ones are never read or written
        g = grad[i] + weight_decay * theta[i]
        v = momentum * velocity[i] + g
        velocity[i] = v
        step = g + momentum * v if nesterov else v
        theta[i] = theta[i] - lr * step


@njit(**_jit)
def _sgd_dense(theta, grad, velocity, lr, momentum, weight_decay, nesterov):
    for i in range(theta.shape[0]):
        g = grad[i] + weight_decay * theta[i]
        v = momentum * velocity[i] + g
        velocity[i] = v
        step = g + momentum * v if nesterov else v
        theta[i] = theta[i] - lr * step


def masked_sgd_update(theta, grad, velocity, mask, lr, momentum, weight_decay, nesterov) -> None:
    """In place, where mask == 1 (everywhere if mask is None):
    g = grad + weight_decay * theta; v = momentum * v + g;
    step = g + momentum * v if nesterov else v; theta -= lr * step.
    Where mask == 0, theta and velocity are not written at all (bit for bit).
    """
    arrays = {"grad": grad, "velocity": velocity} if mask is None else \
        {"grad": grad, "velocity": velocity, "mask": mask}
    for what, a in arrays.items():
        if np.shape(a) != np.shape(theta):
            raise ValueError(f"masked_sgd_update: expected {what} of shape {np.shape(theta)}, "
                             f"got {np.shape(a)}")
    for what, a in (("theta", theta), ("velocity", velocity)):
        if not a.flags.c_contiguous:
            raise ValueError(f"masked_sgd_update: {what} must be C-contiguous (it is updated in place)")
    # Scalars in theta's dtype, so a float32 update is computed in float32 like the NumPy one.
    t = theta.dtype.type
    scalars = (t(lr), t(momentum), t(weight_decay), bool(nesterov))
    flat = theta.reshape(-1), np.ascontiguousarray(grad).reshape(-1), velocity.reshape(-1)
    if mask is None:
        _sgd_dense(*flat, *scalars)
    else:
        # The flat indices of m == 1, found once per mask object (the training loop passes the
        # same masks every step): at q = 0.995 the loop visits 0.5% of the entries.
        _sgd_masked(*flat, mask_nonzeros(mask)[2], *scalars)
