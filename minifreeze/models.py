"""The three models as explicit layer specs over a flat params dict with dotted names.

A model is a list of named layers (a spec) plus functions over a params dict; it holds no weights:

    model = get_model("lenet5")
    model.param_shapes()        # {"conv1.w": (20, 1, 5, 5), "conv1.b": (20,), ...} in a fixed order
    logits, caches = model.forward(params, x)            # x (N, 1, 28, 28) -> logits (N, 10)
    grads = model.backward(dlogits, caches)              # keyed like params
    loss, grads = model.loss_and_grads(params, x, y)

Parameter names: `<layer>.w` and `<layer>.b` for convolutions and linear layers, `<layer>.gamma`
and `<layer>.beta` for batch norm. Batch-norm running statistics are *buffers*, not parameters:
`<layer>.running_mean` / `<layer>.running_var` in a separate dict (`model.init_buffers()`), updated
in place by a training-mode forward pass and read in eval mode.

Models:
- lenet300: fully connected 784-300-100-10 with ReLU (266,610 parameters).
- lenet5: LeNet-5-Caffe, conv 20@5x5 -> maxpool 2 -> conv 50@5x5 -> maxpool 2 -> fc 500 -> ReLU
  -> fc 10 (431,080 parameters). As in Caffe's prototxt and the official SNIP code there is no
  ReLU after the convolutions; `conv_relu=True` adds one.
- vgg: a small VGG, 3x3 convs 32,32,M,64,64,M,128,128,M with ReLU (batch norm optional), then
  fc 256 -> ReLU -> fc 10, for 3x32x32 or 1x28x28 input. 28x28 inputs get padding 3 in the first
  convolution, so every feature map has the 32x32 input's size and the 2x2 pools divide evenly.
  `vgg_d` builds the paper-scale VGG-D (13 convs, batch norm, fc 512-512-10) with the same builder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from minifreeze import fast_layers as F
from minifreeze import layers as L
from minifreeze import winograd
from minifreeze.im2col import conv_output_size
from minifreeze.losses import softmax_cross_entropy
from minifreeze.masks import as_masks

WEIGHT_OPS = ("conv", "linear")


@dataclass(frozen=True)
class Layer:
    """One named layer of a spec: op is conv, linear, relu, maxpool, flatten or batchnorm."""
    name: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        a = self.args
        if self.op == "conv":
            return {f"{self.name}.w": (a["out"], a["in"], a["k"], a["k"]),
                    f"{self.name}.b": (a["out"],)}
        if self.op == "linear":
            return {f"{self.name}.w": (a["out"], a["in"]), f"{self.name}.b": (a["out"],)}
        if self.op == "batchnorm":
            return {f"{self.name}.gamma": (a["channels"],), f"{self.name}.beta": (a["channels"],)}
        return {}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example after this layer, given one example's input shape."""
        a = self.args
        if self.op == "conv":
            c, h, w = shape
            if c != a["in"]:
                raise ValueError(f"{self.name}: expected {a['in']} input channels, got {c}")
            return (a["out"], conv_output_size(h, a["k"], a["stride"], a["pad"], layer=self.name),
                    conv_output_size(w, a["k"], a["stride"], a["pad"], layer=self.name))
        if self.op == "maxpool":
            c, h, w = shape
            return (c, conv_output_size(h, a["size"], a["stride"], 0, layer=self.name),
                    conv_output_size(w, a["size"], a["stride"], 0, layer=self.name))
        if self.op == "flatten":
            return (int(np.prod(shape)),)
        if self.op == "linear":
            if shape != (a["in"],):
                raise ValueError(f"{self.name}: expected input of shape ({a['in']},), got {shape}")
            return (a["out"],)
        return shape


