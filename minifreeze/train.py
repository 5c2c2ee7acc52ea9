"""The FreezeNet pipeline, end to end: init, saliency, mask, freeze or prune, masked SGD, evaluate.

    config = TrainConfig(model="lenet5", method="freezenet", rate=0.995, epochs=5, seed=0)
    result = train(config, load_dataset("mnist"))       # result.history, result.params, ...
    storage.save("model.mfz", result.checkpoint())

The methods come from the registry (`methods.py`; `METHODS` here is the same dict), and this
file names none of them: it asks the method what to select before training (`Method.select`)
and which hooks to train with (`Method.hooks`). A one-shot method is a score plus a mode, so
"the same mask, pruned or frozen" is one field away:

    dense          no mask, every parameter trains
    freezenet      score snip (|theta * g|), mode freeze (m == 0 held at theta0)
    snip           score snip (|theta * g|), mode prune  (m == 0 set to 0 and held)
    grad_freeze    score grad (|g|), frozen: the other reading of FreezeNet's score
    grad_prune     score grad (|g|), pruned
    random_freeze  a random mask, frozen: the control
    random_prune   a random mask, pruned
    weightmom, gmp pruned *during* training on a schedule (`weightmom.py`); no mask at the start
    elsa           nested levels trained in phases (`elsa.py`, `methods.get("elsa").run`)
    synflow_*      SynFlow's data-free iterative score (`synflow.py`), frozen or pruned
    grasp_*        GraSP's gradient-flow score (`grasp.py`), frozen or pruned

Which score FreezeNet uses. The paper's supplement compares FreezeNet with SNIP "since we share
its feature selection and it is also a one-shot method, applied before training" (a quotation);
the best reading of that sentence, and ours, is that FreezeNet selects with SNIP's |theta * g| and
differs from SNIP only in what happens to the weights it does not select. So `freezenet` and
`snip` share their mask exactly and differ only in freeze against prune. The plain gradient
magnitude |g|, our earlier reading, has no textual support; it stays one flag away as
`grad_freeze` (and `--score grad`). `score` and `mode` override a one-shot method's pair.

Protocols are named presets of the training hyperparameters (`PROTOCOLS`, `protocol_config`):
`short`, the defaults of `TrainConfig` (what `make mnist` runs), and `paper`, the protocol
FreezeNet's supplement states (SNIP's, untuned). Any field given explicitly overrides a preset.
Every method gets the same hyperparameters: there is no per-method learning rate.

The steps are public functions a notebook can call one by one: `prepare` (theta0, scores, masks,
starting params), `train_steps` (the loop), `evaluate`, and `plan_epochs`, which times a few steps
and picks the number of epochs that fits a time budget (an option only: a budget makes the result
depend on the machine).

The loop: `make_trainer` builds the trainer of the active backend (`trainer.HostTrainer`, or
`cuda_train.DeviceTrainer` where the backend keeps training on a device); each epoch shuffles with
a seeded generator, feeds batches to `trainer.step(x, y, lr)` and evaluates on the test set (and
the validation split, if any) with `trainer.predict`. The loop never names a backend, and the
caller's `setup.params` are never changed: the result carries the trained copies. Between steps
and after each epoch it calls its hooks (`Hook`): that is where a method that changes the masks
during training plugs in (`trainer.set_masks`), and where every run records its dead ReLU units
(`dead_units.DeadUnitsProbe`). Given a `StateFile`, the loop saves its whole state every few
epochs and a run started again goes on from there, bit for bit (`runs.run` always does). `on_step(t, loss, grads)` and `on_epoch(row)`
are lighter callbacks for notebooks. A NaN or infinite loss raises `TrainingDiverged` naming the
epoch and step; it carries the last parameters whose loss was finite.
Notebook `06_pipeline` walks through this file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from minifreeze import backend, init, masks as M, methods, models, parallel, storage
from minifreeze.data import Dataset
from minifreeze.dead_units import PROBE_IMAGES, DeadUnitsProbe
from minifreeze.losses import softmax_cross_entropy
from minifreeze.methods import SCORES, Method, documented, require
from minifreeze.optim import SCHEDULES, make_schedule
from minifreeze.saliency import saliency_batch
from minifreeze.trainer import Hook, HostTrainer, NonFiniteStep

__all__ = ["METHODS", "PROTOCOLS", "Hook", "Method", "Setup", "StateFile", "TrainConfig",
           "TrainResult", "TrainingDiverged", "check_state_every", "evaluate", "load_state",
           "make_trainer", "plan_epochs", "prepare", "protocol_config", "saliency_batch",
           "save_state", "train", "train_steps"]


METHODS = methods.REGISTRY
"""Every method, by name (the registry of `methods.py`; `methods.get(name)` checks the name)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; `params` holds the last parameters with a finite loss,
    `masks` and `buffers` what they trained under."""

    def __init__(self, epoch: int, step: int, loss: float, params, history, why: str = "", *,
                 masks=None, buffers=None):
        self.why = why or f"loss is {loss}"
        super().__init__(f"{self.why} at epoch {epoch}, step {step}: training diverged "
                         f"(try a smaller learning rate)")
        self.epoch, self.step, self.loss = epoch, step, loss
        self.params, self.history = params, history
        self.masks, self.buffers = masks, buffers or {}


@dataclass
class TrainConfig:
    """Everything that decides a run; stored in metrics.json and the .mfz header.

    The defaults are the `short` protocol. `resolved()` gives the canonical form: the method's
    score and mode filled in, and the fields the method does not use (the gradual-pruning
    schedule for a one-shot method, ELSA's levels for any other) set to their defaults.
    Groups of fields:
    what to train: model, method, rate (q), score and mode (override a one-shot method's pair),
        scope, include_biases, init, seed, model_kwargs (the builder's keyword arguments, e.g.
        {"conv_relu": True} for LeNet-5 with a ReLU after each convolution, {"conv": "winograd"}
        for a VGG whose 3x3 convolutions are Winograd's F(2x2, 3x3); checked);
    how: epochs, batch_size, lr, momentum, nesterov, weight_decay, schedule (cosine, step,
        constant), lr_step_every and lr_gamma (the step schedule: lr * lr_gamma every
        lr_step_every steps; None: a third of the run), warmup_steps, saliency_batch,
        eval_batch, shards (None or 0: automatic; results are bit for bit the same for the same
        shard count, so a run that must reproduce elsewhere fixes it), sparse_compute (pruned
        layers compute over their kept weights only: faster, equal to float rounding, so off by
        default to keep results bit for bit those of the dense products);
    the method's own options: `options`, the small dataclass its method object names
        (`methods.Method.Options`: `weightmom.Schedule` for weightmom and gmp, `elsa.ElsaOptions`
        for elsa; None for the others), or a mapping of its fields; None: its defaults;
    SNIP's reporting rule: checkpoint_every (None: off; else the test set is also evaluated
        every so many steps) and checkpoint_last (only the last so many such checkpoints; SNIP
        reports the best of its last 5, one every 1,000 steps: `TrainResult.checkpoints`).
    """
    model: str = documented("lenet5", "architecture")
    method: str = documented("freezenet", "the method (the registry's names)")
    rate: float = documented(0.995, "rate q = 1 - density: share of the weights frozen or pruned")
    score: str | None = documented(None,
        "override a one-shot method's saliency score",
        choices=lambda: tuple(SCORES))
    mode: str | None = documented(None,
        "override a one-shot method's mode: freeze (keep theta0) or prune (set to 0)",
        choices=M.MODES)
    scope: str = documented("global",
        "top-k over all weights (global) or per layer",
        choices=M.SCOPES)
    include_biases: bool = documented(False,
        "score and mask the biases too (default: biases always train)")
    init: str = documented("xavier", "initialisation scheme", choices=init.SCHEMES)
    seed: int = documented(0, "32-bit seed: init, saliency batch, shuffling")
    epochs: int = documented(20, "epochs (train also takes 'auto' with --budget)")
    batch_size: int = documented(100, "examples per step")
    lr: float = documented(0.05, "peak learning rate (the same for every method)")
    momentum: float = documented(0.9, "SGD momentum")
    nesterov: bool = documented(False, "Nesterov momentum")
    weight_decay: float = documented(5e-4, "weight decay, on trainable entries only")
    schedule: str = documented("cosine", "learning-rate schedule", choices=SCHEDULES)
    lr_step_every: int | None = documented(None,
        "step schedule: multiply lr by --lr-gamma every N steps (default: a third of the run)",
        type=int, metavar="N")
    lr_gamma: float = documented(0.1, "step schedule: the factor")
    warmup_steps: int = documented(200,
        "linear learning-rate warm-up over the first N steps (0: none)")
    saliency_batch: int = documented(100, "training images in the one saliency batch")
    eval_batch: int = documented(1000, "test images per forward pass when evaluating")
    shards: int | None = documented(None,
        "cut each batch into N shards trained on N threads (0: one per CPU for models with "
        "convolutions; results are bit for bit the same for the same N)",
        type=int, metavar="N")
    sparse_compute: bool = documented(False,
        "pruned layers compute over their kept weights only (faster; equal to float rounding, so "
        "off by default; a run that is not pruned ignores it)")
    options: Any = None
    checkpoint_every: int | None = documented(None,
        "also evaluate the test set every N steps near the end, for SNIP's rule (the best of the "
        "last checkpoints; paper: 1000)",
        type=int, metavar="N")
    checkpoint_last: int = documented(5, "how many of the last checkpoints count (SNIP: 5)")
    model_kwargs: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        """A copy with score and mode filled in from the method, its options those of the method
        (the defaults when not given; so that the same run has one config), every field checked
        (the method checks its own options).

        The work is done once per run: the copy remembers what it was resolved to, and calling
        `resolved()` on it again returns it as it is, unless a field has changed since."""
        if self.__dict__.get("_resolved_as") == _fields(self):
            return self
        m = methods.get(self.method)
        if not m.overridable and (self.score is not None or self.mode is not None) and \
                (self.score, self.mode) != (m.score, m.mode):
            raise ValueError(f"score and mode: method {self.method} has no one-shot score, so "
                             f"they cannot be overridden (got score {self.score!r}, mode "
                             f"{self.mode!r})")
        c = dataclasses.replace(self, score=self.score or m.score, mode=self.mode or m.mode,
                                options=m.resolve_options(self.options),
                                model_kwargs=dict(self.model_kwargs))
        if m.uses_rate:
            c.rate = M.check_rate(c.rate)
        else:
            c.rate, c.score, c.mode = 0.0, None, m.mode  # elsa: the final network is dense
        d = TrainConfig()
        require(c.model in models.MODELS, "model", f"one of {', '.join(models.MODELS)}", c.model)
        c.model_kwargs = models.check_kwargs(c.model, c.model_kwargs)
        if isinstance(c.model_kwargs.get("input_shape"), tuple):
            c.model_kwargs["input_shape"] = list(c.model_kwargs["input_shape"])  # as JSON has it
        if c.model_kwargs.get("conv_relu") is False:
            del c.model_kwargs["conv_relu"]  # the default: one config for one network
        if c.model_kwargs.get("conv") == "im2col":
            del c.model_kwargs["conv"]  # the default, likewise
        init.check_seed(c.seed)
        parallel.check_shards(c.shards)
        require(c.init in init.SCHEMES, "init", f"one of {', '.join(init.SCHEMES)}", c.init)
        require(c.scope in M.SCOPES, "scope", f"one of {', '.join(M.SCOPES)}", c.scope)
        require(c.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}", c.schedule)
        for name in ("epochs", "batch_size", "saliency_batch", "eval_batch"):
            v = getattr(c, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name,
                    "a whole number >= 1", v)
        require(c.checkpoint_every is None or (isinstance(c.checkpoint_every, int) and
                                               not isinstance(c.checkpoint_every, bool) and
                                               c.checkpoint_every >= 1),
                "checkpoint_every", "None or a whole number >= 1", c.checkpoint_every)
        require(isinstance(c.checkpoint_last, int) and not isinstance(c.checkpoint_last, bool)
                and c.checkpoint_last >= 1, "checkpoint_last", "a whole number >= 1",
                c.checkpoint_last)
        if c.checkpoint_every is None:
            c.checkpoint_last = d.checkpoint_last  # unused: one config for one run
        if c.mode != "prune":
            c.sparse_compute = d.sparse_compute  # only a pruned network computes sparsely: likewise
        require(isinstance(c.warmup_steps, int) and c.warmup_steps >= 0, "warmup_steps",
                "a whole number >= 0", c.warmup_steps)
        require(c.lr_step_every is None or (isinstance(c.lr_step_every, int) and
                                            c.lr_step_every >= 1),
                "lr_step_every", "None or a whole number >= 1", c.lr_step_every)
        require(isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr > 0, "lr",
                "a number > 0", c.lr)
        require(0 < c.lr_gamma <= 1, "lr_gamma", "a number in (0, 1]", c.lr_gamma)
        require(0 <= c.momentum < 1, "momentum", "a number in [0, 1)", c.momentum)
        require(c.weight_decay >= 0, "weight_decay", "a number >= 0", c.weight_decay)
        m.check(c)
        c.__dict__["_resolved_as"] = _fields(c)  # not a field: replace() and asdict() drop it
        return c

    def flat(self) -> dict:
        """The fields as one flat mapping: the options spread out by field name and every option
        some method has at its default otherwise (`methods.option_defaults`). The form a run's
        name hashes, so names stay what they were before options were nested, and the form
        earlier runs recorded."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        opts = self.options.flat() if isinstance(self.options, methods.Options) else dict(self.options or {})
        return {**d, **methods.option_defaults(), **opts}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TrainConfig":
        """A config from its recorded form: `dataclasses.asdict` of one (the options nested), or
        the flat form of runs recorded before options were nested (`flat`); fields it does not
        name take their defaults, names no config has are ignored (a field added later, whose
        default keeps the old behaviour, leaves old runs readable); the score and mode of a method
        that does not let them be overridden are left to `resolved`. Not resolved."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields_ = {k: v for k, v in d.items() if k in known}
        if not methods.get(d.get("method", cls.method)).overridable:
            fields_.pop("score", None)  # derived from the method by `resolved`, not a choice: a
            fields_.pop("mode", None)   # run recorded before ELSA's mode became prune reads back
        if "options" not in d:
            fields_["options"] = methods.get(d.get("method", cls.method)).options_from(d)
        return cls(**fields_)


def _fields(c: TrainConfig) -> tuple:
    """A config's fields as a comparable snapshot (the model's keyword arguments copied)."""
    return tuple(dict(v) if isinstance(v, dict) else v
                 for v in (getattr(c, f.name) for f in dataclasses.fields(c)))


PROTOCOLS: dict[str, dict] = {
    "short": {},
    "paper": dict(lr=0.1, schedule="step", lr_step_every=25_000, lr_gamma=0.1, momentum=0.9,
                  nesterov=False, weight_decay=5e-4, batch_size=100, epochs=250,
                  warmup_steps=0, checkpoint_every=1_000, checkpoint_last=5, init="lecun"),
}
"""Named presets. `short`: TrainConfig's own defaults (20 epochs, lr 0.05 after a 200-step linear
warm-up, cosine decay, momentum 0.9, weight decay 5e-4, batch 100): what `make mnist` runs.
`paper`: FreezeNet's supplement (section S1.1), SNIP's schedule untuned: SGD momentum 0.9, lr 0.1
divided by 10 every 25k steps, weight decay 5e-4, batch 100, 250 epochs, no warm-up, and SNIP's
code's initialisation, `lecun` (variance scaling on fan-in, truncated normal; Glorot-normal,
`xavier`, killed every ReLU unit of conv2 on one seed in three: docs/protocols.md); the test
set is also evaluated at the last 5 checkpoints, one every 1,000 steps (SNIP's reporting rule:
the best of them; `best_of_checkpoints`)."""


def protocol_config(name: str = "short", **fields) -> TrainConfig:
    """The TrainConfig of protocol `name`, with `fields` overriding any of its values."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return TrainConfig(**{**PROTOCOLS[name], **fields})


