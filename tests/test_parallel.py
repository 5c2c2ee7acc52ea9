"""A batch cut into shards on threads: the same loss and gradients as one pass, deterministic,
masked entries exactly 0, and the training loop's results do not depend on the thread timing."""

import platform
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifreeze import parallel
from minifreeze.data import limit_train, load_dataset
from minifreeze.models import get_model
from minifreeze.train import TrainConfig, evaluate, train
from tests.strategies import rng_from, seeds


def _setup(name, rng, n, masked, dtype=np.float64):
    model = get_model(name)
    params = {k: (rng.standard_normal(s) * (0.3 if k.endswith(".w") else 0.1)).astype(dtype)
              for k, s in model.param_shapes().items()}
    masks = None
    if masked:
        masks = {k: (rng.random(params[k].shape) < 0.02).astype(dtype)
                 for k in model.weight_names()}
    x = rng.standard_normal((n, *model.input_shape)).astype(dtype)
    return model, params, masks, x, rng.integers(0, 10, n)


@given(n=st.integers(1, 70), shards=st.integers(1, 5), masked=st.booleans(), seed=seeds,
       name=st.sampled_from(["lenet300", "lenet5"]))
def test_shards_give_the_batch_loss_and_gradients(n, shards, masked, seed, name):
    rng = rng_from(seed)
    model, params, masks, x, y = _setup(name, rng, n, masked)
    want_loss, want = model.loss_and_grads(params, x, y, masks=masks)
    want_logits = model.forward(params, x)[0]
    parallel.MIN_SHARD, saved = 1, parallel.MIN_SHARD  # allow shards of one example
    try:
        loss, grads, logits = parallel.loss_and_grads(model, params, x, y, masks=masks,
                                                      shards=shards)
        again = parallel.loss_and_grads(model, params, x, y, masks=masks, shards=shards)
    finally:
        parallel.MIN_SHARD = saved
    assert loss == pytest.approx(want_loss, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-12, atol=1e-12)
    assert list(grads) == list(want)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
        if masks is not None and k in masks:
            assert np.all(grads[k][masks[k] == 0] == 0)
        # Bit for bit the same on a second call, whichever thread finished first.
        assert np.array_equal(again[1][k], grads[k])
    assert again[0] == loss


@given(n=st.integers(0, 100), shards=st.integers(1, 12))
def test_shards_cover_the_batch_evenly(n, shards):
    parts = parallel.slices(n, shards)
    covered = [i for sl in parts for i in range(sl.start, sl.stop)]
    assert covered == list(range(n))
    sizes = [sl.stop - sl.start for sl in parts]
    assert len(parts) == max(1, min(shards, n)) and max(sizes) - min(sizes) <= 1


def test_shard_counts_are_checked_and_batch_norm_runs_whole():
    lenet5, vgg_bn = get_model("lenet5"), get_model("vgg", batch_norm=True)
    assert parallel.resolve_shards(lenet5, 4, 100) == 4
    assert parallel.resolve_shards(lenet5, 4, 40) == 40 // parallel.MIN_SHARD
    assert parallel.resolve_shards(lenet5, 4, 3) == 1
    assert 1 <= parallel.resolve_shards(lenet5, None, 100) <= parallel.MAX_SHARDS
    assert parallel.resolve_shards(vgg_bn, None, 100) == 1
    lenet300 = get_model("lenet300")  # no convolution: one shard unless asked
    assert parallel.resolve_shards(lenet300, None, 100) == 1
    assert parallel.resolve_shards(lenet300, 2, 100) == 2
    with pytest.raises(ValueError, match="batch norm.*shards 1 or automatic, got 2"):
        parallel.resolve_shards(vgg_bn, 2, 100)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="shards: expected a whole number >= 0"):
            parallel.resolve_shards(lenet5, bad, 100)
    with pytest.raises(ValueError, match="shards"):
        TrainConfig(shards=-2).resolved()


def test_predict_in_shards_equals_one_pass():
    rng = np.random.default_rng(0)
    model, params, _, x, _ = _setup("lenet5", rng, 130, False)
    want = model.predict(params, x, batch_size=50)
    got = parallel.predict(model, params, x, batch_size=50, shards=3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert got.shape == (130, 10)


def test_blas_threads_restores_the_previous_limit():
    from threadpoolctl import threadpool_info
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with parallel.blas_threads(1):
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_threads():
    """A child forked after the pool started has the pool object but none of its threads."""
    import multiprocessing
    rng = np.random.default_rng(1)
    model, params, _, x, y = _setup("lenet5", rng, 40, False)
    parallel.loss_and_grads(model, params, x, y, shards=2)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        loss = pool.apply_async(_sharded_loss, (model, params, x, y)).get(timeout=60)
    assert loss == pytest.approx(model.loss_and_grads(params, x, y)[0], rel=1e-12)


def _sharded_loss(model, params, x, y):
    return parallel.loss_and_grads(model, params, x, y, shards=2)[0]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_freed_memory_takes_on_glibc_and_is_scoped():
    with parallel.kept_freed_memory() as kept:
        assert kept is True
        with parallel.kept_freed_memory() as again:  # nesting is harmless
            assert again is True


def test_kept_freed_memory_nests_restoring_the_outer_block(monkeypatch):
    calls = []
    monkeypatch.setattr(parallel, "_mallopt", lambda: lambda what, value: calls.append(
        (what, value)) or 1)
    mmap, trim, default = parallel._M_MMAP_THRESHOLD, parallel._M_TRIM_THRESHOLD, \
        parallel._GLIBC_DEFAULT
    with parallel.kept_freed_memory(1 << 20, 1 << 25):
        with parallel.kept_freed_memory(1 << 21, 1 << 26):
            pass
        assert calls[-2:] == [(mmap, 1 << 20), (trim, 1 << 25)]  # the outer block's, again
    assert calls[-2:] == [(mmap, default), (trim, default)] and parallel._kept == []


def test_a_larger_thread_pool_shuts_the_smaller_one_down(monkeypatch):
    monkeypatch.setattr(parallel, "_pool", None)
    monkeypatch.setattr(parallel, "_pool_size", 0)
    parallel._map(abs, [-1, -2])
    small = parallel._pool
    assert parallel._map(abs, [-1, -2, -3]) == [1, 2, 3]
    assert parallel._pool is not small and small._shutdown


@pytest.fixture(scope="module")
def small():
    mnist = load_dataset("mnist")
    return replace(limit_train(mnist, 400), x_test=mnist.x_test[:300], y_test=mnist.y_test[:300])


def test_training_in_shards_is_reproducible_and_keeps_frozen_weights(small):
    config = TrainConfig(model="lenet5", method="freezenet", rate=0.99, epochs=1, seed=5,
                         shards=2)
    a, b = train(config, small, progress=False), train(config, small, progress=False)
    one = train(replace(config, shards=1), small, progress=False)
    for k, m in a.masks.items():
        off = m == 0
        assert np.array_equal(a.params[k], b.params[k])  # same shards: bit for bit
        assert np.array_equal(a.params[k][off].view(np.uint32), a.theta0[k][off].view(np.uint32))
        np.testing.assert_allclose(a.params[k], one.params[k], rtol=1e-3, atol=1e-4)
    assert a.history[-1]["test_accuracy"] == b.history[-1]["test_accuracy"]
    acc_1, _ = evaluate(a.model, a.params, small.x_test, small.y_test, shards=1)
    acc_3, _ = evaluate(a.model, a.params, small.x_test, small.y_test, shards=3)
    assert acc_1 == acc_3 == a.history[-1]["test_accuracy"]
