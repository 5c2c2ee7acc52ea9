"""The backend switch: names, errors, and restoring the previous backend."""

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
