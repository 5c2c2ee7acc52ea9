"""GraSP: pruning at initialisation that preserves gradient flow (Wang, Zhang, Grosse, "Picking
Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020), through the
hand-written forward and backward passes.

As its reference code (alecwangcq/GraSP, `pruner/GraSP.py`) defines it:

1. A class-balanced batch: `samples_per_class` training images of every class (25), stacked class
   by class and cut into two halves (so the halves hold different classes, as in the code).
2. g = the sum over the halves of the gradient of the mean cross-entropy of logits / T (the
   temperature T = 200) with respect to the conv and linear weights.
3. Hg = the sum over the halves of the Hessian of the same loss (weights only) times g.
4. The score S = -theta * Hg, divided by |sum S| + 1e-10. Removing weight i changes the gradient
   flow g^T g, to first order, by S_i times a positive constant... so GraSP *removes the largest
   S* (the weights whose removal reduces the gradient flow least, or raises it) and keeps the
   lowest (`grasp_masks`).

Hg without a second backward pass: a central difference of the hand-written gradient,
(grad(theta + eps g) - grad(theta - eps g)) / (2 eps), in float64 with eps = `step` * |theta| /
|g| (relative step 1e-6: small enough that few ReLU kinks or max-pool winners change, large enough
to stay clear of rounding); `tests/test_grasp.py` checks it against the exact Hessian-vector product
of a softmax-regression layer, written out. The reference re-initialises the linear layers of the
network it scores (`reinit=True`, Xavier normal) and scores that copy; here the score is of theta0
itself, the weights that are then frozen or pruned (our choice: the mask should belong to the
network it is applied to).

    x, y = balanced_batch(data.x_train, data.y_train, samples_per_class=25, seed=0)
    S = grasp_scores(model, theta0, x, y)          # {"conv1.w": (20, 1, 5, 5), ...}, signed
    masks = grasp_masks(model, theta0, x, y, rate=0.995)
"""

from __future__ import annotations

import numpy as np

from minifreeze import methods
from minifreeze.losses import softmax_cross_entropy
from minifreeze.masks import Masks, select_topk

TEMPERATURE = 200.0
SAMPLES_PER_CLASS = 25


def balanced_batch(x: np.ndarray, y: np.ndarray, *, samples_per_class: int = SAMPLES_PER_CLASS,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`samples_per_class` examples of every class present in y, drawn without replacement by
    a generator keyed on (seed, 4), stacked class by class: (K * n, ...) and (K * n,)."""
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class: expected a whole number >= 1, got "
                         f"{samples_per_class}")
    rng = np.random.default_rng([seed, 4])
    picks = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if members.size < samples_per_class:
            raise ValueError(f"balanced_batch: class {c} has {members.size} examples, fewer than "
                             f"samples_per_class = {samples_per_class}")
        picks.append(np.sort(rng.choice(members, size=samples_per_class, replace=False)))
    idx = np.concatenate(picks)  # (K * n,)
    return x[idx], y[idx]


def weight_grads(model, params, x, y, *, temperature: float = TEMPERATURE) -> dict:
    """The gradient of mean cross-entropy(logits / T) with respect to the conv and linear
    weights (float64 in, float64 out)."""
    logits, caches = model.forward(params, x)  # (N, K)
    _, dz = softmax_cross_entropy(logits / temperature, y)  # dL/d(logits / T)
    grads = model.backward(dz / temperature, caches)
    return {n: grads[n] for n in model.weight_names()}


def hessian_vector(model, params, x, y, v: dict, *, temperature: float = TEMPERATURE,
                   step: float = 1e-6) -> dict:
    """H v for the Hessian of mean cross-entropy(logits / T) with respect to the weights, by a
    central difference of `weight_grads` along v (biases held)."""
    p = {k: np.asarray(a, dtype=np.float64) for k, a in params.items()}
    theta = np.sqrt(sum(float(np.sum(p[n] ** 2)) for n in v))
    vnorm = np.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in v.values()))
    if vnorm == 0:
        return {n: np.zeros_like(p[n]) for n in v}
    eps = step * max(theta, 1.0) / vnorm
    plus = {**p, **{n: p[n] + eps * v[n] for n in v}}
    minus = {**p, **{n: p[n] - eps * v[n] for n in v}}
    gp = weight_grads(model, plus, x, y, temperature=temperature)
    gm = weight_grads(model, minus, x, y, temperature=temperature)
    return {n: (gp[n] - gm[n]) / (2 * eps) for n in v}


def grasp_scores(model, theta0, x, y, *, temperature: float = TEMPERATURE,
                 step: float = 1e-6) -> dict[str, np.ndarray]:
    """GraSP's score S = -theta * Hg / (|sum S| + 1e-10) per weight (signed; low = kept), on the
    batch (x, y) cut into two halves as the reference does."""
    p = {k: np.asarray(a, dtype=np.float64) for k, a in theta0.items()}
    half = len(y) // 2
    parts = [(x[:half], y[:half]), (x[half:], y[half:])]
    g = {n: np.zeros_like(p[n]) for n in model.weight_names()}
    for xs, ys in parts:  # g: the halves' gradients summed
        for n, a in weight_grads(model, p, xs, ys, temperature=temperature).items():
            g[n] += a
    hg = {n: np.zeros_like(p[n]) for n in g}
    for xs, ys in parts:  # Hg: the halves' Hessians times g, summed
        for n, a in hessian_vector(model, p, xs, ys, g, temperature=temperature,
                                   step=step).items():
            hg[n] += a
    s = {n: -p[n] * hg[n] for n in g}  # -theta * Hg
    norm = abs(sum(float(v.sum()) for v in s.values())) + 1e-10
    return {n: v / norm for n, v in s.items()}


def grasp_masks(model, theta0, x, y, rate: float, *, scope: str = "global",
                temperature: float = TEMPERATURE, step: float = 1e-6) -> Masks:
    """GraSP's masks: remove the round(q N) weights with the largest score, keep the rest."""
    s = grasp_scores(model, theta0, x, y, temperature=temperature, step=step)
    return select_topk({n: -v for n, v in s.items()}, rate, scope=scope)  # keep the lowest S


def grasp_select(model, theta0, data, config, buffers):
    """The registry's selection (`methods.Score`): GraSP on a class-balanced batch of
    config.saliency_batch // classes images per class (10 per class at the default 100: the
    same number of images SNIP's score sees, so that every score gets the same data), drawn by
    a generator keyed on the seed; the weights with the lowest score kept in config.scope.
    Returns (scores, masks)."""
    classes = np.unique(data.y_train).size
    x, y = balanced_batch(data.x_train, data.y_train,
                          samples_per_class=max(1, config.saliency_batch // classes),
                          seed=config.seed)
    s = grasp_scores(model, theta0, x, y)
    return s, select_topk({n: -v for n, v in s.items()}, config.rate, scope=config.scope)


methods.register_score(methods.Score("grasp", grasp_select, "GraSP's -theta * Hg (the "
                                     "gradient flow kept) selects"))
