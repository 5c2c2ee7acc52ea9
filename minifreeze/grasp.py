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

Hg, two ways. `hessian_vector_exact` (the default, `hvp="exact"`, and the registry's):
Pearlmutter's R-operator through the hand-written layers, with the unperturbed pass's ReLU masks
and max-pool winners, exact and free of any step; `tests/test_grasp.py` checks it against dual
numbers run through a loop-by-loop conv + ReLU + max-pool reference. `hessian_vector`
(`hvp="difference"`, what GraSP used before): a central difference of the hand-written gradient,
(grad(theta + eps g) - grad(theta - eps g)) / (2 eps), in float64 with eps = `step` * |theta| /
|g| (relative step 1e-6). It is right on a smooth network (LeNet-300-100: within 1e-10 of the
exact product, the same masks) and wrong on LeNet-5: between the +eps and -eps passes a few
max-pool winners and ReLU signs switch, each an O(1) jump divided by 2 eps, and with T = 200
making Hg tiny one switch dominates a layer (conv layers off by 4 to 70 times the product's norm
at seed 0). The reference re-initialises the linear layers of the
network it scores (`reinit=True`, Xavier normal) and scores that copy; here the score is of theta0
itself, the weights that are then frozen or pruned (our choice: the mask should belong to the
network it is applied to).

    x, y = balanced_batch(data.x_train, data.y_train, samples_per_class=25, seed=0)
    S = grasp_scores(model, theta0, x, y)          # {"conv1.w": (20, 1, 5, 5), ...}, signed
    masks = grasp_masks(model, theta0, x, y, rate=0.995)
"""

from __future__ import annotations

import numpy as np

from minifreeze import layers as L, methods
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


def hessian_vector_exact(model, params, x, y, v: dict, *,
                         temperature: float = TEMPERATURE) -> dict:
    """H v, exactly, for the Hessian of mean cross-entropy(logits / T) with respect to the conv
    and linear weights (biases held), by Pearlmutter's R-operator through the hand-written
    passes: the directional derivative along v of every forward activation (R h) and then of
    every backward gradient (R d), with each ReLU's mask and each max-pool window's winner those
    of the unperturbed pass (the derivative where it exists, which is everywhere but on a kink).
    No step size: nothing here steps across a kink, as `hessian_vector`'s difference does.

    Per layer, with V the weight's direction: conv or linear out = f(h, W) + b gives
    R out = f(R h, W) + f(h, V); its weight gradient dW(d, h) and input gradient dx(d, W) are
    bilinear, so R dW = dW(R d, h) + dW(d, R h) and R dx = dx(R d, W) + dx(d, V), both read off
    the layer's own backward pass; ReLU and max-pool pass R h and R d through their fixed
    pattern; at the logits, R (dL/dz) = (p * r - p * sum(p * r)) / (N T) with r = R z / T.
    Returns {weight name: H v} in float64. Batch norm is not supported (ValueError)."""
    p = {k: np.asarray(a, dtype=np.float64) for k, a in params.items()}
    vv = {k: np.asarray(a, dtype=np.float64) for k, a in v.items()}
    n = len(x)
    h, rh = np.asarray(x, dtype=np.float64), np.zeros(x.shape)  # the input does not move with W
    tape = []  # per layer: what its R backward pass needs
    for ly in model.layers:
        a, w, b = ly.args, f"{ly.name}.w", f"{ly.name}.b"
        if ly.op in ("conv", "linear"):
            fwd = (lambda x_, w_, b_: L.conv_forward(x_, w_, b_, a["stride"], a["pad"])) \
                if ly.op == "conv" else L.linear_forward
            vw = vv.get(w, np.zeros_like(p[w]))
            zero = np.zeros_like(p[b])
            out, cache = fwd(h, p[w], p[b])
            r1, _ = fwd(rh, p[w], zero)  # f(R h, W)
            r2, _ = fwd(h, vw, zero)  # f(h, V)
            _, cache_rv = fwd(rh, vw, zero)  # its backward gives dW(d, R h) and dx(d, V)
            tape.append((ly, cache, cache_rv))
            h, rh = out, r1 + r2
        elif ly.op == "relu":
            h, mask = L.relu_forward(h)
            rh = rh * mask
            tape.append((ly, mask, None))
        elif ly.op == "maxpool":
            h, cache = L.maxpool_forward(h, a["size"], a["stride"], layer=ly.name)
            rh = _gather_winners(rh, cache)
            tape.append((ly, cache, None))
        elif ly.op == "flatten":
            shape = h.shape
            h, rh = h.reshape(n, -1), rh.reshape(n, -1)
            tape.append((ly, shape, None))
        else:
            raise ValueError(f"hessian_vector_exact: layer {ly.name} ({ly.op}) is not supported; "
                             f"expected conv, linear, relu, maxpool or flatten")
    z = h / temperature  # (N, K)
    prob = np.exp(z - z.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(prob)
    onehot[np.arange(n), y] = 1.0
    d = (prob - onehot) / (n * temperature)  # dL/d logits
    r = rh / temperature
    rd = (prob * r - prob * np.sum(prob * r, axis=1, keepdims=True)) / (n * temperature)
    hv = {}
    for i in range(len(tape) - 1, -1, -1):
        ly, cache, cache_rv = tape[i]
        if ly.op in ("conv", "linear"):
            back = L.conv_backward if ly.op == "conv" else L.linear_backward
            need_dx = i > 0
            dx1, dw1, _ = back(rd, cache, need_dx=need_dx)  # dx(R d, W), dW(R d, h)
            dx, _, _ = back(d, cache, need_dx=need_dx) if need_dx else (None, None, None)
            dx2, dw2, _ = back(d, cache_rv, need_dx=need_dx)  # dx(d, V), dW(d, R h)
            if f"{ly.name}.w" in vv:
                hv[f"{ly.name}.w"] = dw1 + dw2
            if need_dx:
                d, rd = dx, dx1 + dx2
        elif ly.op == "relu":
            d, rd = d * cache, rd * cache
        elif ly.op == "maxpool":
            d, rd = L.maxpool_backward(d, cache), L.maxpool_backward(rd, cache)
        elif ly.op == "flatten":
            d, rd = d.reshape(cache), rd.reshape(cache)
    return {k: hv[k] for k in vv}


def _gather_winners(a: np.ndarray, cache) -> np.ndarray:
    """a (N, C, H, W) read at each pooling window's winner in `cache` (from the unperturbed
    pass): (N, C, OH, OW)."""
    nb, c, oh, ow = cache.argmax.shape
    k, s = cache.size, cache.stride
    i, j = np.divmod(cache.argmax, k)  # offsets inside each window
    rows = np.arange(oh)[None, None, :, None] * s + i  # (N, C, OH, OW)
    cols = np.arange(ow)[None, None, None, :] * s + j
    return a[np.arange(nb)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]


HVPS = ("difference", "exact")


def grasp_scores(model, theta0, x, y, *, temperature: float = TEMPERATURE,
                 step: float = 1e-6, hvp: str = "exact") -> dict[str, np.ndarray]:
    """GraSP's score S = -theta * Hg / (|sum S| + 1e-10) per weight (signed; low = kept), on the
    batch (x, y) cut into two halves as the reference does. `hvp`: "exact"
    (`hessian_vector_exact`) or "difference" (`hessian_vector` with `step`, what GraSP used
    before: wrong across LeNet-5's kinks)."""
    if hvp not in HVPS:
        raise ValueError(f"hvp: expected one of {', '.join(HVPS)}, got {hvp!r}")
    p = {k: np.asarray(a, dtype=np.float64) for k, a in theta0.items()}
    half = len(y) // 2
    parts = [(x[:half], y[:half]), (x[half:], y[half:])]
    g = {n: np.zeros_like(p[n]) for n in model.weight_names()}
    for xs, ys in parts:  # g: the halves' gradients summed
        for n, a in weight_grads(model, p, xs, ys, temperature=temperature).items():
            g[n] += a
    hg = {n: np.zeros_like(p[n]) for n in g}
    for xs, ys in parts:  # Hg: the halves' Hessians times g, summed
        hv = hessian_vector_exact(model, p, xs, ys, g, temperature=temperature) \
            if hvp == "exact" else \
            hessian_vector(model, p, xs, ys, g, temperature=temperature, step=step)
        for n, a in hv.items():
            hg[n] += a
    s = {n: -p[n] * hg[n] for n in g}  # -theta * Hg
    norm = abs(sum(float(v.sum()) for v in s.values())) + 1e-10
    return {n: v / norm for n, v in s.items()}


def grasp_masks(model, theta0, x, y, rate: float, *, scope: str = "global",
                temperature: float = TEMPERATURE, step: float = 1e-6,
                hvp: str = "exact") -> Masks:
    """GraSP's masks: remove the round(q N) weights with the largest score, keep the rest."""
    s = grasp_scores(model, theta0, x, y, temperature=temperature, step=step, hvp=hvp)
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
                                     "gradient flow kept) selects", keeps="lowest"))
