"""Masks: which weights train, and the one vocabulary used everywhere in minifreeze.

Vocabulary (the CLI, the `.mfz` header and the notebooks use exactly these words):

    m          a 0/1 float32 array shaped like its weight; m == 1: trainable (freezing) / kept
               (pruning); m == 0: frozen / pruned
    density    mean(m), the share of weights that train
    rate       1 - density: FreezeNet's freezing rate q, SNIP's sparsity
    trained    the number of parameters that train (masked weights with m == 1, plus every
               unmasked parameter: biases and batch-norm parameters by default)
    compression  total parameters / trained parameters (157.8 for LeNet-5-Caffe at q = 0.995)
    pruned     set to 0 and held there (SNIP)
    frozen     held at its initial value theta0 (FreezeNet)

Selecting: of N scored entries keep exactly k = round((1 - q) * N) with the largest scores, over
all scored tensors at once (`scope="global"`, FreezeNet and SNIP) or k_l = round((1 - q) * N_l)
per tensor (`scope="layer"`). Ties are broken by position: among equal scores the entry that comes
first (tensors in the order of the scores dict, entries in C order) is kept, so a mask is a pure
function of its scores.

    masks = select_topk(scores, rate=0.995)            # {"conv1.w": float32 0/1, ...}
    params = apply_mode(theta0, masks, "freeze")       # or "prune": zeros where m == 0
    density_report(model, masks)                       # one row per parameter tensor
    overlap(masks_a, masks_b)                          # share of a's kept entries kept by b

Masks are values. `select_topk` and `Masks(...)` (for hand-made masks) return a
`Masks`: a read-only mapping whose arrays own their memory and refuse in-place edits, so the
indices of m == 1 (`masks.index(name)`: rows, columns, flat positions, density) are computed once,
here, and travel with the mask to the layers, the shards and the optimiser. A method that changes
the mask during training (gradual pruning, nested freezing) builds a new `Masks`; nothing
downstream can hold a stale copy of the old one's indices.

    m = Masks({"fc1.w": np.eye(3)})     # a hand-made mask: copied, checked to be 0/1, read-only
    m["fc1.w"][0, 0] = 0                # ValueError: assignment destination is read-only
    m.index("fc1.w").flat               # array([0, 4, 8]): where m == 1, in C order
    m2 = m.replace({"fc1.w": other})    # a new Masks; m is unchanged

Notebook `04_saliency_masks` walks through this file; `05_freeze_vs_prune` through `apply_mode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

MODES = ("freeze", "prune")
"""What happens to the entries with m == 0: held at theta0 (freeze) or set to 0 and held (prune)."""

SCOPES = ("global", "layer")


def _immutable(a: np.ndarray) -> np.ndarray:
    """A copy of `a` backed by an immutable bytes object: read-only, and it cannot be made
    writeable again (`flags.writeable = True` raises), so an index can never go stale."""
    a = np.ascontiguousarray(a)
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


@dataclass(frozen=True)
class MaskIndex:
    """Where m == 1 in one mask, computed once: what the sparse kernels and the optimiser visit.

    rows, cols: positions in the mask seen as a matrix (out, rest), (F, C*KH*KW) for a conv
    weight, (M, D) for a linear one; flat: the same positions in the flattened mask; all int64,
    ascending, read-only. density: mean(m).
    """
    rows: np.ndarray
    cols: np.ndarray
    flat: np.ndarray
    density: float

    @classmethod
    def of(cls, m) -> "MaskIndex":
        """The index of a 0/1 array (any array: nothing is cached)."""
        m = np.asarray(m)
        m2 = m.reshape(m.shape[0], -1) if m.ndim else m.reshape(1, 1)  # (out, rest)
        rows, cols = np.nonzero(m2)  # (nnz,) each, in C order
        flat = rows * m2.shape[1] + cols  # (nnz,)
        return cls(_immutable(rows), _immutable(cols), _immutable(flat),
                   rows.size / max(m2.size, 1))


class Masks(Mapping):
    """{name: m}, read-only: float32 0/1 arrays that cannot be edited, nor made writeable.

    Behaves like the dict of masks it was built from (`masks["conv1.w"]`, `masks.items()`,
    `name in masks`); `index(name)` gives the `MaskIndex` of one mask, computed at construction.
    Building a Masks copies the arrays, so editing the source afterwards changes nothing here.
    """

    __slots__ = ("_m", "_index")

    def __init__(self, masks: Mapping[str, np.ndarray] | None = None):
        self._m: dict[str, np.ndarray] = {}
        self._index: dict[str, MaskIndex] = {}
        for name, value in (masks or {}).items():
            m = np.array(value, dtype=np.float32)  # a copy this object owns
            if m.size and not np.all((m == 0) | (m == 1)):
                raise ValueError(f"mask {name}: expected only 0 and 1, got values such as "
                                 f"{m[(m != 0) & (m != 1)][:3].tolist()}")
            m = _immutable(m)  # cannot be made writeable: its index stays true
            self._m[name] = m
            self._index[name] = MaskIndex.of(m)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._m[name]

    def __iter__(self):
        return iter(self._m)

    def __len__(self) -> int:
        return len(self._m)

    def __repr__(self) -> str:
        rows = ", ".join(f"{k}: {v.shape} density {self._index[k].density:.4g}"
                         for k, v in self._m.items())
        return f"Masks({rows})"

    def __reduce__(self):  # pickled as a plain dict and rebuilt, so it stays read-only
        return (Masks, ({k: np.array(v) for k, v in self._m.items()},))

    def index(self, name: str) -> MaskIndex:
        """Where m == 1 in mask `name` (KeyError if there is no such mask)."""
        return self._index[name]

    def replace(self, changes: Mapping[str, np.ndarray]) -> "Masks":
        """A new Masks with the tensors of `changes` replaced (or added); self is unchanged."""
        return Masks({**self._m, **changes})


def as_masks(masks: Mapping[str, np.ndarray] | None) -> Masks | None:
    """None stays None, a Masks is returned as it is, any other mapping is copied into a Masks."""
    if masks is None or isinstance(masks, Masks):
        return masks
    return Masks(masks)


def check_rate(rate) -> float:
    """q as a float in [0, 1), or a ValueError that says what was expected."""
    try:
        q = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"rate: expected a number in [0, 1), got {rate!r}") from None
    if not 0.0 <= q < 1.0:
        raise ValueError(f"rate: expected a number in [0, 1), got {rate}")
    return q


def keep_count(n: int, rate: float) -> int:
    """k = round((1 - q) * n): how many of n entries are kept (trainable).

    Computed exactly on q's shortest decimal form (`repr`), rounding halves to even, so that
    q = 0.995 of LeNet-5-Caffe's 430,500 weights keeps round(2152.5) = 2,152 on every machine
    (in float64, (1 - 0.995) * 430500 is 2152.5000000000018).
    """
    return int(round((1 - Fraction(repr(check_rate(rate)))) * n))


def _topk_flat(flat: np.ndarray, k: int) -> np.ndarray:
    """0/1 float32 mask keeping the k largest entries of a 1-D array; ties go to lower indices."""
    m = np.zeros(flat.size, dtype=np.float32)  # (N,)
    if k > 0:
        order = np.argsort(-flat.astype(np.float64), kind="stable")  # (N,) descending, stable
        m[order[:k]] = 1.0
    return m


def select_topk(scores: Mapping[str, np.ndarray], rate: float, *, scope: str = "global") -> Masks:
    """Masks keeping the highest-scoring entries; same keys, shapes and order as `scores`."""
    q = check_rate(rate)
    if scope not in SCOPES:
        raise ValueError(f"unknown mask scope {scope!r}; expected one of {', '.join(SCOPES)}")
    for name, s in scores.items():
        if not np.all(np.isfinite(s)):
            raise ValueError(f"select_topk: scores for {name} contain NaN or infinity")
    if scope == "layer":
        return Masks({name: _topk_flat(np.ravel(s), keep_count(np.size(s), q)).reshape(np.shape(s))
                      for name, s in scores.items()})
    flat = np.concatenate([np.ravel(s) for s in scores.values()])  # (N,)
    m = _topk_flat(flat, keep_count(flat.size, q))  # (N,)
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = m[offset:offset + np.size(s)].reshape(np.shape(s))
        offset += np.size(s)
    return Masks(masks)


def apply_mode(theta0: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None,
               mode: str) -> dict[str, np.ndarray]:
    """Fresh copies of theta0 ready to train: `freeze` keeps theta0, `prune` zeros m == 0."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    params = {k: v.copy() for k, v in theta0.items()}
    if masks is not None and mode == "prune":
        for name, m in masks.items():
            params[name][m == 0] = 0.0  # pruned entries become exactly +0.0
    return params


