"""Hypothesis strategies: shapes, strides and paddings for layers, and arrays drawn from a seed.

Arrays come from a drawn seed through numpy's Generator (fast, shrinkable through the seed), and
are built to stay away from the non-differentiable points: ReLU inputs away from 0, max-pool
windows without ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)


def rng_from(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@dataclass(frozen=True)
class ConvCase:
    n: int
    c: int
    f: int
    h: int
    w: int
    kh: int
    kw: int
    stride: int
    pad: int

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self):
        return (self.f, self.c, self.kh, self.kw)

    def arrays(self, rng: np.random.Generator):
        """Standard normal float64 operands x, w, b of this convolution, drawn in that order."""
        return (rng.standard_normal(self.x_shape), rng.standard_normal(self.w_shape),
                rng.standard_normal(self.f))


@st.composite
def conv_cases(draw, max_n=2, max_c=3, max_f=3, max_k=4, max_stride=3, max_pad=2, max_out=4):
    """A valid convolution: the output size is a whole number by construction."""
    kh = draw(st.integers(1, max_k))
    kw = draw(st.integers(1, max_k))
    stride = draw(st.integers(1, max_stride))
    pad = draw(st.integers(0, max_pad))
    oh = draw(st.integers(1, max_out))
    ow = draw(st.integers(1, max_out))
    h = (oh - 1) * stride + kh - 2 * pad
    w = (ow - 1) * stride + kw - 2 * pad
    assume(h >= 1 and w >= 1)
    return ConvCase(draw(st.integers(1, max_n)), draw(st.integers(1, max_c)),
                    draw(st.integers(1, max_f)), h, w, kh, kw, stride, pad)


@st.composite
def pool_cases(draw, max_n=2, max_c=3, max_size=3, max_stride=3, max_out=4):
    """(x_shape, size, stride) for a max-pool whose windows tile the input exactly."""
    size = draw(st.integers(1, max_size))
    stride = draw(st.integers(1, max_stride))
    oh = draw(st.integers(1, max_out))
    ow = draw(st.integers(1, max_out))
    shape = (draw(st.integers(1, max_n)), draw(st.integers(1, max_c)),
             (oh - 1) * stride + size, (ow - 1) * stride + size)
    return shape, size, stride


def distinct_values(rng: np.random.Generator, shape, gap: float = 0.05) -> np.ndarray:
    """float64 array whose entries differ pairwise by at least `gap` (no max-pool ties)."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * gap - size * gap / 2).reshape(shape).astype(np.float64)


def away_from_zero(rng: np.random.Generator, shape, margin: float = 0.1) -> np.ndarray:
    """float64 array with |x| >= margin everywhere (ReLU stays off its kink under small steps)."""
    u = rng.standard_normal(shape)
    return np.sign(u + (u == 0)) * (margin + np.abs(u))