def conv(name, c_in, c_out, k, stride=1, pad=0, algo: str = "im2col") -> Layer:
    """A convolution computed by im2col, or by Winograd's F(2x2, 3x3) (`algo="winograd"`, 3x3
    filters at stride 1 only). Only a non-default algorithm is recorded in the layer's arguments,
    so an im2col model's fingerprint is the one it always had."""
    if algo not in CONV_ALGOS:
        raise ValueError(f"{name}: conv algorithm must be one of {', '.join(CONV_ALGOS)}, got {algo!r}")
    if algo == "winograd" and not winograd.fits((c_out, c_in, k, k), stride):
        raise ValueError(f"{name}: the Winograd convolution needs 3x3 filters at stride 1, got "
                         f"{k}x{k} at stride {stride}")
    args = {"in": c_in, "out": c_out, "k": k, "stride": stride, "pad": pad}
    return Layer(name, "conv", args if algo == "im2col" else {**args, "algo": algo})


CONV_ALGOS = ("im2col", "winograd")
"""How a model may compute its convolutions (`conv=` of the VGG builders, `--conv`)."""


def linear(name, d_in, d_out) -> Layer:
    return Layer(name, "linear", {"in": d_in, "out": d_out})


def maxpool(name, size=2, stride=None) -> Layer:
    return Layer(name, "maxpool", {"size": size, "stride": size if stride is None else stride})


def relu(name) -> Layer:
    return Layer(name, "relu")


def flatten(name="flatten") -> Layer:
    return Layer(name, "flatten")


def batchnorm(name, channels, momentum=0.1, eps=1e-5) -> Layer:
    return Layer(name, "batchnorm", {"channels": channels, "momentum": momentum, "eps": eps})


