"""The fast paths of a masked network, beside the textbook layers of `layers.py` (cs231n's
`fast_layers.py`): the same functions of the same inputs, computed over fewer entries.

    out, cache = conv_forward_pruned(x, w, b, stride, pad, index)   # a pruned weight's MaskIndex
    dx, dw, db = conv_backward_masked(dout, cache, w_mask=m, w_index=index)

- **Sampled weight gradients** (`*_backward_masked`): when a weight's mask m is sparse enough
  (density below the backend's `sparse_dw_density`: 10% on numba, 2% on numpy; the
  `sparse_dw_density` argument overrides it), dw is computed only at the mask's nonzeros (a
  sampled dense-dense product, `kernels().sampled_weight_grad`) instead of densely and then masked:
  a layer with 0.5% of its weights trainable skips 99.5% of its weight-gradient work. Otherwise it
  is the textbook dense gradient times m. Where m == 1 comes from `w_index` (a `masks.MaskIndex`,
  which a `masks.Masks` computed once and the model passes on every step) or, if it is not given,
  is found from `w_mask` on the spot.
- **Pruned products** (`*_forward_pruned`): for a weight whose m == 0 entries are exactly 0 (a
  pruned layer, never a frozen one), below the backend's `sparse_compute_density` the layer
  computes over the nonzeros only, equal to the dense layer to float rounding: a linear layer's
  forward product and input gradient become sparse times dense products
  (`kernels().sparse_matmul`, nnz * N multiply-adds instead of M * D * N); a convolution skips
  im2col altogether and adds, per nonzero, one shifted plane of its input to one output channel
  (`kernels().sparse_conv_forward`; backward gives the input gradient and the weight gradient at
  the nonzeros the same way). Above the threshold they are the textbook forward pass. Pruning
  saves compute this way; freezing cannot, since frozen weights take part in every product.

`models.Model` chooses these once per layer: a pruned weight's forward and any masked weight's
backward go through here, every other layer through `layers.py`. `tests/test_kernels.py` checks
each against the textbook pair.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minifreeze import backend
from minifreeze import layers as L
from minifreeze import winograd
from minifreeze.masks import MaskIndex


class PrunedLinearCache(NamedTuple):
    """A pruned linear layer's cache: the textbook one's fields and the kept entries' index."""
    x: np.ndarray  # (N, D)
    w: np.ndarray  # (M, D), exactly 0 off the index
    layer: str
    index: MaskIndex


class PrunedConvCache(NamedTuple):
    """A pruned convolution's cache: no im2col columns, the input itself and the index."""
    x: np.ndarray  # (N, C, H, W)
    w: np.ndarray  # (F, C, KH, KW), exactly 0 off the index
    stride: int
    pad: int
    layer: str
    index: MaskIndex


# --- sparse weight gradients -------------------------------------------------------------------

def _sparse_dw(d2, cols, w_shape, w_mask, w_index, sparse_dw_density):
    """dW (w_shape) from the sampled product at the mask's nonzeros, or None if the mask is
    dense enough for the dense product. d2 (F, P), cols (K, P): the dense dW is d2 @ cols.T."""
    k = backend.kernels()
    index = MaskIndex.of(w_mask) if w_index is None else w_index
    threshold = k.sparse_dw_density if sparse_dw_density is None else sparse_dw_density
    if index.density >= threshold:
        return None
    dw = np.zeros(w_shape, dtype=np.result_type(d2, cols))  # (F, ...) zeros off the mask
    dw.reshape(-1)[index.flat] = k.sampled_weight_grad(d2, cols, index.rows, index.cols)
    return dw


def _masked_dw(d2, cols, w_shape, w_mask, w_index, sparse_dw_density):
    """The weight gradient d2 @ cols.T (reshaped to w_shape), exactly 0 where m == 0."""
    dw = None
    if w_mask is not None:
        dw = _sparse_dw(d2, cols, w_shape, w_mask, w_index, sparse_dw_density)
    if dw is None:
        dw = (d2 @ cols.T).reshape(w_shape)  # (F, C, KH, KW) or (M, D)
        if w_mask is not None:
            dw *= w_mask
    return dw


def _sparse_index(index):
    """The MaskIndex to compute a pruned product with, or None when the dense product is better."""
    if index is None or index.density >= backend.kernels().sparse_compute_density:
        return None
    return index


def computes_sparsely(index: MaskIndex | None) -> bool:
    """Whether a pruned layer with these kept entries takes the sparse products here (below the
    backend's `sparse_compute_density`) rather than the dense ones."""
    return _sparse_index(index) is not None


def _sparse_product(w2, b2, index, *, transpose: bool = False):
    """w2 @ b2 (or w2.T @ b2) over the nonzeros at `index` only; w2 (F, K) is 0 elsewhere."""
    f, k = w2.shape
    vals = w2.reshape(-1)[index.flat]  # (nnz,)
    return backend.kernels().sparse_matmul(vals, index.rows, index.cols, k if transpose else f,
                                           b2, transpose=transpose)


# --- linear -------------------------------------------------------------------------------------

def linear_forward_pruned(x, w, b, index: MaskIndex, *, layer: str = "linear"):
    """`layers.linear_forward` for a weight that is exactly 0 off `index`: over the kept entries
    when they are few enough, else the textbook product (and its cache)."""
    index = _sparse_index(index)
    if index is None:
        return L.linear_forward(x, w, b, layer=layer)
    L.check_linear(layer, x, w, b)
    out = _sparse_product(w, np.ascontiguousarray(x.T), index).T + b  # (M, D) @ (D, N), seen (N, M)
    return out, PrunedLinearCache(x, w, layer, index)


