"""One step of masked SGD at a time: the trainer that the training loop, the benchmark and the
notebooks all drive.

    trainer = HostTrainer(model, params, masks, momentum=0.9, weight_decay=5e-4, shards=2)
    loss, correct = trainer.step(x, y, lr)    # forward, backward, masked update on one batch
    logits = trainer.predict(x_test)          # (N, classes), eval mode
    trainer.params                            # the current parameters, {name: array}
    trainer.set_masks(new_masks, prune=True)  # between steps: gradual pruning, ELSA's phases

A trainer owns copies of what it is given: the caller's params, masks and buffers are never
changed, whichever trainer runs. Two implementations share this interface:

- `HostTrainer` (here): the batch cut into shards on threads (`parallel.py`), the backend's
  kernels (`backend.kernels()`), the fused masked update of the backend.
- `cuda_train.DeviceTrainer`: parameters, masks, velocities and activations stay on the GPU; only
  the batch goes in and the loss and the number correct come out.

`step` raises `NonFiniteStep` when the loss is NaN or infinite (the update is then not applied)
or when the update made a parameter NaN or infinite; `last_good()` gives the last parameters
whose loss was finite (on the host: those before the failing step).

Changing the masks between steps (`set_masks`) is how a method prunes during training or
trains one set of weights after another: the new masks take effect from the next step on every
backend (the sampled weight gradients, the shard sums and the update visit the new mask's
positions), entries that stop training lose their momentum, and with `prune=True` they are set
to +0.0. Notebook 06 walks through the loop that drives a trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from minifreeze import backend, parallel
from minifreeze.masks import Masks, as_masks
from minifreeze.optim import MaskedSGD


OPTIMISER_DEFAULTS = {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
"""Both trainers' defaults (SGD with momentum 0.9 and weight decay 5e-4: both protocols')."""


@runtime_checkable
class Trainer(Protocol):
    """What the training loop, the hooks and the benchmark may rely on, whichever trainer runs.

    - `step(x, y, lr) -> (loss, correct)`: the mean loss and the number classified correctly,
      both of the parameters *before* the update; a NaN or infinite loss raises `NonFiniteStep`
      and applies nothing; an update that makes a parameter NaN or infinite raises it too.
    - `params`: the current parameters as copies, in the model's order (writing into them changes
      nothing in the trainer).
    - `last_good()`: copies of the last parameters whose loss was finite, after any step,
      whether it raised or not.
    - `predict(x, batch_size)`: logits in eval mode.
    - `set_masks(masks, prune=False)`: train under new masks from the next step.
    - `masks`, `buffers` and `last_grads` (None where the gradients stay on a device).
    - `state()` -> {"params", "velocity", "buffers", "masks", "pruned"} as host copies, and
      `load_state(state)`: what a resumed run needs to go on exactly where it stopped.

    `tests/test_trainer.py` runs one contract suite over every implementation.
    """
    model: object
    masks: Masks | None
    buffers: dict
    last_grads: dict | None

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]: ...

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray: ...

    @property
    def params(self) -> dict[str, np.ndarray]: ...

    def set_masks(self, masks, *, prune: bool = False) -> None: ...

    def state(self) -> dict: ...

    def load_state(self, state: Mapping) -> None: ...

    def last_good(self) -> dict[str, np.ndarray]: ...


class Hook:
    """Something the training loop (`train.train_steps`) runs between steps; override what you need.

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

    def state(self) -> dict | None:
        """What this hook has gathered, JSON-ready, for a run's saved training state (`train.py`,
        resuming); `load_state(state)` after `start` puts it back. None (the default): the hook
        cannot be resumed, so a run that uses it saves no state and starts again when stopped."""
        return None

    def load_state(self, state: dict) -> None:
        """Put back what `state()` returned (called after `start`)."""


class NonFiniteStep(ArithmeticError):
    """A step gave a NaN or infinite loss, or its update made a parameter non-finite."""

    def __init__(self, why: str, loss: float):
        super().__init__(why)
        self.why, self.loss = why, loss


def check_masks(model, masks: Masks | None) -> None:
    """ValueError unless every mask names a parameter of `model` and has its shape."""
    shapes = model.param_shapes()
    for name, m in (masks or {}).items():
        if name not in shapes or m.shape != shapes[name]:
            raise ValueError(f"{model.name}: mask {name!r} must match a parameter's shape "
                             f"{shapes.get(name)}, got {m.shape}")


def check_state(model, state: Mapping) -> None:
    """ValueError unless a trainer state has every parameter and velocity of `model` in its shape."""
    shapes = model.param_shapes()
    for part in ("params", "velocity"):
        got = {k: np.shape(v) for k, v in state[part].items()}
        if got != shapes:
            raise ValueError(f"{model.name}: a saved training state's {part} must be {shapes}, "
                             f"got {got}")


