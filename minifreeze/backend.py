"""Which kernels run: the seam between the layers and their NumPy, Numba or CUDA implementations.

The layers in `layers.py` never call im2col, col2im or the pooling kernels directly; they ask
`kernels()` for the table of the active backend. Every table holds the same functions with the
same signatures as the NumPy reference (`im2col.py`, and `optim.masked_sgd_update` for the
optimiser step), so a test can run one layer under two backends and compare. The three tables are
written out below, one field per kernel, in `_numpy()`, `_numba()` and `_cuda()`.

    from minifreeze import backend
    backend.set_backend("numpy")            # for the rest of the process
    with backend.use_backend("numpy"):      # for one block
        ...
    backend.require("cuda")                 # the cuda table, or BackendUnavailable saying why

Backends: `numba` (compiled CPU loops in `kernels_numba.py`, the default when numba imports),
`numpy` (the reference, always available) and `cuda` (`kernels_cuda.py`, on a GPU or Numba's
simulator, only when asked for). The environment variable MINIFREEZE_BACKEND picks the backend at
import time. Asking for a backend that is not available raises an error that says why; there is
no silent fallback.

This module imports the kernel modules and nothing above them; the layers and the trainer import
it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator

NAMES = ("numba", "numpy", "cuda")
"""Backends this build knows about, in order of preference for the default: numba when it can
be imported, else numpy (the reference, always available). cuda is only ever chosen explicitly
(it is tried last, and needs a GPU or the simulator)."""


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and how to enable it."""


@dataclass(frozen=True, kw_only=True)
class Kernels:
    """One backend's kernels, each with the signature of its NumPy reference (built by keyword:
    thirteen callables of similar signatures must not be swapped silently)."""
    name: str
    im2col: Callable              # x (N, C, H, W) -> cols (C*KH*KW, N*OH*OW)
    col2im: Callable              # cols (C*KH*KW, N*OH*OW) -> dx (N, C, H, W)
    maxpool_forward: Callable     # x -> out, argmax (N, C, OH, OW)
    maxpool_backward: Callable    # dout, argmax -> dx (N, C, H, W)
    sampled_weight_grad: Callable  # d2 (F, P), cols (K, P), rows, cols -> dW at (rows, cols)
    masked_sgd_update: Callable   # theta, grad, velocity in place, only where m == 1
    sparse_matmul: Callable       # vals, rows, cols, n_rows, b -> W @ b over W's nonzeros
    sparse_conv_forward: Callable   # x, vals, rows, cols, w_shape, stride, pad -> out, no im2col
    sparse_conv_backward: Callable  # dout, x, vals, rows, cols, ... -> dx, dw at the nonzeros
    winograd_input: Callable     # x, pad, TH, TW -> V = B^T d B per (channel, tile), (16, C, P)
    winograd_output: Callable    # M (16, F, P), N, TH, TW, OH, OW -> Y = A^T M A, (N, F, OH, OW)
    winograd_output_adjoint: Callable  # dY (N, F, OH, OW), TH, TW -> dM = A dY A^T, (16, F, P)
    winograd_input_adjoint: Callable   # dV (16, C, P), x_shape, pad, TH, TW -> dx (N, C, H, W)
    sparse_dw_density: float
    """Below this mask density a layer's weight gradient is the sampled product at the mask's
    nonzeros, not the dense product (measured where the sampled loop stops beating BLAS)."""
    sparse_compute_density: float
    """Below this density a *pruned* layer (entries with m == 0 exactly 0) runs its forward product
    and its input gradient over the nonzeros only (`sparse_matmul`), when training asks for it
    (`TrainConfig.sparse_compute`)."""
    device_resident: bool = False
    """True when training should keep everything on the device (cuda_train.DeviceTrainer)
    instead of calling these host-array kernels layer by layer."""


def _numpy() -> Kernels:
    from minifreeze import im2col as ref, kernels_sparse as sp
    from minifreeze import winograd as wg
    from minifreeze.optim import masked_sgd_update
    # NumPy's gathers cost far more per multiply-add than BLAS: on LeNet-5's conv2 (50 x 500
    # weights, 3,200 positions) the sampled product took 1.10 ms at density 2% and 11 ms at 5%,
    # the dense product 2.3 ms.
    return Kernels(name="numpy", im2col=ref.im2col, col2im=ref.col2im,
                   maxpool_forward=ref.maxpool_forward, maxpool_backward=ref.maxpool_backward,
                   sampled_weight_grad=sp.sampled_weight_grad,
                   masked_sgd_update=masked_sgd_update, sparse_matmul=sp.sparse_matmul,
                   sparse_conv_forward=sp.sparse_conv_forward,
                   sparse_conv_backward=sp.sparse_conv_backward,
                   winograd_input=wg.input_transform, winograd_output=wg.output_transform,
                   winograd_output_adjoint=wg.output_adjoint, winograd_input_adjoint=wg.input_adjoint,
                   sparse_dw_density=0.02, sparse_compute_density=0.01)