def overlap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Share of the entries kept (m == 1) in `a` that are kept in `b` too, over all tensors of a.

    For two masks of the same rate over the same tensors (same number of ones) it is symmetric:
    1.0 means the same mask, about (1 - q) means no more in common than two random masks.
    """
    missing = [k for k in a if k not in b or np.shape(b[k]) != np.shape(a[k])]
    if missing:
        raise ValueError(f"overlap: mask b has no tensor of the same shape for {missing}")
    kept = sum(int(np.count_nonzero(m)) for m in a.values())
    if kept == 0:
        raise ValueError("overlap: mask a keeps no entry")
    both = sum(int(np.count_nonzero((m != 0) & (b[k] != 0))) for k, m in a.items())
    return both / kept


def count_trained(param_shapes: dict[str, tuple[int, ...]],
                  masks: dict[str, np.ndarray] | None) -> int:
    """Trained parameters: sum(m) for masked tensors, every entry for the others."""
    masks = masks or {}
    return sum(int(masks[k].sum()) if k in masks else int(np.prod(s))
               for k, s in param_shapes.items())


def compression(param_shapes: dict[str, tuple[int, ...]],
                masks: dict[str, np.ndarray] | None) -> float:
    """Total parameters / trained parameters."""
    total = sum(int(np.prod(s)) for s in param_shapes.values())
    return total / count_trained(param_shapes, masks)


def density_report(model, masks: dict[str, np.ndarray] | None,
                   effective: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One row per parameter tensor: name, shape, total, trained, density, rate; with
    `effective` (the masks `effective` keeps), also the trained entries some path uses."""
    masks = masks or {}
    rows = []
    for name, shape in model.param_shapes().items():
        total = int(np.prod(shape))
        trained = int(masks[name].sum()) if name in masks else total
        rows.append({"name": name, "shape": list(shape), "total": total, "trained": trained,
                     "density": trained / total, "rate": 1 - trained / total,
                     "masked": name in masks})
        if effective is not None and name in masks:
            rows[-1]["effective"] = int(effective[name].sum())
    return rows


