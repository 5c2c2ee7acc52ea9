"""ELSA (our reading): several sparse networks nested in one dense network, extracted for free.

FreezeNet trains a few weights and freezes the rest at their random values. ELSA (Halvachi, Peste,
Alistarh, Lampert, "ELSA: Partial Weight Freezing for Overhead-Free Sparse Network Deployment",
arXiv 2312.06872) freezes the other way round: it trains a sparse network, freezes it, and trains
more weights around it, so that one dense network contains the sparse ones and any of them comes
back by zeroing the weights outside its mask. Only the abstract could be read ("one or more sparse
networks are embedded in a single dense network as a proper subset of its weights"; any sparse
model is extracted by zeroing the weights outside a predefined mask; any sparsifier, loss,
architecture and optimiser can be used). The procedure below is **our reading**, every choice a
`TrainConfig` field:

    levels q_1 > q_2 > ... > q_k, then dense (q = 0)                       [levels]
    phase 1      train the sparsest network, pruned to q_1, with a sparsifier: a one-shot score at
                 initialisation (snip, grad, random) or gradual pruning (weightmom, gmp)
                                                                             [sparsifier]
    phase i + 1  freeze every weight of levels <= i at its trained value; choose the weights that
                 join at level i + 1, round((1 - q_{i+1}) N) - round((1 - q_i) N) of them, by a
                 score on the current network (|g| on one batch: the weights outside are 0, so
                 |theta * g| would score them all 0); train only them           [join_score]
                 They start at 0, where they sat, so the network computes the same function when
                 a phase starts, or at their theta0 values                      [join_init]
    last phase   every remaining weight joins and trains: the dense network
    epochs       one count per phase                                          [phase_epochs]

The biases (everything outside the weight masks) belong to the sparsest level: they train in
phase 1 and are frozen with it. That is our choice, and what makes extraction exact: the level-i
network extracted from the final one (`extract`) has, bit for bit, the parameters, and so the
logits, of the network at the end of phase i. Models with batch norm are refused (their running
statistics would change in later phases).

One file holds them all: `checkpoint()` stores the dense values once and, per weight, the level at
which it joined (`storage.py`, kind "leveled"); `python -m minifreeze extract model.mfz --rate 0.99`
writes an ordinary pruned `.mfz` of one level.

    result = train(config, data)              # config.method == "elsa"
    result.level_masks(2)                     # the nested masks: level 1's inside level 2's
    params = extract(result.params, result.level_map, 2)   # the level-2 network

Notebook `09_elsa` walks through this file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from typing import ClassVar

from minifreeze import masks as M, methods, models, saliency as S, storage
from minifreeze import train as T
from minifreeze.data import Dataset
from minifreeze.methods import documented, require
from minifreeze.weightmom import GRADUAL, Schedule

SPARSIFIERS = {"snip": "snip", "grad": "grad_prune", "random": "random_prune",
               "weightmom": "weightmom", "gmp": "gmp"}
"""How ELSA chooses its sparsest level, and the method phase 1 trains with: a one-shot score at
initialisation (snip, grad, random), then trained pruned; or gradual pruning during the first
phase (weightmom, gmp)."""

JOIN_SCORES = ("grad", "random")
"""How ELSA chooses the weights that join at each later level: |g| of the current network on one
batch (the weights outside the network are 0, so |theta * g| would score them all 0), or random."""

JOIN_INITS = ("zero", "theta0")
"""What a joining weight starts from: 0, where it sat in the sparser network (the network's
function is unchanged when a phase starts), or its theta0 value."""

@dataclass(frozen=True)
class ElsaOptions(methods.Options):
    """ELSA's options (`TrainConfig.options` of method elsa): the levels' rates, sparsest first;
    the sparsifier of phase 1 and, when it is gradual, its schedule `gradual` (a `weightmom.Schedule`:
    the defaults when not given, None for a one-shot sparsifier, so one run has one config); how
    each later level's weights are chosen and start; the epochs of each phase (None: `epochs`
    each)."""
    levels: tuple = documented((0.995, 0.99, 0.9),
        "elsa: the rates of the nested levels, sparsest first",
        nargs="+", type=float, metavar="Q")
    sparsifier: str = documented("gmp",
        "elsa: how the sparsest level is chosen",
        choices=lambda: tuple(SPARSIFIERS))
    join_score: str = documented("grad",
        "elsa: how each later level's weights are chosen",
        choices=JOIN_SCORES)
    join_init: str = documented("zero",
        "elsa: what a joining weight starts from",
        choices=JOIN_INITS)
    phase_epochs: tuple | None = documented(None,
        "elsa: epochs of each phase (one per level, then dense; default --epochs)",
        nargs="+", type=int, metavar="E")
    gradual: Schedule | None = None

    NAME_PINS: ClassVar[dict] = {"sparsifier": "snip"}
    """The first phase was SNIP's until GMP measured better (notebooks/results/gradual): names
    still hash against snip, so no finished run is renamed."""

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise once, here (JSON gives lists back)
        set_(self, "levels", tuple(float(q) for q in self.levels))
        if self.phase_epochs is not None:
            set_(self, "phase_epochs", tuple(int(e) for e in self.phase_epochs))
        if isinstance(self.gradual, dict):
            set_(self, "gradual", Schedule.from_flat(self.gradual, strict=True))
        gradual = self.sparsifier in GRADUAL
        set_(self, "gradual", (self.gradual or Schedule()) if gradual else None)

    @classmethod
    def from_flat(cls, values, *, strict: bool = False) -> "ElsaOptions":
        """From flat values: ELSA's own fields, and the schedule's fields spread out (as the
        command line and runs recorded before options were nested have them) or as `gradual`."""
        own = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}
        rest = {k: v for k, v in values.items() if k not in own}
        if strict:
            unknown = sorted(set(rest) - set(Schedule.flat_defaults()))
            names = ", ".join(f.name for f in dataclasses.fields(cls))
            require(not unknown, "options", f"fields of ElsaOptions ({names}) or of its Schedule",
                    unknown)
        if own.get("gradual") is None and any(k in rest for k in Schedule.flat_defaults()):
            own["gradual"] = Schedule.from_flat(rest)
        return cls(**own)

    def flat(self) -> dict:
        own = {k: v for k, v in super().flat().items() if k != "gradual"}  # spread out instead
        return {**own, **(self.gradual.flat() if self.gradual is not None else {})}

    @classmethod
    def flat_defaults(cls) -> dict:
        return {**cls().flat(), **Schedule.flat_defaults()}

    @classmethod
    def flat_fields(cls) -> dict:
        own = {k: f for k, f in super().flat_fields().items() if k != "gradual"}
        return {**own, **Schedule.flat_fields()}


@dataclass(frozen=True)
class Elsa(methods.Method):
    """ELSA's method object: its options, their checks, and its own driver, `train`."""
    Options: ClassVar[type] = ElsaOptions
    uses_rate: ClassVar[bool] = False
    trains_itself: ClassVar[bool] = True

    def check(self, config) -> None:
        c = config.options
        q = c.levels
        require(len(q) >= 1 and all(0 < v < 1 for v in q) and
                all(a > b for a, b in zip(q, q[1:])),
                "levels", "rates in (0, 1), strictly decreasing (sparsest first)", list(q))
        require(c.sparsifier in SPARSIFIERS, "sparsifier", f"one of {', '.join(SPARSIFIERS)}",
                c.sparsifier)
        require(c.join_score in JOIN_SCORES, "join_score", f"one of {', '.join(JOIN_SCORES)}",
                c.join_score)
        require(c.join_init in JOIN_INITS, "join_init", f"one of {', '.join(JOIN_INITS)}",
                c.join_init)
        require(c.phase_epochs is None or (len(c.phase_epochs) == len(q) + 1 and
                                           min(c.phase_epochs) >= 1),
                "phase_epochs", f"None or {len(q) + 1} whole numbers >= 1 (one per level, then "
                f"dense)", c.phase_epochs)
        if c.gradual is not None:
            c.gradual.check()

    def group(self, config: dict) -> str:
        """`elsa_<sparsifier>` (`elsa_gmp`, `elsa_snip`, ...): two first phases are never
        averaged together. (`config` as metrics.json records it: the options nested, or flat in
        earlier runs; a run that recorded no sparsifier ran when SNIP's was the only one.)"""
        sparsifier = (config.get("options") or config).get("sparsifier", "snip")
        return f"{self.name}_{sparsifier}"

    def run(self, config, data, *, progress: bool | None = None) -> "ElsaResult":
        return train(config, data, progress=progress)

    def record(self, result, data, path) -> dict:
        """Each level as extracted from the final network (`level_metrics`), with its bytes in
        the file as written at `path` (`level_rows`), the seconds of each phase and the bytes of
        the level map."""
        rows = level_metrics(result, data, batch_size=result.config.eval_batch)
        for row, sizes in zip(rows, level_rows(storage.load(path))):
            row.update(extracted_bytes=sizes["extracted_bytes"], joined_bytes=sizes["joined_bytes"],
                       own_mask_bytes=sizes["own_mask_bytes"])
        return {"levels": rows, "phase_seconds": result.phase_seconds,
                "level_map_bytes": storage.describe(path)["mask_bytes"]}


