"""Saliency: how much each weight matters, from one forward/backward pass at initialisation.

One batch (100 training images by default) goes forward and backward through the network at
theta0 with every parameter trainable; the gradient g = dL/dtheta gives the scores:

    snip       |theta * g|    SNIP's connection sensitivity, and (by our reading of its supplement)
                              FreezeNet's: the gradient of the loss with respect to a multiplicative
                              mask c at c = 1 (dL/dc = theta * g). SNIP also divides by the sum of
                              all scores; that does not change the ranking and is left out here
    grad       |g|            the other reading of FreezeNet's score (method grad_freeze): one SGD
                              step of size lr changes the loss by about -lr * g**2, so the weights
                              with the largest |g| matter most at once
    magnitude  |theta|        the classic baseline, no data needed
    random     uniform noise  drawn from a seed: the control experiment

    scores = saliency(model, theta0, x, y, score="snip")     # {"conv1.w": (20, 1, 5, 5), ...}

Scores are computed for the conv and linear weights (`model.weight_names()`), and with
`include_biases=True` for the biases as well (the official SNIP code does so; biases start at 0,
so their SNIP score is 0). Notebook `04_saliency_masks` walks through this file.
"""

from __future__ import annotations

import numpy as np

SCORES = ("grad", "snip", "magnitude", "random")


def saliency_batch(data, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n training examples of `data` (a `data.Dataset`) drawn without replacement by a generator
    keyed on (seed, 1): the one batch a one-shot score sees."""
    idx = np.random.default_rng([seed, 1]).choice(len(data.y_train), size=min(n, len(data.y_train)),
                                                 replace=False)
    return data.x_train[idx], data.y_train[idx]


def scored_names(model, include_biases: bool = False) -> list[str]:
    """The parameters that are scored and masked: weights, plus conv/linear biases if asked."""
    names = set(model.weight_names())
    if include_biases:
        names |= {n[:-2] + ".b" for n in names}
    return [n for n in model.param_shapes() if n in names]


def saliency(model, theta0: dict[str, np.ndarray], x: np.ndarray | None = None,
             y: np.ndarray | None = None, *, score: str = "grad", include_biases: bool = False,
             seed: int | np.random.Generator | None = None,
             buffers: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Scores (float32, >= 0) for the weights (and biases if asked), keyed like theta0."""
    if score not in SCORES:
        raise ValueError(f"unknown saliency score {score!r}; expected one of {', '.join(SCORES)}")
    names = scored_names(model, include_biases)
    if score == "random":
        if seed is None:
            raise ValueError("saliency: the random score needs a seed or a numpy Generator")
        rng = np.random.default_rng(seed)
        return {n: rng.random(theta0[n].shape, dtype=np.float32) for n in names}
    if score == "magnitude":
        return {n: np.abs(theta0[n]) for n in names}
    if x is None or y is None:
        raise ValueError(f"saliency: the {score} score needs a batch (x, y)")
    # batch-norm running statistics must not change: score on a private copy
    private = None if buffers is None else {k: v.copy() for k, v in buffers.items()}
    _, g = model.loss_and_grads(theta0, x, y, train=True, buffers=private)
    if score == "grad":
        return {n: np.abs(g[n]) for n in names}
    return {n: np.abs(theta0[n] * g[n]) for n in names}  # snip
