"""Which kernels run: the seam between the layers and their NumPy, Numba or CUDA implementations.

The layers in `layers.py` never call im2col, col2im or the pooling kernels directly; they ask
`kernels()` for the table of the active backend. Every backend provides the same functions with
the same signatures and the same cache layout as the NumPy reference in `im2col.py`, so a test can
run one layer under two backends and compare.

    from minifreeze import backend
    backend.set_backend("numpy")            # for the rest of the process
    with backend.use_backend("numpy"):      # for one block
        ...

Backends: `numba` (compiled CPU loops in `kernels_numba.py`, the default when numba imports) and
`numpy` (the reference in `im2col.py`, always available). The environment variable
MINIFREEZE_BACKEND picks the backend at import time. Asking for a backend
that is not available raises an error that says why; there is no silent fallback.
"""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace
from typing import Callable, Iterator

NAMES = ("numba", "numpy", "cuda")
"""Backends this build knows about, in order of preference for the default: numba when it can
be imported, else numpy (the reference, always available). cuda is only ever chosen explicitly
(it is tried last, and needs a GPU or the simulator)."""

_loaders: dict[str, Callable[[], SimpleNamespace]] = {}
_tables: dict[str, SimpleNamespace] = {}
_active: str | None = None


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and how to enable it."""


KERNELS = ("im2col", "col2im", "maxpool_forward", "maxpool_backward", "sampled_weight_grad",
           "masked_sgd_update")
"""The kernels every backend's table holds, with the same signatures as the NumPy reference."""


def _table(name: str, *modules) -> SimpleNamespace:
    """A backend's table: each kernel from the first of `modules` that defines it, and the
    backend's SPARSE_DW_DENSITY (below it, a masked weight gradient is sampled, not dense)."""
    pick = lambda k: getattr(next(m for m in modules if hasattr(m, k)), k)  # noqa: E731
    return SimpleNamespace(name=name, sparse_dw_density=pick("SPARSE_DW_DENSITY"),
                           **{k: pick(k) for k in KERNELS})


def _load_numpy() -> SimpleNamespace:
    from minifreeze import im2col as ref
    from minifreeze import optim
    return _table("numpy", ref, optim)


_loaders["numpy"] = _load_numpy


def _load_numba() -> SimpleNamespace:
    try:
        import numba  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable(f"numba is not importable ({err}); pip install numba") from None
    from minifreeze import kernels_numba as nb
    return _table("numba", nb)


_loaders["numba"] = _load_numba


def _load_cuda() -> SimpleNamespace:
    """numba.cuda kernels (kernels_cuda.py), imported only now: on a GPU or Numba's simulator."""
    try:
        from minifreeze import kernels_cuda
    except ImportError as err:
        raise BackendUnavailable(
            f"cuda: numba.cuda cannot be imported ({err}); install the CUDA extra with "
            f"pip install 'minifreeze[cuda]', or set NUMBA_ENABLE_CUDASIM=1 to use the simulator"
        ) from None
    reason = kernels_cuda.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"cuda: {reason}")
    return _table("cuda", kernels_cuda)


_loaders["cuda"] = _load_cuda


def _load(name: str) -> SimpleNamespace:
    if name not in _loaders:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")
    if name not in _tables:
        _tables[name] = _loaders[name]()
    return _tables[name]


def available_backends() -> dict[str, str | None]:
    """Map each known backend to None if it can run here, else to the reason it cannot."""
    status: dict[str, str | None] = {}
    for name in NAMES:
        try:
            _load(name)
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
            _load(name)
            return name
        except BackendUnavailable:
            continue
    return "numpy"


def set_backend(name: str) -> None:
    """Make `name` the active backend for the rest of the process (raises if unavailable)."""
    global _active
    _load(name)
    _active = name


def get_backend() -> str:
    """Name of the active backend."""
    global _active
    if _active is None:
        set_backend(default_backend())
    return _active  # type: ignore[return-value]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[SimpleNamespace]:
    """Run a block under backend `name`, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield kernels()
    finally:
        set_backend(previous)


def kernels() -> SimpleNamespace:
    """The kernel table of the active backend: im2col, col2im, maxpool_forward, maxpool_backward,
    sampled_weight_grad and masked_sgd_update (the fused optimiser step)."""
    return _load(get_backend())
