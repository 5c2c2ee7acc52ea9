"""Dead units: the ReLU units that give no positive output on any probe image.

A ReLU unit whose input is <= 0 for every example passes no signal forward and no gradient
backward, so SGD can never bring it back: the unit is dead. A layer that loses every unit cuts
the network, and its output ignores the input (loss stuck at the entropy of the labels). Too high
a learning rate with no warm-up kills units in the first steps; how many depends on the
initialisation's scale. So "dead units" is a measured quantity of every run:

    counts = dead_units(model, params, probe_x)     # {"conv2": (21, 50), "fc1": (60, 500)}
    dead_share(counts)                              # {"conv2": 0.42, "fc1": 0.12}

A unit is a channel of a convolution (dead when no image, at no position, gives a positive
output) or a neuron of a linear layer. Units are named by the weight layer whose output the ReLU
reads (`conv2` for `conv2 -> relu_c2`, with a batch norm between them counted as part of it);
weight layers with no ReLU after them (LeNet-5-Caffe's convolutions, the output layer) have no
units to count. The probe runs the plain forward pass in eval mode (batch norm's running
statistics) and changes nothing.

`DeadUnitsProbe` is the training-loop hook that records the counts at fixed points of a run
(step 100, the end of epoch 1, the end of training): every run's metrics carry them as
`dead_units`. `PROBE_IMAGES` training images, the first of the training set, are the probe.
Notebook `06_pipeline` shows where the hook sits in the loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from minifreeze.trainer import Hook

__all__ = ["PROBE_IMAGES", "PROBE_STEPS", "DeadUnitsProbe", "dead_share", "dead_units",
           "relu_layers"]

PROBE_IMAGES = 1000
"""How many training images (the first of the training set) a run's probe batch holds."""

PROBE_STEPS = (100,)
"""The steps after which a run records its dead units, beside the end of epoch 1 and the end."""


def relu_layers(model) -> dict[int, str]:
    """{index of a ReLU layer in model.layers: name of the weight layer it reads}; a ReLU after a
    batch norm reads the convolution or linear layer before that."""
    found, last = {}, None
    for i, ly in enumerate(model.layers):
        if ly.op in ("conv", "linear"):
            last = ly.name
        elif ly.op == "relu" and last is not None:
            found[i] = last
            last = None
        elif ly.op != "batchnorm":
            last = None
    return found


def dead_units(model, params: Mapping[str, np.ndarray], x: np.ndarray, *, buffers=None,
               batch_size: int = 1000) -> dict[str, tuple[int, int]]:
    """{weight layer: (dead units, units)} on the probe images x (N, *input_shape).

    A unit (channel or neuron) is dead when its ReLU output is 0 for every image at every
    position, i.e. its input is <= 0 everywhere. Eval mode; nothing is changed."""
    layers = relu_layers(model)
    alive: dict[int, np.ndarray] = {}
    for i in range(0, len(x), batch_size):
        _, caches = model.forward(params, x[i:i + batch_size], train=False, buffers=buffers)
        for k in layers:
            positive = caches[k]  # relu's cache: the bool mask input > 0, (n, C, H, W) or (n, D)
            seen = positive.any(axis=tuple(a for a in range(positive.ndim) if a != 1))  # (C,)
            alive[k] = seen if k not in alive else alive[k] | seen
    return {name: (int((~alive[k]).sum()), int(alive[k].size)) for k, name in layers.items()}


def dead_share(counts: Mapping[str, tuple[int, int]]) -> dict[str, float]:
    """{layer: dead / units} of a `dead_units` result."""
    return {k: dead / n for k, (dead, n) in counts.items()}


class DeadUnitsProbe(Hook):
    """Records `dead_units` on the probe images after the steps in `steps`, after epoch 1 and
    after the last step: `rows` = [{"at": "step 100" | "epoch 1" | "end", "step": t,
    "dead": {layer: dead}, "units": {layer: units}}, ...] in step order. Reads the trainer's
    parameters; changes nothing, so a run records the same numbers with or without it."""

    def __init__(self, model, x: np.ndarray, *, steps=PROBE_STEPS):
        self.model, self.x, self.steps = model, x, tuple(steps)
        self.rows: list[dict] = []
        self.total = self.t = 0

    def start(self, trainer, total_steps: int) -> None:
        self.total, self.rows = total_steps, []

    def _record(self, at: str, t: int, trainer) -> None:
        counts = dead_units(self.model, trainer.params, self.x, buffers=trainer.buffers)
        self.rows.append({"at": at, "step": t, "dead": {k: d for k, (d, _) in counts.items()},
                          "units": {k: n for k, (_, n) in counts.items()}})

    def after_step(self, t: int, trainer) -> None:
        self.t = t
        if t in self.steps and t < self.total:
            self._record(f"step {t}", t, trainer)
        elif t == self.total:
            self._record("end", t, trainer)

    def after_epoch(self, epoch: int, trainer, row: dict) -> None:
        if epoch == 1 and not any(r["at"] == "end" for r in self.rows):
            self._record("epoch 1", self.t, trainer)

    def state(self) -> dict:
        return {"rows": self.rows, "t": self.t}

    def load_state(self, state: dict) -> None:
        self.rows, self.t = list(state["rows"]), int(state["t"])
