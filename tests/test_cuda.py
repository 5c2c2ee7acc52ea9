"""The cuda backend against the NumPy reference, on a GPU or on Numba's CUDA simulator.

Run with `make test-cuda-sim` (NUMBA_ENABLE_CUDASIM=1, its own process, `-m cuda`). Without a GPU
or the simulator the whole module is skipped, unless MINIFREEZE_REQUIRE_CUDA=1 (set by
`make test-cuda-sim`), where it fails: a simulator run that silently tests nothing must be red.

The simulator runs every CUDA thread as a Python thread, so shapes are tiny and each property draws
at most a handful of examples (fewer under the `dev` profile).
"""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifreeze import backend, im2col as ref
from minifreeze import layers as L
from minifreeze.gradcheck import numerical_gradient_array
from minifreeze.models import Model, conv, flatten, get_model, linear, maxpool, relu
from tests.gradutil import assert_grad_close
from tests.strategies import conv_cases, distinct_values, pool_cases, rng_from, seeds

_reason = backend.available_backends()["cuda"]
if _reason is not None:
    if os.environ.get("MINIFREEZE_REQUIRE_CUDA") == "1":
        raise RuntimeError(f"MINIFREEZE_REQUIRE_CUDA=1 but the cuda backend cannot run: {_reason}")
    pytest.skip(_reason, allow_module_level=True)

from minifreeze import kernels_cuda as K  # noqa: E402  (only once the backend is known to run)
from minifreeze.cuda_train import DeviceTrainer  # noqa: E402

pytestmark = pytest.mark.cuda
few = settings(max_examples=min(settings().max_examples, 6))
small_convs = conv_cases(max_n=2, max_c=2, max_f=2, max_k=3, max_stride=2, max_pad=1, max_out=3)
small_pools = pool_cases(max_n=2, max_c=2, max_size=3, max_stride=2, max_out=3)

from minifreeze.optim import masked_sgd_update as reference_sgd  # the NumPy reference


# --- every kernel equals the NumPy reference ----------------------------------------------------

@few
@given(case=small_convs, seed=seeds, dtype=st.sampled_from([np.float32, np.float64]))
def test_im2col_and_col2im_equal_numpy(case, seed, dtype):
    rng = rng_from(seed)
    c = case
    x = rng.standard_normal(c.x_shape).astype(dtype)
    cols = K.im2col(x, c.kh, c.kw, c.stride, c.pad)
    np.testing.assert_array_equal(cols, ref.im2col(x, c.kh, c.kw, c.stride, c.pad))
    y = rng.standard_normal(cols.shape).astype(dtype)
    got = K.col2im(y, c.x_shape, c.kh, c.kw, c.stride, c.pad)
    assert got.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref.col2im(y, c.x_shape, c.kh, c.kw, c.stride, c.pad),
                               rtol=tol, atol=tol)


@few
@given(case=small_pools, seed=seeds, ties=st.booleans())
def test_maxpool_kernels_equal_numpy(case, seed, ties):
    shape, size, stride = case
    rng = rng_from(seed)
    # With ties (values rounded to a coarse grid) the first maximum must win, as in NumPy.
    x = np.round(rng.standard_normal(shape)) if ties else rng.standard_normal(shape)
    out, argmax = K.maxpool_forward(x, size, size, stride)
    want, want_arg = ref.maxpool_forward(x, size, size, stride)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(argmax, want_arg)
    assert argmax.dtype == np.int32
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(K.maxpool_backward(dout, argmax, shape, size, size, stride),
                               ref.maxpool_backward(dout, want_arg, shape, size, size, stride),
                               rtol=1e-12, atol=1e-12)


@few
@given(z=st.integers(1, 2), m=st.integers(1, 6), k=st.integers(1, 9), n=st.integers(1, 6),
       trans_a=st.booleans(), trans_b=st.booleans(), reduce_batch=st.booleans(),
       broadcast_a=st.booleans(), seed=seeds)
def test_tiled_matmul_equals_numpy(z, m, k, n, trans_a, trans_b, reduce_batch, broadcast_a, seed):
    rng = rng_from(seed)
    a = rng.standard_normal((1 if broadcast_a else z, m, k)).astype(np.float32)  # op(a): (M, K)
    b = rng.standard_normal((z, k, n)).astype(np.float32)  # op(b): (K, N)
    want = a @ b  # (Z, M, N)
    if reduce_batch:
        want = want.sum(axis=0, keepdims=True)  # (1, M, N)
    got = K.matmul(a.transpose(0, 2, 1).copy() if trans_a else a,
                   b.transpose(0, 2, 1).copy() if trans_b else b,
                   trans_a=trans_a, trans_b=trans_b, reduce_batch=reduce_batch)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@few
