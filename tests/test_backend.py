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
            "assert backend.get_backend() in ('numba', 'numpy')\n"
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


def test_numba_is_the_default_when_importable(monkeypatch):
    monkeypatch.delenv("MINIFREEZE_BACKEND", raising=False)
    if backend.available_backends()["numba"] is None:
        assert backend.default_backend() == "numba"
    monkeypatch.setenv("MINIFREEZE_BACKEND", "numpy")
    assert backend.default_backend() == "numpy"


def test_every_backend_has_every_kernel():
    import dataclasses
    names = [f.name for f in dataclasses.fields(backend.Kernels)]
    for b, why in backend.available_backends().items():
        if why is None:
            table = backend.require(b)
            assert all(callable(getattr(table, k)) for k in names
                       if k not in ("name", "sparse_dw_density", "sparse_compute_density",
                                    "device_resident")), b


@pytest.fixture
def broken_backend(monkeypatch):
    """A backend that cannot load here, as numba is on a machine without it."""
    def load():
        raise backend.BackendUnavailable("numba is not importable (No module named 'numba')")
    monkeypatch.setitem(backend._LOADERS, "numba", load)
    monkeypatch.delitem(backend._tables, "numba", raising=False)
    monkeypatch.setattr(backend, "_active", "numpy")
    return "numba"


def test_unavailable_backend_is_a_clear_error_not_a_fallback(broken_backend):
    assert "not importable" in backend.available_backends()[broken_backend]
    with pytest.raises(backend.BackendUnavailable, match="not importable"):
        backend.set_backend(broken_backend)
    assert backend.get_backend() == "numpy"


def test_cli_backend_option_and_listing(broken_backend, capsys):
    from minifreeze.lab.cli import main
    assert main(["info", "--backends"]) == 0
    out = capsys.readouterr().out
    assert "numba    unavailable: numba is not importable" in out and "* numpy" in out
    assert main(["--backend", "numba", "info", "--backends"]) == 2
    assert "backend 'numba' is not available" in capsys.readouterr().err
    assert main(["info", "--backend", "numpy", "--model", "lenet5", "--json"]) == 0
    assert main(["info"]) == 2
    assert "info needs --model NAME or --backends" in capsys.readouterr().err
