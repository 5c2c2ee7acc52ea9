"""SynFlow: pruning at initialisation without data and without layer collapse (Tanaka, Kunin,
Yamins, Ganguli, "Pruning neural networks without any data by iteratively conserving synaptic
flow", NeurIPS 2020), through the hand-written forward and backward passes.

As its reference code (ganguli-lab/Synaptic-Flow, `Pruners/pruners.py` and `prune.py`) defines it:

1. *Linearise*: every parameter is replaced by its absolute value |theta| (weights and biases
   alike; batch-norm statistics too), the masked-out weights are 0.
2. Feed one all-ones input, R = sum of the network's output (the "synaptic flow"), and
   backpropagate it: the score of a weight is |theta * dR/dtheta| (`synflow_scores`).
3. *Iterate* (`synflow_masks`): n rounds (100 by default), each scoring the network masked so far
   and keeping the top density d_k = d^(k/n) (the exponential schedule; `linear`:
   1 - (1 - d) k/n) over all weights at once (global scope), so that no layer is emptied before
   the others have paid their share: what prevents layer collapse.

Choices where the code leaves room, each a parameter: the arithmetic is float64 by default (the
reference has `model.double()` commented out; R grows like the product of the layers' norms and
overflows float32 on deep networks); max-pooling is kept as max-pooling (as the reference does:
it is positively homogeneous, so the conservation law below still holds); biases are linearised
but not scored (the reference prunes weights only unless `--prune-bias`).

The conservation law (the paper's Theorem 1) is what a student can check: for every hidden unit
of a network whose nonlinearities are positively homogeneous (ReLU, max-pool), the scores of its
incoming parameters (weights and bias) sum to the scores of its outgoing weights
(`tests/test_synflow.py`; notebook material for issue 22's course page).

    scores, R = synflow_scores(model, theta0)              # {"conv1.w": (20, 1, 5, 5), ...}, float
    masks = synflow_masks(model, theta0, rate=0.995)       # exactly round((1 - q) N) weights kept
"""

from __future__ import annotations

import numpy as np

from minifreeze import methods
from minifreeze.masks import Masks, check_rate, select_topk
from minifreeze.saliency import scored_names

SCHEDULES = ("exponential", "linear")


def linearised(model, params, masks=None, *, dtype=np.float64) -> dict[str, np.ndarray]:
    """|theta| in `dtype` for every parameter, 0 where a mask says m == 0."""
    p = {k: np.abs(np.asarray(v, dtype=dtype)) for k, v in params.items()}
    for name, m in (masks or {}).items():
        p[name] = p[name] * np.asarray(m, dtype=dtype)
    return p


def synflow_scores(model, params, masks=None, *, include_biases: bool = False,
                   dtype=np.float64) -> tuple[dict[str, np.ndarray], float]:
    """One SynFlow pass: ({name: |theta * dR/dtheta|} for the scored parameters, R).

    R = sum of the outputs of the linearised network (`linearised`) on an all-ones input; in
    eval mode, with batch-norm statistics (if any) at their initial values, made absolute."""
    p = linearised(model, params, masks, dtype=dtype)
    buffers = {k: np.abs(v.astype(dtype)) for k, v in model.init_buffers().items()}
    x = np.ones((1, *model.input_shape), dtype=dtype)  # (1, C, H, W)
    logits, caches = model.forward(p, x, train=False, buffers=buffers)  # (1, classes)
    grads = model.backward(np.ones_like(logits), caches)  # dR/dtheta, R = sum(logits)
    return ({n: np.abs(p[n] * grads[n]) for n in scored_names(model, include_biases)},
            float(logits.sum()))


def rate_schedule(rate: float, iterations: int, schedule: str = "exponential") -> list[float]:
    """The freezing rate reached after each round k = 1..n: 1 - d^(k/n) (exponential) or
    q k/n (linear), d = 1 - q; the last is exactly q."""
    q = check_rate(rate)
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown SynFlow schedule {schedule!r}; expected one of "
                         f"{', '.join(SCHEDULES)}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) \
            or iterations < 1:
        raise ValueError(f"SynFlow iterations: expected a whole number >= 1, got {iterations!r}")
    k = np.arange(1, iterations) / iterations
    early = 1.0 - (1.0 - q) ** k if schedule == "exponential" else q * k
    return [float(v) for v in early] + [q]


def synflow_masks(model, params, rate: float, *, iterations: int = 100,
                  schedule: str = "exponential", scope: str = "global",
                  dtype=np.float64, on_round=None) -> Masks:
    """SynFlow's masks for freezing rate q: `iterations` rounds of scoring the network masked so
    far and keeping the top of the schedule's density; ends at exactly round((1 - q) N) weights.
    `on_round(k, masks)`, if given, sees each round's masks (k = 1..iterations)."""
    masks = None
    for k, q_k in enumerate(rate_schedule(rate, iterations, schedule), start=1):
        scores, _ = synflow_scores(model, params, masks, dtype=dtype)
        masks = select_topk(scores, q_k, scope=scope)
        if on_round is not None:
            on_round(k, masks)
    return masks


def synflow_select(model, theta0, data, config, buffers):
    """The registry's selection (`methods.Score`): `synflow_masks` at config.rate with the
    reference's 100 rounds and exponential schedule, in config.scope (global by default, as the
    reference prunes); no data is used. Returns (None, masks): the scores change every round."""
    return None, synflow_masks(model, theta0, config.rate, scope=config.scope)


methods.register_score(methods.Score("synflow", synflow_select, "SynFlow's data-free, iterated "
                                     "|theta * dR/dtheta| selects"))