@dataclass
class ElsaResult:
    """The dense network at the end and, per weight, the level at which it joined (1 = the
    sparsest level, len(levels) + 1 = the dense one); `snapshots[i - 1]` holds the parameters at
    the end of phase i."""
    config: T.TrainConfig
    model: models.Model
    theta0: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    level_map: dict[str, np.ndarray]
    history: list[dict]
    seconds: float
    phase_seconds: list[float] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)
    masks = None  # the final network is dense

    @property
    def rates(self) -> list[float]:
        """The rate of each level, sparsest first; the dense level's is 0."""
        return [*self.config.options.levels, 0.0]

    def level_masks(self, level: int) -> M.Masks:
        """The mask of level `level` (1-based): every weight that joined at it or before."""
        return level_masks(self.level_map, level)

    def checkpoint(self) -> storage.Checkpoint:
        c = self.config
        return storage.Checkpoint(c.model, self.params, buffers=self.buffers, seed=c.seed,
                                  init_scheme=c.init, mode=c.mode,  # "prune": levels extract by zeroing
                                  meta={**T.checkpoint_meta(c), "levels": self.rates},
                                  model_kwargs=dict(c.model_kwargs), levels=self.level_map)


def level_masks(level_map: dict[str, np.ndarray], level: int) -> M.Masks:
    """Masks of one level: m == 1 where a weight joined at `level` or before."""
    return M.Masks({k: (v <= level).astype(np.float32) for k, v in level_map.items()})


