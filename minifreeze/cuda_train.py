"""Device-resident training: a whole run on the GPU, the host sees only batches in and metrics out.

The layer-by-layer cuda backend (`backend.set_backend("cuda")`) copies every activation to the GPU
and back, which is right for testing kernels and wrong for speed. `DeviceTrainer` instead keeps
parameters, masks, velocities, activations and gradients on the device for the whole run:

    trainer = DeviceTrainer(model, params, masks, momentum=0.9, weight_decay=5e-4)
    for x, y in batches:                        # x (N, *input_shape) float32, y (N,) int
        loss, correct = trainer.step(x, y, lr)  # copies in x and y, copies out [loss, correct]
    params = trainer.params                     # the trained parameters, copied to the host
    logits = trainer.predict(x_test)            # (N, classes)

It has the interface of `trainer.HostTrainer` (step, predict, params, set_masks, last_good), so
`train.train_steps` drives either without knowing which.

One step is the model's layer spec walked forward and back with the kernels of `kernels_cuda.py`:
conv = im2col + tiled matmul + bias, linear = tiled matmul + bias, ReLU, max-pool, flatten (a
reshape, no kernel), softmax cross-entropy, then the masked SGD update (m == 0: frozen or pruned,
never written). It computes what `Model.loss_and_grads` plus `optim.masked_sgd_update` compute on
the host, to float32 rounding. Batch norm is not implemented on the device (NotImplementedError).
This module never imports numba.cuda itself; it calls into `kernels_cuda`.
"""

from __future__ import annotations

import numpy as np

from minifreeze import backend
from minifreeze.masks import as_masks
from minifreeze.models import Model
from minifreeze.trainer import NonFiniteStep, check_masks, check_state

SUPPORTED_OPS = ("conv", "linear", "relu", "maxpool", "flatten")


def _kernels():
    """The kernels_cuda module, or BackendUnavailable saying how to enable CUDA."""
    backend.require("cuda")  # raises BackendUnavailable with the how-to when it cannot run here
    from minifreeze import kernels_cuda
    return kernels_cuda


