"""The three models: parameter counts, whole-model gradient checks, input errors, the info CLI."""

import json

import numpy as np
import pytest

from minifreeze import layers as L
from minifreeze.lab.cli import main
from minifreeze.gradcheck import rel_error
from minifreeze.models import Model, get_model, vgg, vgg_d

EXPECTED_PARAMS = {"lenet300": 266_610, "lenet5": 431_080}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    model = get_model(name)
    assert model.num_params() == EXPECTED_PARAMS[name]
    assert sum(r["params"] for r in model.summary()) == EXPECTED_PARAMS[name]


def test_lenet5_caffe_layout():
    model = get_model("lenet5")
    assert [ly.op for ly in model.layers] == [
        "conv", "maxpool", "conv", "maxpool", "flatten", "linear", "relu", "linear"]
    weights = sum(np.prod(model.param_shapes()[k]) for k in model.weight_names())
    assert weights == 430_500  # + 580 biases
    assert "relu" in [ly.op for ly in get_model("lenet5", conv_relu=True).layers[:2]]


def test_vgg_shapes():
    assert vgg().summary()[-1]["output_shape"] == [10]
    small = vgg(input_shape=(1, 28, 28))
    assert [r["output_shape"] for r in small.summary() if r["op"] == "maxpool"] == [
        [32, 16, 16], [64, 8, 8], [128, 4, 4]]
    assert vgg_d().num_params() == 15_253_578
    with pytest.raises(ValueError, match=r"expected input of shape \(C, 32, 32\)"):
        vgg(input_shape=(3, 30, 30))


def _params(model, rng, scale=1.0):
    """Fan-in scaled weights (activations stay O(1)), small random biases and BN parameters."""
    return {k: rng.standard_normal(s) * (scale / np.sqrt(np.prod(s[1:])) if len(s) > 1 else 0.1)
            for k, s in model.param_shapes().items()}


def _pattern(model, params, x):
    """Which side of each kink the network is on: ReLU signs and max-pool winners."""
    _, caches = model.forward(params, x)
    return [c if ly.op == "relu" else c[1] for ly, c in zip(model.layers, caches)
            if ly.op in ("relu", "maxpool")]


def _relu_margin(model, params, x):
    """Smallest |input| over all ReLUs: how far the batch sits from the nearest kink."""
    margin = np.inf
    for i, ly in enumerate(model.layers):
        if ly.op == "relu":
            prefix = Model(model.name, model.input_shape, model.layers[:i])
            margin = min(margin, np.abs(prefix.forward(params, x)[0]).min())
    return margin