def extract(params: dict[str, np.ndarray], level_map: dict[str, np.ndarray],
            level: int) -> dict[str, np.ndarray]:
    """The level-`level` network: copies of params with every weight that joined later set to +0.0."""
    out = {k: v.copy() for k, v in params.items()}
    for k, lv in level_map.items():
        out[k][lv > level] = 0.0
    return out


def level_rows(ckpt: storage.Checkpoint) -> list[dict]:
    """Per level of an ELSA checkpoint: rate, weights kept, `joined_bytes` (its joining weights'
    indices delta-coded, what the "nested" level map spends on the level; a tensor whose map is
    "packed" spends its bits instead, so the file's total is the header's level_bytes), the bytes
    of that level's mask on its own (the smaller of bitmap and delta per tensor: what one mask
    per level would store) and the size of the extracted .mfz."""
    rates = ckpt.meta["levels"]
    rows = []
    for level, rate in enumerate(rates, 1):
        kept, own, joined = 0, 0, 0
        for name, lv in ckpt.levels.items():
            m = lv <= level
            kept += int(m.sum())
            own += len(storage.encode_mask(m)[1]) if level < len(rates) else 0
            idx = np.flatnonzero(lv == level).astype(np.uint64)
            joined += len(storage.encode_varints(np.diff(idx, prepend=np.uint64(0)) if idx.size
                                                 else idx)) if level < len(rates) else 0
        rows.append({"level": level, "rate": rate, "kept_weights": kept,
                     "joined_bytes": joined, "own_mask_bytes": own,
                     "extracted_bytes": len(storage.to_bytes(extract_level(ckpt, rate)))})
    return rows


