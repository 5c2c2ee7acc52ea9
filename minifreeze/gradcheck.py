"""Numerical gradients to check analytic ones against, shipped so notebooks can use them too.

Central differences: df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h), error O(h^2) plus rounding
O(eps/h); in float64 with h = 1e-6 a correct backward pass agrees to a relative error of about
1e-7 or better. The complex step df/dx_i ~ Im f(x + i h e_i) / h has no subtraction, hence no
cancellation: with h = 1e-20 it is exact to machine precision, but only for functions that are
analytic (no max, no abs, no comparisons on the perturbed input).

    rel_error(analytic, numerical)   # max_i |a_i - n_i| / max(max_i |a_i| + max_i |n_i|, tiny)

rel_error is normwise (the largest difference over the largest magnitudes), so entries that are
zero up to rounding do not blow it up the way an elementwise ratio would.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                       h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of a scalar function f at x (x is perturbed in place, restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = float(f(x))
        x[i] = old - h
        fm = float(f(x))
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def numerical_gradient_array(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                             dout: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Gradient of sum(f(x) * dout) by central differences: checks a layer's backward for dout."""
    return numerical_gradient(lambda z: np.sum(f(z) * dout), x, h)


def complex_step_gradient(f: Callable[[np.ndarray], complex], x: np.ndarray,
                          h: float = 1e-20) -> np.ndarray:
    """Complex-step gradient Im f(x + i h e_i) / h of a real-analytic scalar function f."""
    xc = x.astype(np.complex128)
    grad = np.zeros(x.shape, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xc[i] += 1j * h
        grad[i] = np.imag(f(xc)) / h
        xc[i] -= 1j * h
    return grad


def rel_error(a: np.ndarray, b: np.ndarray, tiny: float = 1e-12) -> float:
    """Normwise relative error max|a - b| / max(max|a| + max|b|, tiny)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a)) + np.max(np.abs(b))), tiny)
    return float(np.max(np.abs(a - b)) / scale)
