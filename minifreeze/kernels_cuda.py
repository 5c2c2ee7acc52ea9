"""CUDA kernels with numba.cuda, each next to the NumPy reference it must equal.

This is the only module that imports `numba.cuda`, and nothing imports this module until the "cuda"
backend is asked for (`backend.set_backend("cuda")`, `MINIFREEZE_BACKEND=cuda`, `--backend cuda`).
Without a GPU it runs on Numba's CUDA simulator: set `NUMBA_ENABLE_CUDASIM=1` *before* Numba is
first imported, and every kernel runs as Python threads (very slow, but exact enough to test).

What it teaches, kernel by kernel (reference in brackets):

    im2col_kernel        one thread per column entry, a gather      [im2col.im2col]
    col2im_kernel        one thread per input pixel, a gather: it sums the columns that saw the
                         pixel, so no atomics and the same result on every run    [im2col.col2im]
    maxpool_fwd_kernel   one thread per output, first maximum wins  [im2col.maxpool_forward]
    maxpool_bwd_kernel   one thread per input pixel, a gather       [im2col.maxpool_backward]
    matmul_kernel        C = op(A) @ op(B) in shared-memory tiles, the GPU's basic move (below)
    masked_sgd_kernel    the masked SGD contract, one thread per weight  [optim.masked_sgd_update]
    bias_add / bias_grad / relu / softmax-cross-entropy: the rest of a training step

Grid-stride loops: a kernel is launched with a fixed number of threads and each thread walks
`i, i + gridsize, i + 2*gridsize, ...`, so one launch shape fits every array size.

Two levels of use:
1. The backend table (`backend.set_backend("cuda")`): im2col, col2im, maxpool_forward,
   maxpool_backward and masked_sgd_update with the host-array signatures of the NumPy reference
   (copy in, run the kernel, copy out), so `layers.py` and its gradient checks run on the cuda
   backend unchanged. `sampled_weight_grad` has no CUDA kernel: the table uses the NumPy reference.
2. `cuda_train.DeviceTrainer`: parameters, masks, velocities and activations stay on the device for a
   whole run and call the `d_*` launchers below directly; no per-layer round trips.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import cuda, float32

from minifreeze.im2col import check_col2im, conv_output_size

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
"""True when kernels run on Numba's CUDA simulator (Python threads, no GPU)."""

# The simulator starts one Python thread per CUDA thread (about 1 ms each): keep launches small
# there, but with more than one block and thread so the grid-stride loops are still exercised.
THREADS = 8 if SIMULATOR else 256
MAX_BLOCKS = 2 if SIMULATOR else 4096
TILE = 4 if SIMULATOR else 16
"""Side of the square shared-memory tile of matmul_kernel (TILE x TILE threads per block)."""


def unavailable_reason() -> str | None:
    """None if kernels can run here (a GPU or the simulator), else why not and how to fix it."""
    if cuda.is_available():
        return None
    return ("no CUDA GPU found (or no driver). To run the cuda backend without a GPU, set "
            "NUMBA_ENABLE_CUDASIM=1 before starting Python (Numba's simulator, slow); on a machine "
            "with an NVIDIA GPU, install the CUDA extra: pip install 'minifreeze[cuda]'")


def device_info() -> dict:
    """The GPU the kernels run on, for a run's record: its name, compute capability, the driver's
    and the CUDA target's versions (Numba's simulator says so instead). A fact this Numba cannot
    give is None: the record must never cost a finished run."""
    if SIMULATOR:
        return {"name": "Numba CUDA simulator", "simulator": True}
    from importlib import metadata

    def fact(get):
        try:
            return get()
        except Exception:  # an older or newer numba.cuda without this call
            return None

    dev = cuda.get_current_device()
    name = fact(lambda: dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name))
    return {"name": name, "simulator": False,
            "compute_capability": fact(lambda: ".".join(map(str, dev.compute_capability))),
            "multiprocessors": fact(lambda: int(dev.MULTIPROCESSOR_COUNT)),
            "driver": fact(lambda: ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))),
            "numba_cuda": fact(lambda: metadata.version("numba-cuda"))}


