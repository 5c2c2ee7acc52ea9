"""Gradual pruning (weightmom, gmp): the moving average, the schedule, the per-layer shares, the
rounds, and whole runs whose pruned weights stay exactly 0 on every backend."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifreeze import backend, masks as M, storage, weightmom as W
from minifreeze.lab.cli import main
from minifreeze.data import Dataset
from minifreeze.train import TrainConfig, method_hooks, prepare, train, train_steps
from tests.strategies import rng_from, seeds

BACKENDS = [b for b, why in backend.available_backends().items()
            if why is None and not backend.require(b).device_resident]


@given(seed=seeds, steps=st.integers(1, 6), beta=st.floats(0, 0.999))
def test_moving_average_matches_a_hand_loop(seed, steps, beta):
    rng = rng_from(seed)
    ws = [{"a.w": rng.standard_normal((3, 4)).astype(np.float32)} for _ in range(steps)]
    m = {"a.w": np.abs(ws[0]["a.w"]).copy()}
    want = np.abs(ws[0]["a.w"]).astype(np.float64)
    for w in ws:
        W.ema_update(m, w, beta)
        want = beta * want + (1 - beta) * np.abs(w["a.w"].astype(np.float64))
    np.testing.assert_allclose(m["a.w"], want, rtol=1e-5, atol=1e-6)


@given(q=st.floats(0, 0.999), t0=st.integers(0, 50), length=st.integers(0, 200))
def test_cubic_schedule_starts_at_zero_ends_at_q_and_never_decreases(q, t0, length):
    t1 = t0 + length
    rates = [W.cubic_rate(t, q, t0, t1) for t in range(0, t1 + 20)]
    assert all(r == 0.0 for r in rates[:t0 + 1]) or length == 0
    assert rates[t1] == q and rates[-1] == q
    assert all(b >= a for a, b in zip(rates, rates[1:]))


@given(total=st.integers(1, 5000), start=st.floats(0, 1), length=st.floats(0, 1),
       every=st.integers(1, 500))
def test_pruning_steps_lie_in_the_window_and_end_on_it(total, start, length, every):
    end = min(1.0, start + length)
    t0, t1, steps = W.schedule_steps(total, start, end, every)
    assert steps == sorted(set(steps)) and steps[-1] == max(t1, 1)
    assert all(max(t0, 1) <= t <= max(t1, 1) for t in steps)


@given(seed=seeds, layers=st.integers(1, 5), alpha=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       share=st.floats(0, 1))
def test_allocation_sums_to_the_round_and_respects_every_layer(seed, layers, alpha, share):
    rng = rng_from(seed)
    sizes = {f"l{i}": int(rng.integers(1, 500)) for i in range(layers)}
    kept = {k: int(rng.integers(1, n + 1)) for k, n in sizes.items()}
    total = int(share * sum(k - 1 for k in kept.values()))
    out = W.allocate(kept, sizes, total, alpha)
    assert sum(out.values()) == total
    assert all(0 <= out[k] <= kept[k] - 1 for k in kept)
    with pytest.raises(ValueError, match="cannot prune"):
        W.allocate(kept, sizes, sum(kept.values()), alpha)


def test_denser_layers_give_up_more():
    out = W.allocate({"dense": 100, "sparse": 100}, {"dense": 100, "sparse": 1000}, 50, 1.0)
    assert out["dense"] > out["sparse"] and sum(out.values()) == 50
    even = W.allocate({"a": 100, "b": 300}, {"a": 100, "b": 1000}, 40, 0.0)
    assert even == {"a": 10, "b": 30}  # alpha 0: shares follow kept counts


@given(seed=seeds, n=st.integers(1, 10))
def test_a_round_prunes_the_lowest_and_never_revives(seed, n):
    rng = rng_from(seed)
    masks = M.Masks({"a.w": (rng.random((4, 5)) < 0.7).astype(np.float32)})
    scores = {"a.w": rng.random((4, 5)).astype(np.float32)}
    n = min(n, int(masks["a.w"].sum()))
    new = W.prune_lowest(masks, scores, {"a.w": n})
    assert int(new["a.w"].sum()) == int(masks["a.w"].sum()) - n
    assert not ((new["a.w"] == 1) & (masks["a.w"] == 0)).any()
    gone = (masks["a.w"] == 1) & (new["a.w"] == 0)
    stay = new["a.w"] == 1
    if gone.any() and stay.any():
        assert scores["a.w"][gone].max() <= scores["a.w"][stay].min()
    keep = int(new["a.w"].sum()) // 2
    g = W.prune_global(new, scores, keep)
    assert int(g["a.w"].sum()) == keep and not ((g["a.w"] == 1) & (new["a.w"] == 0)).any()


@pytest.mark.parametrize("kwargs, message", [
    (dict(prune_start=0.7, prune_end=0.2), "prune_start, prune_end: expected 0 <= start <= end"),
    (dict(mom_beta=1.0), r"mom_beta: expected a number in \[0, 1\)"),
    (dict(mom_beta=-0.1), r"mom_beta: expected a number in \[0, 1\)"),
    (dict(rate=1.0), r"rate: expected a number in \[0, 1\)"),
    (dict(prune_every=0), "prune_every: expected a whole number"),
    (dict(alloc_alpha=-1.0), "alloc_alpha: expected a number >= 0"),
])
def test_bad_schedule_parameters_are_clear_errors(kwargs, message):
    rate = {"rate": kwargs.pop("rate")} if "rate" in kwargs else {}
    with pytest.raises(ValueError, match=message):
        TrainConfig(method="weightmom", options=kwargs, **rate).resolved()


def _tiny_data(seed=0, n=120):
    rng = np.random.default_rng(seed)
    return Dataset("synthetic", rng.standard_normal((n, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, n), rng.standard_normal((40, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, 40))


class Recorder:
    """Checks after every step that the mask only loses ones and pruned entries are +0.0."""

    def __init__(self):
        self.kept, self.prev = [], None

    def start(self, trainer, total):
        pass

    def after_step(self, t, trainer):
        m = trainer.masks
        if m is None:
            return
        if self.prev is not None:
            for k in m:
                assert not ((m[k] == 1) & (self.prev[k] == 0)).any(), "a pruned weight returned"
        for k in m:
            off = trainer.params[k][m[k] == 0]
            assert (off == 0).all() and not np.signbit(off).any()
        self.prev = m
        self.kept.append(sum(int(v.sum()) for v in m.values()))

    def after_epoch(self, epoch, trainer, row):
        pass


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("method", ["weightmom", "gmp"])
def test_a_gradual_run_ends_at_exactly_the_rate_and_pruned_stays_zero(name, method):
    data = _tiny_data()
    config = TrainConfig(model="lenet300", method=method, rate=0.95, epochs=3, batch_size=20,
                         lr=0.05, warmup_steps=0, seed=1,
                         options={"prune_start": 0.2, "prune_end": 0.7, "prune_every": 2})
    with backend.use_backend(name):
        setup = prepare(config, data)
        rec = Recorder()
        result = train_steps(config, data, setup, progress=False,
                             hooks=[*method_hooks(config, setup.model), rec])
    n = sum(v.size for k, v in setup.theta0.items() if k.endswith(".w"))
    kept = sum(int(m.sum()) for m in result.masks.values())
    assert kept == M.keep_count(n, 0.95)
    assert rec.kept == sorted(rec.kept, reverse=True)
    assert result.history[-1]["rate"] == pytest.approx(1 - kept / n)
    assert set(result.history[-1]["layer_density"]) == {"fc1.w", "fc2.w", "fc3.w"}
    assert all(v > 0 for v in result.history[-1]["layer_density"].values())


def test_weightmom_and_gmp_choose_differently_and_reproduce():
    data = _tiny_data(2)
    kw = dict(model="lenet300", rate=0.9, epochs=2, batch_size=20, lr=0.05, warmup_steps=0,
              options={"prune_every": 3}, seed=4)
    a = train(TrainConfig(method="weightmom", **kw), data, progress=False)
    b = train(TrainConfig(method="gmp", **kw), data, progress=False)
    again = train(TrainConfig(method="weightmom", **kw), data, progress=False)
    assert any(not np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert all(np.array_equal(a.params[k], again.params[k]) for k in a.params)


def test_cli_weightmom_writes_an_ordinary_pruned_mfz(tmp_path, capsys):
    out = tmp_path / "wm"
    assert main(["train", "--model", "lenet300", "--method", "weightmom", "--rate", "0.99",
                 "--epochs", "1", "--limit-train", "300", "--limit-test", "200",
                 "--prune-every", "1", "--mom-beta", "0.9", "--out", str(out)]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["options"] == {"prune_start": 0.1, "prune_end": 0.6, "prune_every": 1,
                                            "mom_beta": 0.9, "alloc_alpha": 0.0}
    header = storage.read_header(out / "model.mfz")
    assert header["mode"] == "prune" and header["method"] == "weightmom"
    assert header["config"]["options"]["prune_start"] == 0.1
    back = storage.load(out / "model.mfz")
    assert sum(int(m.sum()) for m in back.masks.values()) == M.keep_count(266_200, 0.99)
    assert main(["evaluate", str(out / "model.mfz"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)  # on all 10,000 test images
    assert evaluated["method"] == "weightmom" and evaluated["test_examples"] == 10_000
    assert main(["inspect", str(out / "model.mfz")]) == 0
    assert "masked" in capsys.readouterr().out


def test_a_gradual_run_that_diverges_mid_schedule_leaves_a_loadable_last_good(tmp_path, capsys):
    out = tmp_path / "wm"
    status = main(["train", "--model", "lenet300", "--method", "gmp", "--rate", "0.9",
                   "--epochs", "2", "--lr", "3e3", "--warmup-steps", "0", "--prune-start", "0",
                   "--prune-every", "1", "--limit-train", "400", "--limit-test", "50",
                   "--batch-size", "10", "--out", str(out)])
    assert status == 1 and "training diverged" in capsys.readouterr().err
    back = storage.load(out / "last_good.mfz")
    assert all(np.isfinite(v).all() for v in back.params.values())
    kept = sum(int(m.sum()) for m in back.masks.values())
    assert M.keep_count(266_200, back.meta["rate"]) == kept


@given(seed=seeds, share=st.floats(0.05, 0.95))
def test_with_alpha_0_the_shares_are_the_global_thresholds_cut(seed, share):
    rng = rng_from(seed)
    masks = M.Masks({"a.w": np.ones((6, 7), np.float32), "b.w": np.ones((40,), np.float32)})
    scores = {"a.w": rng.random((6, 7)).astype(np.float32) * 2,  # a's weights matter more
              "b.w": rng.random(40).astype(np.float32)}
    keep = max(2, int((1 - share) * 82))
    cut = W.global_cut(masks, scores, keep)
    kept = {"a.w": 42, "b.w": 40}
    assert sum(cut.values()) == 82 - keep
    g = W.prune_global(masks, scores, keep)
    assert cut == {k: kept[k] - int(g[k].sum()) for k in kept}
    alloc = W.allocate(kept, {"a.w": 42, "b.w": 40}, 82 - keep, 0.0, cut)
    if all(cut[k] <= kept[k] - 1 for k in kept):  # no cap binds: exactly the global cut
        assert alloc == cut


def test_relative_sparsity_moves_pruning_away_from_a_sparser_layer():
    kept, sizes = {"sparse": 50, "dense": 500}, {"sparse": 1000, "dense": 500}
    cut = {"sparse": 40, "dense": 40}  # the global threshold would take as many from each
    plain = W.allocate(kept, sizes, 80, 0.0, cut)
    corrected = W.allocate(kept, sizes, 80, 0.5, cut)
    assert plain == {"sparse": 40, "dense": 40}
    assert corrected["sparse"] < 40 < corrected["dense"] and sum(corrected.values()) == 80


def test_weightmom_without_memory_or_correction_is_gmp():
    """mom_beta 0 makes M the current |w| and alloc_alpha 0 makes the shares the global cut: the
    masks and the weights are then GMP's, bit for bit."""
    data = _tiny_data(3)
    kw = dict(model="lenet300", rate=0.95, epochs=2, batch_size=20, lr=0.05, warmup_steps=0,
              options={"prune_every": 2, "mom_beta": 0.0, "alloc_alpha": 0.0}, seed=6)
    a = train(TrainConfig(method="weightmom", **kw), data, progress=False)
    b = train(TrainConfig(method="gmp", **kw), data, progress=False)
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert all(a.params[k].tobytes() == b.params[k].tobytes() for k in a.params)
