"""The NumPy reference kernels rewritten as Numba loops: same signatures, same results.

Every function here has a twin in `im2col.py` (or, for the optimiser step, `optim.py`; for the
Winograd transforms, `winograd.py`) and the tests check each pair for equality over drawn shapes,
strides, paddings, windows and memory layouts, in float32 and float64. What changes is only *how* the loops run:

- im2col and col2im are one loop (`_patches`), the same index map run both ways: gather pixels
  into columns, or scatter-add columns back onto pixels (the adjoint). It walks the columns in
  their memory order, (C*KH*KW, N, OH*OW), and splits each row into the part that reads the image
  and the part that reads the zero padding, so the inner loops have no bounds test; col2im
  accumulates into a (C, N, H, W) buffer in one pass instead of KH*KW strided adds;
- max-pool forward finds the winner and backward routes the gradient in one loop each, with no
  (N, C, OH, OW, KH*KW) window copy; 2x2 windows with stride 2 (every pool in our models) get a
  branch-free tournament;
- `sampled_weight_grad` computes dW only at the trainable positions of a sparse mask (FreezeNet's
  "sparse gradient computations"): one dot product per nonzero instead of a full matrix product;
- `masked_sgd_update` fuses weight decay, momentum and the step into one pass that never touches a
  frozen or pruned entry.

CHANNEL-MAJOR. A convolution's output is the (F, N*OH*OW) matrix product seen as (N, F, OH, OW):
the layers hand it on as that view, "channel-major", instead of copying it into NCHW order. These
kernels read and write such arrays without a copy: im2col reads a (C, N, H, W) buffer as easily as
an (N, C, H, W) one; max-pool pools each (image, channel) plane on its own, so it pools a
channel-major input in its stored order and returns channel-major output and argmax; and
maxpool_backward and col2im return channel-major gradients, which is the order the previous
convolution's backward multiplies with. `channel_major(x)` tells the orders apart. Shapes are
NCHW everywhere; only the memory order differs, and NumPy operations do not care.

UNSIGNED INDICES. Numba accepts negative indices (a[-1]) and so tests every signed index for
wrap-around; inside an inner loop that branch stops LLVM from vectorising. The inner loops below
index flat arrays with uint64 offsets (`U(...)`), which skips the test: on LeNet-5's conv2 at batch
100, col2im ran 4.6x faster than the same loop with signed indices and im2col 1.9x faster than
NumPy's strided copy. Every offset is built from bounds that keep it in range, since a wrapped
unsigned index would read outside the array.

THREADS. The kernels run on the calling thread and release the GIL (`nogil=True`): the training
step gets its parallelism by splitting the batch across threads (`minifreeze.parallel`), one
shard per core, which on 2 cores beat both Numba's thread teams and BLAS's own threads. Each kernel
is compiled lazily for the dtypes it meets (float32 for training, float64 for gradient checks) and
cached on disk (`cache=True`), so a second process loads machine code instead of compiling again.
Shape checks happen in the small Python wrappers, which reuse the reference's error messages.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba import uint64 as U

from minifreeze.im2col import check_col2im, conv_output_size
from minifreeze.kernels_sparse import filter_positions

_jit = dict(cache=True, nogil=True)


def channel_major(x: np.ndarray) -> bool:
    """True when x (N, C, H, W) is a view of a C-contiguous (C, N, H, W) buffer."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(1, 0, 2, 3).flags.c_contiguous


