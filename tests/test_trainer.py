"""The trainer: masks that are values, masks swapped between steps on every backend against a
dense reference, the caller's arrays untouched, and the hooks of the training loop."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifreeze import backend, init
from minifreeze.data import Dataset
from minifreeze.masks import Masks, select_topk
from minifreeze.models import Model, conv, flatten, get_model, linear, maxpool, relu
from minifreeze.train import Hook, Setup, TrainConfig, prepare, train_steps
from minifreeze.trainer import HostTrainer
from tests.strategies import rng_from, seeds

BACKENDS = [b for b, why in backend.available_backends().items()
            if why is None and not backend.require(b).device_resident]


def small_model() -> Model:
    """A conv, a pool and two linear layers on 1x6x6 images: every masked code path, quickly."""
    return Model("small", (1, 6, 6), (
        conv("conv1", 1, 3, 3), relu("relu1"), maxpool("pool1", 2), flatten(),
        linear("fc1", 12, 8), relu("relu2"), linear("fc2", 8, 4)))


def random_masks(rng, model, density) -> Masks:
    return Masks({k: (rng.random(model.param_shapes()[k]) < density).astype(np.float32)
                  for k in model.weight_names()})


def reference_steps(model, params, schedule, x, y, lr, momentum, wd):
    """Dense NumPy, float64, written out: the full gradient, then the update where m == 1 only;
    velocity cleared where a new mask turns an entry off."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    vel = {k: np.zeros_like(v) for k, v in p.items()}
    for masks in schedule:
        for k, m in masks.items():
            vel[k][m == 0] = 0
        _, g = model.loss_and_grads(p, x, y)  # no masks: the dense gradient
        for k in p:
            on = np.ones_like(p[k], dtype=bool) if k not in masks else masks[k] == 1
            gk = g[k][on] + wd * p[k][on]
            vel[k][on] = momentum * vel[k][on] + gk
            p[k][on] -= lr * vel[k][on]
    return p


@given(seed=seeds, steps=st.integers(1, 4), shards=st.sampled_from([1, 2]),
       densities=st.lists(st.sampled_from([0.03, 0.3, 1.0]), min_size=1, max_size=4))