def extract_level(ckpt: storage.Checkpoint, rate: float) -> storage.Checkpoint:
    """The level of an ELSA checkpoint whose rate is `rate`, as an ordinary pruned checkpoint:
    masks = the weights that joined at that level or before, everything else 0."""
    rates = ckpt.meta.get("levels")
    if not ckpt.levels or not rates:
        raise storage.StorageError(f"not an ELSA file (method {ckpt.meta.get('method')}): only "
                                   f"a file written by --method elsa holds levels to extract")
    names = ", ".join(f"{q!r}" + (" (dense)" if q == 0 else "") for q in rates)
    match = [i for i, q in enumerate(rates, 1) if np.isclose(q, rate, rtol=0, atol=1e-12)]
    if not match:
        raise storage.StorageError(f"rate {rate!r} is not a level of this file; its levels are "
                                   f"{names}")
    level = match[0]
    masks = dict(level_masks(ckpt.levels, level))
    params = extract(ckpt.params, ckpt.levels, level)
    meta = {k: v for k, v in ckpt.meta.items() if k != "levels"}
    meta.update(rate=rates[level - 1], elsa_level=level, elsa_levels=rates)
    return storage.Checkpoint(ckpt.model_name, params, masks=masks if level < len(rates) else {},
                              buffers=ckpt.buffers, seed=ckpt.seed, init_scheme=ckpt.init_scheme,
                              mode="prune", meta=meta, model_kwargs=dict(ckpt.model_kwargs))


def phase_epochs(config: T.TrainConfig) -> list[int]:
    """Epochs of each phase: config.phase_epochs, or config.epochs for every phase."""
    c, o = config, config.options
    return list(o.phase_epochs) if o.phase_epochs is not None else [c.epochs] * (len(o.levels) + 1)


def first_phase(config: T.TrainConfig, data: Dataset, *, progress=None) -> T.TrainResult:
    """Phase 1: the sparsest level, trained pruned to levels[0] with the configured sparsifier."""
    c = config
    o = c.options
    c1 = dataclasses.replace(c, method=SPARSIFIERS[o.sparsifier], rate=o.levels[0],
                             epochs=phase_epochs(c)[0], score=None, mode=None, options=o.gradual)
    return T.train(c1, data, progress=progress)


def join_scores(model, params, masks: M.Masks, data: Dataset, *, score: str, seed,
                batch: int = 100) -> dict:
    """Scores of the weights not yet in the network (m == 0); -inf where m == 1.

    grad: |dL/dw| of the current network on one batch of `batch` training images (`train`
    passes config.saliency_batch; drawn by the generator keyed on `seed`); random: uniform noise
    from `seed`."""
    names = list(masks)
    if score == "random":
        s = S.saliency(model, params, score="random", seed=seed)
    else:
        x, y = S.saliency_batch(data, batch, seed)
        _, g = model.loss_and_grads(params, x, y)  # the dense gradient
        s = {k: np.abs(g[k]) for k in names}
    return {k: np.where(masks[k] == 0, s[k], -np.inf) for k in names}


def next_level(masks: M.Masks, scores: dict, rate: float) -> M.Masks:
    """The next level's masks: `masks` plus the best-scored entries outside it, so that exactly
    round((1 - rate) N) are kept (ties: the first, in tensor then C order)."""
    names = list(masks)
    n = sum(masks[k].size for k in names)
    flat = np.concatenate([np.ravel(scores[k]).astype(np.float64) for k in names])
    kept = np.concatenate([np.ravel(masks[k]) for k in names])
    add = M.keep_count(n, rate) - int(kept.sum())
    new = kept.copy()
    if add > 0:
        order = np.argsort(-np.where(kept == 1, -np.inf, flat), kind="stable")
        new[order[:add]] = 1
    out, offset = {}, 0
    for k in names:
        out[k] = new[offset:offset + masks[k].size].reshape(masks[k].shape)
        offset += masks[k].size
    return M.Masks(out)