class HostTrainer:
    """Masked SGD on the CPU with the active backend's kernels (see the module docstring).

    params: the starting parameters (copied); masks: {name: m} or a `masks.Masks` (m == 1
    trainable; names without a mask train fully); buffers: batch-norm running statistics
    (copied, updated by training steps); shards: how many shards a batch runs as (None or 0:
    automatic, see `parallel.resolve_shards`). pruned: the params are 0 where m == 0 (and
    `set_masks(..., prune=True)` makes them so); with sparse_compute too, pruned layers compute
    their forward product and input gradient over the kept weights only (layers.py).
    """

    def __init__(self, model, params: Mapping[str, np.ndarray], masks=None, buffers=None, *,
                 momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False,
                 shards: int | None = None, sparse_compute: bool = False, pruned: bool = False):
        parallel.check_shards(shards)
        self.model, self.shards = model, shards
        self.sparse_compute, self.pruned = bool(sparse_compute), bool(pruned)
        shapes = model.param_shapes()
        if list(params) != list(shapes) or any(np.shape(params[k]) != s for k, s in shapes.items()):
            raise ValueError(f"{model.name}: expected parameters "
                             f"{ {k: s for k, s in shapes.items()} }, got "
                             f"{ {k: np.shape(v) for k, v in params.items()} }")
        self._params = {k: np.array(v) for k, v in params.items()}  # our own C-contiguous copies
        self.buffers = {k: np.array(v) for k, v in (buffers or {}).items()}
        self.masks = as_masks(masks)
        check_masks(model, self.masks)
        self.opt = MaskedSGD(self._params, momentum=momentum, weight_decay=weight_decay,
                             nesterov=nesterov, update=backend.kernels().masked_sgd_update)
        self.last_grads: dict[str, np.ndarray] | None = None
        self._good = {k: v.copy() for k, v in self._params.items()}
        self._replan()

    def _replan(self) -> None:
        """Choose each layer's forward function once (`Model.plan`), for these masks."""
        self._plan = self.model.plan(self.masks if self._sparse else None)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        """One masked SGD step on the batch (x, y) -> (its mean loss before the update, number
        of examples it classified correctly before the update)."""
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            loss, grads, logits = parallel.loss_and_grads(
                self.model, self._params, x, y, masks=self.masks, buffers=self.buffers,
                shards=self.shards, plan=self._plan)
        if not np.isfinite(loss):
            raise NonFiniteStep(f"loss is {loss}", float(loss))
        for k, v in self._params.items():
            np.copyto(self._good[k], v)  # before this update
        with np.errstate(over="ignore", invalid="ignore"):
            self.opt.step(self._params, grads, self.masks, lr)
        if not all(np.isfinite(v).all() for v in self._params.values()):
            raise NonFiniteStep("the update made a parameter NaN or infinite", float(loss))
        self.last_grads = grads
        return float(loss), int((logits.argmax(axis=1) == y).sum())

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Logits in eval mode: x (N, *input_shape) -> (N, classes)."""
        return parallel.predict(self.model, self._params, x, buffers=self.buffers,
                                batch_size=batch_size, shards=self.shards, plan=self._plan)

    @property
    def _sparse(self) -> bool:
        """Pruned layers compute over their kept weights: asked for, and m == 0 is exactly 0."""
        return self.sparse_compute and self.pruned and self.masks is not None

    def set_masks(self, masks, *, prune: bool = False) -> None:
        """Train under `masks` from the next step on (see the module docstring)."""
        masks = as_masks(masks)
        check_masks(self.model, masks)
        for name, m in (masks or {}).items():
            off = m == 0
            self.opt.velocity[name][off] = 0
            if prune:
                self._params[name][off] = 0.0
        self.masks = masks
        self.pruned = self.pruned or prune
        self._replan()

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The current parameters: copies (a snapshot later steps do not change, and writing
        into it changes nothing here), as `cuda_train.DeviceTrainer.params` gives them."""
        return {k: v.copy() for k, v in self._params.items()}

    def state(self) -> dict:
        """Copies of everything the next step depends on (see `Trainer`)."""
        return {"params": self.params, "velocity": {k: v.copy() for k, v in self.opt.velocity.items()},
                "buffers": {k: v.copy() for k, v in self.buffers.items()},
                "masks": None if self.masks is None else dict(self.masks), "pruned": self.pruned}

    def load_state(self, state: Mapping) -> None:
        """Go on from `state()`: parameters, velocities, buffers and masks copied in."""
        check_state(self.model, state)
        for k, v in self._params.items():
            np.copyto(v, state["params"][k])
            np.copyto(self.opt.velocity[k], state["velocity"][k])
            np.copyto(self._good[k], state["params"][k])
        self.buffers = {k: np.array(v) for k, v in state["buffers"].items()}
        self.masks = as_masks(state["masks"])
        check_masks(self.model, self.masks)
        self.pruned = bool(state["pruned"])
        self._replan()

    def last_good(self) -> dict[str, np.ndarray]:
        """Copies of the parameters from before the last step whose update was applied."""
        return {k: v.copy() for k, v in self._good.items()}