def _same_pattern(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("name,kwargs", [
    ("lenet300", {}), ("lenet5", {}), ("lenet5", {"conv_relu": True}),
    ("vgg", {"input_shape": (1, 28, 28)}), ("vgg", {"batch_norm": True})])
def test_whole_model_gradient(name, kwargs):
    """Directional derivative along random directions, plus a few single coordinates per tensor.

    A central difference is only valid when both evaluation points sit in the same linear piece
    of the network (same ReLU signs, same max-pool winners); steps that cross a kink are redrawn.
    """
    rng = np.random.default_rng(1)
    model = get_model(name, **kwargs)
    params = _params(model, rng)
    # A batch whose ReLU inputs all keep a margin from 0 (redrawn otherwise).
    x = next(x for x in (rng.standard_normal((2, *model.input_shape)) for _ in range(20))
             if _relu_margin(model, params, x) > 1e-6)
    y = np.array([3, 7])
    h = 1e-6

    def loss_at(p):
        return model.loss_and_grads(p, x, y)[0]

    def central(p_plus, p_minus, h=h):
        if not _same_pattern(_pattern(model, p_plus, x), _pattern(model, p_minus, x)):
            return None
        return (loss_at(p_plus) - loss_at(p_minus)) / (2 * h)

    _, grads = model.loss_and_grads(params, x, y)
    assert list(grads) == list(params)
    checked = 0
    # The VGGs have ~10^5 ReLUs, some within 1e-6 of their kink: shrink the step when needed.
    for step in (1e-6, 1e-6, 1e-7, 1e-7, 3e-8, 3e-8):
        v = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        num = central({k: params[k] + step * v[k] for k in params},
                      {k: params[k] - step * v[k] for k in params}, step)
        if num is not None:
            assert rel_error(sum(np.vdot(grads[k], v[k]) for k in params), num) < 1e-6
            checked += 1
    assert checked >= 2
    for k, p in params.items():
        for _ in range(2):
            i = tuple(rng.integers(0, s) for s in p.shape)
            plus, minus = dict(params), dict(params)
            plus[k], minus[k] = p.copy(), p.copy()
            plus[k][i] += h
            minus[k][i] -= h
            num = central(plus, minus)
            if num is not None:
                assert abs(grads[k][i] - num) <= 1e-6 * max(1.0, abs(num)), k


def test_masks_zero_the_masked_weight_gradients():
    rng = np.random.default_rng(2)
    model = get_model("lenet5")
    params = _params(model, rng)
    masks = {k: (rng.random(params[k].shape) < 0.01).astype(np.float64) for k in model.weight_names()}
    x, y = rng.standard_normal((3, 1, 28, 28)), np.array([0, 1, 2])
    _, dense = model.loss_and_grads(params, x, y)
    _, masked = model.loss_and_grads(params, x, y, masks=masks)
    for k in params:
        want = dense[k] * masks[k] if k in masks else dense[k]
        np.testing.assert_allclose(masked[k], want, rtol=1e-12, atol=1e-14)


def test_float32_stays_float32():
    rng = np.random.default_rng(3)
    model = get_model("lenet5")
    params = {k: v.astype(np.float32) for k, v in _params(model, rng).items()}
    loss, grads = model.loss_and_grads(params, rng.standard_normal((4, 1, 28, 28)).astype(np.float32),
                                       np.arange(4))
    assert all(g.dtype == np.float32 for g in grads.values())


def test_bad_input_names_layer_and_shapes():
    model = get_model("lenet5")
    params = _params(model, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"lenet5: expected input of shape \(N, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        model.forward(params, np.zeros((2, 3, 28, 28)))
    with pytest.raises(ValueError, match=r"conv1: expected input x of shape \(N, C, H, W\), got \(28, 28\)"):
        L.conv_forward(np.zeros((28, 28)), params["conv1.w"], params["conv1.b"], layer="conv1")
    with pytest.raises(ValueError, match=r"conv2: expected input x of shape \(N, 20, H, W\) to match weights \(50, 20, 5, 5\), got \(1, 3, 8, 8\)"):
        L.conv_forward(np.zeros((1, 3, 8, 8)), params["conv2.w"], params["conv2.b"], layer="conv2")
    with pytest.raises(ValueError, match="conv1: kernel 5 is larger than the padded input 3"):
        L.conv_forward(np.zeros((1, 1, 3, 3)), params["conv1.w"], params["conv1.b"], layer="conv1")
    with pytest.raises(ValueError, match="pool1: output size .* is not an integer"):
        L.maxpool_forward(np.zeros((1, 1, 7, 7)), 2, 2, layer="pool1")
    with pytest.raises(ValueError, match=r"fc1: expected input x of shape \(N, 800\), got \(2, 10\)"):
        L.linear_forward(np.zeros((2, 10)), params["fc1.w"], params["fc1.b"], layer="fc1")
    with pytest.raises(ValueError, match=r"fc1: expected bias b of shape \(500,\), got \(10,\)"):
        L.linear_forward(np.zeros((2, 800)), params["fc1.w"], np.zeros(10), layer="fc1")
    with pytest.raises(ValueError, match="unknown model 'lenet7'"):
        get_model("lenet7")


def test_info_cli_json(capsys):
    assert main(["info", "--model", "lenet5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total_params"] == 431_080
    assert report["layers"][0] == {"name": "conv1", "op": "conv", "output_shape": [20, 24, 24],
                                   "params": 520}


def test_info_cli_table_and_errors(capsys):
    assert main(["info", "--model", "lenet300"]) == 0
    assert "266,610" in capsys.readouterr().out
    assert main(["info", "--model", "lenet5", "--batch-norm"]) == 2
    assert capsys.readouterr().err.startswith("minifreeze: error: --batch-norm applies to vgg only")
    with pytest.raises(SystemExit):
        main(["info", "--model", "nope"])