def _numba() -> Kernels:
    try:
        import numba  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable(f"numba is not importable ({err}); pip install numba") from None
    from minifreeze import kernels_numba as nb
    # One thread against the BLAS product: LeNet-5's conv2 (50 x 500 weights, 3,200 positions)
    # 0.99 ms sampled at 10% vs 2.46 ms dense, break-even near 20%; fc1 (500 x 800, 100
    # positions) 0.91 vs 0.95 ms at 10%.
    return Kernels(name="numba", im2col=nb.im2col, col2im=nb.col2im,
                   maxpool_forward=nb.maxpool_forward, maxpool_backward=nb.maxpool_backward,
                   sampled_weight_grad=nb.sampled_weight_grad,
                   masked_sgd_update=nb.masked_sgd_update, sparse_matmul=nb.sparse_matmul,
                   sparse_conv_forward=nb.sparse_conv_forward,
                   sparse_conv_backward=nb.sparse_conv_backward,
                   winograd_input=nb.winograd_input_transform,
                   winograd_output=nb.winograd_output_transform,
                   winograd_output_adjoint=nb.winograd_output_adjoint,
                   winograd_input_adjoint=nb.winograd_input_adjoint,
                   sparse_dw_density=0.1, sparse_compute_density=0.05)


def _cuda() -> Kernels:
    """numba.cuda kernels (kernels_cuda.py), imported only now: on a GPU or Numba's simulator."""
    try:
        from minifreeze import kernels_cuda as cu
    except ImportError as err:
        raise BackendUnavailable(
            f"cuda: numba.cuda cannot be imported ({err}); install the CUDA extra with "
            f"pip install 'minifreeze[cuda]', or set NUMBA_ENABLE_CUDASIM=1 to use the simulator"
        ) from None
    reason = cu.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"cuda: {reason}")
    from minifreeze import kernels_sparse as sp  # no CUDA kernel for the sampled product: the reference
    from minifreeze import winograd as wg  # nor for Winograd's transforms (DeviceTrainer refuses it)
    return Kernels(name="cuda", im2col=cu.im2col, col2im=cu.col2im,
                   maxpool_forward=cu.maxpool_forward, maxpool_backward=cu.maxpool_backward,
                   sampled_weight_grad=sp.sampled_weight_grad,
                   masked_sgd_update=cu.masked_sgd_update, sparse_matmul=sp.sparse_matmul,
                   sparse_conv_forward=sp.sparse_conv_forward,
                   sparse_conv_backward=sp.sparse_conv_backward,
                   winograd_input=wg.input_transform, winograd_output=wg.output_transform,
                   winograd_output_adjoint=wg.output_adjoint, winograd_input_adjoint=wg.input_adjoint,
                   sparse_dw_density=0.02, sparse_compute_density=0.01, device_resident=True)


_LOADERS: dict[str, Callable[[], Kernels]] = {"numba": _numba, "numpy": _numpy, "cuda": _cuda}
_tables: dict[str, Kernels] = {}
_active: str | None = None
_table: Kernels | None = None  # the active backend's table, set with it


def require(name: str) -> Kernels:
    """The kernel table of backend `name`; BackendUnavailable (saying why) if it cannot run here,
    ValueError if there is no such backend."""
    if name not in _LOADERS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")
    if name not in _tables:
        _tables[name] = _LOADERS[name]()
    return _tables[name]


def available_backends() -> dict[str, str | None]:
    """Map each known backend to None if it can run here, else to the reason it cannot."""
    status: dict[str, str | None] = {}
    for name in NAMES:
        try:
            require(name)
            status[name] = None
        except BackendUnavailable as err:
            status[name] = str(err)
    return status


def default_backend() -> str:
    """MINIFREEZE_BACKEND if set, else the first available backend in NAMES."""
    env = os.environ.get("MINIFREEZE_BACKEND", "").strip()
    if env:
        return env
    for name in NAMES:  # stop at the first that loads: the others are never imported
        try:
            require(name)
            return name
        except BackendUnavailable:
            continue
    return "numpy"


def set_backend(name: str) -> None:
    """Make `name` the active backend for the rest of the process (raises if unavailable)."""
    global _active, _table
    _table = require(name)
    _active = name


def get_backend() -> str:
    """Name of the active backend."""
    if _active is None:
        set_backend(default_backend())
    return _active  # type: ignore[return-value]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Kernels]:
    """Run a block under backend `name`, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield kernels()
    finally:
        set_backend(previous)


def kernels() -> Kernels:
    """The kernel table of the active backend: the one `set_backend` looked up (the layers ask
    for it on every call; this is a read, not a lookup)."""
    return _table if _table is not None else require(get_backend())
