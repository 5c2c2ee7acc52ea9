"""The backend switch: names, errors, and restoring the previous backend."""

import os
import subprocess
import sys

import pytest

from minifreeze import backend


def test_numpy_backend_is_always_available():
    assert backend.available_backends()["numpy"] is None
    with backend.use_backend("numpy") as k:
        assert k.name == "numpy" and backend.get_backend() == "numpy"


def test_unknown_backend_is_an_error():
    before = backend.get_backend()
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        backend.set_backend("tpu")
    assert backend.get_backend() == before


def test_use_backend_restores_on_error():
    before = backend.get_backend()
    with pytest.raises(RuntimeError):
        with backend.use_backend("numpy"):
            raise RuntimeError("boom")
    assert backend.get_backend() == before


def test_importing_minifreeze_does_not_import_numba_cuda():
    code = ("import sys, minifreeze, minifreeze.layers, minifreeze.models, minifreeze.cuda_train\n"
            "from minifreeze import backend\n"
            "assert backend.get_backend() == 'numpy'\n"
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda was imported'\n")
    env = {k: v for k, v in os.environ.items() if k != "MINIFREEZE_BACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_cuda_unavailable_says_how_to_enable_it():
    reason = backend.available_backends()["cuda"]
    if reason is None:
        pytest.skip("the cuda backend runs here (a GPU or the simulator)")
    assert "NUMBA_ENABLE_CUDASIM=1" in reason and "minifreeze[cuda]" in reason
    before = backend.get_backend()
    with pytest.raises(backend.BackendUnavailable, match="NUMBA_ENABLE_CUDASIM=1"):
        backend.set_backend("cuda")  # never a silent fallback to another backend
    assert backend.get_backend() == before