def effective(model, masks: Mapping[str, np.ndarray] | None) -> Masks | None:
    """The kept entries of a *pruned* network that some input-to-output path uses (Vysogorets &
    Kempe's effective sparsity): m_eff = m where the weight's input unit is reached from the
    input and its output unit reaches the output through kept weights, 0 elsewhere.

    Exact for fully connected layers. For a convolution it works at channel level: channel c
    feeds filter f when any entry of m[f, c] is kept, and a kept entry counts when its input
    channel is reached and its filter reaches the output (a kept entry that only ever meets
    zero padding still counts). Biases are not paths (a unit fed only by its bias carries no
    input), ReLU, max-pool and batch norm keep a unit's status, flatten spreads a channel's
    over its positions. Weights without a mask are dense. A frozen network needs none of this:
    its frozen weights are nonzero, so every trained entry is connected (`effective` of an
    all-ones mask keeps everything).
    """
    masks = as_masks(masks)
    if masks is None:
        return None
    shape = tuple(model.input_shape)
    alive = np.ones(shape[0], dtype=bool)   # units (or channels) the input reaches
    seen: list[tuple] = []                  # (layer, kept-connection matrix, shape before)
    ins: list[np.ndarray] = []              # alive units entering each weighted layer
    for ly in model.layers:
        w = f"{ly.name}.w"
        if ly.op in ("conv", "linear"):
            m = masks[w] if w in masks else np.ones(ly.param_shapes()[w], dtype=np.float32)
            link = (m != 0) if ly.op == "linear" else (m != 0).any(axis=(2, 3))  # (out, in)
            ins.append(alive)
            seen.append((ly, link, shape))
            alive = (link & alive[None, :]).any(axis=1)
        elif ly.op == "flatten":
            seen.append((ly, None, shape))
            alive = np.repeat(alive, int(np.prod(shape[1:])))  # a channel's status, per position
        shape = ly.output_shape(shape)
    reach = np.ones(alive.shape, dtype=bool)  # units that reach the output
    outs: dict[str, np.ndarray] = {}
    for ly, link, before in reversed(seen):
        if link is None:  # flatten: a channel reaches the output through any of its positions
            reach = reach.reshape(before[0], -1).any(axis=1)
            continue
        outs[ly.name] = reach
        reach = (link & reach[:, None]).any(axis=0)
    weighted = [ly for ly, link, _ in seen if link is not None]
    out = {}
    for ly, alive_in in zip(weighted, ins):
        w = f"{ly.name}.w"
        if w not in masks:
            continue
        m = masks[w]
        keep = alive_in[None, :] & outs[ly.name][:, None]  # (out, in)
        if m.ndim == 4:
            keep = keep[:, :, None, None]
        out[w] = (m * keep).astype(m.dtype)
    return Masks(out)
