"""Seed-based initialisation: one 32-bit seed regenerates every initial weight, bit for bit.

FreezeNet stores only the trained weights; the frozen ones are regenerated from the random seed
they were drawn from. That works only if the stream of random numbers is part of the file format:
the same (model, seed, scheme) must give the same theta0 on any machine and any NumPy version.
NumPy's own generators promise no such thing across versions, so this module writes its stream out:

1. **SplitMix64** (Steele, Lea, Flood 2014), a counter-based generator: the i-th 64-bit word is a
   fixed mixing function of `key + (i + 1) * 0x9E3779B97F4A7C15`, computed in NumPy uint64
   arithmetic (which wraps modulo 2**64). The key is the SplitMix64 mix of the seed.
2. **Uniforms** in (0, 1]: the top 53 bits of a word, plus one, times 2**-53.
3. **Box-Muller**: two uniforms u1, u2 give two standard normals
   `sqrt(-2 ln u1) * cos(2 pi u2)` and `sqrt(-2 ln u1) * sin(2 pi u2)`, in float64, then scaled by
   the scheme's standard deviation and rounded once to float32.

The counter runs through the randomly initialised tensors (conv and linear weights) in
`model.param_shapes()` order and continues from one tensor to the next; a tensor of n entries uses
2 * ceil(n / 2) words. Biases start at 0, batch-norm gamma at 1 and beta at 0, and draw nothing.

Schemes (fan_in = C*KH*KW or D, fan_out = F*KH*KW or M):
    xavier   std = sqrt(2 / (fan_in + fan_out))   (Glorot and Bengio 2010, normal; the default)
    kaiming  std = sqrt(2 / fan_in)               (He et al. 2015, normal, for ReLU)
    lecun    std = sqrt(1 / fan_in), truncated at 2 std (SNIP's code: TensorFlow's
             `variance_scaling_initializer()` of 2018, scale 1, fan_in, a truncated normal whose
             std is *not* corrected for the truncation, so the drawn spread is about 0.88 std)

Truncation, deterministically (`truncated_normal`): a tensor's n normals are drawn as above; the
entries with |z| > 2 are redrawn in index order from the next words of the same counter, round
after round, until none is left (each round rejects about 4.6%, so a few rounds suffice). The
counter then continues with the next tensor, so the redraws are part of the stream.

    theta0 = init_params(model, seed=42)                # {"conv1.w": float32 (20, 1, 5, 5), ...}
    assert all((init_params(model, 42)[k] == v).all() for k, v in theta0.items())

The only floating-point operations outside plain IEEE arithmetic are log, cos and sin in float64;
their last-bit differences between math libraries vanish when the result is rounded to float32 in
all but very rare cases. `tests/test_init.py` pins a few exact float32 values.
Notebook `03_seed_init` walks through this file.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("xavier", "kaiming", "lecun")
"""Initialisation schemes; the name is stored in `.mfz` headers."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 values (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def check_seed(seed) -> int:
    """The seed as an int in [0, 2**32), or a ValueError saying what was expected."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an integer in [0, 2**32), got {seed!r}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed: expected an integer in [0, 2**32), got {seed}")
    return int(seed)


def splitmix64(seed: int, start: int, count: int) -> np.ndarray:
    """Words start .. start+count-1 of the SplitMix64 stream keyed by `seed` -> uint64 (count,)."""
    key = _mix64(np.array([check_seed(seed)], dtype=np.uint64))[0]
    i = np.arange(start + 1, start + count + 1, dtype=np.uint64)  # (count,)
    with np.errstate(over="ignore"):
        return _mix64(key + i * _GOLDEN)


def uniform01(words: np.ndarray) -> np.ndarray:
    """uint64 words -> float64 uniforms in (0, 1] from their top 53 bits (never 0: log is safe)."""
    return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53


def standard_normal(seed: int, start: int, n: int) -> tuple[np.ndarray, int]:
    """n float64 standard normals by Box-Muller from words start, start+1, ...

    Returns (normals (n,), next_start). Pairs of words give pairs of normals: (cos, sin) for pair
    j fill positions 2j and 2j + 1.
    """
    pairs = (n + 1) // 2
    u = uniform01(splitmix64(seed, start, 2 * pairs)).reshape(pairs, 2)  # (pairs, 2)
    r = np.sqrt(-2.0 * np.log(u[:, 0]))  # (pairs,)
    phi = 2.0 * np.pi * u[:, 1]  # (pairs,)
    z = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1).reshape(-1)  # (2 * pairs,)
    return z[:n], start + 2 * pairs


TRUNCATE = 2.0
"""lecun: entries beyond this many standard deviations are redrawn (TensorFlow's truncated_normal)."""


def truncated_normal(seed: int, start: int, n: int, bound: float = TRUNCATE
                     ) -> tuple[np.ndarray, int]:
    """n float64 standard normals with |z| <= bound: rejected entries are redrawn, in index
    order, from the next words of the stream until none is left. Returns (normals (n,),
    next_start)."""
    if not bound > 0:
        raise ValueError(f"truncated_normal: expected a bound > 0, got {bound}")
    z, start = standard_normal(seed, start, n)  # (n,)
    bad = np.flatnonzero(np.abs(z) > bound)  # (k,) positions to redraw, ascending
    while bad.size:
        redraw, start = standard_normal(seed, start, bad.size)  # (k,)
        z[bad] = redraw
        bad = bad[np.abs(redraw) > bound]
    return z, start


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv (F, C, KH, KW) or linear (M, D) weight."""
    if len(shape) == 2:
        return shape[1], shape[0]
    if len(shape) == 4:
        receptive = shape[2] * shape[3]
        return shape[1] * receptive, shape[0] * receptive
    raise ValueError(f"fans: expected a weight of shape (M, D) or (F, C, KH, KW), got {shape}")


def init_std(shape: tuple[int, ...], scheme: str = "xavier") -> float:
    """The standard deviation of `scheme` for a weight of this shape."""
    fan_in, fan_out = fans(shape)
    if scheme == "xavier":
        return float(np.sqrt(2.0 / (fan_in + fan_out)))
    if scheme == "kaiming":
        return float(np.sqrt(2.0 / fan_in))
    if scheme == "lecun":
        return float(np.sqrt(1.0 / fan_in))
    raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def init_params(model, seed: int, scheme: str = "xavier") -> dict[str, np.ndarray]:
    """theta0: every parameter of `model` from one 32-bit seed, float32, in param_shapes order."""
    check_seed(seed)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    weights = set(model.weight_names())
    params: dict[str, np.ndarray] = {}
    counter = 0
    for name, shape in model.param_shapes().items():
        if name in weights:
            draw = truncated_normal if scheme == "lecun" else standard_normal
            z, counter = draw(seed, counter, int(np.prod(shape)))  # (n,)
            params[name] = (z * init_std(shape, scheme)).astype(np.float32).reshape(shape)
        elif name.endswith(".gamma"):
            params[name] = np.ones(shape, dtype=np.float32)
        else:
            params[name] = np.zeros(shape, dtype=np.float32)
    return params