@given(size=st.integers(1, 40), nesterov=st.booleans(), masked=st.booleans(), seed=seeds)
def test_masked_sgd_kernel_equals_the_contract(size, nesterov, masked, seed):
    rng = rng_from(seed)
    theta, grad, vel = (rng.standard_normal(size).astype(np.float32) for _ in range(3))
    mask = (rng.random(size) < 0.5).astype(np.float32) if masked else None
    hp = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    t_ref, v_ref = theta.copy(), vel.copy()
    reference_sgd(t_ref, grad, v_ref, mask, **hp)
    t_got, v_got = theta.copy(), vel.copy()
    K.masked_sgd_update(t_got, grad, v_got, mask, **hp)
    np.testing.assert_allclose(t_got, t_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v_got, v_ref, rtol=1e-6, atol=1e-7)
    if masked:  # frozen entries are never written: bit for bit, velocity included
        held = mask == 0
        assert t_got[held].tobytes() == theta[held].tobytes()
        assert v_got[held].tobytes() == vel[held].tobytes()


# --- the layers, unchanged, on the cuda backend --------------------------------------------------

@settings(max_examples=min(settings().max_examples, 3))
@given(case=conv_cases(max_n=1, max_c=2, max_f=2, max_k=2, max_stride=2, max_pad=1, max_out=2),
       seed=seeds)
def test_conv_gradient_check_on_cuda(case, seed):
    rng = rng_from(seed)
    x, w, b = case.arrays(rng)
    s, p = case.stride, case.pad
    with backend.use_backend("cuda"):
        out, cache = L.conv_forward(x, w, b, s, p)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = L.conv_backward(dout, cache)
        assert_grad_close(dx, numerical_gradient_array(
            lambda v: L.conv_forward(v, w, b, s, p)[0], x, dout))
        assert_grad_close(dw, numerical_gradient_array(
            lambda v: L.conv_forward(x, v, b, s, p)[0], w, dout))
    ref_out, _ = L.conv_forward_naive(x, w, b, s, p)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)


@settings(max_examples=min(settings().max_examples, 3))
@given(case=pool_cases(max_n=1, max_c=2, max_size=2, max_stride=2, max_out=2), seed=seeds)
def test_maxpool_gradient_check_on_cuda(case, seed):
    shape, size, stride = case
    rng = rng_from(seed)
    x = distinct_values(rng, shape)
    with backend.use_backend("cuda"):
        out, cache = L.maxpool_forward(x, size, stride)
        dout = rng.standard_normal(out.shape)
        dx = L.maxpool_backward(dout, cache)
        num = numerical_gradient_array(lambda v: L.maxpool_forward(v, size, stride)[0], x, dout)
    assert_grad_close(dx, num)


def test_cuda_backend_is_selectable_and_restored():
    before = backend.get_backend()
    with backend.use_backend("cuda") as k:
        assert k.name == "cuda" and backend.get_backend() == "cuda"
    assert backend.get_backend() == before


# --- device-resident training --------------------------------------------------------------------

def tiny_model() -> Model:
    """Every op the device trainer supports, on 1x5x5 images: conv, relu, maxpool, flatten, linear."""
    return Model("tiny", (1, 5, 5), (
        conv("conv1", 1, 2, 2), relu("relu1"), maxpool("pool1", 2),
        conv("conv2", 2, 2, 2), flatten(), linear("fc1", 2, 3)))


def _setup(seed):
    model = tiny_model()
    rng = rng_from(seed)
    shapes = model.param_shapes()
    params = {k: (rng.standard_normal(s) * 0.5).astype(np.float32) for k, s in shapes.items()}
    masks = {k: (rng.random(shapes[k]) < 0.5).astype(np.float32) for k in model.weight_names()}
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    y = rng.integers(0, 3, 2)
    return model, params, masks, x, y


@pytest.mark.parametrize("nesterov", [False, True])
def test_device_training_equals_the_numpy_path(nesterov):
    model, params, masks, x, y = _setup(7)
    hp = dict(momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    trainer = DeviceTrainer(model, params, masks, lr=0.1, **hp)
    p = {k: v.copy() for k, v in params.items()}
    vel = {k: np.zeros_like(v) for k, v in p.items()}
    for lr in (0.1, 0.05):  # the learning rate may change per step (a schedule)
        loss_ref, grads = model.loss_and_grads(p, x, y, masks=masks)
        correct_ref = int(np.sum(model.forward(p, x)[0].argmax(1) == y))  # before the update
        for k in p:
            reference_sgd(p[k], grads[k], vel[k], masks.get(k), lr=lr, **hp)
        loss, correct = trainer.step(x, y, lr=lr)
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
        assert correct == trainer.last_correct == correct_ref
    got = trainer.params_to_host()
    assert list(got) == list(model.param_shapes())
    for k in p:
        np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6, err_msg=k)
        if k in masks:  # frozen weights: bit for bit their initial values
            held = masks[k] == 0
            assert got[k][held].tobytes() == params[k][held].tobytes(), k
            assert np.all(trainer.velocities_to_host()[k][held] == 0), k
    logits = trainer.predict(x)
    np.testing.assert_allclose(logits, model.forward(p, x)[0], rtol=1e-5, atol=1e-5)