@dataclass
class Setup:
    """What exists before the first SGD step."""
    model: models.Model
    theta0: dict[str, np.ndarray]
    masks: M.Masks | None
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    scores: dict[str, np.ndarray] | None = None


@dataclass
class TrainResult:
    config: TrainConfig
    model: models.Model
    theta0: dict[str, np.ndarray]
    masks: M.Masks | None
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    history: list[dict]
    seconds: float
    checkpoints: list[dict] | None = None  # {"step", "test_accuracy"} (config.checkpoint_every)
    dead_units: list[dict] | None = None  # dead_units.DeadUnitsProbe's rows
    resumed_from: int | None = None  # the epoch a saved state took the run up to, if resumed

    def checkpoint(self) -> storage.Checkpoint:
        c = self.config
        return storage.Checkpoint(c.model, self.params, masks=self.masks or {},
                                  buffers=self.buffers, seed=methods.get(c.method).init_seed(c),
                                  init_scheme=c.init,
                                  mode=c.mode, meta=checkpoint_meta(c),
                                  model_kwargs=dict(c.model_kwargs))


def checkpoint_meta(c: TrainConfig) -> dict:
    """What the .mfz header records of a (resolved) config: the method, its score, mode and rate,
    and the whole config (schedule parameters included) for the record."""
    return {"method": c.method, "score": c.score, "rate": c.rate, "scope": c.scope,
            "include_biases": c.include_biases, "config": dataclasses.asdict(c)}


