"""Data parallelism on the CPU: a batch cut into shards, one thread per shard.

Every example's forward and backward pass is independent of the others, so a batch of N can be
cut into W contiguous shards and each shard run on its own thread. The batch loss is the mean over
all N examples, so with n_w examples in shard w (its loss L_w and gradient g_w means over the
shard):

    L = sum_w (n_w / N) L_w          g = sum_w (n_w / N) g_w

The shards are fixed slices and the sum always runs w = 0, 1, ..., so the result does not depend
on which thread finishes first: the same seed and the same number of threads give the same
numbers bit for bit. A different number of threads changes the float rounding of the sum only.

Threads (not processes) work because every heavy call releases Python's GIL: NumPy's matrix
products and ufuncs, and the Numba kernels (`nogil=True`). The matrix library must then run one
thread per call, or W shards times its own threads fight over the cores: `blas_threads(1)` (via
threadpoolctl) sets that for a block. On the 2-core machine of the README, LeNet-5-Caffe trained
at 4,662 images/s as one shard with BLAS's two threads and at 5,270 as two shards of 50 with one
BLAS thread each on numba, 1,968 and 2,752 on numpy (`make bench BENCH_ARGS="--models lenet5
--threads 0 1"`): im2col, col2im and max-pool run on both cores too.

Masked gradients are summed only at the mask's nonzeros (elsewhere every shard's gradient is
exactly 0), so freezing keeps its advantage: the sum touches 0.5% of a layer at q = 0.995.

Batch norm normalises with the statistics of the batch it sees; a shard's statistics are not the
batch's, so models with batch norm always run as one shard.

Freed memory: every step allocates the same activations and columns again (megabytes each).
glibc's malloc hands blocks that large back to the operating system on free and gets fresh pages
on the next step, and each fresh page costs a fault and a zeroing. `keep_freed_memory()` asks
malloc to keep them for reuse; the training loop calls it. On 2 cores it took LeNet-5-Caffe with
random q = 0.995 masks from about 6,400 to 8,500 images/s, and PyTorch in the same process from
about 3,300 to 3,800 (benchmarks/bench.py calls it for every candidate alike).

    with parallel.shard_blas(2):
        loss, grads, logits = parallel.loss_and_grads(model, params, x, y, masks=masks, threads=2)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from minifreeze.layers import mask_nonzeros

MAX_THREADS = 8
"""The automatic thread count never exceeds this (measured only on 2 cores so far)."""

MIN_SHARD = 16
"""Fewest examples per shard: below this the per-call overheads outweigh the second core."""

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0  # a forked child inherits the pool object but not its threads: it needs its own


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def has_batchnorm(model) -> bool:
    return any(ly.op == "batchnorm" for ly in model.layers)


def resolve_threads(model, threads: int | None, batch_size: int) -> int:
    """How many shards a batch of `batch_size` runs as; `threads` None or 0 means automatic.

    Automatic: one per CPU (at most MAX_THREADS), at least MIN_SHARD examples each; 1 for a
    model without convolutions, whose steps are too short for threads to pay (LeNet-300-100 on 2
    cores: 80,576 images/s as one shard, 42,902 as two), and 1 for a model with batch norm. An
    explicit count above 1 for a model with batch norm is an error.
    """
    check_threads(threads)
    if has_batchnorm(model):
        if threads is not None and threads > 1:
            raise ValueError(f"threads: {model.name} has batch norm, whose batch statistics a "
                             f"shard would change; expected threads 1 or automatic, got {threads}")
        return 1
    if not threads and not any(ly.op == "conv" for ly in model.layers):
        return 1
    return _fit(threads, batch_size)


def check_threads(threads) -> None:
    """ValueError unless threads is None or a whole number >= 0 (None and 0 mean automatic)."""
    if threads is not None and (isinstance(threads, bool) or
                                not isinstance(threads, (int, np.integer)) or threads < 0):
        raise ValueError(f"threads: expected a whole number >= 0 (0 = automatic), got {threads!r}")


def _fit(threads: int | None, batch_size: int) -> int:
    if not threads:
        threads = min(cpu_count(), MAX_THREADS)
    return int(max(1, min(threads, batch_size // MIN_SHARD)))


def shards(n: int, threads: int) -> list[slice]:
    """`threads` contiguous slices covering range(n), sizes differing by at most one."""
    threads = max(1, min(threads, n))
    edges = [n * w // threads for w in range(threads + 1)]
    return [slice(edges[w], edges[w + 1]) for w in range(threads)]


def _map(fn, items: list) -> list:
    """[fn(item) for item in items], the first on this thread and the rest on the pool."""
    global _pool, _pool_size, _pool_pid
    if len(items) == 1:
        return [fn(items[0])]
    if _pool_size < len(items) - 1 or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=len(items) - 1, thread_name_prefix="minifreeze")
        _pool_size, _pool_pid = len(items) - 1, os.getpid()
    futures = [_pool.submit(fn, item) for item in items[1:]]
    first = fn(items[0])
    return [first] + [f.result() for f in futures]


def loss_and_grads(model, params, x, y, *, masks=None, buffers=None, threads: int | None = None):
    """Softmax cross-entropy, its gradients and the logits of a batch, run as shards on threads.

    -> (loss, grads keyed like params, logits (N, classes)). Equal to `model.loss_and_grads` up to
    float rounding; with one shard it is that call. Wrap a loop of calls in `shard_blas(threads)`.
    """
    from minifreeze.losses import softmax_cross_entropy

    n = len(x)
    parts = shards(n, resolve_threads(model, threads, n))

    def run(sl):
        with np.errstate(over="ignore", invalid="ignore"):  # the caller checks the loss
            logits, caches = model.forward(params, x[sl], buffers=buffers)
            loss, dlogits = softmax_cross_entropy(logits, y[sl])
        return loss, model.backward(dlogits, caches, masks=masks), logits

    results = _map(run, parts)
    if len(results) == 1:
        return results[0]
    weights = [(sl.stop - sl.start) / n for sl in parts]  # n_w / N
    loss = sum(w * r[0] for w, r in zip(weights, results))
    grads = results[0][1]
    for key, g in grads.items():
        dt = g.dtype.type
        m = None if masks is None else masks.get(key)
        if m is None:
            g *= dt(weights[0])
            for w, r in zip(weights[1:], results[1:]):
                g += dt(w) * r[1][key]
        else:  # every shard's gradient is exactly 0 off the mask: sum at its nonzeros only
            flat = mask_nonzeros(m)[2]
            acc = dt(weights[0]) * g.reshape(-1)[flat]  # (nnz,)
            for w, r in zip(weights[1:], results[1:]):
                acc += dt(w) * r[1][key].reshape(-1)[flat]
            g.reshape(-1)[flat] = acc
    return loss, grads, np.concatenate([r[2] for r in results])


def predict(model, params, x, *, buffers=None, batch_size: int = 1000,
            threads: int | None = None) -> np.ndarray:
    """Logits in eval mode, each batch of `batch_size` cut into shards: x (N, ...) -> (N, classes).

    Eval mode uses batch norm's running statistics, so every model can be sharded here.
    """
    check_threads(threads)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        parts = shards(len(xb), _fit(threads, len(xb)))
        out += _map(lambda sl: model.forward(params, xb[sl], train=False, buffers=buffers)[0],
                    parts)
    return np.concatenate(out) if out else model.predict(params, x, buffers=buffers)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit the BLAS library under NumPy to `n` threads inside the block, then restore it."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def shard_blas(threads: int):
    """The BLAS setting for running batches as `threads` shards: one BLAS thread per shard when
    there are several, BLAS's own count when there is one."""
    return blas_threads(1) if threads > 1 else contextlib.nullcontext()


# --- freed memory -------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
_kept = False


def keep_freed_memory(block_limit: int = 32 << 20, keep: int = 1 << 30) -> bool:
    """Make glibc's malloc serve blocks under `block_limit` bytes from its heap and keep up to
    `keep` bytes of freed memory there, instead of returning it to the OS after every step.

    Process-wide and idempotent; the resident memory then stays at its peak. Returns False, and
    changes nothing, where the C library is not glibc (macOS, musl).
    """
    global _kept
    if _kept:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit machines.
    _kept = mallopt(_M_MMAP_THRESHOLD, block_limit) == 1 and mallopt(_M_TRIM_THRESHOLD, keep) == 1
    return _kept
