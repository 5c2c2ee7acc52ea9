"""A run survives its machine: stopped after k epochs and started again, it resumes from its saved
training state and ends bit for bit where an uninterrupted run ends."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from minifreeze import storage
from minifreeze.lab import runs
from minifreeze import train as T
from minifreeze.data import limit_train, load_dataset


@pytest.fixture(scope="module")
def small():
    ds = load_dataset("mnist")
    return dataclasses.replace(limit_train(ds, 400), x_test=ds.x_test[:200], y_test=ds.y_test[:200])


def digest(params) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes()
                                   for v in params.values())).hexdigest()


class Crash(Exception):
    pass


def crash_after_evaluations(monkeypatch, n):
    """Make the n+1-th epoch evaluation raise: the machine stops in epoch n+1."""
    calls, real = [0], T.evaluate

    def evaluate(*args, **kwargs):
        calls[0] += 1
        if calls[0] > n:
            raise Crash
        return real(*args, **kwargs)
    monkeypatch.setattr(T, "evaluate", evaluate)


@pytest.mark.parametrize("method, extra", [
    ("freezenet", {}), ("snip", dict(checkpoint_every=4, checkpoint_last=3)), ("dense", {})])
def test_a_stopped_run_resumes_and_ends_bit_for_bit(small, tmp_path, monkeypatch, method, extra):
    c = T.protocol_config("paper", model="lenet300", method=method, rate=0.95, epochs=7, seed=5,
                          shards=1, **extra).resolved()
    spec = runs.RunSpec(c, limit_train=400, limit_test=200)
    whole = runs.run(spec, tmp_path / "whole", data=small, progress=False)

    crash_after_evaluations(monkeypatch, 5)  # saved after epochs 2 and 4, stopped in epoch 6
    with pytest.raises(Crash):
        runs.run(spec, tmp_path / "cut", data=small, progress=False, state_every=2)
    assert (tmp_path / "cut" / runs.STATE).is_file()
    assert runs.finished(tmp_path / "cut", spec) is None
    monkeypatch.undo()
    again = runs.run(spec, tmp_path / "cut", data=small, progress=False, state_every=2)

    assert again["resumed_from"] == 4 and whole["resumed_from"] is None
    assert not (tmp_path / "cut" / runs.STATE).exists()  # deleted once the run finished
    a = storage.load(tmp_path / "whole" / runs.MODEL)
    b = storage.load(tmp_path / "cut" / runs.MODEL)
    assert digest(a.params) == digest(b.params)
    drop = ("train_seconds", "seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in whole["history"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in again["history"]]
    for key in ("test_accuracy", "checkpoints", "best_of_checkpoints", "dead_units", "density"):
        assert whole[key] == again[key], key


def test_a_sweep_saves_every_state_every_epochs_and_resumes_from_it(small, tmp_path, monkeypatch):
    """sweep(state_every=1) reaches each run: stopped in epoch 2, the run had saved after epoch 1
    (the default, 5, would have saved nothing) and the same sweep again goes on from there. The
    uninterrupted run is a sweep's too: a sweep's worker holds a one-shard run's BLAS to one
    thread, and with more threads the float32 sums round differently."""
    from minifreeze.lab import sweep
    c = T.TrainConfig(model="lenet300", method="freezenet", rate=0.9, epochs=3, seed=3, shards=1)
    spec = runs.RunSpec(c, limit_train=400, limit_test=200)
    monkeypatch.setattr(runs, "load_data", lambda spec: small)
    (whole,) = sweep.sweep([spec], tmp_path / "whole", progress=False).metrics
    crash_after_evaluations(monkeypatch, 1)
    cut = sweep.sweep([spec], tmp_path / "cut", progress=False, state_every=1)
    assert cut.failed == {spec.name: "Crash: "} and not cut.metrics
    meta = json.loads(np.load(tmp_path / "cut" / spec.name / runs.STATE)["meta"].tobytes())
    assert meta["epoch"] == 1
    monkeypatch.undo()
    monkeypatch.setattr(runs, "load_data", lambda spec: small)
    again = sweep.sweep([spec], tmp_path / "cut", progress=False, state_every=1)
    (m,) = again.metrics
    assert m["resumed_from"] == 1 and m["test_accuracy"] == whole["test_accuracy"]
    b, a = (storage.load(tmp_path / part / spec.name / runs.MODEL) for part in ("cut", "whole"))
    assert digest(b.params) == digest(a.params)


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "1"])
def test_a_state_interval_that_is_not_a_whole_number_of_epochs_is_refused(tmp_path, every):
    from minifreeze.lab import sweep
    spec = runs.RunSpec(T.TrainConfig(model="lenet300", method="dense", epochs=1, shards=1))
    with pytest.raises(ValueError, match=r"state_every: expected a whole number of epochs >= 1"):
        T.StateFile(tmp_path / "state.npz", every=every)  # the training loop's own check
    with pytest.raises(ValueError, match=r"state_every: expected a whole number of epochs >= 1"):
        runs.run(spec, tmp_path / "r", progress=False, state_every=every)
    with pytest.raises(sweep.SweepError, match=r"state_every: expected a whole number"):
        sweep.sweep([spec], tmp_path / "s", progress=False, state_every=every)
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()  # nothing written


def test_a_state_saved_for_another_run_is_not_resumed(small, tmp_path, monkeypatch):
    c = T.TrainConfig(model="lenet300", method="freezenet", rate=0.9, epochs=3, seed=1, shards=1)
    other = dataclasses.replace(c, seed=2)
    path = tmp_path / "state.npz"
    crash_after_evaluations(monkeypatch, 2)
    with pytest.raises(Crash):
        T.train(other, small, progress=False, state=T.StateFile(path, every=1, key="k"))
    monkeypatch.undo()
    assert T.load_state(path, key="k", config=other.resolved()) is not None
    assert T.load_state(path, key="k", config=c.resolved()) is None  # another config
    assert T.load_state(path, key="other", config=other.resolved()) is None  # another run
    path.with_name("junk.npz").write_bytes(b"not a state")
    assert T.load_state(path.with_name("junk.npz"), key="k", config=c.resolved()) is None
    fresh = T.train(c, small, progress=False, state=T.StateFile(path, every=1, key="k"))
    plain = T.train(c, small, progress=False)
    assert fresh.resumed_from is None and digest(fresh.params) == digest(plain.params)


def test_a_hook_that_cannot_resume_turns_saving_off(small, tmp_path):
    class Opaque(T.Hook):  # state() is None: nothing of the run is saved
        pass
    path = tmp_path / "state.npz"
    c = T.TrainConfig(model="lenet300", method="dense", epochs=2, seed=0, shards=1)
    T.train(c, small, progress=False, hooks=[Opaque()], state=T.StateFile(path, every=1))
    assert not path.exists()
    T.train(c, small, progress=False, state=T.StateFile(path, every=1))
    meta = json.loads(np.load(path)["meta"].tobytes())
    assert meta["epoch"] == 1 and meta["t"] == 4  # saved after epoch 1 only (not after the last)


def test_a_state_saved_with_other_hooks_is_not_resumed(small, tmp_path):
    class Counter(T.Hook):
        def __init__(self):
            self.n = 0

        def after_step(self, t, trainer):
            self.n += 1

        def state(self):
            return {"n": self.n}

        def load_state(self, state):
            self.n = state["n"]
    c = T.TrainConfig(model="lenet300", method="dense", epochs=3, seed=2, shards=1)
    path = tmp_path / "state.npz"
    T.train(c, small, progress=False, state=T.StateFile(path, every=1), hooks=[Counter()])
    assert path.exists()  # saved after epochs 1 and 2 (not after the last) by a run with a Counter
    counter = Counter()
    resumed = T.train(c, small, progress=False, state=T.StateFile(path, every=1), hooks=[counter])
    assert resumed.resumed_from == 2 and counter.n == 12  # 8 steps restored, 4 taken: 3 epochs
    again = T.train(c, small, progress=False, state=T.StateFile(path, every=1))
    assert again.resumed_from is None  # without the Counter the records would not line up