@dataclass(frozen=True)
class Model:
    """A spec: a name, the shape of one input example and the ordered layers."""
    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    # --- what the model holds ---------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape, in the fixed order used for initialisation and storage."""
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in self.layers:
            shapes.update(layer.param_shapes())
        return shapes

    def weight_names(self) -> list[str]:
        """Names of the conv and linear weights: what saliency scores and masks select from."""
        return [f"{ly.name}.w" for ly in self.layers if ly.op in WEIGHT_OPS]

    def fingerprint(self) -> str:
        """16 hex digits of a SHA-256 over the spec (input shape, every layer's name, op and
        arguments): two models compute the same function of their params iff they agree."""
        import hashlib
        import json
        spec = [list(self.input_shape)] + [[ly.name, ly.op, ly.args] for ly in self.layers]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def num_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes().values())

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{ly.name}.{k}": (ly.args["channels"],)
                for ly in self.layers if ly.op == "batchnorm"
                for k in ("running_mean", "running_var")}

    def init_buffers(self, dtype=np.float32) -> dict[str, np.ndarray]:
        """Fresh batch-norm running statistics: means 0, variances 1."""
        return {k: (np.zeros if k.endswith("mean") else np.ones)(s, dtype=dtype)
                for k, s in self.buffer_shapes().items()}

    def summary(self) -> list[dict[str, Any]]:
        """One row per layer: name, op, output shape (one example) and parameter count."""
        rows, shape = [], tuple(self.input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            n = sum(int(np.prod(s)) for s in layer.param_shapes().values())
            rows.append({"name": layer.name, "op": layer.op, "output_shape": list(shape),
                         "params": n})
        return rows

    # --- forward and backward ---------------------------------------------------------------
    def check_input(self, x: np.ndarray) -> None:
        if np.ndim(x) != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected input of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {np.shape(x)}")

    def forward(self, params: Mapping[str, np.ndarray], x: np.ndarray, *, train: bool = True,
                buffers: Mapping[str, np.ndarray] | None = None, pruned=None, plan=None):
        """x (N, *input_shape) -> logits (N, classes), caches (one per layer, for backward).
        `train` matters only for batch norm: batch statistics (and, if `buffers` is given, an
        in-place update of the running statistics) in training, running statistics in eval.
        `pruned`: a `masks.Masks` whose m == 0 entries are exactly 0 in params; its layers then
        go through `fast_layers.py`'s pruned forward passes (over the kept weights only).
        `plan`: the layers' forward functions, `self.plan(pruned)`, chosen once (a trainer
        does so when it is built); by default chosen here.
        """
        self.check_input(x)
        steps = self.plan(pruned) if plan is None else plan
        caches = []
        h = x
        for step in steps:
            h, cache = step(h, params, buffers, train)
            caches.append(cache)
        return h, caches

    def plan(self, pruned=None) -> tuple:
        """Which forward function each layer runs, chosen once: one `step(h, params, buffers,
        train) -> (h, cache)` per layer. The textbook pair of `layers.py`, or, for a layer of
        `pruned` (a `masks.Masks` whose m == 0 entries are exactly 0 in params), the pruned pass
        of `fast_layers.py`; a VGG built with `conv="winograd"` runs its 3x3 convolutions by
        Winograd's transforms."""
        pruned = as_masks(pruned)
        return tuple(self._step(ly, pruned) for ly in self.layers)

    def _step(self, ly, pruned):
        """The forward function of layer `ly` (see `plan`)."""
        a, w, b = ly.args, f"{ly.name}.w", f"{ly.name}.b"
        sparse = pruned.index(w) if pruned is not None and w in pruned else None
        winograd = ly.op == "conv" and a.get("algo") == "winograd"
        if winograd and (sparse is None or not F.computes_sparsely(sparse)):
            return lambda h, p, bufs, train: F.conv_forward_winograd(
                h, p[w], p[b], a["stride"], a["pad"], layer=ly.name)
        if ly.op == "conv" and sparse is not None:
            return lambda h, p, bufs, train: F.conv_forward_pruned(
                h, p[w], p[b], a["stride"], a["pad"], sparse, layer=ly.name)
        if ly.op == "conv":
            return lambda h, p, bufs, train: L.conv_forward(h, p[w], p[b], a["stride"], a["pad"],
                                                            layer=ly.name)
        if ly.op == "linear" and sparse is not None:
            return lambda h, p, bufs, train: F.linear_forward_pruned(h, p[w], p[b], sparse,
                                                                     layer=ly.name)
        if ly.op == "linear":
            return lambda h, p, bufs, train: L.linear_forward(h, p[w], p[b], layer=ly.name)
        if ly.op == "relu":
            return lambda h, p, bufs, train: L.relu_forward(h)
        if ly.op == "maxpool":
            return lambda h, p, bufs, train: L.maxpool_forward(h, a["size"], a["stride"],
                                                               layer=ly.name)
        if ly.op == "flatten":
            return lambda h, p, bufs, train: L.flatten_forward(h)
        if ly.op == "batchnorm":
            def batchnorm(h, p, bufs, train):
                rm = None if bufs is None else bufs[f"{ly.name}.running_mean"]
                rv = None if bufs is None else bufs[f"{ly.name}.running_var"]
                return L.batchnorm_forward(h, p[f"{ly.name}.gamma"], p[f"{ly.name}.beta"], rm, rv,
                                           train=train, momentum=a["momentum"], eps=a["eps"],
                                           layer=ly.name)
            return batchnorm
        raise ValueError(f"{self.name}: layer {ly.name} has unknown op {ly.op!r}")

    def backward(self, dlogits: np.ndarray, caches: list, *,
                 masks: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """dlogits (N, classes) -> grads keyed and ordered like params.

        With `masks` (a `masks.Masks`, or a dict that is turned into one), each masked weight's
        gradient is exactly 0 where m == 0, through `fast_layers.py`'s masked backward passes
        (sampled at the mask's nonzeros when it is sparse); every other layer is the textbook
        pair of `layers.py`. The input gradient of the first layer with parameters
        is never needed and never computed.
        """
        masks = as_masks(masks)
        first = next(i for i, ly in enumerate(self.layers) if ly.param_shapes())
        grads: dict[str, np.ndarray] = {}
        d = dlogits
        for i in range(len(self.layers) - 1, first - 1, -1):
            ly, cache, need_dx = self.layers[i], caches[i], i > first
            w, b = f"{ly.name}.w", f"{ly.name}.b"
            if ly.op in ("conv", "linear"):
                masked = masks is not None and w in masks
                if isinstance(cache, F.WinogradConvCache):
                    d, grads[w], grads[b] = F.conv_backward_winograd(
                        d, cache, w_mask=masks[w] if masked else None, need_dx=need_dx)
                elif masked or isinstance(cache, (F.PrunedConvCache, F.PrunedLinearCache)):
                    backward = F.conv_backward_masked if ly.op == "conv" else \
                        F.linear_backward_masked
                    d, grads[w], grads[b] = backward(
                        d, cache, w_mask=masks[w] if masked else None,
                        w_index=masks.index(w) if masked else None, need_dx=need_dx)
                else:
                    backward = L.conv_backward if ly.op == "conv" else L.linear_backward
                    d, grads[w], grads[b] = backward(d, cache, need_dx=need_dx)
            elif ly.op == "relu":
                d = L.relu_backward(d, cache)
            elif ly.op == "maxpool":
                d = L.maxpool_backward(d, cache)
            elif ly.op == "flatten":
                d = L.flatten_backward(d, cache)
            elif ly.op == "batchnorm":
                d, grads[f"{ly.name}.gamma"], grads[f"{ly.name}.beta"] = \
                    L.batchnorm_backward(d, cache)
        return {k: grads[k] for k in self.param_shapes()}

    def loss_and_grads(self, params, x, y, *, masks=None, train: bool = True, buffers=None):
        """Softmax cross-entropy of the logits and its gradient for every parameter."""
        logits, caches = self.forward(params, x, train=train, buffers=buffers)
        loss, dlogits = softmax_cross_entropy(logits, y)
        return loss, self.backward(dlogits, caches, masks=masks)

    def predict(self, params, x, *, buffers=None, batch_size: int = 1000) -> np.ndarray:
        """Logits in eval mode, in batches of batch_size: x (N, ...) -> (N, classes)."""
        outs = [self.forward(params, x[i:i + batch_size], train=False, buffers=buffers)[0]
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.summary()[-1]["output_shape"][0]))


# --- the models ---------------------------------------------------------------------------------

def lenet300(num_classes: int = 10) -> Model:
    """LeNet-300-100: 784-300-100-10, ReLU (266,610 parameters)."""
    return Model("lenet300", (1, 28, 28), (
        flatten(), linear("fc1", 784, 300), relu("relu1"), linear("fc2", 300, 100),
        relu("relu2"), linear("fc3", 100, num_classes)))


def lenet5(num_classes: int = 10, conv_relu: bool = False) -> Model:
    """LeNet-5-Caffe (431,080 parameters); no ReLU after the convolutions unless conv_relu."""
    act = (lambda n: (relu(n),)) if conv_relu else (lambda n: ())
    return Model("lenet5", (1, 28, 28), (
        conv("conv1", 1, 20, 5), *act("relu_c1"), maxpool("pool1", 2),
        conv("conv2", 20, 50, 5), *act("relu_c2"), maxpool("pool2", 2),
        flatten(), linear("fc1", 800, 500), relu("relu1"), linear("fc2", 500, num_classes)))


SMALL_VGG = (32, 32, "M", 64, 64, "M", 128, 128, "M")
VGG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def build_vgg(cfg=SMALL_VGG, fc=(256,), input_shape=(3, 32, 32), batch_norm: bool = False,
              num_classes: int = 10, name: str = "vgg", conv_algo: str = "im2col") -> Model:
    """VGG builder: cfg lists conv widths (3x3, padding 1) and "M" for 2x2 max-pools.

    A 28x28 input gets padding 3 in the first convolution (28 -> 32), so the pools divide evenly.
    `conv_algo`: how every convolution is computed, "im2col" or "winograd" (all are 3x3, stride 1).
    """
    c, h, w = input_shape
    if (h, w) not in ((32, 32), (28, 28)):
        raise ValueError(f"{name}: expected input of shape (C, 32, 32) or (C, 28, 28), "
                         f"got {tuple(input_shape)}")
    layers: list[Layer] = []
    pad_first = 3 if h == 28 else 1
    size, channels, i = 32, c, 0
    for v in cfg:
        if v == "M":
            layers.append(maxpool(f"pool{i}", 2))
            size //= 2
            continue
        i += 1
        layers.append(conv(f"conv{i}", channels, v, 3, 1, pad_first if i == 1 else 1, conv_algo))
        if batch_norm:
            layers.append(batchnorm(f"bn{i}", v))
        layers.append(relu(f"relu{i}"))
        channels = v
    layers.append(flatten())
    d = channels * size * size
    for j, width in enumerate(fc, 1):
        layers += [linear(f"fc{j}", d, width), relu(f"relu_fc{j}")]
        d = width
    layers.append(linear(f"fc{len(fc) + 1}", d, num_classes))
    return Model(name, tuple(input_shape), tuple(layers))


def vgg(input_shape=(3, 32, 32), batch_norm: bool = False, num_classes: int = 10,
        conv: str = "im2col") -> Model:
    """The small teaching VGG: 32,32,M,64,64,M,128,128,M, then fc 256 -> fc classes. `conv`:
    "im2col" (the default) or "winograd" for every convolution."""
    return build_vgg(SMALL_VGG, (256,), tuple(input_shape), batch_norm, num_classes, "vgg", conv)


def vgg_d(input_shape=(3, 32, 32), num_classes: int = 10, conv: str = "im2col") -> Model:
    """VGG-D as in SNIP/FreezeNet's CIFAR experiments: 13 convs with batch norm, fc 512-512-10."""
    return build_vgg(VGG_D, (512, 512), tuple(input_shape), True, num_classes, "vgg_d", conv)


MODELS: dict[str, Callable[..., Model]] = {
    "lenet300": lenet300, "lenet5": lenet5, "vgg": vgg, "vgg_d": vgg_d}


MODEL_KWARGS = {
    "lenet300": ("num_classes",),
    "lenet5": ("num_classes", "conv_relu"),
    "vgg": ("input_shape", "batch_norm", "num_classes", "conv"),
    "vgg_d": ("input_shape", "num_classes", "conv"),
}
"""The keyword arguments each builder takes (what a `.mfz` header may record)."""

MAX_CLASSES = 1000


def check_kwargs(name: str, kwargs) -> dict:
    """ValueError naming the first keyword argument that is unknown or out of range for model
    `name`; returns the kwargs (input_shape as a tuple). Bounds what a model may allocate."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{name}: expected keyword arguments as a mapping, got {kwargs!r}")
    out = dict(kwargs)
    for key, value in kwargs.items():
        if key == "conv" and key not in MODEL_KWARGS[name] and value != "im2col":
            raise ValueError(f"{name}: conv={value!r} needs 3x3 stride-1 convolutions, which only "
                             f"vgg and vgg_d have; {name} computes its convolutions by im2col")
        if key not in MODEL_KWARGS[name]:
            raise ValueError(f"{name}: unknown keyword argument {key!r}; expected any of "
                             f"{', '.join(MODEL_KWARGS[name])}")
        if key in ("conv_relu", "batch_norm") and not isinstance(value, bool):
            raise ValueError(f"{name}: {key} must be true or false, got {value!r}")
        if key == "num_classes" and (isinstance(value, bool) or not isinstance(value, int)
                                     or not 2 <= value <= MAX_CLASSES):
            raise ValueError(f"{name}: num_classes must be a whole number in [2, {MAX_CLASSES}], "
                             f"got {value!r}")
        if key == "conv" and value not in CONV_ALGOS:
            raise ValueError(f"{name}: conv must be one of {', '.join(CONV_ALGOS)}, got {value!r}")
        if key == "input_shape":
            ok = (isinstance(value, (list, tuple)) and len(value) == 3
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                  and 1 <= value[0] <= 4 and tuple(value[1:]) in ((28, 28), (32, 32)))
            if not ok:
                raise ValueError(f"{name}: input_shape must be [C, 28, 28] or [C, 32, 32] with "
                                 f"1 <= C <= 4, got {value!r}")
            out[key] = tuple(value)
    return out


def network_name(name: str, kwargs=None) -> str:
    """The network a run trained, as tables and run folders name it: the model's name, with
    `_relu` for LeNet-5 with a ReLU after each convolution (`lenet5_relu`), so that Caffe's
    network and the conv-ReLU one are never averaged together."""
    return f"{name}_relu" if (kwargs or {}).get("conv_relu") else name


def get_model(name: str, **kwargs) -> Model:
    """Build a model by name (lenet300, lenet5, vgg, vgg_d); kwargs go to its builder."""
    kwargs = check_kwargs(name, kwargs)
    return MODELS[name](**kwargs)