@njit(inline="always", **_jit)
def _span(k_off, stride, pad, size, out):
    """Output positions [lo, hi) whose input position o*stride + k_off - pad lies in [0, size)."""
    lo = min(max(0, (pad - k_off + stride - 1) // stride), out)
    return lo, max(min(out, (size - 1 + pad - k_off) // stride + 1), lo)


# --- im2col / col2im ----------------------------------------------------------------------------

@njit(**_jit)
def _patches(img, channel_major, kh, kw, stride, pad, oh, ow, cols_t, adjoint):
    # The one index map of im2col, both ways:
    #   cols_t[(c, i, j), n, (r, s)]  <->  img[n, c, r*stride + i - pad, s*stride + j - pad]
    # adjoint False (im2col): cols_t = the gathered pixels, 0 where the window reads padding.
    # adjoint True (col2im): img += cols_t scattered back, skipping the padding.
    # img (N, C, H, W), or (C, N, H, W) when channel_major; cols_t (C*KH*KW, N, OH*OW).
    if channel_major:
        c, n, h, w = img.shape
    else:
        n, c, h, w = img.shape
    xf, of = img.reshape(-1), cols_t.reshape(-1)
    plane, span_l, st = U(h * w), U(oh * ow), U(stride)
    for ci in range(c):
        for i in range(kh):
            r_lo, r_hi = _span(i, stride, pad, h, oh)
            for j in range(kw):
                s_lo, s_hi = _span(j, stride, pad, w, ow)
                row = U(((ci * kh + i) * kw + j) * n) * span_l
                for i_n in range(n):
                    o = row + U(i_n) * span_l
                    xp = U(ci * n + i_n if channel_major else i_n * c + ci) * plane
                    for r in range(oh):
                        ob = o + U(r * ow)
                        if r < r_lo or r >= r_hi:  # the whole row reads padding
                            if not adjoint:
                                for s in range(U(ow)):
                                    of[ob + s] = 0
                            continue
                        xb = xp + U((r * stride + i - pad) * w + s_lo * stride + j - pad)
                        if adjoint:
                            for s in range(U(s_hi - s_lo)):
                                xf[xb + s * st] += of[ob + U(s_lo) + s]
                            continue
                        for s in range(U(s_lo)):
                            of[ob + s] = 0
                        for s in range(U(s_hi - s_lo)):
                            of[ob + U(s_lo) + s] = xf[xb + s * st]
                        for s in range(U(s_hi), U(ow)):
                            of[ob + s] = 0


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Unfold image patches into columns: x (N, C, H, W) -> cols (C*KH*KW, N*OH*OW).

    x may be stored (N, C, H, W) or channel-major (C, N, H, W); anything else is copied into
    (N, C, H, W) order first.
    """
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, pad, layer="im2col")
    ow = conv_output_size(w, kw, stride, pad, layer="im2col")
    cm = channel_major(x)
    src = x.transpose(1, 0, 2, 3) if cm else np.ascontiguousarray(x)
    cols_t = np.empty((c * kh * kw, n, oh * ow), dtype=x.dtype)  # (C*KH*KW, N, OH*OW)
    _patches(src, cm, kh, kw, stride, pad, oh, ow, cols_t, False)
    return cols_t.reshape(c * kh * kw, n * oh * ow)  # (C*KH*KW, N*OH*OW), the same memory


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kh: int, kw: int,
           stride: int = 1, pad: int = 0) -> np.ndarray:
    """Adjoint of im2col: scatter-add cols (C*KH*KW, N*OH*OW) back onto an (N, C, H, W) image,
    returned channel-major (a view of a (C, N, H, W) buffer)."""
    oh, ow = check_col2im(cols, x_shape, kh, kw, stride, pad)
    n, c, h, w = x_shape
    cols_t = np.ascontiguousarray(cols).reshape(c * kh * kw, n, oh * ow)  # (C*KH*KW, N, OH*OW)
    dx_t = np.zeros((c, n, h, w), dtype=cols.dtype)  # (C, N, H, W)
    _patches(dx_t, True, kh, kw, stride, pad, oh, ow, cols_t, True)
    return dx_t.transpose(1, 0, 2, 3)  # (N, C, H, W), a view


# --- max-pool -----------------------------------------------------------------------------------

@njit(**_jit)
def _maxpool_forward(x, kh, kw, stride, out, argmax):
    # x (N, C, H, W), out and argmax (N, C, OH, OW), all C-contiguous.
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    xf, of, af = x.reshape(-1), out.reshape(-1), argmax.reshape(-1)
    st, wu, owu = U(stride), U(w), U(ow)
    pair = kh == 2 and kw == 2 and stride == 2
    for p in range(U(n * c)):
        xb, ob = p * U(h * w), p * U(oh * ow)
        for r in range(U(oh)):
            top = xb + r * st * wu  # the window's first input row
            o = ob + r * owu
            if pair:  # a branch-free tournament; strict > keeps the first of equal values
                for s in range(owu):
                    a, b = xf[top + U(2) * s], xf[top + U(2) * s + U(1)]
                    cc, d = xf[top + wu + U(2) * s], xf[top + wu + U(2) * s + U(1)]
                    m1, k1 = (b, 1) if b > a else (a, 0)
                    m2, k2 = (d, 3) if d > cc else (cc, 2)
                    of[o + s], af[o + s] = (m2, k2) if m2 > m1 else (m1, k1)
                continue
            for s in range(owu):
                base = top + s * st
                best, arg = xf[base], 0
                for i in range(kh):
                    for j in range(kw):
                        v = xf[base + U(i) * wu + U(j)]
                        if v > best:  # strict: ties go to the first, as np.argmax
                            best, arg = v, i * kw + j
                of[o + s], af[o + s] = best, arg


def maxpool_forward(x: np.ndarray, kh: int, kw: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over each (KH, KW) window: x (N, C, H, W) -> out (N, C, OH, OW), argmax (N, C, OH, OW).

    argmax is the flat index i*KW + j of the winner inside its window; ties go to the first,
    and NaN compares as the reference's does. A channel-major x is pooled in its stored order and
    gives channel-major out and argmax.
    """
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, 0, layer="maxpool")
    ow = conv_output_size(w, kw, stride, 0, layer="maxpool")
    if channel_major(x):  # pool the (C, N, H, W) buffer: every plane is pooled on its own
        out, argmax = maxpool_forward(x.transpose(1, 0, 2, 3), kh, kw, stride)
        return out.transpose(1, 0, 2, 3), argmax.transpose(1, 0, 2, 3)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)  # (N, C, OH, OW)
    argmax = np.empty((n, c, oh, ow), dtype=np.int32)  # (N, C, OH, OW)
    _maxpool_forward(np.ascontiguousarray(x), kh, kw, stride, out, argmax)
    return out, argmax


@njit(**_jit)
def _maxpool_backward(dout, argmax, kw, stride, dx):
    # dout, argmax (N, C, OH, OW) and dx (N, C, H, W) zeros, all C-contiguous.
    n, c, oh, ow = dout.shape
    h, w = dx.shape[2], dx.shape[3]
    gf, af, df = dout.reshape(-1), argmax.reshape(-1), dx.reshape(-1)
    st, wu, owu, kwu = U(stride), U(w), U(ow), U(kw)
    for p in range(U(n * c)):
        xb, ob = p * U(h * w), p * U(oh * ow)
        for r in range(U(oh)):
            for s in range(owu):
                a = U(af[ob + r * owu + s])
                # Windows overlap when stride < kernel: accumulate, never overwrite.
                df[xb + (r * st + a // kwu) * wu + s * st + a % kwu] += gf[ob + r * owu + s]


def maxpool_backward(dout: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int],
                     kh: int, kw: int, stride: int) -> np.ndarray:
    """Route each output gradient to the input pixel that won its window: -> dx (N, C, H, W).

    A channel-major argmax (from a channel-major input) gives a channel-major dx."""
    if channel_major(argmax):
        n, c, h, w = x_shape
        t = (1, 0, 2, 3)
        return maxpool_backward(dout.transpose(t), argmax.transpose(t), (c, n, h, w), kh, kw,
                                stride).transpose(t)
    dx = np.zeros(x_shape, dtype=dout.dtype)  # (N, C, H, W)
    _maxpool_backward(np.ascontiguousarray(dout), np.ascontiguousarray(argmax), kw, stride, dx)
    return dx


# --- sparse weight gradient ---------------------------------------------------------------------

# fastmath lets LLVM reorder the sum into SIMD lanes; the result still matches to float tolerance.
@njit(fastmath=True, **_jit)
def _sampled_weight_grad(d2, cols, rows, cidx, out):
    # d2 (F, P), cols (K, P) C-contiguous; out (nnz,).
    p = d2.shape[1]
    gf, cf, pu = d2.reshape(-1), cols.reshape(-1), U(p)
    for e in range(rows.shape[0]):
        a, b = U(rows[e]) * pu, U(cidx[e]) * pu
        acc = 0.0  # float64 accumulator: the sum runs over P terms
        for t in range(pu):
            acc += gf[a + t] * cf[b + t]
        out[e] = acc


def sampled_weight_grad(d2: np.ndarray, cols: np.ndarray, rows: np.ndarray,
                        cidx: np.ndarray) -> np.ndarray:
    """dW at chosen entries only: out[k] = d2[rows[k]] . cols[cidx[k]].

    d2 (F, P) and cols (K, P) -> (len(rows),): the dense dW = d2 @ cols.T sampled at
    (rows[k], cidx[k]).
    """
    out = np.empty(rows.shape[0], dtype=np.result_type(d2, cols))  # (nnz,)
    _sampled_weight_grad(np.ascontiguousarray(d2), np.ascontiguousarray(cols), rows, cidx, out)
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


def masked_sgd_update(theta, grad, velocity, mask, lr, momentum, weight_decay, nesterov,
                      flat=None) -> None:
    """In place, where mask == 1 (everywhere if mask is None):
    g = grad + weight_decay * theta; v = momentum * v + g;
    step = g + momentum * v if nesterov else v; theta -= lr * step.
    Where mask == 0, theta and velocity are not written at all (bit for bit). `flat`: the flat
    positions of mask == 1 if known (`Masks.index(name).flat`), else found here.
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
    arrays1d = theta.reshape(-1), np.ascontiguousarray(grad).reshape(-1), velocity.reshape(-1)
    if mask is None:
        _sgd_dense(*arrays1d, *scalars)
    else:  # at q = 0.995 the loop visits 0.5% of the entries
        _sgd_masked(*arrays1d, np.flatnonzero(mask) if flat is None else flat, *scalars)


# --- a pruned weight times a dense matrix ---------------------------------------------------------

_TILE = 512
"""Columns of b (and of the output) one pass works on: the output tile (rows x 512 floats) stays
in cache while every nonzero adds into it, so each output row is read and written once per tile
instead of once per nonzero (LeNet-5's conv2 at batch 100: 50 rows x 6,400 columns)."""


@njit(fastmath=True, **_jit)
def _sparse_matmul(vals, src, dst, order, b, out):
    # out[dst[e], :] += vals[e] * b[src[e], :], e in `order` (sorted by src, so that nonzeros
    # reading the same row of b come together), tile by tile; b (K, P), out (n_rows, P).
    p = b.shape[1]
    bf, of = b.reshape(-1), out.reshape(-1)
    pu = U(p)
    for t0 in range(0, p, _TILE):
        width = U(min(_TILE, p - t0))
        for i in range(order.shape[0]):
            e = order[i]
            v, sb, so = vals[e], U(src[e]) * pu + U(t0), U(dst[e]) * pu + U(t0)
            for t in range(width):
                of[so + t] += v * bf[sb + t]


def sparse_matmul(vals: np.ndarray, rows: np.ndarray, cidx: np.ndarray, n_rows: int,
                  b: np.ndarray, *, transpose: bool = False) -> np.ndarray:
    """W @ b (or W.T @ b) for W zero but at (rows[e], cidx[e]) = vals[e]; see kernels_sparse.sparse_matmul.
    Each nonzero adds one row of b to one row of the output (a vectorised axpy), in tiles of
    _TILE columns."""
    src, dst = (rows, cidx) if transpose else (cidx, rows)
    out = np.zeros((n_rows, b.shape[1]), dtype=np.result_type(vals, b))  # (n_rows, P)
    order = np.argsort(src, kind="stable")  # (nnz,)
    _sparse_matmul(np.ascontiguousarray(vals, dtype=out.dtype), src, dst, order,
                   np.ascontiguousarray(b, dtype=out.dtype), out)
    return out


# --- a pruned convolution, straight from its input --------------------------------------------------

@njit(fastmath=True, **_jit)
def _sparse_conv(xc, d, vals, rows, cc, ci, cj, stride, pad, mode, dw, dxc):
    # xc (C, N, H, W) and d (F, N, OH, OW), both C-contiguous (channel-major). Per nonzero e the
    # plane xpad[c, :, i::stride, j::stride] meets the channel d[f]:
    #   mode 0 (forward):  d[f] += v * plane
    #   mode 1 (backward): dw[e] = sum(d[f] * plane), and if dxc.size, dxc's plane += v * d[f]
    c_in, n, h, w = xc.shape
    oh, ow = d.shape[2], d.shape[3]
    xf, df, gf = xc.reshape(-1), d.reshape(-1), dxc.reshape(-1)
    st, wu, owu = U(stride), U(w), U(ow)
    for e in range(vals.shape[0]):
        f, c, i, j, v = rows[e], cc[e], ci[e], cj[e], vals[e]
        r_lo, r_hi = _span(i, stride, pad, h, oh)
        s_lo, s_hi = _span(j, stride, pad, w, ow)
        acc = 0.0
        for i_n in range(n):
            xb = U((c * n + i_n) * h) * wu
            db = U((f * n + i_n) * oh) * owu
            for r in range(r_lo, r_hi):
                xr = xb + U(r * stride + i - pad) * wu + U(s_lo * stride + j - pad)
                dr = db + U(r) * owu + U(s_lo)
                width = U(s_hi - s_lo)
                if mode == 0:
                    for s in range(width):
                        df[dr + s] += v * xf[xr + s * st]
                else:
                    for s in range(width):
                        acc += df[dr + s] * xf[xr + s * st]
                    if gf.shape[0]:
                        for s in range(width):
                            gf[xr + s * st] += v * df[dr + s]
        if mode == 1:
            dw[e] = acc


def _channel_major(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) as a C-contiguous (C, N, H, W) array: free for a channel-major view."""
    return x.transpose(1, 0, 2, 3) if channel_major(x) else \
        np.ascontiguousarray(x.transpose(1, 0, 2, 3))


def sparse_conv_forward(x: np.ndarray, vals: np.ndarray, rows: np.ndarray, cidx: np.ndarray,
                        w_shape: tuple, stride: int = 1, pad: int = 0) -> np.ndarray:
    """A pruned convolution over its nonzeros, straight from x (see kernels_sparse.sparse_conv_forward):
    x (N, C, H, W) -> (N, F, OH, OW), returned channel-major (a view of (F, N, OH, OW))."""
    n, _, h, w = x.shape
    f, _, kh, kw = w_shape
    oh = conv_output_size(h, kh, stride, pad, layer="sparse conv")
    ow = conv_output_size(w, kw, stride, pad, layer="sparse conv")
    dt = np.result_type(x, vals)
    out = np.zeros((f, n, oh, ow), dtype=dt)  # (F, N, OH, OW)
    _sparse_conv(_channel_major(x).astype(dt, copy=False), out, vals.astype(dt), rows,
                 *filter_positions(cidx, w_shape), stride, pad, 0, np.empty(0, dt), np.empty(0, dt))
    return out.transpose(1, 0, 2, 3)


def sparse_conv_backward(dout: np.ndarray, x: np.ndarray, vals: np.ndarray, rows: np.ndarray,
                         cidx: np.ndarray, w_shape: tuple, stride: int = 1, pad: int = 0,
                         need_dx: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Backward of sparse_conv_forward -> dx (channel-major view, or None), dw at the nonzeros."""
    n, c, h, w = x.shape
    dt = np.result_type(dout, x)
    dw = np.empty(vals.shape[0], dtype=dt)  # (nnz,)
    dxc = np.zeros((c, n, h, w), dtype=dt) if need_dx else np.empty(0, dt)  # (C, N, H, W)
    _sparse_conv(_channel_major(x).astype(dt, copy=False), _channel_major(dout).astype(dt, copy=False),
                 vals.astype(dt), rows, *filter_positions(cidx, w_shape), stride, pad, 1, dw, dxc)
    return (dxc.transpose(1, 0, 2, 3) if need_dx else None), dw


# --- Winograd F(2x2, 3x3): the transforms of winograd.py as loops --------------------------------

@njit(**_jit)
def _winograd_input(x, pad, th, tw, v):
    n_img, n_ch, h, w = x.shape
    d = np.zeros((4, 4), dtype=x.dtype)
    for c in range(n_ch):
        for n in range(n_img):
            for ti in range(th):
                for tj in range(tw):
                    for a in range(4):  # the 4x4 tile, zeros outside the image
                        r = 2 * ti + a - pad
                        for b in range(4):
                            q = 2 * tj + b - pad
                            d[a, b] = x[n, c, r, q] if 0 <= r < h and 0 <= q < w else 0.0
                    p = (n * th + ti) * tw + tj
                    for b in range(4):  # B^T d: the rows combined
                        u0, u1 = d[0, b] - d[2, b], d[1, b] + d[2, b]
                        u2, u3 = d[2, b] - d[1, b], d[1, b] - d[3, b]
                        d[0, b], d[1, b], d[2, b], d[3, b] = u0, u1, u2, u3
                    for a in range(4):  # (B^T d) B: the columns combined
                        v[4 * a + 0, c, p] = d[a, 0] - d[a, 2]
                        v[4 * a + 1, c, p] = d[a, 1] + d[a, 2]
                        v[4 * a + 2, c, p] = d[a, 2] - d[a, 1]
                        v[4 * a + 3, c, p] = d[a, 1] - d[a, 3]


def winograd_input_transform(x: np.ndarray, pad: int, th: int, tw: int) -> np.ndarray:
    """V = B^T d B for every (channel, tile): (16, C, P), P = N * TH * TW (`winograd.input_transform`
    reshaped, without the padded copy and the tile copies)."""
    v = np.empty((16, x.shape[1], x.shape[0] * th * tw), dtype=x.dtype)
    _winograd_input(np.ascontiguousarray(x), pad, th, tw, v)
    return v


@njit(**_jit)
def _winograd_output(m, n_img, th, tw, oh, ow, out):
    n_f = m.shape[1]
    for f in range(n_f):
        for n in range(n_img):
            for ti in range(th):
                for tj in range(tw):
                    p = (n * th + ti) * tw + tj
                    r0 = m[0, f, p] + m[4, f, p] + m[8, f, p]  # A^T M: the rows combined
                    r1 = m[1, f, p] + m[5, f, p] + m[9, f, p]
                    r2 = m[2, f, p] + m[6, f, p] + m[10, f, p]
                    r3 = m[3, f, p] + m[7, f, p] + m[11, f, p]
                    s0 = m[4, f, p] - m[8, f, p] - m[12, f, p]
                    s1 = m[5, f, p] - m[9, f, p] - m[13, f, p]
                    s2 = m[6, f, p] - m[10, f, p] - m[14, f, p]
                    s3 = m[7, f, p] - m[11, f, p] - m[15, f, p]
                    i, j = 2 * ti, 2 * tj  # (A^T M) A: the columns combined
                    out[n, f, i, j] = r0 + r1 + r2
                    if j + 1 < ow:
                        out[n, f, i, j + 1] = r1 - r2 - r3
                    if i + 1 < oh:
                        out[n, f, i + 1, j] = s0 + s1 + s2
                        if j + 1 < ow:
                            out[n, f, i + 1, j + 1] = s1 - s2 - s3


def winograd_output_transform(m: np.ndarray, n: int, th: int, tw: int, oh: int,
                              ow: int) -> np.ndarray:
    """Y = A^T M A for every (filter, tile) of m (16, F, P), assembled into (N, F, OH, OW)
    (`winograd.output_transform`)."""
    out = np.empty((n, m.shape[1], oh, ow), dtype=m.dtype)
    _winograd_output(np.ascontiguousarray(m), n, th, tw, oh, ow, out)
    return out


@njit(**_jit)
def _winograd_output_adjoint(dout, th, tw, dm):
    n_img, n_f, oh, ow = dout.shape
    y = np.zeros((2, 2), dtype=dout.dtype)  # one 2x2 output tile, 0 beyond an odd edge
    r = np.empty((4, 2), dtype=dout.dtype)
    for f in range(n_f):
        for n in range(n_img):
            for ti in range(th):
                for tj in range(tw):
                    for i in range(2):
                        for j in range(2):
                            ii, jj = 2 * ti + i, 2 * tj + j
                            y[i, j] = dout[n, f, ii, jj] if ii < oh and jj < ow else 0
                    for j in range(2):  # A dY: the rows y0, y0 + y1, y0 - y1, -y1
                        r[0, j], r[1, j] = y[0, j], y[0, j] + y[1, j]
                        r[2, j], r[3, j] = y[0, j] - y[1, j], -y[1, j]
                    p = (n * th + ti) * tw + tj
                    for k in range(4):  # (A dY) A^T: each row (a, b) -> (a, a + b, a - b, -b)
                        dm[4 * k + 0, f, p] = r[k, 0]
                        dm[4 * k + 1, f, p] = r[k, 0] + r[k, 1]
                        dm[4 * k + 2, f, p] = r[k, 0] - r[k, 1]
                        dm[4 * k + 3, f, p] = -r[k, 1]


def winograd_output_adjoint(dout: np.ndarray, th: int, tw: int) -> np.ndarray:
    """dM = A dY A^T for every (filter, tile): (16, F, P) from dout (N, F, OH, OW)
    (`winograd.output_adjoint`)."""
    n, f = dout.shape[:2]
    dm = np.empty((16, f, n * th * tw), dtype=dout.dtype)
    _winograd_output_adjoint(np.ascontiguousarray(dout), th, tw, dm)
    return dm


@njit(**_jit)
def _winograd_input_adjoint(dv, pad, th, tw, dx):
    n_img, n_ch, h, w = dx.shape
    t = np.empty((4, 4), dtype=dx.dtype)
    for c in range(n_ch):
        for n in range(n_img):
            for ti in range(th):
                for tj in range(tw):
                    p = (n * th + ti) * tw + tj
                    for a in range(4):  # dV B^T: each row (v0..v3) -> (v0, v1 - v2 + v3, v1 + v2 - v0, -v3)
                        v0, v1 = dv[4 * a + 0, c, p], dv[4 * a + 1, c, p]
                        v2, v3 = dv[4 * a + 2, c, p], dv[4 * a + 3, c, p]
                        t[a, 0], t[a, 1], t[a, 2], t[a, 3] = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                    for b in range(4):  # B (dV B^T): the rows combined the same way, added where read
                        q = 2 * tj + b - pad
                        if q < 0 or q >= w:
                            continue
                        for a in range(4):
                            r = 2 * ti + a - pad
                            if r < 0 or r >= h:
                                continue
                            if a == 0:
                                dx[n, c, r, q] += t[0, b]
                            elif a == 1:
                                dx[n, c, r, q] += t[1, b] - t[2, b] + t[3, b]
                            elif a == 2:
                                dx[n, c, r, q] += t[1, b] + t[2, b] - t[0, b]
                            else:
                                dx[n, c, r, q] += -t[3, b]


def winograd_input_adjoint(dv: np.ndarray, x_shape, pad: int, th: int, tw: int) -> np.ndarray:
    """dx (N, C, H, W) = B dV B^T of every (channel, tile), added where the tile was read
    (`winograd.input_adjoint`)."""
    dx = np.zeros(tuple(x_shape), dtype=dv.dtype)
    _winograd_input_adjoint(np.ascontiguousarray(dv.reshape(16, x_shape[1], -1)), pad, th, tw, dx)
    return dx
