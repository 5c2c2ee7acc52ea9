"""Masked SGD: momentum, Nesterov, weight decay and learning-rate schedules that touch only m == 1.

The update of one tensor, where m == 1 (all entries when the mask is None):

    g     = grad + weight_decay * theta        (decay is masked too: frozen weights do not shrink)
    v     = momentum * v + g
    step  = g + momentum * v   if nesterov else v
    theta = theta - lr * step

Where m == 0, neither theta nor the velocity v is written at all, so frozen entries equal theta0 bit
for bit after any number of steps, and pruned entries stay exactly 0. `masked_sgd_update` is the
NumPy reference of this contract. `MaskedSGD` runs it by default; the training loop passes the
active backend's fused version instead (`MaskedSGD(..., update=backend.kernels().masked_sgd_update)`,
same signature), so this module depends on nothing but NumPy.

Schedules are plain functions of the step count t (0-based) over a run of T steps:

    constant_lr(t, T, base)                      base
    step_lr(t, T, base, every, gamma=0.1)        base * gamma ** (t // every)  (SNIP: /10 per 25k)
    cosine_lr(t, T, base, final=0.0)             final + (base - final) * (1 + cos(pi t / T)) / 2

`make_schedule(name, base, T, warmup=W)` multiplies any of them by a linear warm-up (t + 1) / W
over the first W steps: a large first step can throw an untrained net into a region it never
leaves (dense LeNet-5-Caffe does so at lr 0.05 without it).

    opt = MaskedSGD(params, momentum=0.9, weight_decay=5e-4)
    opt.step(params, grads, masks, lr=cosine_lr(t, T, 0.1))   # masks: a masks.Masks or a dict

Notebook `05_freeze_vs_prune` walks through this file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

import numpy as np

from minifreeze.masks import as_masks


def masked_sgd_update(theta: np.ndarray, grad: np.ndarray, velocity: np.ndarray,
                      mask: np.ndarray | None, lr: float, momentum: float, weight_decay: float,
                      nesterov: bool, flat: np.ndarray | None = None) -> None:
    """One SGD step on theta and velocity in place, only where mask == 1 (everywhere if None).

    `flat`: the flat positions of mask == 1 if already known (`Masks.index(name).flat`); else
    they are found here.
    """
    if not (theta.shape == grad.shape == velocity.shape):
        raise ValueError(f"masked_sgd_update: expected theta, grad and velocity of one shape, got "
                         f"{theta.shape}, {grad.shape}, {velocity.shape}")
    if mask is not None and mask.shape != theta.shape:
        raise ValueError(f"masked_sgd_update: expected a mask of shape {theta.shape}, "
                         f"got {mask.shape}")
    dt = theta.dtype.type
    lr, momentum, weight_decay = dt(lr), dt(momentum), dt(weight_decay)
    if mask is None:
        g = grad + weight_decay * theta  # same shape as theta
        velocity *= momentum
        velocity += g
        step = g + momentum * velocity if nesterov else velocity
        theta -= lr * step
        return
    idx = np.flatnonzero(mask) if flat is None else flat  # (k,) flat positions with m == 1
    t, v = theta.reshape(-1), velocity.reshape(-1)  # views, (N,)
    g = grad.reshape(-1)[idx] + weight_decay * t[idx]  # (k,)
    vk = momentum * v[idx] + g  # (k,)
    v[idx] = vk
    step = g + momentum * vk if nesterov else vk  # (k,)
    t[idx] = t[idx] - lr * step


class MaskedSGD:
    """SGD with momentum over a params dict; one velocity per parameter, created at zero.

    `update` is the kernel that applies one tensor's step: the NumPy reference above unless a
    backend's fused kernel (same signature) is passed.
    """

    def __init__(self, params: Mapping[str, np.ndarray], *, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nesterov: bool = False, update=masked_sgd_update):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {weight_decay}")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.update = update
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray],
             masks: Mapping[str, np.ndarray] | None, lr: float) -> None:
        """Update every parameter in place; a tensor with a mask changes only where m == 1."""
        masks = as_masks(masks)
        for name, theta in params.items():
            m = None if masks is None else masks.get(name)
            flat = None if m is None else masks.index(name).flat
            self.update(theta, grads[name], self.velocity[name], m, lr, self.momentum,
                        self.weight_decay, self.nesterov, flat)


# --- schedules ----------------------------------------------------------------------------------

def constant_lr(t: int, total: int, base: float) -> float:
    return base


def step_lr(t: int, total: int, base: float, every: int, gamma: float = 0.1) -> float:
    """base * gamma ** (t // every)."""
    return base * gamma ** (t // every)


def cosine_lr(t: int, total: int, base: float, final: float = 0.0) -> float:
    """Cosine decay from base at t = 0 to final at t = total."""
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / max(total, 1)))


SCHEDULES = ("cosine", "step", "constant")


def warmup_factor(t: int, warmup: int) -> float:
    """Linear warm-up: (t + 1) / warmup for the first `warmup` steps, then 1."""
    return min(1.0, (t + 1) / warmup) if warmup > 0 else 1.0


def make_schedule(name: str, base: float, total: int, *, warmup: int = 0,
                  step_every: int | None = None, gamma: float = 0.1):
    """A function t -> lr for a run of `total` steps, times a linear warm-up over the first
    `warmup` steps; `step` drops every `step_every` steps (default: a third of the run)."""
    if name == "cosine":
        schedule = partial(cosine_lr, total=total, base=base)
    elif name == "step":
        schedule = partial(step_lr, total=total, base=base,
                           every=step_every or max(1, total // 3), gamma=gamma)
    elif name == "constant":
        schedule = partial(constant_lr, total=total, base=base)
    else:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    return lambda t: schedule(t) * warmup_factor(t, warmup)
