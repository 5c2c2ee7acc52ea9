"""Which kernels run: the seam between the layers and their NumPy, Numba or CUDA implementations.

The layers in `layers.py` never call im2col, col2im or the pooling kernels directly; they ask
`kernels()` for the table of the active backend. Every backend provides the same functions with
the same signatures and the same cache layout as the NumPy reference in `im2col.py`, so a test can
run one layer under two backends and compare.

    from minifreeze import backend
    backend.set_backend("numpy")            # for the rest of the process
    with backend.use_backend("numpy"):      # for one block
        ...

The environment variable MINIFREEZE_BACKEND picks the backend at import time. Asking for a backend
that is not available raises an error that says why; there is no silent fallback.
"""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace
from typing import Callable, Iterator

NAMES = ("numpy",)
"""Backends this build knows about, in order of preference for the default."""

_loaders: dict[str, Callable[[], SimpleNamespace]] = {}
_tables: dict[str, SimpleNamespace] = {}
_active: str | None = None


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and how to enable it."""


def _load_numpy() -> SimpleNamespace:
    from minifreeze import im2col as ref
    from minifreeze import optim
    return SimpleNamespace(
        name="numpy",
        im2col=ref.im2col,
        col2im=ref.col2im,
        maxpool_forward=ref.maxpool_forward,
        maxpool_backward=ref.maxpool_backward,
        masked_sgd_update=optim.masked_sgd_update,
    )


_loaders["numpy"] = _load_numpy


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
    for name, reason in available_backends().items():
        if reason is None:
            return name
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
    masked_sgd_update."""
    return _load(get_backend())
