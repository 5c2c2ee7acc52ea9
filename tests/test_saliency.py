"""Saliency scores: SNIP's score is the gradient with respect to a multiplicative mask at 1."""

import numpy as np
import pytest
from hypothesis import given

from minifreeze import saliency as S
from minifreeze.gradcheck import numerical_gradient
from minifreeze.models import Model, conv, flatten, get_model, linear, relu

from .strategies import away_from_zero, rng_from, seeds

TINY = Model("tiny", (1, 5, 5), (conv("c1", 1, 2, 3), relu("r1"), flatten(),
                                  linear("f1", 18, 3)))


def _tiny(seed):
    rng = rng_from(seed)
    params = {k: away_from_zero(rng, s) * 0.5 for k, s in TINY.param_shapes().items()}
    x = rng.standard_normal((4, 1, 5, 5))
    return params, x, rng.integers(0, 3, 4)


@given(seeds)
def test_snip_score_is_the_gradient_wrt_a_multiplicative_mask(seed):
    params, x, y = _tiny(seed)
    scores = S.saliency(TINY, params, x, y, score="snip")
    for name in TINY.weight_names():
        def loss_of_c(c, name=name):
            p = dict(params, **{name: params[name] * c})
            return TINY.loss_and_grads(p, x, y)[0]
        dl_dc = numerical_gradient(loss_of_c, np.ones_like(params[name]))
        np.testing.assert_allclose(scores[name], np.abs(dl_dc), rtol=1e-5, atol=1e-8)


def test_grad_magnitude_and_random_scores():
    params, x, y = _tiny(1)
    g = S.saliency(TINY, params, x, y, score="grad")
    _, grads = TINY.loss_and_grads(params, x, y)
    assert list(g) == ["c1.w", "f1.w"]
    assert all(np.array_equal(g[k], np.abs(grads[k])) for k in g)
    assert np.array_equal(S.saliency(TINY, params, score="magnitude")["f1.w"], np.abs(params["f1.w"]))
    r1 = S.saliency(TINY, params, score="random", seed=5)
    r2 = S.saliency(TINY, params, score="random", seed=5)
    assert all(np.array_equal(r1[k], r2[k]) for k in r1)
    assert list(S.saliency(TINY, params, x, y, include_biases=True)) == ["c1.w", "c1.b", "f1.w",
                                                                          "f1.b"]


def test_saliency_errors_are_clear():
    params, x, y = _tiny(2)
    with pytest.raises(ValueError, match="unknown saliency score 'hessian'"):
        S.saliency(TINY, params, x, y, score="hessian")
    with pytest.raises(ValueError, match="needs a batch"):
        S.saliency(TINY, params, score="grad")
    with pytest.raises(ValueError, match="needs a seed"):
        S.saliency(TINY, params, score="random")


def test_batchnorm_running_stats_are_not_touched_by_scoring():
    from minifreeze.init import init_params
    model = get_model("vgg", batch_norm=True, input_shape=(1, 28, 28))
    buffers = model.init_buffers()
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    S.saliency(model, init_params(model, 0), x, np.array([0, 1]), buffers=buffers)
    assert (buffers["bn1.running_mean"] == 0).all()
