"""Comparison of analytic and numerical gradients with a noise floor.

Central differences in float64 carry an absolute error of about eps * |f| / h (rounding) on top of
the O(h^2) truncation error, so a gradient that is tiny compared to f itself cannot be checked to a
relative 1e-7. We accept max|a - n| <= atol + rtol * max(max|a|, max|n|), numpy's convention.
"""

import numpy as np


def assert_grad_close(analytic, numerical, rtol: float = 1e-7, atol: float = 1e-9, what: str = ""):
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numerical, dtype=np.float64)
    assert a.shape == n.shape, f"{what}: shapes differ, {a.shape} vs {n.shape}"
    err = float(np.max(np.abs(a - n))) if a.size else 0.0
    scale = float(max(np.max(np.abs(a)), np.max(np.abs(n)))) if a.size else 0.0
    assert err <= atol + rtol * scale, f"{what}: max abs error {err:.3g} at gradient scale {scale:.3g}"
