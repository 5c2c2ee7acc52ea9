"""Data parallelism on the CPU: a batch cut into shards, one thread per shard.

Every example's forward and backward pass is independent of the others, so a batch of N can be
cut into W contiguous shards and each shard run on its own thread. The batch loss is the mean over
all N examples, so with n_w examples in shard w (its loss L_w and gradient g_w means over the
shard):

    L = sum_w (n_w / N) L_w          g = sum_w (n_w / N) g_w

The shards are fixed slices and the sum always runs w = 0, 1, ..., so the result does not depend
on which thread finishes first: the same seed and the same number of shards give the same
numbers bit for bit. A different number of shards changes the float rounding of the sum only.

Threads (not processes) work because every heavy call releases Python's GIL: NumPy's matrix
products and ufuncs, and the Numba kernels (`nogil=True`). The matrix library must then run one
thread per call, or W shards times its own threads fight over the cores: `loss_and_grads` and
`predict` hold BLAS to one thread while they run shards (threadpoolctl) and restore it after. On
the 2-core machine of the README, LeNet-5-Caffe trained at 4,662 images/s as one shard with BLAS's
two threads and at 5,270 as two shards of 50 with one BLAS thread each on numba, 1,968 and 2,752
on numpy (`make bench BENCH_ARGS="--models lenet5 --shards 0 1"`): im2col, col2im and max-pool
run on both cores too.

Masked gradients are summed only at the mask's nonzeros (elsewhere every shard's gradient is
exactly 0; the positions come from `Masks.index`), so freezing keeps its advantage: the sum
touches 0.5% of a layer at q = 0.995.

Batch norm normalises with the statistics of the batch it sees; a shard's statistics are not the
batch's, so models with batch norm always run as one shard.

Freed memory: every step allocates the same activations and columns again (megabytes each).
glibc's malloc hands blocks that large back to the operating system on free and gets fresh pages
on the next step, and each fresh page costs a fault and a zeroing. `kept_freed_memory()` asks
malloc to keep them for reuse while a block runs. It changes the whole process, so the library
never calls it: the command line and the benchmark opt in around their work. On 2 cores it took
LeNet-5-Caffe with random q = 0.995 masks from about 6,400 to 8,500 images/s, and PyTorch in the
same process from about 3,300 to 3,800.

    loss, grads, logits = parallel.loss_and_grads(model, params, x, y, masks=masks, shards=2)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from minifreeze.losses import softmax_cross_entropy
from minifreeze.masks import as_masks

MAX_SHARDS = 8
"""The automatic shard count never exceeds this (measured only on 2 cores so far)."""

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


def resolve_shards(model, shards: int | None, batch_size: int) -> int:
    """How many shards a batch of `batch_size` runs as; `shards` None or 0 means automatic.

    Automatic: one per CPU (at most MAX_SHARDS), at least MIN_SHARD examples each; 1 for a
    model without convolutions, whose steps are too short for threads to pay (LeNet-300-100 on 2
    cores: 80,576 images/s as one shard, 42,902 as two), and 1 for a model with batch norm. An
    explicit count above 1 for a model with batch norm is an error.
    """
    check_shards(shards)
    if has_batchnorm(model):
        if shards is not None and shards > 1:
            raise ValueError(f"shards: {model.name} has batch norm, whose batch statistics a "
                             f"shard would change; expected shards 1 or automatic, got {shards}")
        return 1
    if not shards and not any(ly.op == "conv" for ly in model.layers):
        return 1
    return _fit(shards, batch_size)


def check_shards(shards) -> None:
    """ValueError unless shards is None or a whole number >= 0 (None and 0 mean automatic)."""
    if shards is not None and (isinstance(shards, bool) or
                               not isinstance(shards, (int, np.integer)) or shards < 0):
        raise ValueError(f"shards: expected a whole number >= 0 (0 = automatic), got {shards!r}")


def _fit(shards: int | None, batch_size: int) -> int:
    if not shards:
        shards = min(cpu_count(), MAX_SHARDS)
    return int(max(1, min(shards, batch_size // MIN_SHARD)))


def slices(n: int, shards: int) -> list[slice]:
    """`shards` contiguous slices covering range(n), sizes differing by at most one."""
    shards = max(1, min(shards, n))
    edges = [n * w // shards for w in range(shards + 1)]
    return [slice(edges[w], edges[w + 1]) for w in range(shards)]


def _map(fn, items: list) -> list:
    """[fn(item) for item in items], the first on this thread and the rest on the pool; with
    several items BLAS runs one thread per call meanwhile."""
    global _pool, _pool_size, _pool_pid
    if len(items) == 1:
        return [fn(items[0])]
    if _pool_size < len(items) - 1 or _pool_pid != os.getpid():
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=False)  # a smaller pool of ours: its threads end when idle
        _pool = ThreadPoolExecutor(max_workers=len(items) - 1, thread_name_prefix="minifreeze")
        _pool_size, _pool_pid = len(items) - 1, os.getpid()
    with blas_threads(1):
        futures = [_pool.submit(fn, item) for item in items[1:]]
        first = fn(items[0])
        return [first] + [f.result() for f in futures]


def loss_and_grads(model, params, x, y, *, masks=None, buffers=None, shards: int | None = None,
                   pruned=None, plan=None):
    """Softmax cross-entropy, its gradients and the logits of a batch, run as shards on threads.

    -> (loss, grads keyed like params, logits (N, classes)). Equal to `model.loss_and_grads` up to
    float rounding; with one shard it is that call. `pruned`: as in `Model.forward` and
    `predict`, a `masks.Masks` whose m == 0 entries are exactly 0 in params, so pruned layers may
    compute over their kept weights only; None computes every product densely. `plan`: the
    forward functions chosen once (`Model.plan`), in place of choosing them from `pruned`.
    """
    masks = as_masks(masks)
    n = len(x)
    parts = slices(n, resolve_shards(model, shards, n))

    def run(sl):
        with np.errstate(over="ignore", invalid="ignore"):  # the caller checks the loss
            logits, caches = model.forward(params, x[sl], buffers=buffers, pruned=pruned,
                                           plan=plan)
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
            flat = masks.index(key).flat
            acc = dt(weights[0]) * g.reshape(-1)[flat]  # (nnz,)
            for w, r in zip(weights[1:], results[1:]):
                acc += dt(w) * r[1][key].reshape(-1)[flat]
            g.reshape(-1)[flat] = acc
    return loss, grads, np.concatenate([r[2] for r in results])


def predict(model, params, x, *, buffers=None, batch_size: int = 1000,
            shards: int | None = None, pruned=None, plan=None) -> np.ndarray:
    """Logits in eval mode, each batch of `batch_size` cut into shards: x (N, ...) -> (N, classes).

    Eval mode uses batch norm's running statistics, so every model can be sharded here.
    `pruned`, `plan`: see `Model.forward`.
    """
    check_shards(shards)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        parts = slices(len(xb), _fit(shards, len(xb)))
        out += _map(lambda sl: model.forward(params, xb[sl], train=False, buffers=buffers,
                                             pruned=pruned, plan=plan)[0], parts)
    return np.concatenate(out) if out else model.predict(params, x, buffers=buffers)


_blas = None  # threadpoolctl's controller, made on first use (setting a limit with it: ~15 us)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit the BLAS library under NumPy to `n` threads inside the block, then restore it."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController()
    with _blas.limit(limits=n, user_api="blas"):
        yield


# --- freed memory (opt-in, process-wide) ---------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
_GLIBC_DEFAULT = 128 * 1024  # both thresholds' initial values in glibc


def _mallopt():
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


@contextlib.contextmanager
def kept_freed_memory(block_limit: int = 32 << 20, keep: int = 1 << 30) -> Iterator[bool]:
    """Inside the block, glibc's malloc serves blocks under `block_limit` bytes from its heap and
    keeps up to `keep` bytes of freed memory there instead of returning it to the OS after every
    step; on exit both thresholds go back to glibc's initial 128 KiB (glibc's own adaptive
    raising of the mmap threshold stays off after that).

    Process-wide while it lasts, so only top-level programs opt in (the CLI, the benchmark).
    Blocks nest: leaving an inner block restores the enclosing block's thresholds, not glibc's
    (glibc has no call that reads them back, so this module keeps the stack, `_kept`).
    Yields True when it took effect, False (changing nothing) where the C library is not glibc.
    """
    mallopt = _mallopt()
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit machines.
    kept = (mallopt is not None and mallopt(_M_MMAP_THRESHOLD, block_limit) == 1
            and mallopt(_M_TRIM_THRESHOLD, keep) == 1)
    if kept:
        _kept.append((block_limit, keep))
    try:
        yield kept
    finally:
        if kept:
            _kept.pop()
            outer = _kept[-1] if _kept else (_GLIBC_DEFAULT, _GLIBC_DEFAULT)
            mallopt(_M_MMAP_THRESHOLD, outer[0])
            mallopt(_M_TRIM_THRESHOLD, outer[1])


_kept: list[tuple[int, int]] = []  # the thresholds of the open kept_freed_memory blocks