class _Workspace:
    """Device buffers for one batch size: every layer's output, im2col columns, argmaxes, grads."""

    def __init__(self, k, model: Model, n: int):
        self.n = n
        self.x = k.device_array((n, *model.input_shape), dtype=np.float32)
        self.y = k.device_array((n,), dtype=np.int32)
        self.outs, self.dxs, self.cols, self.argmax = [], [], {}, {}
        shape = tuple(model.input_shape)
        for i, ly in enumerate(model.layers):
            out_shape = ly.output_shape(shape)
            # flatten is a view of its input; every other layer writes its own output buffer.
            self.outs.append(None if ly.op == "flatten" else
                             k.device_array((n, *out_shape), dtype=np.float32))
            self.dxs.append(None if ly.op == "flatten" else
                            k.device_array((n, *shape), dtype=np.float32))  # grad of the input
            if ly.op == "conv":
                a = ly.args
                self.cols[i] = k.device_array(
                    (n, a["in"] * a["k"] * a["k"], out_shape[1] * out_shape[2]),
                    dtype=np.float32)  # (N, C*K*K, OH*OW), reused for dcols in backward
            if ly.op == "maxpool":
                self.argmax[i] = k.device_array((n, *out_shape), dtype=np.int32)
            shape = out_shape
        classes = shape[0]
        self.dlogits = k.device_array((n, classes), dtype=np.float32)  # (N, K)
        self.row_loss = k.device_array((n,), dtype=np.float32)
        self.row_correct = k.device_array((n,), dtype=np.int32)
        self.metrics = k.device_array((2,), dtype=np.float32)  # [mean loss, correct]


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class DeviceTrainer:
    """Masked SGD on the device for a model without batch norm (see the module docstring).

    params: the model's parameters (any float dtype; trained in float32). masks: optional dict
    {name: m} with m == 1 trainable and m == 0 held (frozen at its value, or pruned at 0); names
    without a mask are fully trained. momentum, weight_decay, nesterov: the masked SGD contract;
    lr: the default learning rate of `step`. buffers: must be empty (no batch norm here).
    """

    def __init__(self, model: Model, params: dict, masks: dict | None = None, buffers=None, *,
                 lr: float = 0.0, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = False):
        for ly in model.layers:
            if ly.op not in SUPPORTED_OPS:
                raise NotImplementedError(
                    f"cuda: layer {ly.name} ({ly.op}) is not implemented on the device; "
                    f"DeviceTrainer supports {', '.join(SUPPORTED_OPS)} (use the numpy backend "
                    f"for models with batch norm)")
            if ly.args.get("algo", "im2col") != "im2col":
                raise NotImplementedError(
                    f"cuda: layer {ly.name} asks for the {ly.args['algo']} convolution, which runs "
                    f"on the numba and numpy backends only; build the model with conv='im2col' "
                    f"(no --conv) for the device")
        shapes = model.param_shapes()
        if set(params) != set(shapes):
            raise ValueError(f"{model.name}: expected parameters {sorted(shapes)}, "
                             f"got {sorted(params)}")
        masks = as_masks(masks)
        check_masks(model, masks)
        for name, p in params.items():
            if np.shape(p) != shapes[name]:
                raise ValueError(f"{model.name}: expected {name} of shape {shapes[name]}, "
                                 f"got {np.shape(p)}")
        self.k = k = _kernels()
        self.model = model
        self.lr, self.momentum = float(lr), float(momentum)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)
        self.d_params = {n: k.to_device(f32(params[n])) for n in shapes}
        self.velocity = {n: k.to_device(np.zeros(s, np.float32)) for n, s in shapes.items()}
        self.grads = {n: k.device_array(s, dtype=np.float32) for n, s in shapes.items()}
        self.masks = masks
        self.d_masks = {n: k.to_device(f32(m)) for n, m in (masks or {}).items()}
        self.buffers = dict(buffers or {})
        self.last_correct = 0
        self.last_grads = None  # the gradients stay on the device
        self._d_good = {n: k.to_device(f32(params[n])) for n in shapes}  # before the last update
        self._flag = k.device_array((1,), dtype=np.int32)
        self._ws: dict[int, _Workspace] = {}
        self._pruned = False  # set_masks(prune=True) was called (recorded in state())

    # --- host-facing API ------------------------------------------------------------------------
    def step(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> tuple[float, int]:
        """One masked SGD step on the batch (x, y) -> (its mean loss before the update, number of
        examples classified correctly before the update); also left in `last_correct`.

        A NaN or infinite loss raises NonFiniteStep before the update (nothing is applied); an
        update that makes a parameter NaN or infinite raises it after. Either way `last_good()`
        gives the last parameters whose loss was finite, as on the host.
        """
        ws = self._load_batch(x, y)
        self._forward(ws)
        k = self.k
        k.d_softmax_ce(ws.outs[-1], ws.y, ws.dlogits, ws.row_loss, ws.row_correct, ws.metrics)
        loss, correct = ws.metrics.copy_to_host()  # of the parameters before this update
        if not np.isfinite(loss):
            raise NonFiniteStep(f"loss is {loss}", float(loss))
        self._backward(ws)
        lr = self.lr if lr is None else float(lr)
        for name, p in self.d_params.items():
            self._d_good[name].copy_to_device(p)  # device to device: before this update
            m = self.d_masks.get(name)
            k.d_masked_sgd(p.ravel(), self.grads[name].ravel(), self.velocity[name].ravel(),
                           None if m is None else m.ravel(), lr, self.momentum,
                           self.weight_decay, self.nesterov)
        if not k.d_all_finite(self.d_params.values(), self._flag):
            raise NonFiniteStep("the update made a parameter NaN or infinite", float(loss))
        self.last_correct = int(correct)
        return float(loss), self.last_correct

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Logits for x (N, *input_shape), in batches: -> (N, classes) float32."""
        out = []
        for i in range(0, len(x), batch_size):
            ws = self._load_batch(x[i:i + batch_size], None)
            self._forward(ws)
            out.append(ws.outs[-1].copy_to_host())
        classes = self.model.summary()[-1]["output_shape"][0]
        return np.concatenate(out) if out else np.zeros((0, classes), np.float32)

    def params_to_host(self) -> dict[str, np.ndarray]:
        """The current parameters, copied to the host, in the model's order."""
        return {n: p.copy_to_host() for n, p in self.d_params.items()}

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The current parameters, copied to the host."""
        return self.params_to_host()

    def last_good(self) -> dict[str, np.ndarray]:
        """The last parameters whose loss was finite (those before the last applied update),
        copied to the host."""
        return {n: v.copy_to_host() for n, v in self._d_good.items()}

    def velocities_to_host(self) -> dict[str, np.ndarray]:
        return {n: v.copy_to_host() for n, v in self.velocity.items()}

    def state(self) -> dict:
        """Host copies of everything the next step depends on (`trainer.Trainer.state`)."""
        return {"params": self.params_to_host(), "velocity": self.velocities_to_host(),
                "buffers": {k: np.array(v) for k, v in self.buffers.items()},
                "masks": None if self.masks is None else dict(self.masks),
                "pruned": self._pruned}

    def load_state(self, state) -> None:
        """Go on from `state()`: parameters, velocities, buffers and masks copied to the device."""
        check_state(self.model, state)
        k = self.k
        self.d_params = {n: k.to_device(f32(state["params"][n])) for n in self.d_params}
        self._d_good = {n: k.to_device(f32(state["params"][n])) for n in self.d_params}
        self.velocity = {n: k.to_device(f32(state["velocity"][n])) for n in self.velocity}
        self.buffers = {n: np.array(v) for n, v in state["buffers"].items()}
        masks = as_masks(state["masks"])
        check_masks(self.model, masks)
        self.masks = masks
        self.d_masks = {n: k.to_device(f32(m)) for n, m in (masks or {}).items()}
        self._pruned = bool(state["pruned"])

    def set_masks(self, masks, *, prune: bool = False) -> None:
        """Train under `masks` from the next step: velocities cleared where m == 0, and with
        `prune` those parameters set to +0.0 (done on the host, then copied back)."""
        masks = as_masks(masks)
        check_masks(self.model, masks)
        k = self.k
        for name, m in (masks or {}).items():
            off = m == 0
            v = self.velocity[name].copy_to_host()
            v[off] = 0
            self.velocity[name] = k.to_device(v)
            if prune:
                p = self.d_params[name].copy_to_host()
                p[off] = 0.0
                self.d_params[name] = k.to_device(p)
        self.masks = masks
        self.d_masks = {n: k.to_device(np.ascontiguousarray(m)) for n, m in (masks or {}).items()}
        self._pruned = self._pruned or prune

    # --- the device side ------------------------------------------------------------------------
    def _load_batch(self, x, y) -> _Workspace:
        self.model.check_input(x)
        n = len(x)
        if n not in self._ws:
            self._ws = {n: _Workspace(self.k, self.model, n)}  # keep one batch size's buffers
        ws = self._ws[n]
        ws.x.copy_to_device(np.ascontiguousarray(x, dtype=np.float32))
        if y is not None:
            y = np.asarray(y)
            classes = ws.dlogits.shape[1]
            if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or \
                    (n and (y.min() < 0 or y.max() >= classes)):
                raise ValueError(f"{self.model.name}: expected labels of shape ({n},), integers "
                                 f"in [0, {classes}), got {y.dtype} {y.shape}")
            ws.y.copy_to_device(y.astype(np.int32))
        return ws

    def _inputs(self, ws: _Workspace) -> list:
        """Each layer's input: the batch, then the previous layer's output (flatten: a view)."""
        ins, h = [], ws.x
        for ly, out in zip(self.model.layers, ws.outs):
            ins.append(h)
            h = h.reshape(ws.n, int(np.prod(h.shape[1:]))) if ly.op == "flatten" else out
        return ins

    def _forward(self, ws: _Workspace) -> None:
        k, p, n = self.k, self.d_params, ws.n
        for i, (ly, h) in enumerate(zip(self.model.layers, self._inputs(ws))):
            out, a = ws.outs[i], ly.args
            if ly.op == "conv":
                f, kk = a["out"], a["in"] * a["k"] * a["k"]
                oh, ow = out.shape[2], out.shape[3]
                k.d_im2col(h, ws.cols[i], a["k"], a["k"], a["stride"], a["pad"], ow)
                out3 = out.reshape(n, f, oh * ow)  # (N, F, OH*OW)
                k.d_matmul(p[f"{ly.name}.w"].reshape(1, f, kk), ws.cols[i], out3)
                k.d_bias_add(out3, p[f"{ly.name}.b"])
            elif ly.op == "linear":
                m, d = a["out"], a["in"]
                k.d_matmul(h.reshape(1, n, d), p[f"{ly.name}.w"].reshape(1, m, d),
                           out.reshape(1, n, m), trans_b=True)  # x @ w.T, (1, N, M)
                k.d_bias_add(out.reshape(n, m, 1), p[f"{ly.name}.b"])
            elif ly.op == "relu":
                k.d_relu_forward(h, out)
            elif ly.op == "maxpool":
                k.d_maxpool_forward(h, out, ws.argmax[i], a["size"], a["size"], a["stride"])
        if ws.outs[-1] is None:
            raise NotImplementedError("cuda: a model may not end in flatten")

    def _backward(self, ws: _Workspace) -> None:
        k, p, g, n = self.k, self.d_params, self.grads, ws.n
        layers = self.model.layers
        ins = self._inputs(ws)
        first = next(i for i, ly in enumerate(layers) if ly.param_shapes())
        d = ws.dlogits
        for i in range(len(layers) - 1, first - 1, -1):
            ly, a, h, dx = layers[i], layers[i].args, ins[i], ws.dxs[i]
            need_dx = i > first
            if ly.op == "conv":
                f, kk = a["out"], a["in"] * a["k"] * a["k"]
                d3 = d.reshape(n, f, d.shape[2] * d.shape[3])  # (N, F, OH*OW)
                cols = ws.cols[i]  # (N, C*K*K, OH*OW)
                k.d_matmul(d3, cols, g[f"{ly.name}.w"].reshape(1, f, kk), trans_b=True,
                           reduce_batch=True)  # dw = sum_n d3[n] @ cols[n].T
                k.d_bias_grad(d3, g[f"{ly.name}.b"])
                if need_dx:  # cols is no longer needed: it receives dcols = w.T @ d3
                    k.d_matmul(p[f"{ly.name}.w"].reshape(1, f, kk), d3, cols, trans_a=True)
                    k.d_col2im(cols, dx, a["k"], a["k"], a["stride"], a["pad"],
                               d.shape[2], d.shape[3])
            elif ly.op == "linear":
                m, dd = a["out"], a["in"]
                k.d_matmul(d.reshape(1, n, m), h.reshape(1, n, dd),
                           g[f"{ly.name}.w"].reshape(1, m, dd), trans_a=True)  # dout.T @ x
                k.d_bias_grad(d.reshape(n, m, 1), g[f"{ly.name}.b"])
                if need_dx:
                    k.d_matmul(d.reshape(1, n, m), p[f"{ly.name}.w"].reshape(1, m, dd),
                               dx.reshape(1, n, dd))  # dout @ w
            elif ly.op == "relu":
                k.d_relu_backward(d, ws.outs[i], dx)
            elif ly.op == "maxpool":
                k.d_maxpool_backward(d, ws.argmax[i], dx, a["size"], a["size"], a["stride"])
            elif ly.op == "flatten":
                dx = d.reshape(*h.shape)
            d = dx