def prepare(config: TrainConfig, data: Dataset) -> Setup:
    """theta0 from the seed, then the method's selection (`Method.select`: for a one-shot
    method scores on one batch and masks) and the frozen or pruned starting params. Dense and
    gradual methods select nothing and start from theta0, unmasked. A `redrawn` sanity check
    (`methods.VARIANTS`) keeps the mask and starts from theta0 of `Method.init_seed` instead."""
    c = config.resolved()
    method = methods.get(c.method)
    model = models.get_model(c.model, **c.model_kwargs)
    theta0 = init.init_params(model, c.seed, c.init)
    buffers = model.init_buffers()
    scores, masks = method.select(model, theta0, data, c, buffers)
    start = method.init_seed(c)
    if start != c.seed:  # a sanity check: this mask, trained from another draw
        theta0 = init.init_params(model, start, c.init)
    if masks is None:
        return Setup(model, theta0, None, M.apply_mode(theta0, None, "freeze"), buffers)
    return Setup(model, theta0, masks, M.apply_mode(theta0, masks, c.mode), buffers, scores)


def evaluate(model: models.Model, params, x: np.ndarray, y: np.ndarray, *, buffers=None,
             batch_size: int = 1000, predict=None, shards: int | None = 1) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; each batch runs as `shards` shards (None or
    0: automatic, see parallel.py). `predict(x, batch_size)` overrides the host forward pass (a
    trainer's `predict`)."""
    if predict is None:
        logits = parallel.predict(model, params, x, buffers=buffers, batch_size=batch_size,
                                  shards=shards)  # (N, classes)
    else:
        logits = predict(x, batch_size=batch_size)  # (N, classes)
    loss, _ = softmax_cross_entropy(logits.astype(np.float64), y)
    return float((logits.argmax(axis=1) == y).mean()), float(loss)


def progress_bar(total: int, desc: str, enabled: bool | None):
    """A tqdm bar on stderr; `enabled` None: only when stderr is a terminal."""
    from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


def gradient_norms(grads: dict[str, np.ndarray], names=None) -> dict[str, float]:
    """The L2 norm of each gradient tensor (of `names`, default all): how much signal reaches it."""
    names = list(grads) if names is None else names
    return {n: float(np.linalg.norm(grads[n].astype(np.float64).ravel())) for n in names}


def make_trainer(model: models.Model, params, masks=None, buffers=None, *, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nesterov: bool = False, shards: int | None = None,
                 sparse_compute: bool = False, pruned: bool = False):
    """The trainer of the active backend: `cuda_train.DeviceTrainer` where the backend trains on
    a device (`kernels().device_resident`), else `trainer.HostTrainer` with `shards` shards
    (and, for a pruned network, `sparse_compute`)."""
    hp = dict(momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if backend.kernels().device_resident:
        from minifreeze.cuda_train import DeviceTrainer
        return DeviceTrainer(model, params, masks, buffers, **hp)
    return HostTrainer(model, params, masks, buffers, shards=shards,
                       sparse_compute=sparse_compute, pruned=pruned, **hp)


def config_trainer(c: TrainConfig, setup: Setup):
    """`make_trainer` with the optimiser settings of a (resolved) config."""
    return make_trainer(setup.model, setup.params, setup.masks, setup.buffers,
                        momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov,
                        shards=c.shards, sparse_compute=c.sparse_compute,
                        pruned=c.mode == "prune" and setup.masks is not None)


@dataclass(frozen=True)
class StateFile:
    """Where a run saves its whole training state, and resumes from (`train_steps`).

    Every `every` epochs (not after the last) the loop writes `path` atomically: parameters,
    velocities, buffers, masks, the step, the shuffle generator's state, the history so far and
    each hook's `state()`. A run started with a `StateFile` whose path holds a state saved for the
    same config and `key` goes on from there, and ends bit for bit where an uninterrupted run
    ends; any other file there is ignored (and overwritten at the next save). A hook whose
    `state()` is None (it cannot be resumed) turns saving off for that run. `runs.run` keys the
    state with the run's name and deletes it once the run's metrics are written."""
    path: Path
    every: int = 5
    key: str = ""

    def __post_init__(self):
        check_state_every(self.every)


def check_state_every(every) -> None:
    """Raise ValueError unless `every` (epochs between two saves of the training state) is a
    whole number >= 1."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"state_every: expected a whole number of epochs >= 1, got {every!r}")


STATE_VERSION = 1


def save_state(path, *, key: str, config: "TrainConfig", epoch: int, t: int, history: list,
               shuffle: dict, trainer_state: dict, hooks: list, seconds: float,
               hook_names: list | None = None) -> int:
    """Write a training state (see `StateFile`) atomically to `path`: one .npz whose arrays are
    `params/<name>`, `velocity/<name>`, `buffers/<name>`, `masks/<name>` and whose `meta` holds
    the rest as JSON. Returns the bytes written."""
    arrays = {f"{part}/{k}": v for part in ("params", "velocity", "buffers")
              for k, v in trainer_state[part].items()}
    arrays.update({f"masks/{k}": np.asarray(v) for k, v in (trainer_state["masks"] or {}).items()})
    meta = {"version": STATE_VERSION, "key": key, "config": _config_json(config), "epoch": epoch,
            "t": t, "history": history, "shuffle": shuffle, "hooks": hooks, "seconds": seconds,
            "hook_names": hook_names or [],
            "has_masks": trainer_state["masks"] is not None, "pruned": trainer_state["pruned"]}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return storage.write_atomic(path, buf.getvalue())


def load_state(path, *, key: str, config: "TrainConfig") -> dict | None:
    """The state `save_state` wrote at `path` for this `key` and (resolved) config, as
    {"epoch", "t", "history", "shuffle", "hooks", "hook_names", "seconds", "trainer": {...}};
    None when there is no such file, it does not parse, or it was saved for another run.
    `hook_names` is None for a state saved before they were recorded (then not checked)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("version") != STATE_VERSION or meta.get("key") != key or \
                    meta.get("config") != _config_json(config):
                return None
            parts = {"params": {}, "velocity": {}, "buffers": {}, "masks": {}}
            for name in z.files:
                part, _, k = name.partition("/")
                if part in parts:
                    parts[part][k] = z[name]
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    trainer_state = {**parts, "masks": parts["masks"] if meta["has_masks"] else None,
                     "pruned": meta["pruned"]}
    return {**{k: meta[k] for k in ("epoch", "t", "history", "shuffle", "hooks", "seconds")},
            "hook_names": meta.get("hook_names"),
            "trainer": trainer_state}


def _config_json(c: "TrainConfig") -> dict:
    return json.loads(json.dumps(dataclasses.asdict(c), default=str))


def train_steps(config: TrainConfig, data: Dataset, setup: Setup, *, progress: bool | None = None,
                on_epoch=None, on_step=None, hooks=(), state: StateFile | None = None
                ) -> TrainResult:
    """Masked SGD from setup.params for config.epochs epochs; returns params and history.

    `hooks`: `Hook` objects called between steps and after each epoch (they may change the
    masks). `on_epoch(row)` is called after each epoch's evaluation (a notebook can plot live).
    `on_step(t, loss, grads)` is called after each update, t = 1, 2, ..., with the batch loss and
    the (masked) gradients of that step: e.g. to record `gradient_norms` through training
    (None from a device trainer, whose gradients stay on the GPU). `state`: save the training
    state every few epochs and resume from it (`StateFile`); epochs done before a resume are
    not passed to `on_epoch` again.
    """
    c = config.resolved()
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / c.batch_size)
    total = c.epochs * steps_per_epoch
    lr_at = make_schedule(c.schedule, c.lr, total, warmup=c.warmup_steps,
                          step_every=c.lr_step_every, gamma=c.lr_gamma)
    trainer = config_trainer(c, setup)
    shuffle = np.random.default_rng([c.seed, 2])
    history: list[dict] = []
    t_start, t, done, before = time.perf_counter(), 0, 0, 0.0
    for hook in hooks:
        hook.start(trainer, total)
    hook_names = [type(h).__name__ for h in hooks]
    saved = None if state is None else load_state(state.path, key=state.key, config=c)
    if saved is not None and saved["hook_names"] is not None and \
            saved["hook_names"] != hook_names:
        saved = None  # saved with other hooks: their records would not line up
    if saved is not None:
        trainer.load_state(saved["trainer"])
        shuffle.bit_generator.state = saved["shuffle"]
        for hook, hook_state in zip(hooks, saved["hooks"]):
            hook.load_state(hook_state)
        done, t, before = saved["epoch"], saved["t"], saved["seconds"]
        history = list(saved["history"])
    for epoch in range(done + 1, c.epochs + 1):
        t_epoch = time.perf_counter()
        order = shuffle.permutation(n)  # (n,)
        loss_sum, correct = 0.0, 0
        with progress_bar(steps_per_epoch, f"{c.method} epoch {epoch}/{c.epochs}", progress) as bar:
            for step in range(steps_per_epoch):
                idx = order[step * c.batch_size:(step + 1) * c.batch_size]
                try:
                    loss, batch_correct = trainer.step(data.x_train[idx], data.y_train[idx],
                                                       lr_at(t))
                except NonFiniteStep as err:
                    raise TrainingDiverged(epoch, step + 1, err.loss, trainer.last_good(),
                                           history, err.why, masks=trainer.masks,
                                           buffers=trainer.buffers) from None
                t += 1
                if on_step is not None:
                    on_step(t, loss, trainer.last_grads)
                for hook in hooks:
                    hook.after_step(t, trainer)
                loss_sum += loss * len(idx)
                correct += batch_correct
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        row = {"epoch": epoch, "lr_end": lr_at(t), "train_loss": loss_sum / n,
               "train_accuracy": correct / n, "train_seconds": time.perf_counter() - t_epoch}
        row["test_accuracy"], row["test_loss"] = evaluate(
            setup.model, None, data.x_test, data.y_test, batch_size=c.eval_batch,
            predict=trainer.predict)
        if data.x_val is not None:
            row["val_accuracy"], row["val_loss"] = evaluate(
                setup.model, None, data.x_val, data.y_val, batch_size=c.eval_batch,
                predict=trainer.predict)
        for hook in hooks:
            hook.after_epoch(epoch, trainer, row)
        row["seconds"] = time.perf_counter() - t_epoch
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if state is not None and epoch % state.every == 0 and epoch < c.epochs:
            hook_states = [hook.state() for hook in hooks]
            if all(h is not None for h in hook_states):
                save_state(state.path, key=state.key, config=c, epoch=epoch, t=t,
                           history=history, shuffle=shuffle.bit_generator.state,
                           trainer_state=trainer.state(), hooks=hook_states,
                           hook_names=hook_names,
                           seconds=before + time.perf_counter() - t_start)
    return TrainResult(c, setup.model, setup.theta0, trainer.masks, trainer.params,
                       trainer.buffers, history, before + time.perf_counter() - t_start,
                       resumed_from=None if saved is None else done)


class CheckpointEval(Hook):
    """SNIP's reporting rule: the test accuracy at the last `last` checkpoints, one every `every`
    steps (steps t with t % every == 0 and t > total - last * every); `rows` holds
    {"step", "test_accuracy"} in step order. Evaluating reads the trainer and changes nothing."""

    def __init__(self, every: int, last: int, x: np.ndarray, y: np.ndarray, *,
                 batch_size: int = 1000):
        self.every, self.last, self.x, self.y, self.batch_size = every, last, x, y, batch_size
        self.rows: list[dict] = []
        self.first = 1

    def start(self, trainer, total_steps: int) -> None:
        self.first = total_steps - self.last * self.every + 1
        self.rows = []

    def after_step(self, t: int, trainer) -> None:
        if t >= self.first and t % self.every == 0:
            acc, _ = evaluate(None, None, self.x, self.y, batch_size=self.batch_size,
                              predict=trainer.predict)
            self.rows.append({"step": t, "test_accuracy": acc})

    def state(self) -> dict:
        return {"rows": self.rows}

    def load_state(self, state: dict) -> None:
        self.rows = list(state["rows"])


def best_of_checkpoints(checkpoints) -> float | None:
    """SNIP's reported accuracy: the best test accuracy of the recorded checkpoints (None if
    there are none)."""
    return max((r["test_accuracy"] for r in checkpoints or ()), default=None)


def method_hooks(config: TrainConfig, model: models.Model) -> list:
    """The hooks a method trains with (`Method.hooks`: gradual pruning for weightmom and gmp)."""
    c = config.resolved()
    return methods.get(c.method).hooks(c, model)


def train(config: TrainConfig, data: Dataset, *, progress: bool | None = None,
          on_epoch=None, on_step=None, hooks=(), state: StateFile | None = None) -> TrainResult:
    """prepare + train_steps (with the method's own hooks first): one configuration, whole.

    Beside the method's hooks it records SNIP's checkpoints (if the config asks) and the dead
    units on the first `dead_units.PROBE_IMAGES` training images (`result.dead_units`). `state`:
    save the training state every few epochs and resume from it (`StateFile`).
    A method that trains by itself (ELSA's phases) is refused: `methods.get(name).run`."""
    c = config.resolved()
    m = methods.get(c.method)
    if m.trains_itself:
        raise ValueError(f"method {c.method} trains by itself: call "
                         f"minifreeze.methods.get({c.method!r}).run(config, data)")
    t0 = time.perf_counter()
    setup = prepare(c, data)
    own = method_hooks(c, setup.model)
    if c.checkpoint_every is not None:
        checkpoints = CheckpointEval(c.checkpoint_every, c.checkpoint_last, data.x_test,
                                     data.y_test, batch_size=c.eval_batch)
        own.append(checkpoints)
    probe = DeadUnitsProbe(setup.model, data.x_train[:PROBE_IMAGES])
    own.append(probe)
    setup_seconds = time.perf_counter() - t0
    result = train_steps(c, data, setup, progress=progress, on_epoch=on_epoch, on_step=on_step,
                         hooks=[*own, *hooks], state=state)
    if c.checkpoint_every is not None:
        result.checkpoints = checkpoints.rows
    result.dead_units = probe.rows
    result.seconds += setup_seconds
    return result


def plan_epochs(config: TrainConfig, data: Dataset, budget_seconds: float, *,
                probe_steps: int = 30, margin: float = 0.95) -> dict:
    """Time a few steps and one evaluation, then pick the epochs that fit `budget_seconds`.

    Returns {"epochs", "step_seconds", "epoch_seconds", "eval_seconds"}; at least 1 epoch.
    The probe trains a throwaway trainer (the one `train_steps` would use) on the first
    `probe_steps` batches, so it changes nothing.
    Epochs are fitted to `margin` of the time left: on a 2-core machine epoch times drifted by
    10-20% around the probe's estimate (8-13 s for LeNet-5), and a budget is a ceiling.
    """
    if budget_seconds <= 0:
        raise ValueError(f"budget: expected a positive number of seconds, got {budget_seconds}")
    if not 0 < margin <= 1 or probe_steps < 1:
        raise ValueError(f"plan_epochs: expected 0 < margin <= 1 and probe_steps >= 1, got "
                         f"margin={margin}, probe_steps={probe_steps}")
    c = dataclasses.replace(config.resolved(), epochs=1)
    t0 = time.perf_counter()
    setup = prepare(c, data)
    setup_seconds = time.perf_counter() - t0
    b = c.batch_size
    batches = [(data.x_train[i * b:(i + 1) * b], data.y_train[i * b:(i + 1) * b])
               for i in range(max(1, min(probe_steps, len(data.y_train) // b)))]
    trainer = config_trainer(c, setup)  # a throwaway: setup is not changed
    n_eval = min(len(data.y_test), c.eval_batch)
    trainer.step(*batches[0], c.lr)  # warm-up (compilation, workspace)
    t0 = time.perf_counter()
    for k in range(probe_steps):
        trainer.step(*batches[k % len(batches)], c.lr)
    step_s = (time.perf_counter() - t0) / probe_steps
    for _ in range(2):  # time the second call: the first grows the heap for the eval batch
        t0 = time.perf_counter()
        trainer.predict(data.x_test[:n_eval], batch_size=c.eval_batch)
    eval_s = (time.perf_counter() - t0) * (len(data.y_test) + (0 if data.y_val is None
                                                              else len(data.y_val))) / n_eval
    epoch_s = math.ceil(len(data.y_train) / c.batch_size) * step_s + eval_s
    spare = margin * budget_seconds - 2 * setup_seconds - (probe_steps + 1) * step_s
    return {"epochs": max(1, int(spare // epoch_s)), "step_seconds": step_s,
            "epoch_seconds": epoch_s, "eval_seconds": eval_s}
