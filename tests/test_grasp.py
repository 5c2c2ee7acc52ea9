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


class Dual:
    """a + b eps with eps^2 = 0: forward-mode differentiation, one scalar at a time."""
    __slots__ = ("a", "b")

    def __init__(self, a, b=0.0):
        self.a, self.b = float(a), float(b)

    def __add__(self, o):
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.a + o.a, self.b + o.b)

    __radd__ = __add__

    def __sub__(self, o):
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.a - o.a, self.b - o.b)

    def __mul__(self, o):
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.a * o.a, self.a * o.b + self.b * o.a)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.a / o.a, (self.b * o.a - self.a * o.b) / (o.a * o.a))

    def exp(self):
        e = np.exp(self.a)
        return Dual(e, e * self.b)


def dual_grads(w1, b1, w2, b2, v1, v2, x, y, temperature):
    """The reference: conv 3x3 (C -> F, no padding) -> ReLU -> max-pool 2 -> linear -> mean
    cross-entropy(z / T), forward and backward written as plain loops over scalars, run on
    weights w + eps v as dual numbers: the eps part of each weight gradient is H v, exactly.
    Winners and ReLU signs are read from the real parts."""
    n, c, hh, ww = x.shape
    f, k = w1.shape[0], w1.shape[2]
    oh, ow = hh - k + 1, ww - k + 1
    W1 = [[[[Dual(w1[a, b, i, j], v1[a, b, i, j]) for j in range(k)] for i in range(k)]
           for b in range(c)] for a in range(f)]
    W2 = [[Dual(w2[o, i], v2[o, i]) for i in range(w2.shape[1])] for o in range(w2.shape[0])]
    pre = [[[[sum((W1[a][b][i][j] * x[s, b, r + i, q + j] for b in range(c) for i in range(k)
                   for j in range(k)), Dual(b1[a])) for q in range(ow)] for r in range(oh)]
             for a in range(f)] for s in range(n)]
    act = [[[[p if p.a > 0 else Dual(0.0) for p in row] for row in ch] for ch in ex] for ex in pre]
    pooled, win = [], []
    for s in range(n):
        vals, pos = [], []
        for a in range(f):
            for r in range(0, oh - 1, 2):
                for q in range(0, ow - 1, 2):
                    cands = [(act[s][a][r + i][q + j], (r + i, q + j)) for i in (0, 1) for j in (0, 1)]
                    best = max(range(4), key=lambda t: cands[t][0].a)  # first maximum wins
                    vals.append(cands[best][0])
                    pos.append((a, *cands[best][1]))
        pooled.append(vals)
        win.append(pos)
    m, kk = len(pooled[0]), w2.shape[0]
    z = [[sum((W2[o][i] * pooled[s][i] for i in range(m)), Dual(b2[o])) / temperature
          for o in range(kk)] for s in range(n)]
    dz = []
    for s in range(n):
        top = max(t.a for t in z[s])
        e = [(t - top).exp() for t in z[s]]
        tot = sum(e, Dual(0.0))
        dz.append([(e[o] / tot - (1.0 if o == y[s] else 0.0)) / (n * temperature) for o in range(kk)])
    dw2 = [[sum((dz[s][o] * pooled[s][i] for s in range(n)), Dual(0.0)) for i in range(m)]
           for o in range(kk)]
    dpre = [[[[Dual(0.0) for _ in range(ow)] for _ in range(oh)] for _ in range(f)] for _ in range(n)]
    for s in range(n):
        for i in range(m):
            d = sum((dz[s][o] * W2[o][i] for o in range(kk)), Dual(0.0))
            a, r, q = win[s][i]
            if pre[s][a][r][q].a > 0:
                dpre[s][a][r][q] = dpre[s][a][r][q] + d
    dw1 = np.zeros(w1.shape)
    for a in range(f):
        for b in range(c):
            for i in range(k):
                for j in range(k):
                    dw1[a, b, i, j] = sum((dpre[s][a][r][q] * x[s, b, r + i, q + j]
                                           for s in range(n) for r in range(oh) for q in range(ow)),
                                          Dual(0.0)).b
    return dw1, np.array([[t.b for t in row] for row in dw2])


