"""GraSP through the hand-written passes: the Hessian-vector product against the exact one of a
softmax-regression layer, the balanced batch, the score's sign and the kept count."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifreeze import grasp, init, masks as M
from minifreeze.models import Model, flatten, get_model, linear

from .strategies import rng_from, seeds


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def exact_hvp(w, b, x, y, v, temperature):
    """H v of mean CE(softmax((x W^T + b) / T)) in W, written out: dz = x V^T / T,
    dp = (diag(p) - p p^T) dz per example, H v = dp^T x / (N T)."""
    z = (x @ w.T + b) / temperature  # (N, K)
    p = _softmax(z)
    dz = (x @ v.T) / temperature  # (N, K)
    dp = p * dz - p * np.sum(p * dz, axis=1, keepdims=True)  # (N, K): J_p dz, row by row
    return dp.T @ x / (len(x) * temperature)  # (K, D)


@given(seed=seeds, temperature=st.sampled_from([1.0, 200.0]))
def test_the_central_difference_is_the_exact_hessian_vector_product(seed, temperature):
    rng = rng_from(seed)
    model = Model("softmax", (1, 2, 3), (flatten(), linear("fc", 6, 4)))
    params = {"fc.w": rng.standard_normal((4, 6)), "fc.b": rng.standard_normal(4)}
    x = rng.standard_normal((8, 1, 2, 3))
    y = rng.integers(0, 4, 8)
    v = {"fc.w": rng.standard_normal((4, 6))}
    got = grasp.hessian_vector(model, params, x, y, v, temperature=temperature)["fc.w"]
    want = exact_hvp(params["fc.w"], params["fc.b"], x.reshape(8, 6), y, v["fc.w"], temperature)
    # rounding in the difference: about 1e-16 |grad| / eps, i.e. 1e-7 of the largest entry
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())


def test_balanced_batch_has_every_class_in_order_and_is_seeded():
    y = np.repeat(np.arange(3), 10)[::-1].copy()
    x = np.arange(30)[:, None].astype(float)
    xb, yb = grasp.balanced_batch(x, y, samples_per_class=4, seed=1)
    assert yb.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert np.all(y[xb[:, 0].astype(int)] == yb)
    again = grasp.balanced_batch(x, y, samples_per_class=4, seed=1)
    assert np.array_equal(again[0], xb)
    with pytest.raises(ValueError, match="class 0 has 10 examples, fewer than"):
        grasp.balanced_batch(x, y, samples_per_class=11)


def test_grasp_on_lenet5_keeps_the_lowest_scores_exactly():
    from minifreeze.data import limit_train, load_dataset
    data = limit_train(load_dataset("mnist"), 2000)
    model = get_model("lenet5")
    theta0 = init.init_params(model, 0)
    x, y = grasp.balanced_batch(data.x_train, data.y_train, samples_per_class=5, seed=0)
    s = grasp.grasp_scores(model, theta0, x, y)
    assert abs(sum(float(v.sum()) for v in s.values())) == pytest.approx(1.0, rel=1e-6)
    m = grasp.grasp_masks(model, theta0, x, y, 0.99)
    flat_s = np.concatenate([s[k].ravel() for k in m])
    flat_m = np.concatenate([m[k].ravel() for k in m])
    assert int(flat_m.sum()) == M.keep_count(flat_m.size, 0.99)
    assert flat_s[flat_m == 1].max() <= flat_s[flat_m == 0].min()  # kept: the lowest S
