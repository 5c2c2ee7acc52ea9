"""Pruning during training: WeightMom (our reading) and gradual magnitude pruning (GMP).

SNIP and FreezeNet choose their weights once, before the first step. These two methods train the
dense network and take weights away on a schedule while it trains, so the choice can use what
training has shown. Both end as an ordinary pruned network (mode prune) at exactly the target
rate: round((1 - q) N) weights kept, as for the one-shot methods.

WeightMom (Johnson, Tang, Samudrala, "WeightMom: Learning Sparse Networks using Iterative
Momentum-based pruning", arXiv 2208.05970). Only the abstract could be read: weights are pruned
gradually, "based on their momentum over the previous iterations"; each layer gets "an importance
value from its relative sparsity, then the magnitude of its weights in the previous iterations".
The formulas, the schedule and the tables are unknown to us, so this is **a reading**, every choice
a parameter (`TrainConfig` fields in brackets):

1. the momentum of a weight's magnitude: an exponential moving average, updated after every step,
       M_t = beta * M_{t-1} + (1 - beta) * |w_t|,   M_0 = |theta0|          [mom_beta, 0.99]
2. the rate at step t follows the cubic schedule of Zhu and Gupta (2017, "To prune, or not to
   prune", eq. 1), from 0 at step t0 to q at step t1, with a pruning round every dt steps:
       q_t = q + (0 - q) * (1 - (t - t0) / (t1 - t0)) ** 3                  [prune_start, prune_end
                                                                             as shares of the run,
                                                                             prune_every = dt]
   and a last round exactly at t1, so the run ends at q;
3. each round prunes R = kept - round((1 - q_t) N) weights. How many come from each layer starts
   from "the magnitude of its weights in the previous iterations": G_l, the number of layer l's
   kept weights that one global threshold on M would prune; "an importance value from its
   relative sparsity" may then correct it, with d_l = kept_l / N_l the layer's density and d the
   network's:
       R_l proportional to G_l * (d_l / d) ** alpha                        [alloc_alpha, 0.0]
   With alpha > 0 a layer already sparser than the network gives up fewer weights than the
   global threshold would take, and one still denser gives up more: a protection against a
   layer collapsing. We measured it and it harms: it pushes every layer towards the network's
   density, which starves the small layers that a trained network needs dense (LeNet-5-Caffe,
   q = 0.99, 3 epochs on 10,000 images: alpha = 0.5 left fc2 2 of its 5,000 weights and 15.6%
   test accuracy; alpha = 0 kept 616 and 86.1%). So the default is alpha = 0, a global
   threshold on the moving average, and alpha stays a parameter. Every layer keeps at least one
   weight; shares are made whole by the largest remainder and capped, so they sum to R exactly;
4. within a layer the R_l kept weights with the lowest M go: set to 0, their velocity cleared,
   never to return (the mask only loses ones).

A reading we tried first and dropped: R_l proportional to kept_l * d_l ** alpha, without G_l.
From a dense start every layer has d_l = 1, so every round keeps all layers at one density
whatever alpha is: conv1 kept 5 of its 500 weights at q = 0.99, and the run came last of four
methods in notebook 08's full run. `allocate(..., cut=None)` still computes it.

GMP, the baseline (Zhu and Gupta 2017, as the issue's reading names it): the same schedule, and
each round keeps the round((1 - q_t) N) largest |w| over all layers at once (a global threshold on
the current magnitudes, no moving average).

Every step is a function a notebook can call:

    cubic_rate(t, q, t0, t1)              # the rate at step t
    schedule_steps(total, start, end, every)   # (t0, t1, the pruning steps)
    ema_update(M, params, beta)           # the moving average, in place
    global_cut(masks, scores, keep)       # G_l: what one global threshold would prune per layer
    allocate(kept, sizes, R, alpha, cut)  # R_l per layer, summing to R
    prune_lowest(masks, scores, counts)   # one round within layers -> a new Masks
    prune_global(masks, scores, keep)     # GMP's round -> a new Masks
    GradualPruning.from_config(config, model)   # the training loop's hook (train.Hook)

Notebook `08_weightmom` walks through this file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from minifreeze import masks as M, methods
from minifreeze.methods import documented
from minifreeze.saliency import scored_names
from minifreeze.trainer import Hook

RANKINGS = ("momentum", "magnitude")
"""What a round ranks by: the moving average M (WeightMom) or the current |w| (GMP)."""


def check_schedule(start: float, end: float, every: int, beta: float, alpha: float) -> None:
    """ValueError naming the first bad parameter of a gradual pruning schedule."""
    if not (isinstance(start, (int, float)) and isinstance(end, (int, float))
            and 0.0 <= start <= end <= 1.0):
        raise ValueError(f"prune_start, prune_end: expected 0 <= start <= end <= 1 (shares of "
                         f"the run's steps), got start {start!r}, end {end!r}")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"prune_every: expected a whole number of steps >= 1, got {every!r}")
    if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
        raise ValueError(f"mom_beta: expected a number in [0, 1), got {beta!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alloc_alpha: expected a number >= 0, got {alpha!r}")


def cubic_rate(t: int, q: float, t0: int, t1: int, q0: float = 0.0) -> float:
    """Zhu and Gupta's cubic schedule: q0 until step t0, q from step t1 on, and between them
    q + (q0 - q) * (1 - (t - t0) / (t1 - t0)) ** 3, which rises fast first and flattens near q."""
    q = M.check_rate(q)
    if t <= t0 and t < t1:
        return q0
    if t >= t1:
        return q
    return q + (q0 - q) * (1.0 - (t - t0) / (t1 - t0)) ** 3


def schedule_steps(total: int, start: float, end: float, every: int) -> tuple[int, int, list[int]]:
    """(t0, t1, the steps after which a round prunes) for a run of `total` steps.

    t0 = round(start * total), t1 = round(end * total); rounds at t0 + k * every up to t1, and
    at t1 itself, so the last round reaches q exactly. Step 0 is before the first update: a
    round "at t" runs after update t (t >= 1).
    """
    t0, t1 = round(start * total), round(end * total)
    steps = sorted({*range(max(t0, 1), t1 + 1, every), max(t1, 1)})
    return t0, t1, steps


def ema_update(m: dict[str, np.ndarray], params: Mapping[str, np.ndarray], beta: float) -> None:
    """M <- beta * M + (1 - beta) * |w| for every tensor of M, in place (float32)."""
    b = np.float32(beta)
    for name, mt in m.items():
        mt *= b
        mt += (np.float32(1) - b) * np.abs(params[name])


def global_cut(masks: M.Masks, scores: Mapping[str, np.ndarray], keep: int) -> dict[str, int]:
    """G_l: how many of each layer's kept entries a global threshold keeping the `keep` highest
    scores (among the kept entries, over all layers) would prune."""
    new = prune_global(masks, scores, keep)
    return {k: int(masks.index(k).flat.size - new.index(k).flat.size) for k in masks}


def allocate(kept: Mapping[str, int], sizes: Mapping[str, int], total: int,
             alpha: float = 0.0, cut: Mapping[str, int] | None = None,
             min_keep: int = 1) -> dict[str, int]:
    """How many weights each layer gives up in a round of `total`: R_l proportional to
    cut_l * (d_l / d) ** alpha (d_l = kept_l / N_l, d the network's density; cut: the global
    threshold's G_l, or kept_l if None), made whole by the largest remainder, capped at
    kept_l - min_keep (what a capped layer cannot give goes to the others). Sums to `total`."""
    caps = {k: max(0, kept[k] - min_keep) for k in kept}
    cut = kept if cut is None else cut
    density = sum(kept.values()) / sum(sizes[k] for k in kept)
    if total < 0 or total > sum(caps.values()):
        raise ValueError(f"allocate: cannot prune {total} weights when the layers can give "
                         f"{sum(caps.values())} (each keeps at least {min_keep})")
    out = {k: 0 for k in kept}
    left, open_ = total, [k for k in kept if caps[k] > 0]
    while left > 0:
        w = {k: cut[k] * (kept[k] / sizes[k] / density) ** alpha for k in open_}
        norm = sum(w.values())
        if not norm > 0:  # the open layers have no cut left: share by kept counts
            w, norm = {k: float(kept[k]) for k in open_}, float(sum(kept[k] for k in open_))
        want = {k: left * w[k] / norm for k in open_}  # real-valued shares
        whole = {k: int(math.floor(v)) for k, v in want.items()}
        # largest remainder: ties go to the layer that comes first
        for k in sorted(open_, key=lambda k: -(want[k] - whole[k]))[:left - sum(whole.values())]:
            whole[k] += 1
        for k in open_:
            give = min(whole[k], caps[k] - out[k])
            out[k] += give
            left -= give
        open_ = [k for k in open_ if out[k] < caps[k]]
    return out


def _lowest_kept(m: np.ndarray, s: np.ndarray, n: int) -> np.ndarray:
    """Flat positions of the n kept entries (m == 1) with the lowest scores; ties: first."""
    kept = np.flatnonzero(m)  # (k,)
    order = np.argsort(s.reshape(-1)[kept].astype(np.float64), kind="stable")  # ascending
    return kept[order[:n]]


def prune_lowest(masks: M.Masks, scores: Mapping[str, np.ndarray],
                 counts: Mapping[str, int]) -> M.Masks:
    """One round within layers: in each tensor, the counts[name] kept entries with the lowest
    score are pruned. Returns a new Masks; `masks` is unchanged."""
    changes = {}
    for name, n in counts.items():
        if n:
            m = np.array(masks[name])
            m.reshape(-1)[_lowest_kept(m, scores[name], n)] = 0
            changes[name] = m
    return masks.replace(changes)


def prune_global(masks: M.Masks, scores: Mapping[str, np.ndarray], keep: int) -> M.Masks:
    """GMP's round: keep the `keep` highest scores among the entries kept now, over all tensors
    at once (ties: the first, in tensor then C order). Returns a new Masks."""
    names = list(masks)
    flat_m = np.concatenate([np.ravel(masks[k]) for k in names])  # (N,)
    flat_s = np.concatenate([np.ravel(scores[k]) for k in names]).astype(np.float64)
    flat_s[flat_m == 0] = -np.inf  # pruned entries never return
    new = np.zeros_like(flat_m)
    if keep > 0:
        new[np.argsort(-flat_s, kind="stable")[:keep]] = 1
    out, offset = {}, 0
    for k in names:
        out[k] = new[offset:offset + masks[k].size].reshape(masks[k].shape)
        offset += masks[k].size
    return M.Masks(out)


class GradualPruning(Hook):
    """The training loop's hook for weightmom (rank "momentum", per-layer shares) and gmp (rank
    "magnitude", one global threshold). See the module docstring for the schedule.

    After each update it refreshes M (for "momentum"); after each pruning step it builds the
    next Masks and hands it to the trainer with `set_masks(..., prune=True)`. Each epoch's
    history row gets the current `rate` and `layer_density` ({name: density}).
    """

    def __init__(self, names: list[str], rate: float, *, start: float = 0.1, end: float = 0.6,
                 every: int = 100, beta: float = 0.99, alpha: float = 0.0,
                 rank: str = "momentum", allocation: str = "layer"):
        check_schedule(start, end, every, beta, alpha)
        if rank not in RANKINGS:
            raise ValueError(f"rank: expected one of {', '.join(RANKINGS)}, got {rank!r}")
        if allocation not in ("layer", "global"):
            raise ValueError(f"allocation: expected layer or global, got {allocation!r}")
        self.names, self.q = list(names), M.check_rate(rate)
        self.start_share, self.end_share, self.every = start, end, every
        self.beta, self.alpha, self.rank, self.allocation = beta, alpha, rank, allocation
        self.rounds: list[tuple[int, float, int]] = []  # (step, rate q_t, weights kept)

    @classmethod
    def from_config(cls, config, model) -> "GradualPruning":
        """The hook of a resolved `TrainConfig` whose method is gradual (weightmom or gmp)."""
        method = methods.get(config.method)
        if not isinstance(method, Gradual):
            raise ValueError(f"GradualPruning: expected a gradual method "
                             f"({', '.join(GRADUAL)}), got {config.method!r}")
        o = config.options
        return cls(scored_names(model, config.include_biases), config.rate,
                   start=o.prune_start, end=o.prune_end, every=o.prune_every,
                   beta=o.mom_beta, alpha=o.alloc_alpha, rank=method.rank,
                   allocation=method.allocation)

    def start(self, trainer, total_steps: int) -> None:
        params = trainer.params
        self.sizes = {k: int(params[k].size) for k in self.names}
        self.n = sum(self.sizes.values())
        self.t0, self.t1, steps = schedule_steps(total_steps, self.start_share, self.end_share,
                                                   self.every)
        self.when = set(steps)
        self.m = {k: np.abs(params[k]).astype(np.float32) for k in self.names}  # M_0 = |theta0|
        self.masks = M.Masks({k: np.ones_like(params[k], dtype=np.float32) for k in self.names})
        self.rounds = []

    def rate_at(self, t: int) -> float:
        return cubic_rate(t, self.q, self.t0, self.t1)

    def after_step(self, t: int, trainer) -> None:
        if self.rank == "momentum":  # a trainer's params are copies: read them only when needed
            ema_update(self.m, trainer.params, self.beta)
        if t not in self.when:
            return
        q_t = self.rate_at(t)
        keep = M.keep_count(self.n, q_t)
        kept = {k: int(self.masks.index(k).flat.size) for k in self.names}
        total = sum(kept.values()) - keep
        if total > 0:
            params = None if self.rank == "momentum" else trainer.params
            scores = self.m if params is None else {k: np.abs(params[k]) for k in self.names}
            if self.allocation == "global":
                self.masks = prune_global(self.masks, scores, keep)
            else:
                cut = global_cut(self.masks, scores, keep)
                self.masks = prune_lowest(self.masks, scores,
                                          allocate(kept, self.sizes, total, self.alpha, cut))
            trainer.set_masks(self.masks, prune=True)
        self.rounds.append((t, q_t, keep))

    def after_epoch(self, epoch: int, trainer, row: dict) -> None:
        kept = sum(int(self.masks.index(k).flat.size) for k in self.names)
        row["rate"] = 1 - kept / self.n
        row["layer_density"] = {k: self.masks.index(k).density for k in self.names}


# --- the methods ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule(methods.Options):
    """A gradual method's options (`TrainConfig.options` of weightmom and gmp, and of ELSA's
    first phase when it is gradual): the rounds run from prune_start to prune_end (shares of the
    run's steps), one every prune_every steps; mom_beta is the moving average's beta, alloc_alpha
    the per-layer share's exponent (see the module docstring)."""
    prune_start: float = documented(0.1,
        "weightmom/gmp: first pruning round, as a share of the run's steps")
    prune_end: float = documented(0.6,
        "weightmom/gmp: last pruning round (the target rate), as a share of the steps")
    prune_every: int = documented(100, "weightmom/gmp: steps between pruning rounds")
    mom_beta: float = documented(0.99, "weightmom: beta of the moving average of |w|")
    alloc_alpha: float = documented(0.0,
        "weightmom: a layer's share of a round is the global threshold's cut times (its density / "
        "the network's) ** alpha")

    def check(self) -> None:
        check_schedule(self.prune_start, self.prune_end, self.prune_every, self.mom_beta,
                       self.alloc_alpha)


@dataclass(frozen=True)
class Gradual(methods.Method):
    """Pruned during training (`GradualPruning`): a round every prune_every steps ranks the kept
    weights by `rank` and shares the cut by `allocation`."""
    rank: str = "momentum"
    allocation: str = "layer"
    Options: ClassVar[type] = Schedule
    gradual: ClassVar[bool] = True

    def check(self, config) -> None:
        config.options.check()

    def hooks(self, config, model) -> list:
        return [GradualPruning.from_config(config, model)]


methods.register(Gradual("weightmom", "WeightMom (our reading): pruned during training by a "
                         "moving average of |w|", "prune", rank="momentum", allocation="layer"))
methods.register(Gradual("gmp", "gradual magnitude pruning (Zhu and Gupta 2017): the same "
                         "schedule, a global threshold on |w|", "prune", rank="magnitude",
                         allocation="global"))
GRADUAL = tuple(m.name for m in methods.REGISTRY.values() if isinstance(m, Gradual))
"""The gradual methods registered above, as the registry has them."""
