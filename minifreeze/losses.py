"""Softmax cross-entropy, numerically stable, with its gradient.

    loss, dlogits = softmax_cross_entropy(logits, y)

loss = -(1/N) * sum_n log softmax(logits_n)[y_n]. Subtracting each row's maximum before
exponentiating changes nothing mathematically (softmax is shift-invariant) but keeps exp() from
overflowing, so logits of size 1e4 give a finite loss. The gradient is (softmax - onehot(y)) / N.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of (N, K) logits, stable for large values."""
    shifted = logits - logits.real.max(axis=1, keepdims=True)  # (N, K), max(row) = 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of (N, K) logits against integer labels y (N,) -> loss, dlogits (N, K)."""
    if np.ndim(logits) != 2:
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, K), "
                         f"got {np.shape(logits)}")
    n, k = logits.shape
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"softmax_cross_entropy: expected labels of shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"softmax_cross_entropy: labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {k}), "
                         f"got range [{y.min()}, {y.max()}]")
    logp = log_softmax(logits)  # (N, K)
    rows = np.arange(n)
    loss = -logp[rows, y].sum() / n
    dlogits = np.exp(logp)  # softmax, (N, K)
    dlogits[rows, y] -= 1
    dlogits /= n
    return loss, dlogits
