"""The FreezeNet pipeline, end to end: init, saliency, mask, freeze or prune, masked SGD, evaluate.

    config = TrainConfig(model="lenet5", method="freezenet", rate=0.995, epochs=5, seed=0)
    result = train(config, load_dataset("mnist"))       # result.history, result.params, ...
    storage.save("model.mfz", result.checkpoint())

Methods are a saliency score plus a mode, so "the same mask, pruned or frozen" is one field away:

    dense       no mask, every parameter trains
    freezenet   score grad (|g|),         mode freeze (m == 0 held at theta0)
    snip        score snip (|theta * g|), mode prune  (m == 0 set to 0 and held)

`score` and `mode` override the method's pair (e.g. method freezenet with mode prune). The steps
are public functions a notebook can call one by one: `prepare` (theta0, scores, masks, starting
params), `train_steps` (the loop), `evaluate`, and `plan_epochs`, which times a few steps and
picks the number of epochs that fits a time budget, so the schedule knows its length up front.

The loop: `make_trainer` builds the trainer of the active backend (`trainer.HostTrainer`, or
`cuda_train.DeviceTrainer` where the backend keeps training on a device); each epoch shuffles with
a seeded generator, feeds batches to `trainer.step(x, y, lr)` and evaluates on the test set (and
the validation split, if any) with `trainer.predict`. The loop never names a backend, and the
caller's `setup.params` are never changed: the result carries the trained copies. Between steps
and after each epoch it calls its hooks (`Hook`): that is where a method that changes the masks
during training plugs in (`trainer.set_masks`). `on_step(t, loss, grads)` and `on_epoch(row)`
are lighter callbacks for notebooks. A NaN or infinite loss raises `TrainingDiverged` naming the
epoch and step; it carries the last parameters whose loss was finite.
Notebook `06_pipeline` walks through this file.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from minifreeze import backend, init, masks as M, models, parallel, saliency as S, storage
from minifreeze.data import Dataset
from minifreeze.losses import softmax_cross_entropy
from minifreeze.optim import SCHEDULES, make_schedule
from minifreeze.trainer import HostTrainer, NonFiniteStep

METHODS = {"dense": (None, None), "freezenet": ("grad", "freeze"), "snip": ("snip", "prune")}
"""method -> (saliency score, mode)."""

DEFAULT_LR = {"dense": 0.03, "freezenet": 0.1, "snip": 0.1}
"""Peak learning rates for batch 100 with momentum 0.9 and standardised inputs, after a 200-step
linear warm-up. Without warm-up, dense LeNet-5-Caffe (no ReLU after its convolutions) diverges at
lr 0.1 within 20 steps and at 0.05 within 50; with 0.5% of the weights trainable, FreezeNet and
SNIP take the larger rate."""


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
    """Everything that decides a run; stored in metrics.json and (in part) the .mfz header."""
    model: str = "lenet5"
    method: str = "freezenet"
    rate: float = 0.995
    score: str | None = None
    mode: str | None = None
    scope: str = "global"
    include_biases: bool = False
    init: str = "xavier"
    seed: int = 0
    epochs: int = 5
    batch_size: int = 100
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_steps: int = 200
    saliency_batch: int = 100
    eval_batch: int = 1000
    shards: int | None = None
    model_kwargs: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        """A copy with score, mode and lr filled in from the method, checked."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of "
                             f"{', '.join(METHODS)}")
        score, mode = METHODS[self.method]
        c = dataclasses.replace(self, score=self.score or score, mode=self.mode or mode,
                                lr=DEFAULT_LR[self.method] if self.lr is None else self.lr)
        if c.method == "dense":
            c.rate, c.score, c.mode = 0.0, None, "freeze"
        else:
            M.check_rate(c.rate)
            if c.score not in S.SCORES:
                raise ValueError(f"unknown saliency score {c.score!r}; expected one of "
                                 f"{', '.join(S.SCORES)}")
            if c.mode not in M.MODES:
                raise ValueError(f"unknown mode {c.mode!r}; expected one of {', '.join(M.MODES)}")
        init.check_seed(c.seed)
        parallel.check_shards(c.shards)
        if c.init not in init.SCHEMES:
            raise ValueError(f"unknown init scheme {c.init!r}; expected one of "
                             f"{', '.join(init.SCHEMES)}")
        if c.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {c.schedule!r}; expected one of "
                             f"{', '.join(SCHEDULES)}")
        if c.epochs < 1 or c.batch_size < 1 or c.saliency_batch < 1:
            raise ValueError(f"epochs, batch_size and saliency_batch must be positive, got "
                             f"{c.epochs}, {c.batch_size}, {c.saliency_batch}")
        return c


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

    def checkpoint(self) -> storage.Checkpoint:
        c = self.config
        return storage.Checkpoint(
            c.model, self.params, self.masks or {}, self.buffers, c.seed, c.init, c.mode,
            {"method": c.method, "score": c.score, "rate": c.rate, "scope": c.scope,
             "include_biases": c.include_biases}, dict(c.model_kwargs))