def train_phase(config: T.TrainConfig, data: Dataset, model, theta0, params, buffers,
                trainable: M.Masks, epochs: int, *, progress=None) -> T.TrainResult:
    """One later phase: only the entries with trainable == 1 move; every other parameter (the
    earlier levels, the biases) is held bit for bit. `trainable` covers the weights; the other
    parameters get all-zero masks here."""
    shapes = model.param_shapes()
    masks = M.Masks({**{k: np.zeros(s, np.float32) for k, s in shapes.items()},
                     **{k: trainable[k] for k in trainable}})
    c = dataclasses.replace(config, epochs=epochs)
    setup = T.Setup(model, theta0, masks, params, buffers)
    return T.train_steps(c, data, setup, progress=progress)


def train(config: T.TrainConfig, data: Dataset, *, progress: bool | None = None) -> ElsaResult:
    """All phases of ELSA for a config whose method is elsa (see the module docstring)."""
    c = config.resolved()
    if not isinstance(methods.get(c.method), Elsa):
        raise ValueError(f"elsa.train: expected method elsa, got {c.method!r}")
    model = models.get_model(c.model, **c.model_kwargs)
    if any(ly.op == "batchnorm" for ly in model.layers):
        raise ValueError(f"elsa: {model.name} has batch norm, whose running statistics later "
                         f"phases would change; ELSA here needs a model without it")
    t_all = time.perf_counter()
    epochs = phase_epochs(c)
    rates = [*c.options.levels, 0.0]
    t0 = time.perf_counter()
    r = first_phase(c, data, progress=progress)
    phase_seconds = [time.perf_counter() - t0]
    names = S.scored_names(model, c.include_biases)
    masks = r.masks if r.masks is not None else M.Masks(
        {k: np.ones_like(r.params[k]) for k in names})
    level_map = {k: np.where(masks[k] == 1, 1, 0).astype(np.uint8) for k in names}
    params, buffers, theta0 = r.params, r.buffers, r.theta0
    history = [{**row, "phase": 1, "level_rate": rates[0]} for row in r.history]
    snapshots = [{k: v.copy() for k, v in params.items()}]
    for i in range(1, len(rates)):
        t0 = time.perf_counter()
        scores = join_scores(model, params, masks, data, score=c.options.join_score, seed=[c.seed, 10 + i],
                             batch=c.saliency_batch)
        new = next_level(masks, scores, rates[i])
        joining = {k: (new[k] - masks[k]).astype(np.float32) for k in names}  # (m_{i+1} - m_i)
        start = {k: v.copy() for k, v in params.items()}
        if c.options.join_init == "theta0":
            for k, j in joining.items():
                start[k][j == 1] = theta0[k][j == 1]
        r = train_phase(c, data, model, theta0, start, buffers, M.Masks(joining), epochs[i],
                        progress=progress)
        params, buffers, masks = r.params, r.buffers, new
        for k, j in joining.items():
            level_map[k][j == 1] = i + 1
        phase_seconds.append(time.perf_counter() - t0)
        history += [{**row, "phase": i + 1, "level_rate": rates[i]} for row in r.history]
        snapshots.append({k: v.copy() for k, v in params.items()})
    for row_i, row in enumerate(history, 1):
        row["phase_epoch"], row["epoch"] = row["epoch"], row_i
    return ElsaResult(c, model, theta0, params, buffers, level_map, history,
                      time.perf_counter() - t_all, phase_seconds, snapshots)


methods.register(Elsa("elsa", "ELSA (our reading): nested sparse levels trained one after "
                      "another, the earlier ones frozen; see elsa.py", "prune"))


def level_metrics(result: ElsaResult, data: Dataset, *, batch_size: int = 1000) -> list[dict]:
    """Per level: its rate, weights kept, trained parameters, and the test accuracy of the network
    extracted from the final one."""
    rows = []
    shapes = result.model.param_shapes()
    for level, rate in enumerate(result.rates, 1):
        params = extract(result.params, result.level_map, level)
        acc, loss = T.evaluate(result.model, params, data.x_test, data.y_test,
                               buffers=result.buffers or None, batch_size=batch_size)
        m = result.level_masks(level)
        rows.append({"level": level, "rate": rate, "kept_weights": int(sum(v.sum() for v in
                                                                           m.values())),
                     "trained_params": M.count_trained(shapes, m), "test_accuracy": acc,
                     "test_loss": loss})
    return rows