def test_masks_swapped_between_steps_match_the_dense_reference_on_every_backend(
        seed, steps, shards, densities):
    rng = rng_from(seed)
    model = small_model()
    params = {k: (rng.standard_normal(s) * 0.5).astype(np.float32)
              for k, s in model.param_shapes().items()}
    x = rng.standard_normal((32, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    schedule = [random_masks(rng, model, densities[i % len(densities)]) for i in range(steps)]
    want = reference_steps(model, params, schedule, x, y, 0.05, 0.9, 1e-3)
    got = {}
    for name in BACKENDS:
        with backend.use_backend(name):
            trainer = HostTrainer(model, params, schedule[0], momentum=0.9, weight_decay=1e-3,
                                  shards=shards)
            for masks in schedule:
                trainer.set_masks(masks)
                trainer.step(x, y, 0.05)
        got[name] = trainer.params
        for k, v in got[name].items():
            np.testing.assert_allclose(v, want[k], rtol=2e-4, atol=2e-5, err_msg=f"{name} {k}")
    # every entry that never trained is bit for bit where it started, on every backend
    never = {k: np.logical_and.reduce([m[k] == 0 for m in schedule]) for k in schedule[0]}
    for name, p in got.items():
        for k, off in never.items():
            assert p[k][off].tobytes() == params[k][off].tobytes(), (name, k)
    first, *others = got.values()
    for other in others:  # numba against numpy: float rounding only
        for k in first:
            np.testing.assert_allclose(other[k], first[k], rtol=1e-5, atol=1e-6)


def test_a_mask_cannot_be_edited_in_place():
    masks = select_topk({"a.w": np.arange(6, dtype=np.float32).reshape(2, 3)}, 0.5)
    with pytest.raises(ValueError, match="read-only"):
        masks["a.w"][0, 0] = 1
    with pytest.raises(TypeError):
        masks["a.w"] = np.ones((2, 3), np.float32)  # a Masks is a read-only mapping
    m = np.eye(3, dtype=np.float32)
    hand = Masks({"b.w": m})
    m[0, 0] = 0  # the source is not shared
    assert hand["b.w"][0, 0] == 1 and hand.index("b.w").flat.tolist() == [0, 4, 8]
    with pytest.raises(ValueError, match="read-only"):
        hand.index("b.w").flat[0] = 3
    for arr in (hand["b.w"], hand.index("b.w").flat, hand.index("b.w").rows):
        with pytest.raises(ValueError, match="cannot set WRITEABLE flag"):
            arr.flags.writeable = True  # nor can it be made writeable: the index stays true
    swapped = hand.replace({"b.w": np.zeros((3, 3))})
    assert swapped.index("b.w").density == 0 and hand.index("b.w").density == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="mask c.w: expected only 0 and 1"):
        Masks({"c.w": np.array([0.5, 1.0])})


def test_masks_survive_pickling_read_only():
    import pickle
    masks = Masks({"a.w": np.array([[1, 0], [0, 1]], np.float32)})
    back = pickle.loads(pickle.dumps(masks))
    assert isinstance(back, Masks) and not back["a.w"].flags.writeable
    assert back.index("a.w").flat.tolist() == [0, 3]


@pytest.mark.parametrize("name", BACKENDS)
def test_the_callers_params_masks_and_buffers_are_never_changed(name):
    model = get_model("vgg", input_shape=(1, 28, 28), batch_norm=True)
    rng = np.random.default_rng(0)
    params = init.init_params(model, 0)
    buffers = model.init_buffers()
    before = {k: v.copy() for k, v in {**params, **buffers}.items()}
    masks = random_masks(rng, model, 0.1)
    with backend.use_backend(name):
        trainer = HostTrainer(model, params, masks, buffers)
        trainer.step(rng.standard_normal((4, 1, 28, 28)).astype(np.float32),
                     rng.integers(0, 10, 4), 0.1)
    for k, v in {**params, **buffers}.items():
        assert np.array_equal(v, before[k]), k
    assert any(not np.array_equal(trainer.params[k], params[k]) for k in params)


def test_set_masks_with_prune_zeroes_and_forgets():
    model = small_model()
    rng = np.random.default_rng(3)
    params = init.init_params(model, 3)
    trainer = HostTrainer(model, params, None)
    x, y = rng.standard_normal((8, 1, 6, 6)).astype(np.float32), rng.integers(0, 4, 8)
    trainer.step(x, y, 0.1)
    masks = random_masks(rng, model, 0.5)
    trainer.set_masks(masks, prune=True)
    for k, m in masks.items():
        off = m == 0
        assert (trainer.params[k][off] == 0).all() and not np.signbit(trainer.params[k][off]).any()
        assert (trainer.opt.velocity[k][off] == 0).all()
    for _ in range(3):
        trainer.step(x, y, 0.1)
    for k, m in masks.items():
        assert (trainer.params[k][m == 0] == 0).all()
    with pytest.raises(ValueError, match="mask 'fc1.w' must match"):
        trainer.set_masks({"fc1.w": np.ones((2, 2))})


class PruneHalfAtStep3(Hook):
    """A hook that swaps the masks once, as a gradual pruning schedule would."""

    def __init__(self):
        self.steps, self.rows = [], []

    def start(self, trainer, total_steps):
        self.total = total_steps

    def after_step(self, t, trainer):
        self.steps.append(t)
        if t == 3:
            m = {k: (np.arange(v.size) % 2 == 0).reshape(v.shape).astype(np.float32)
                 for k, v in trainer.masks.items()}
            trainer.set_masks(m, prune=True)

    def after_epoch(self, epoch, trainer, row):
        row["kept"] = sum(int(m.sum()) for m in trainer.masks.values())
        self.rows.append(row)


def test_a_hook_replaces_the_masks_and_the_result_follows():
    rng = np.random.default_rng(1)
    data = Dataset("synthetic", rng.standard_normal((60, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, 60), rng.standard_normal((20, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, 20))
    config = TrainConfig(model="lenet300", method="snip", rate=0.0, epochs=2, batch_size=20,
                         lr=0.05, warmup_steps=0, seed=2)
    setup = prepare(config, data)
    hook = PruneHalfAtStep3()
    result = train_steps(config, data, setup, progress=False, hooks=[hook])
    assert hook.steps == list(range(1, 7)) and hook.total == 6
    assert [r["kept"] for r in result.history] == [sum(int(m.size) // 2 + int(m.size) % 2
                                                       for m in result.masks.values())] * 2
    for k, m in result.masks.items():
        assert (result.params[k][m == 0] == 0).all()
    assert all(np.array_equal(setup.params[k], setup.theta0[k]) for k in setup.params)
    again = train_steps(config, data, prepare(config, data), progress=False,
                        hooks=[PruneHalfAtStep3()])
    assert all(np.array_equal(again.params[k], result.params[k]) for k in result.params)


def test_library_calls_leave_blas_threads_as_they_were():
    from threadpoolctl import threadpool_info
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    rng = np.random.default_rng(0)
    model = get_model("lenet5")
    trainer = HostTrainer(model, init.init_params(model, 0), None, shards=2)
    trainer.step(rng.standard_normal((32, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 32),
                 0.01)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


@pytest.mark.parametrize("name", BACKENDS)
def test_sparse_compute_trains_a_pruned_network_as_the_dense_products_do(name):
    """SNIP-pruned LeNet-5-Caffe at q = 0.995, a few steps with and without sparse_compute: the
    same parameters to float rounding, pruned entries exactly 0 either way."""
    rng = np.random.default_rng(5)
    data = Dataset("synthetic", rng.standard_normal((60, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, 60), rng.standard_normal((20, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 10, 20))
    config = TrainConfig(model="lenet5", method="snip", rate=0.995, epochs=1, batch_size=20,
                         lr=0.05, warmup_steps=0, seed=5, shards=1)
    runs = {}
    with backend.use_backend(name):
        for sparse in (False, True):
            c = replace(config, sparse_compute=sparse)
            setup = prepare(c, data)
            runs[sparse] = train_steps(c, data, setup, progress=False)
    dense, sparse = runs[False], runs[True]
    for k in dense.params:
        np.testing.assert_allclose(sparse.params[k], dense.params[k], rtol=1e-4, atol=1e-6)
    for k, m in sparse.masks.items():
        assert (sparse.params[k][m == 0] == 0).all()
    assert sparse.history[0]["test_accuracy"] == dense.history[0]["test_accuracy"]


def test_the_forward_plan_is_chosen_once_and_changes_nothing(monkeypatch):
    """A trainer chooses each layer's forward function when it is built (and when its masks
    change), not on every forward pass; the planned pass is the unplanned one bit for bit."""
    import numpy as np
    from minifreeze import init, masks as M
    from minifreeze.models import get_model
    from minifreeze.trainer import HostTrainer
    model = get_model("lenet5")
    theta0 = init.init_params(model, 0)
    rng = np.random.default_rng(1)
    masks = M.select_topk({k: rng.random(theta0[k].shape) for k in model.weight_names()}, 0.995)
    pruned = M.apply_mode(theta0, masks, "prune")
    x, y = rng.standard_normal((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    planned = []
    original = type(model).plan
    monkeypatch.setattr(type(model), "plan", lambda self, p=None: planned.append(p) or
                        original(self, p))
    trainer = HostTrainer(model, pruned, masks, shards=1, sparse_compute=True, pruned=True)
    assert len(planned) == 1 and planned[0] is trainer.masks
    for _ in range(3):
        trainer.step(x, y, 0.01)
    trainer.predict(x)
    assert len(planned) == 1  # three steps and a prediction: no choice made again
    trainer.set_masks(masks)
    assert len(planned) == 2
    plan = original(model, masks)
    a, _ = model.forward(pruned, x, pruned=masks)
    b, _ = model.forward(pruned, x, plan=plan)
    assert np.array_equal(a, b)