@given(seed=seeds, temperature=st.sampled_from([1.0, 200.0]))
def test_the_exact_hessian_vector_product_through_conv_relu_and_max_pool(seed, temperature):
    """Against an independent exact H v (dual numbers through a loop-by-loop reference) on a
    conv + ReLU + max-pool + linear network: no step size, so no kink is stepped across."""
    from minifreeze.models import Model, conv, maxpool, relu
    rng = rng_from(seed)
    model = Model("tiny", (2, 6, 6), (conv("conv1", 2, 3, 3), relu("relu1"), maxpool("pool1", 2),
                                      flatten(), linear("fc1", 12, 4)))
    params = {k: rng.standard_normal(s) for k, s in model.param_shapes().items()}
    x = rng.standard_normal((3, 2, 6, 6))
    y = rng.integers(0, 4, 3)
    v = {k: rng.standard_normal(params[k].shape) for k in model.weight_names()}
    got = grasp.hessian_vector_exact(model, params, x, y, v, temperature=temperature)
    want1, want2 = dual_grads(params["conv1.w"], params["conv1.b"], params["fc1.w"],
                              params["fc1.b"], v["conv1.w"], v["fc1.w"], x, y, temperature)
    np.testing.assert_allclose(got["conv1.w"], want1, rtol=1e-9, atol=1e-12 * np.abs(want1).max())
    np.testing.assert_allclose(got["fc1.w"], want2, rtol=1e-9, atol=1e-12 * np.abs(want2).max())


def test_the_exact_product_is_what_a_small_enough_step_approaches_on_lenet5():
    """Where no winner or sign switches (a step of 1e-8 on this batch), the central difference
    agrees with the exact product; at GraSP's step of 1e-6 it does not on LeNet-5's convolutions
    (a switch between the two passes is an O(1) jump over 2 eps), and on LeNet-300-100 it does."""
    from minifreeze.data import limit_train, load_dataset
    data = limit_train(load_dataset("mnist"), 2000)
    x, y = grasp.balanced_batch(data.x_train, data.y_train, samples_per_class=5, seed=0)
    for name, close_at_default in (("lenet300", True), ("lenet5", False)):
        model = get_model(name)
        theta = {k: a.astype(np.float64) for k, a in init.init_params(model, 0).items()}
        g = grasp.weight_grads(model, theta, x, y)
        exact = grasp.hessian_vector_exact(model, theta, x, y, g)

        def err(hv):
            return max(float(np.linalg.norm(hv[k] - exact[k]) / np.linalg.norm(exact[k]))
                       for k in exact)
        assert err(grasp.hessian_vector(model, theta, x, y, g, step=1e-8)) < 1e-6
        assert (err(grasp.hessian_vector(model, theta, x, y, g)) < 1e-6) == close_at_default


def test_the_registrys_grasp_mask_is_the_lowest_of_an_independent_score():
    """The registry path (`prepare`), against GraSP's score computed here from its definition:
    g and Hg of mean CE(logits / 200) on the two halves of the class-balanced batch, summed,
    S = -theta * Hg. The kept weights are the lowest S, and removing them would change the
    gradient flow g^T g less, to first order (2 * sum of -theta * Hg over the removed), than
    removing the ones GraSP removed. Fails if the score's sign flips, if the selection keeps the
    largest S, or if the temperature is not 200."""
    from minifreeze.data import limit_train, load_dataset
    from minifreeze.train import TrainConfig, prepare
    data = limit_train(load_dataset("mnist"), 3000)
    model = get_model("lenet300")
    config = TrainConfig(model="lenet300", method="grasp_prune", rate=0.99, seed=1)
    masks = prepare(config, data).masks
    theta = {k: a.astype(np.float64) for k, a in init.init_params(model, 1).items()}
    x, y = grasp.balanced_batch(data.x_train, data.y_train, samples_per_class=10, seed=1)
    halves = [(x[:50], y[:50]), (x[50:], y[50:])]
    g = {n: sum(grasp.weight_grads(model, theta, xs, ys, temperature=200.0)[n] for xs, ys in halves)
         for n in model.weight_names()}
    hg = {n: sum(grasp.hessian_vector_exact(model, theta, xs, ys, g, temperature=200.0)[n]
                 for xs, ys in halves) for n in g}
    s = {n: -theta[n] * hg[n] for n in g}  # GraSP's S, unnormalised
    flat_s = np.concatenate([s[k].ravel() for k in masks])
    flat_m = np.concatenate([masks[k].ravel() for k in masks])
    assert flat_s[flat_m == 1].max() <= flat_s[flat_m == 0].min()  # kept: the lowest S
    independent = M.select_topk({n: -v for n, v in s.items()}, 0.99)
    assert all(np.array_equal(masks[k], independent[k]) for k in masks)
    # to first order, removing a set R changes g^T g by 2 * sum_R S_i (delta = -theta_R)
    change_removed, change_kept = 2 * flat_s[flat_m == 0].sum(), 2 * flat_s[flat_m == 1].sum()
    assert change_kept < change_removed