def test_device_trainer_errors():
    model, params, masks, x, y = _setup(0)
    with pytest.raises(NotImplementedError, match="bn1 .batchnorm. is not implemented"):
        m = get_model("vgg", batch_norm=True)
        DeviceTrainer(m, {}, lr=0.1)
    with pytest.raises(ValueError, match="mask 'fc1.w' must match"):
        DeviceTrainer(model, params, {"fc1.w": np.ones((2, 2))}, lr=0.1)
    trainer = DeviceTrainer(model, params, masks, lr=0.1)
    with pytest.raises(ValueError, match=r"expected labels of shape \(2,\), integers in \[0, 3\)"):
        trainer.step(x, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 5, 5\)"):
        trainer.step(x[:, :, :4], y)


def test_train_steps_on_the_cuda_backend_matches_the_host_loop():
    """train.train_steps under `cuda` runs the DeviceTrainer and ends where the host loop ends."""
    from minifreeze import masks as M
    from minifreeze.data import Dataset
    from minifreeze.train import Setup, TrainConfig, train_steps
    model, params, masks, _, _ = _setup(3)
    rng = rng_from(4)
    data = Dataset("synthetic", rng.standard_normal((6, 1, 5, 5)).astype(np.float32),
                   rng.integers(0, 3, 6), rng.standard_normal((4, 1, 5, 5)).astype(np.float32),
                   rng.integers(0, 3, 4))
    config = TrainConfig(model="lenet5", method="freezenet", rate=0.5, epochs=2, batch_size=3,
                         lr=0.05, warmup_steps=0)
    results = {}
    for name in ("numpy", "cuda"):
        setup = Setup(model, params, masks, M.apply_mode(params, masks, "freeze"), {})
        with backend.use_backend(name):
            results[name] = train_steps(config, data, setup, progress=False)
    host, dev = results["numpy"], results["cuda"]
    for k in params:
        np.testing.assert_allclose(dev.params[k], host.params[k], rtol=1e-4, atol=1e-5, err_msg=k)
        if k in masks:
            held = masks[k] == 0
            assert dev.params[k][held].tobytes() == params[k][held].tobytes(), k
    for a, b in zip(dev.history, host.history):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-4)
        assert a["test_accuracy"] == b["test_accuracy"]


def test_device_trainer_refuses_a_winograd_model():
    from minifreeze import init
    model = get_model("vgg", input_shape=(1, 28, 28), conv="winograd")
    with pytest.raises(NotImplementedError, match="winograd convolution, which runs on the numba and numpy"):
        DeviceTrainer(model, init.init_params(model, 0, "xavier"))


def test_the_gpu_benchmark_measures_what_it_names_on_a_tiny_network(monkeypatch):
    """benchmarks/gpu.py's measurements, end to end on a tiny network (the simulator's size):
    every candidate timed in both regimes, the device agreeing with the NumPy reference, frozen
    weights untouched, the same steps twice the same; its tables render from the record."""
    import sys

    from tests.test_benchmarks import _script
    gpu = _script("gpu")
    monkeypatch.setattr(sys.modules["bench"], "PAUSE", 0.0)  # no idle threads to wait out here
    model = tiny_model()
    rng = rng_from(5)
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    y = rng.integers(0, 3, 2)
    rows = gpu.throughput("tiny", model, x, y, steps=1, rounds=1, q=0.5)
    assert [(r["regime"], r["impl"][:5]) for r in rows] == [
        ("dense", "cuda"), ("dense", "numba"), ("freezenet", "cuda"), ("freezenet", "numba")]
    assert all(r["train_img_s"] > 0 and r["infer_img_s"] > 0 for r in rows)
    assert rows[0]["trainable"] is None and rows[2]["trainable"] == 15  # of 30 weights
    batches = [(x, y), (x[::-1].copy(), y[::-1].copy())]
    agree = gpu.agreement("tiny", model, batches, q=0.5)
    assert [r["regime"] for r in agree] == ["dense", "freezenet"]
    for r in agree:
        assert r["param_max_diff_rel"] < 1e-5 and r["loss_max_diff"] < 1e-5
        assert r["deterministic"] and r["frozen_unchanged"]
    assert agree[0]["frozen_weights"] == 0 and agree[1]["frozen_weights"] > 0
    record = {"throughput": rows, "agreement": agree, "batch": 2, "rounds": 1,
              "steps": {"tiny": 1}, "gemm": {"own_gmacs": 1.0, "torch_gmacs": None},
              "environment": {"gpu": {"name": "sim"}, "cpus": 2, "cpu": "CPU"}}
    assert "| tiny | freezenet | cuda |" in gpu.gpu_table(record)
    assert "| tiny | freezenet | 2 |" in gpu.agreement_table(record)