def _grid(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over n items."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS))), THREADS


@cuda.jit(device=True)
def unravel4(t, shape):
    """Flat index t of a C-ordered (N, C, H, W) array -> (n, c, h, w)."""
    return (t // (shape[1] * shape[2] * shape[3]), (t // (shape[2] * shape[3])) % shape[1],
            (t // shape[3]) % shape[2], t % shape[3])


# --- im2col / col2im ----------------------------------------------------------------------------

@cuda.jit
def im2col_kernel(x, cols, kh, kw, stride, pad, ow):
    """cols[n, (c, i, j), (r, s)] = xpad[n, c, r*stride + i, s*stride + j]."""
    n_img, ckk, p = cols.shape
    h, w = x.shape[2], x.shape[3]
    t = cuda.grid(1)
    while t < cols.size:
        col = t % p                      # output position (r, s)
        row = (t // p) % ckk             # patch entry (c, i, j)
        n = t // (p * ckk)
        c, ij = row // (kh * kw), row % (kh * kw)
        hi = (col // ow) * stride + ij // kw - pad
        wi = (col % ow) * stride + ij % kw - pad
        if 0 <= hi < h and 0 <= wi < w:
            cols[n, row, col] = x[n, c, hi, wi]
        else:
            cols[n, row, col] = 0        # the zero padding
        t += cuda.gridsize(1)


@cuda.jit
def col2im_kernel(cols, x, kh, kw, stride, pad, oh, ow):
    """x[n, c, h, w] = sum of every column entry that im2col copied from pixel (h, w)."""
    t = cuda.grid(1)
    while t < x.size:
        n, c, hi, wi = unravel4(t, x.shape)
        x[n, c, hi, wi] = 0
        for i in range(kh):
            r = hi + pad - i             # r * stride must land here
            if r >= 0 and r % stride == 0 and r // stride < oh:
                for j in range(kw):
                    s = wi + pad - j
                    if s >= 0 and s % stride == 0 and s // stride < ow:
                        row = (c * kh + i) * kw + j            # patch entry (c, i, j)
                        x[n, c, hi, wi] += cols[n, row, (r // stride) * ow + s // stride]
        t += cuda.gridsize(1)


def d_im2col(x, cols, kh, kw, stride, pad, ow):
    """Device arrays: x (N, C, H, W) -> cols (N, C*KH*KW, OH*OW), written in place."""
    blocks, threads = _grid(cols.size)
    im2col_kernel[blocks, threads](x, cols, kh, kw, stride, pad, ow)


def d_col2im(cols, x, kh, kw, stride, pad, oh, ow):
    """Device arrays: cols (N, C*KH*KW, OH*OW) -> x (N, C, H, W), written in place."""
    blocks, threads = _grid(x.size)
    col2im_kernel[blocks, threads](cols, x, kh, kw, stride, pad, oh, ow)


# --- max-pool -----------------------------------------------------------------------------------

@cuda.jit
def maxpool_fwd_kernel(x, out, argmax, kh, kw, stride):
    """out = max over each window; argmax = i*KW + j of the first maximum (ties to the first)."""
    t = cuda.grid(1)
    while t < out.size:
        n, c, r, s = unravel4(t, out.shape)
        best = x[n, c, r * stride, s * stride]
        k = 0
        for i in range(kh):
            for j in range(kw):
                v = x[n, c, r * stride + i, s * stride + j]
                if v > best:             # strictly greater: the first maximum wins
                    best = v
                    k = i * kw + j
        out[n, c, r, s] = best
        argmax[n, c, r, s] = k
        t += cuda.gridsize(1)


@cuda.jit
def maxpool_bwd_kernel(dout, argmax, dx, kh, kw, stride):
    """dx[n, c, h, w] = sum of dout over the windows whose winner is pixel (h, w)."""
    oh, ow = dout.shape[2], dout.shape[3]
    t = cuda.grid(1)
    while t < dx.size:
        n, c, hi, wi = unravel4(t, dx.shape)
        dx[n, c, hi, wi] = 0
        for i in range(kh):
            r = hi - i
            if r >= 0 and r % stride == 0 and r // stride < oh:
                for j in range(kw):
                    s = wi - j
                    if s >= 0 and s % stride == 0 and s // stride < ow:
                        if argmax[n, c, r // stride, s // stride] == i * kw + j:
                            dx[n, c, hi, wi] += dout[n, c, r // stride, s // stride]
        t += cuda.gridsize(1)


def d_maxpool_forward(x, out, argmax, kh, kw, stride):
    blocks, threads = _grid(out.size)
    maxpool_fwd_kernel[blocks, threads](x, out, argmax, kh, kw, stride)


def d_maxpool_backward(dout, argmax, dx, kh, kw, stride):
    blocks, threads = _grid(dx.size)
    maxpool_bwd_kernel[blocks, threads](dout, argmax, dx, kh, kw, stride)


# --- the host-array kernel table (level 1) ------------------------------------------------------

def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Same contract as im2col.im2col: (N, C, H, W) -> (C*KH*KW, N*OH*OW).

    The device kernel writes (N, C*KH*KW, OH*OW), the layout DeviceTrainer multiplies per image;
    the host copy is reordered into the layers' matrix."""
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, pad, layer="im2col")
    ow = conv_output_size(w, kw, stride, pad, layer="im2col")
    cols = cuda.device_array((n, c * kh * kw, oh * ow), dtype=x.dtype)  # (N, C*KH*KW, OH*OW)
    d_im2col(cuda.to_device(np.ascontiguousarray(x)), cols, kh, kw, stride, pad, ow)
    return cols.copy_to_host().transpose(1, 0, 2).reshape(c * kh * kw, n * oh * ow)


def col2im(cols: np.ndarray, x_shape, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Same contract as im2col.col2im: (C*KH*KW, N*OH*OW) -> (N, C, H, W)."""
    oh, ow = check_col2im(cols, x_shape, kh, kw, stride, pad)
    n = x_shape[0]
    cols3 = np.ascontiguousarray(cols.reshape(-1, n, oh * ow).transpose(1, 0, 2))  # (N, CKK, P)
    x = cuda.device_array(tuple(x_shape), dtype=cols.dtype)  # (N, C, H, W)
    d_col2im(cuda.to_device(cols3), x, kh, kw, stride, pad, oh, ow)
    return x.copy_to_host()


def maxpool_forward(x: np.ndarray, kh: int, kw: int, stride: int):
    """Same contract as im2col.maxpool_forward: -> out (N, C, OH, OW), argmax int32."""
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, 0, layer="maxpool")
    ow = conv_output_size(w, kw, stride, 0, layer="maxpool")
    out = cuda.device_array((n, c, oh, ow), dtype=x.dtype)  # (N, C, OH, OW)
    argmax = cuda.device_array((n, c, oh, ow), dtype=np.int32)  # (N, C, OH, OW)
    d_maxpool_forward(cuda.to_device(np.ascontiguousarray(x)), out, argmax, kh, kw, stride)
    return out.copy_to_host(), argmax.copy_to_host()


def maxpool_backward(dout: np.ndarray, argmax: np.ndarray, x_shape, kh: int, kw: int,
                     stride: int) -> np.ndarray:
    """Same contract as im2col.maxpool_backward: -> dx (N, C, H, W)."""
    dx = cuda.device_array(tuple(x_shape), dtype=dout.dtype)  # (N, C, H, W)
    d_maxpool_backward(cuda.to_device(np.ascontiguousarray(dout)),
                       cuda.to_device(np.ascontiguousarray(argmax, dtype=np.int32)),
                       dx, kh, kw, stride)
    return dx.copy_to_host()


# The sampled weight gradient of a sparse mask has no CUDA kernel: the host-array table in
# backend.py uses the NumPy reference (DeviceTrainer masks dW on the device instead).


# --- tiled matrix multiply ----------------------------------------------------------------------

@cuda.jit
def matmul_kernel(a, b, c, trans_a, trans_b, reduce_batch, accumulate):
    """c[z] (+)= op(a[z]) @ op(b[z]) for float32 3-D arrays, one TILE x TILE block per c tile.

    op(a) is a[z].T when trans_a (likewise b), so every product of a training step is this one
    kernel. A batch of 1 broadcasts (a weight matrix shared by all images). With reduce_batch the
    products of all batches are summed into c[0] (the weight gradient of a convolution).

    Each block computes one TILE x TILE tile of c. It walks along the shared dimension K one tile
    at a time: every thread loads one element of op(a) and one of op(b) into shared memory, the
    block waits (syncthreads), every thread adds TILE products from the fast shared copies, the
    block waits again before the next load overwrites the tiles. Each global element is read
    K/TILE times fewer than in the naive one-thread-per-output kernel.
    """
    sa = cuda.shared.array((TILE, TILE), dtype=float32)
    sb = cuda.shared.array((TILE, TILE), dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty    # row of c
    col = cuda.blockIdx.x * TILE + tx    # column of c
    m, n = c.shape[1], c.shape[2]
    k_dim = a.shape[1] if trans_a else a.shape[2]
    z0 = cuda.blockIdx.z
    z1 = (a.shape[0] if a.shape[0] > b.shape[0] else b.shape[0]) if reduce_batch else z0 + 1
    acc = float32(0.0)
    for z in range(z0, z1):
        za = z if a.shape[0] > 1 else 0
        zb = z if b.shape[0] > 1 else 0
        for t0 in range(0, k_dim, TILE):
            ka, kb = t0 + tx, t0 + ty
            if row < m and ka < k_dim:
                sa[ty, tx] = a[za, ka, row] if trans_a else a[za, row, ka]
            else:
                sa[ty, tx] = 0
            if col < n and kb < k_dim:
                sb[ty, tx] = b[zb, col, kb] if trans_b else b[zb, kb, col]
            else:
                sb[ty, tx] = 0
            cuda.syncthreads()
            for k in range(TILE):
                acc += sa[ty, k] * sb[k, tx]
            cuda.syncthreads()
    if row < m and col < n:
        if accumulate:
            c[z0, row, col] += acc
        else:
            c[z0, row, col] = acc


def d_matmul(a, b, c, trans_a=False, trans_b=False, reduce_batch=False, accumulate=False):
    """Launch matmul_kernel on 3-D float32 device arrays (see its docstring)."""
    batches = 1 if reduce_batch else c.shape[0]
    blocks = (-(-c.shape[2] // TILE), -(-c.shape[1] // TILE), batches)
    matmul_kernel[blocks, (TILE, TILE)](a, b, c, trans_a, trans_b, reduce_batch, accumulate)


def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False,
           reduce_batch: bool = False) -> np.ndarray:
    """Host wrapper of d_matmul for tests and teaching: float32 (Z, ., .) arrays -> c."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    m = a.shape[2] if trans_a else a.shape[1]
    n = b.shape[1] if trans_b else b.shape[2]
    c = cuda.device_array((1 if reduce_batch else max(a.shape[0], b.shape[0]), m, n),
                          dtype=np.float32)  # (Z, M, N)
    d_matmul(cuda.to_device(a), cuda.to_device(b), c, trans_a, trans_b, reduce_batch)
    return c.copy_to_host()


# --- the masked optimiser update ----------------------------------------------------------------

@cuda.jit
def masked_sgd_kernel(theta, grad, velocity, mask, has_mask, lr, momentum, weight_decay, nesterov):
    """Where m == 1: g = grad + wd*theta; v = mu*v + g; theta -= lr * (g + mu*v if nesterov else v).

    Where m == 0 neither theta nor v is written, so frozen weights stay bit for bit.
    """
    t = cuda.grid(1)
    while t < theta.size:
        if not has_mask or mask[t] != 0:
            g = grad[t] + weight_decay * theta[t]
            v = momentum * velocity[t] + g
            velocity[t] = v
            if nesterov:
                theta[t] -= lr * (g + momentum * v)
            else:
                theta[t] -= lr * v
        t += cuda.gridsize(1)


def d_masked_sgd(theta, grad, velocity, mask, lr, momentum, weight_decay, nesterov):
    """Flat float32 device arrays; mask may be None (every entry trainable)."""
    has_mask = mask is not None
    if mask is None:
        mask = theta  # never read: has_mask is False
    blocks, threads = _grid(theta.size)
    f = np.float32  # keep the arithmetic in float32, as the NumPy reference does
    masked_sgd_kernel[blocks, threads](theta, grad, velocity, mask, has_mask, f(lr), f(momentum),
                                       f(weight_decay), bool(nesterov))


def masked_sgd_update(theta, grad, velocity, mask, lr, momentum, weight_decay, nesterov,
                      flat=None) -> None:
    """The masked SGD contract on host arrays (copy in, run, copy back in place). One thread per
    entry reads the mask, so `flat` (the positions of m == 1) is not needed."""
    for what, arr in (("theta", theta), ("grad", grad), ("velocity", velocity), ("mask", mask)):
        if arr is not None and (arr.shape != theta.shape or arr.dtype != np.float32):
            raise ValueError(f"masked_sgd_update: expected {what} float32 of shape {theta.shape}, "
                             f"got {arr.dtype} {arr.shape}")
    d_theta = cuda.to_device(theta.ravel())
    d_vel = cuda.to_device(velocity.ravel())
    d_mask = None if mask is None else cuda.to_device(np.ascontiguousarray(mask).ravel())
    d_masked_sgd(d_theta, cuda.to_device(np.ascontiguousarray(grad).ravel()), d_vel, d_mask,
                 lr, momentum, weight_decay, nesterov)
    theta[...] = d_theta.copy_to_host().reshape(theta.shape)
    velocity[...] = d_vel.copy_to_host().reshape(velocity.shape)


@cuda.jit
def nonfinite_kernel(x, flag):
    """flag[0] = 1 if any entry of the flat array x is NaN or infinite."""
    t = cuda.grid(1)
    while t < x.size:
        if math.isnan(x[t]) or math.isinf(x[t]):
            flag[0] = 1
        t += cuda.gridsize(1)


def d_all_finite(arrays, flag) -> bool:
    """True when every entry of the device arrays is finite; `flag` is a (1,) int32 device
    array used as scratch (one small copy back to the host in all)."""
    flag.copy_to_device(np.zeros(1, np.int32))
    for a in arrays:
        flat = a.ravel()
        blocks, threads = _grid(flat.size)
        nonfinite_kernel[blocks, threads](flat, flag)
    return int(flag.copy_to_host()[0]) == 0


# --- the rest of a training step ----------------------------------------------------------------

@cuda.jit
def bias_add_kernel(out, b):
    """out (N, F, P) += b[f]: a conv's (P = OH*OW) or a linear layer's (P = 1) bias."""
    f_dim, p = out.shape[1], out.shape[2]
    t = cuda.grid(1)
    while t < out.size:
        out[t // (f_dim * p), (t // p) % f_dim, t % p] += b[(t // p) % f_dim]
        t += cuda.gridsize(1)


@cuda.jit
def bias_grad_kernel(dout, db):
    """db[f] = sum over n and p of dout (N, F, P); one thread per f, a fixed summation order."""
    f = cuda.grid(1)
    while f < db.size:
        db[f] = 0
        for n in range(dout.shape[0]):
            for p in range(dout.shape[2]):
                db[f] += dout[n, f, p]
        f += cuda.gridsize(1)


@cuda.jit
def relu_fwd_kernel(x, out):
    t = cuda.grid(1)
    while t < x.size:
        out[t] = 0 if x[t] <= 0 else x[t]  # NaN stays NaN, as NumPy's maximum(x, 0) keeps it
        t += cuda.gridsize(1)


@cuda.jit
def relu_bwd_kernel(dout, out, dx):
    """dx = dout where the forward output was positive (the same as where its input was)."""
    t = cuda.grid(1)
    while t < dout.size:
        dx[t] = dout[t] if out[t] > 0 else 0
        t += cuda.gridsize(1)


@cuda.jit
def softmax_ce_kernel(logits, y, dlogits, row_loss, row_correct):
    """Per row n: loss = logsumexp(z) - z[y], dlogits = (softmax(z) - onehot(y)) / N, correct."""
    n_rows, k_dim = logits.shape
    n = cuda.grid(1)
    while n < n_rows:
        zmax = logits[n, 0]
        best = 0
        for k in range(1, k_dim):
            if logits[n, k] > zmax:
                zmax = logits[n, k]
                best = k
        total = 0.0
        for k in range(k_dim):
            total += math.exp(logits[n, k] - zmax)
        row_loss[n] = math.log(total) + zmax - logits[n, y[n]]
        row_correct[n] = 1 if best == y[n] else 0
        for k in range(k_dim):
            dlogits[n, k] = math.exp(logits[n, k] - zmax) / total / n_rows
        dlogits[n, y[n]] -= 1.0 / n_rows
        n += cuda.gridsize(1)


@cuda.jit
def batch_metrics_kernel(row_loss, row_correct, metrics):
    """metrics = [mean loss, number correct]: one thread, so the host copies two numbers."""
    if cuda.grid(1) == 0:
        loss, correct = 0.0, 0
        for n in range(row_loss.size):
            loss += row_loss[n]
            correct += row_correct[n]
        metrics[0] = loss / row_loss.size
        metrics[1] = correct


def d_bias_add(out3, b):
    blocks, threads = _grid(out3.size)
    bias_add_kernel[blocks, threads](out3, b)


def d_bias_grad(dout3, db):
    blocks, threads = _grid(db.size)
    bias_grad_kernel[blocks, threads](dout3, db)


def d_relu_forward(x, out):
    blocks, threads = _grid(x.size)
    relu_fwd_kernel[blocks, threads](x.ravel(), out.ravel())


def d_relu_backward(dout, out, dx):
    blocks, threads = _grid(dout.size)
    relu_bwd_kernel[blocks, threads](dout.ravel(), out.ravel(), dx.ravel())


def d_softmax_ce(logits, y, dlogits, row_loss, row_correct, metrics):
    blocks, threads = _grid(logits.shape[0])
    softmax_ce_kernel[blocks, threads](logits, y, dlogits, row_loss, row_correct)
    batch_metrics_kernel[1, 1](row_loss, row_correct, metrics)


# Re-exported for cuda_train.py, which must not import numba.cuda itself.
to_device = cuda.to_device
device_array = cuda.device_array