def saliency_batch(data: Dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n training examples drawn without replacement by a generator keyed on (seed, 1)."""
    idx = np.random.default_rng([seed, 1]).choice(len(data.y_train), size=min(n, len(data.y_train)),
                                                 replace=False)
    return data.x_train[idx], data.y_train[idx]


def prepare(config: TrainConfig, data: Dataset) -> Setup:
    """theta0 from the seed, then (unless dense) scores on one batch, masks, frozen/pruned params."""
    c = config.resolved()
    model = models.get_model(c.model, **c.model_kwargs)
    theta0 = init.init_params(model, c.seed, c.init)
    buffers = model.init_buffers()
    if c.method == "dense":
        return Setup(model, theta0, None, M.apply_mode(theta0, None, "freeze"), buffers)
    x, y = saliency_batch(data, c.saliency_batch, c.seed)
    scores = S.saliency(model, theta0, x, y, score=c.score, include_biases=c.include_biases,
                        seed=[c.seed, 3], buffers=buffers)
    masks = M.select_topk(scores, c.rate, scope=c.scope)
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


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


def gradient_norms(grads: dict[str, np.ndarray], names=None) -> dict[str, float]:
    """The L2 norm of each gradient tensor (of `names`, default all): how much signal reaches it."""
    names = list(grads) if names is None else names
    return {n: float(np.linalg.norm(grads[n].astype(np.float64).ravel())) for n in names}


def make_trainer(model: models.Model, params, masks=None, buffers=None, *, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nesterov: bool = False, shards: int | None = None):
    """The trainer of the active backend: `cuda_train.DeviceTrainer` where the backend trains on
    a device (`kernels().device_resident`), else `trainer.HostTrainer` with `shards` shards."""
    hp = dict(momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if backend.kernels().device_resident:
        from minifreeze.cuda_train import DeviceTrainer
        return DeviceTrainer(model, params, masks, buffers, **hp)
    return HostTrainer(model, params, masks, buffers, shards=shards, **hp)


def config_trainer(c: TrainConfig, setup: Setup):
    """`make_trainer` with the optimiser settings of a (resolved) config."""
    return make_trainer(setup.model, setup.params, setup.masks, setup.buffers,
                        momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov,
                        shards=c.shards)


class Hook:
    """Something that runs inside `train_steps`, between steps; override what you need.

    A hook may read `trainer.params`, replace the masks with `trainer.set_masks(...)` (gradual
    pruning does, every few steps) and add entries to an epoch's history row; it must not draw
    from the loop's random generator, so that runs stay reproducible.
    """

    def start(self, trainer, total_steps: int) -> None:
        """Before the first step; `total_steps` = epochs * steps per epoch."""

    def after_step(self, t: int, trainer) -> None:
        """After update t (t = 1, 2, ..., total_steps)."""

    def after_epoch(self, epoch: int, trainer, row: dict) -> None:
        """After an epoch's evaluation; `row` is its history entry (add to it freely)."""


def train_steps(config: TrainConfig, data: Dataset, setup: Setup, *, progress: bool | None = None,
                on_epoch=None, on_step=None, hooks=()) -> TrainResult:
    """Masked SGD from setup.params for config.epochs epochs; returns params and history.

    `hooks`: `Hook` objects called between steps and after each epoch (they may change the
    masks). `on_epoch(row)` is called after each epoch's evaluation (a notebook can plot live).
    `on_step(t, loss, grads)` is called after each update, t = 1, 2, ..., with the batch loss and
    the (masked) gradients of that step: e.g. to record `gradient_norms` through training
    (None from a device trainer, whose gradients stay on the GPU).
    """
    c = config.resolved()
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / c.batch_size)
    total = c.epochs * steps_per_epoch
    lr_at = make_schedule(c.schedule, c.lr, total, warmup=c.warmup_steps)
    trainer = config_trainer(c, setup)
    shuffle = np.random.default_rng([c.seed, 2])
    history: list[dict] = []
    t_start, t = time.perf_counter(), 0
    for hook in hooks:
        hook.start(trainer, total)
    for epoch in range(1, c.epochs + 1):
        t_epoch = time.perf_counter()
        order = shuffle.permutation(n)  # (n,)
        loss_sum, correct = 0.0, 0
        with _progress(steps_per_epoch, f"{c.method} epoch {epoch}/{c.epochs}", progress) as bar:
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
    return TrainResult(c, setup.model, setup.theta0, trainer.masks, trainer.params,
                       trainer.buffers, history, time.perf_counter() - t_start)


def train(config: TrainConfig, data: Dataset, *, progress: bool | None = None,
          on_epoch=None, on_step=None, hooks=()) -> TrainResult:
    """prepare + train_steps: the whole pipeline for one configuration."""
    t0 = time.perf_counter()
    setup = prepare(config, data)
    result = train_steps(config, data, setup, progress=progress, on_epoch=on_epoch,
                         on_step=on_step, hooks=hooks)
    result.seconds = time.perf_counter() - t0
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
