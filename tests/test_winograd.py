"""Winograd's F(2x2, 3x3) against the im2col reference: forward, input gradient and weight
gradient over shapes and paddings (odd output sizes included), its adjointness, and the float32
error it makes.

Tolerances. In float64 both algorithms are exact up to rounding, so they agree to 1e-12 (relative,
`rel_error`). In float32 each output sums 9 C products after transforms of up to 9 terms; the
error measured on standard-normal data was at most 1.4e-7 (im2col's at most 2.6e-7) for up to 16
channels. The float32 test allows 2e-6 against the float64 reference: ten times the measured
error, still far below what a wrong transform entry gives (a missing term is an O(1) error).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minifreeze import layers as L, winograd as W
from minifreeze.gradcheck import rel_error

from .strategies import rng_from, seeds

shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4),  # n, c, f
                   st.integers(1, 9), st.integers(1, 9), st.integers(0, 2))  # h, w, pad


def _case(seed, shape, dtype=np.float64):
    n, c, f, h, w, pad = shape
    rng = rng_from(seed)
    x = rng.standard_normal((n, c, h + 2, w + 2)).astype(dtype)  # (N, C, H, W), H >= 3 - 2 pad
    k = rng.standard_normal((f, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    return x, k, b, pad


@settings(deadline=None)
@given(seeds, shapes)
def test_forward_and_both_gradients_equal_im2col(seed, shape):
    x, w, b, pad = _case(seed, shape)
    ref, cache = L.conv_forward(x, w, b, 1, pad)
    out = W.conv_forward(x, w, b, pad)
    assert out.shape == ref.shape and rel_error(out, ref) < 1e-12
    dout = rng_from(seed + 1).standard_normal(ref.shape)
    for name, a, r in zip(("dx", "dw", "db"), W.conv_backward(dout, x, w, pad),
                          L.conv_backward(dout, cache)):
        assert a.shape == r.shape and rel_error(a, r) < 1e-12, name


@settings(deadline=None)
@given(seeds, shapes)
def test_backward_is_the_adjoint_of_forward(seed, shape):
    """<conv(x) - b, y> = <x, dx(y)> and = <w, dw(y)>: both gradients are transposes."""
    x, w, b, pad = _case(seed, shape)
    y = rng_from(seed + 2).standard_normal(W.conv_forward(x, w, b, pad).shape)
    dx, dw, _ = W.conv_backward(y, x, w, pad)
    lhs = np.vdot(W.conv_forward(x, w, 0 * b, pad), y)
    scale = np.linalg.norm(W.conv_forward(x, w, 0 * b, pad)) * np.linalg.norm(y)
    assert abs(lhs - np.vdot(x, dx)) <= 1e-12 * scale
    assert abs(lhs - np.vdot(w, dw)) <= 1e-12 * scale


@pytest.mark.parametrize("c, f", [(1, 4), (16, 32)])
def test_float32_error_stays_within_the_stated_bound(c, f):
    x, w, b, pad = _case(7, (2, c, f, 10, 7, 1))
    ref, cache = L.conv_forward(x, w, b, 1, pad)
    dout = rng_from(8).standard_normal(ref.shape)
    rdx, rdw, _ = L.conv_backward(dout, cache)
    x32, w32, b32, d32 = (a.astype(np.float32) for a in (x, w, b, dout))
    out = W.conv_forward(x32, w32, b32, pad)
    dx, dw, _ = W.conv_backward(d32, x32, w32, pad)
    assert out.dtype == dx.dtype == dw.dtype == np.float32
    for a, r in ((out, ref), (dx, rdx), (dw, rdw)):
        assert rel_error(a.astype(np.float64), r) < 2e-6


def test_what_it_fits_and_clear_errors():
    assert W.fits((8, 4, 3, 3), 1) and not W.fits((8, 4, 5, 5), 1) and not W.fits((8, 4, 3, 3), 2)
    x, w, b, _ = _case(0, (1, 2, 3, 4, 4, 0))
    with pytest.raises(ValueError, match="3x3 filters"):
        W.conv_forward(x, np.zeros((3, 2, 5, 5)), b, 0)
    with pytest.raises(ValueError, match="same C"):
        W.conv_forward(x, np.zeros((3, 5, 3, 3)), b, 0)
    with pytest.raises(ValueError, match="dout expected"):
        W.conv_backward(np.zeros((1, 3, 2, 2)), x, w, 0)
    # 16 multiplications per 2x2 tile against 36: 2.25x fewer for even output sizes
    wino, im2col = W.multiplications((1, 8, 18, 18), (8, 8, 3, 3), 1)
    assert im2col / wino == 2.25


@settings(deadline=None)
@given(seeds, shapes, st.sampled_from([np.float32, np.float64]))
def test_numba_transforms_equal_the_reference(seed, shape, dtype):
    """The Numba loops compute the same transforms as the NumPy reference, bit for bit (each
    output is the same few additions in the same order)."""
    from minifreeze import kernels_numba as K
    x, w, _, pad = _case(seed, shape, dtype)
    oh, ow, th, tw = W.tiles_for(x.shape, w.shape, pad)
    v = W.input_transform(x, pad, th, tw).reshape(16, x.shape[1], -1)
    assert np.array_equal(K.winograd_input_transform(x, pad, th, tw), v)
    m = rng_from(seed + 3).standard_normal((16, w.shape[0], x.shape[0] * th * tw)).astype(dtype)
    out = K.winograd_output_transform(m, x.shape[0], th, tw, oh, ow)
    assert out.dtype == dtype and np.array_equal(out, W.output_transform(m, x.shape[0], th, tw, oh, ow))


@settings(deadline=None)
@given(seeds, shapes, st.sampled_from([np.float32, np.float64]))
def test_numba_adjoint_transforms_equal_the_reference(seed, shape, dtype):
    """dM = A dY A^T bit for bit (the same additions per entry); dx = B dV B^T added back onto
    overlapping tiles to rounding only (the loop adds tile by tile, the reference offset by offset:
    a different order of the same additions, at most 4 per entry of dx)."""
    from minifreeze import kernels_numba as K
    x, w, _, pad = _case(seed, shape, dtype)
    oh, ow, th, tw = W.tiles_for(x.shape, w.shape, pad)
    rng = rng_from(seed + 4)
    dout = rng.standard_normal((x.shape[0], w.shape[0], oh, ow)).astype(dtype)
    dm = K.winograd_output_adjoint(dout, th, tw)
    assert dm.dtype == dtype and np.array_equal(dm, W.output_adjoint(dout, th, tw))
    dv = rng.standard_normal((16, x.shape[1], x.shape[0] * th * tw)).astype(dtype)
    dx, ref = K.winograd_input_adjoint(dv, x.shape, pad, th, tw), W.input_adjoint(dv, x.shape, pad, th, tw)
    eps = np.finfo(dtype).eps
    assert dx.dtype == dtype and np.all(np.abs(dx - ref) <= 16 * eps * (np.abs(ref) + np.abs(dv).max()))


@settings(deadline=None)
@given(seeds, shapes)
def test_adjoint_transforms_are_transposes(seed, shape):
    """<T(a), b> = <a, T*(b)> for the output transform and the input transform (float64)."""
    x, w, _, pad = _case(seed, shape)
    oh, ow, th, tw = W.tiles_for(x.shape, w.shape, pad)
    rng = rng_from(seed + 5)
    m = rng.standard_normal((16, w.shape[0], x.shape[0] * th * tw))
    dy = rng.standard_normal((x.shape[0], w.shape[0], oh, ow))
    y = W.output_transform(m, x.shape[0], th, tw, oh, ow)
    assert abs(np.vdot(y, dy) - np.vdot(m, W.output_adjoint(dy, th, tw))) <= 1e-12 * np.linalg.norm(y) * np.linalg.norm(dy) * 4
    dv = rng.standard_normal((16, x.shape[1], x.shape[0] * th * tw))
    v = W.input_transform(x, pad, th, tw).reshape(dv.shape)
    dx = W.input_adjoint(dv, x.shape, pad, th, tw)
    assert abs(np.vdot(v, dv) - np.vdot(x, dx)) <= 1e-12 * np.linalg.norm(v) * np.linalg.norm(dv) * 4


# --- a model that computes its convolutions this way ---------------------------------------------

def _small_vgg(conv):
    from minifreeze import models
    return models.get_model("vgg", input_shape=(1, 28, 28), conv=conv)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_a_winograd_vgg_computes_the_im2col_vgg_to_rounding(backend_name):
    from minifreeze import backend, init
    a, b = _small_vgg("im2col"), _small_vgg("winograd")
    assert all(ly.args.get("algo") == "winograd" for ly in b.layers if ly.op == "conv")
    assert a.fingerprint() != b.fingerprint() and a.param_shapes() == b.param_shapes()
    params = init.init_params(a, 3, "kaiming")
    rng = rng_from(11)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    masks = {k: (rng.random(params[k].shape) < 0.2).astype(np.float32) for k in a.weight_names()}
    with backend.use_backend(backend_name):
        la, ga = a.loss_and_grads(params, x, y, masks=masks)
        lb, gb = b.loss_and_grads(params, x, y, masks=masks)
    assert abs(la - lb) <= 1e-5 * abs(la)
    for k in ga:
        assert gb[k].dtype == np.float32 and rel_error(gb[k].astype(np.float64), ga[k]) < 1e-4, k
    for k, m in masks.items():  # masked semantics unchanged: exactly 0 where m == 0
        assert not gb[k][m == 0].any(), k


def test_training_a_winograd_vgg_keeps_frozen_weights_bit_for_bit_and_its_file_rebuilds_it(tmp_path):
    from minifreeze import data, storage
    from minifreeze.train import TrainConfig, train
    rng = rng_from(5)
    ds = data.Dataset("synthetic", rng.random((48, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 48),
                      rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16))
    c = TrainConfig(model="vgg", method="freezenet", rate=0.9, epochs=1, batch_size=16, warmup_steps=0,
                    saliency_batch=16, shards=1, model_kwargs={"input_shape": [1, 28, 28], "conv": "winograd"})
    result = train(c, ds, progress=False)
    assert result.config.model_kwargs["conv"] == "winograd"
    for k, m in result.masks.items():
        off = m == 0
        assert np.array_equal(result.params[k][off].view(np.uint32), result.theta0[k][off].view(np.uint32)), k
    storage.save(tmp_path / "m.mfz", result.checkpoint())
    ckpt = storage.load(tmp_path / "m.mfz")
    assert ckpt.model().fingerprint() == result.model.fingerprint()
    assert np.array_equal(ckpt.model().predict(ckpt.params, ds.x_test), result.model.predict(result.params, ds.x_test))
    im2col = TrainConfig(**{**c.__dict__, "model_kwargs": {"input_shape": [1, 28, 28], "conv": "im2col"}})
    assert "conv" not in im2col.resolved().model_kwargs  # the default is not recorded: one config per run


def test_winograd_is_refused_where_it_does_not_fit():
    from minifreeze import models
    with pytest.raises(ValueError, match="conv='winograd' needs 3x3 stride-1 convolutions"):
        models.get_model("lenet5", conv="winograd")
    with pytest.raises(ValueError, match="conv must be one of im2col, winograd"):
        models.get_model("vgg", conv="fft")
    with pytest.raises(ValueError, match="needs 3x3 filters at stride 1"):
        models.conv("c", 1, 2, 5, algo="winograd")
    assert "algo" not in models.conv("c", 1, 2, 3).args  # im2col: the fingerprint it always had