def linear_backward_masked(dout, cache, *, w_mask=None, w_index=None, need_dx: bool = True,
                           sparse_dw_density: float | None = None):
    """`layers.linear_backward` with the sampled weight gradient, and for a pruned cache the
    input gradient over the kept entries: -> dx (N, D) (None if not need_dx), dw (M, D), db (M,)."""
    x, w, layer = cache[:3]
    index = cache.index if isinstance(cache, PrunedLinearCache) else None
    L.check_linear_dout(dout, x.shape, w.shape, layer)
    L.check_mask(layer, w_mask, w.shape)
    dw = _masked_dw(dout.T, x.T, w.shape, w_mask, w_index, sparse_dw_density)  # (M, N) @ (N, D)
    db = dout.sum(axis=0)  # (M,)
    dx = None
    if need_dx:
        dx = dout @ w if index is None else \
            _sparse_product(w, np.ascontiguousarray(dout.T), index, transpose=True).T  # (N, D)
    return dx, dw, db


# --- convolution --------------------------------------------------------------------------------

def conv_forward_pruned(x, w, b, stride: int = 1, pad: int = 0, index: MaskIndex | None = None,
                        *, layer: str = "conv"):
    """`layers.conv_forward` for a weight that is exactly 0 off `index`: straight from x over the
    kept entries (no im2col) when they are few enough, else the textbook convolution."""
    index = _sparse_index(index)
    if index is None:
        return L.conv_forward(x, w, b, stride, pad, layer=layer)
    L.check_conv(layer, x, w, b, stride, pad)
    vals = w.reshape(-1)[index.flat]  # (nnz,)
    out = backend.kernels().sparse_conv_forward(x, vals, index.rows, index.cols, w.shape,
                                                stride, pad)  # (N, F, OH, OW)
    out += b[None, :, None, None]
    return out, PrunedConvCache(x, w, stride, pad, layer, index)


def conv_backward_masked(dout, cache, *, w_mask=None, w_index=None, need_dx: bool = True,
                         sparse_dw_density: float | None = None):
    """`layers.conv_backward` with the sampled weight gradient, and for a pruned cache dx and dW
    at the kept entries straight from x: -> dx (N, C, H, W) (None if not need_dx), dw, db (F,)."""
    if isinstance(cache, PrunedConvCache):
        x, w, stride, pad, layer, index = cache
        x_shape = x.shape
    else:
        x_shape, cols, w, stride, pad, layer = cache
    f = w.shape[0]
    L.check_conv_dout(dout, x_shape, w.shape, stride, pad, layer)
    L.check_mask(layer, w_mask, w.shape)
    d2 = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (F, N*OH*OW); free if dout is stored so
    db = d2.sum(axis=1)  # (F,)
    if isinstance(cache, PrunedConvCache):  # dx and dW at the nonzeros, straight from x
        dx, dw_nz = backend.kernels().sparse_conv_backward(
            dout, x, w.reshape(-1)[index.flat], index.rows, index.cols, w.shape, stride, pad,
            need_dx)
        dw = np.zeros(w.shape, dtype=dw_nz.dtype)  # (F, C, KH, KW), 0 off the kept entries
        dw.reshape(-1)[index.flat] = dw_nz
        return dx, dw, db
    dw = _masked_dw(d2, cols, w.shape, w_mask, w_index, sparse_dw_density)  # (F, C, KH, KW)
    dx = L.conv_input_grad(d2, w, x_shape, stride, pad) if need_dx else None
    return dx, dw, db


# --- Winograd F(2x2, 3x3) -----------------------------------------------------------------------

class WinogradConvCache(NamedTuple):
    """A Winograd convolution's cache: the input, the weight, its transformed tiles V (what the
    im2col layer's columns are to its backward pass), the padding and the layer's name."""
    x: np.ndarray  # (N, C, H, W)
    w: np.ndarray  # (F, C, 3, 3)
    v: np.ndarray  # (16, C, P): B^T d B per (channel, 2x2 output tile)
    pad: int
    layer: str


def conv_forward_winograd(x, w, b, stride: int = 1, pad: int = 0, *, layer: str = "conv"):
    """`layers.conv_forward` for a 3x3 stride-1 convolution as Winograd's F(2x2, 3x3)
    (`winograd.py`): 16 products per 2x2 output tile instead of 36, rounding differently (its
    tests state by how much). The backend supplies the two tile transforms."""
    L.check_conv(layer, x, w, b, stride, pad)
    if not winograd.fits(w.shape, stride):
        raise ValueError(f"{layer}: the Winograd convolution needs 3x3 filters at stride 1, got "
                         f"{tuple(w.shape[2:])} at stride {stride}; build this layer with im2col")
    k = backend.kernels()
    out, v = winograd.conv_forward_v(x, w, b, pad, transforms=(k.winograd_input, k.winograd_output))
    return out, WinogradConvCache(x, w, v, pad, layer)


def conv_backward_winograd(dout, cache: WinogradConvCache, *, w_mask=None, w_index=None,
                           need_dx: bool = True):
    """-> dx (None if not need_dx), dw (exactly 0 where w_mask == 0), db: the adjoint of
    `conv_forward_winograd`. `w_index` is accepted for the masked backward's signature; the
    weight gradient is always the dense transformed product, then masked."""
    x, w, v, pad, layer = cache
    L.check_conv_dout(dout, x.shape, w.shape, 1, pad, layer)
    L.check_mask(layer, w_mask, w.shape)
    k = backend.kernels()
    dx, dw, db = winograd.conv_backward(dout, x, w, pad, v=v, need_dx=need_dx, transforms=(
        k.winograd_input, k.winograd_output_adjoint, k.winograd_input_adjoint))
    if w_mask is not None:
        dw *= w_mask
    return dx, dw, db
