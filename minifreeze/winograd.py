"""Winograd's F(2x2, 3x3): a 3x3 stride-1 convolution with 16 multiplications per 2x2 output tile
instead of 36 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).

The convolution of a 4x4 input tile d with a 3x3 filter g, 2x2 outputs, is

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* element-wise, 4x4)

with the three small matrices below. Over a whole layer: U = G g G^T for every (filter, channel),
V = B^T d B for every (channel, tile), then for each of the 16 positions (xi, nu) of the 4x4
transformed tile one matrix product M[xi, nu] = U[xi, nu] @ V[xi, nu] (F x C times C x P, P the
tiles of all images) sums over the channels, and Y = A^T M A gives every 2x2 output tile. The
tiles overlap by 2 pixels (stride 2); an odd output size is padded by one and cropped.

The backward pass is the adjoint of each step, in reverse (a transpose for every linear map):

    dM = A dY A^T,   dU = dM @ V^T (summed over tiles),   dw = G^T dU G,
    dV = U^T @ dM,   dd = B dV B^T, added back onto the overlapping tiles (like col2im),

so dx and dw are the exact gradients of this forward pass: in exact arithmetic the same as
im2col's. In floating point they round differently: the transforms add and subtract up to 9
values before the products. F(2x2, 3x3) is the mildest Winograd variant (every transform entry is
0, +-1 or +-0.5, exact in binary), and on standard-normal data its float32 error against a float64
reference measured 0.6e-7 to 1.4e-7 (im2col's: 0.4e-7 to 2.6e-7), for layers of 2 to 16 channels;
`tests/test_winograd.py` states the tolerance it allows and why.

    out = conv_forward(x, w, b, pad=1)            # x (N, C, H, W), w (F, C, 3, 3)
    dx, dw, db = conv_backward(dout, x, w, pad=1)

This is the reference: `kernels_numba.winograd_input_transform` and `winograd_output_transform`
are its transforms as compiled loops, which the numba backend uses. A model runs its 3x3
convolutions this way when built with `conv="winograd"` (`models.get_model("vgg",
conv="winograd")`, `--conv winograd`; `fast_layers.conv_forward_winograd`); the default stays
im2col, whose rounding every committed result was computed with.
"""

from __future__ import annotations

import numpy as np

BT = np.array([[1, 0, -1, 0],
               [0, 1, 1, 0],
               [0, -1, 1, 0],
               [0, 1, 0, -1]], dtype=np.float64)  # (4, 4): B^T, the input transform
G = np.array([[1, 0, 0],
              [0.5, 0.5, 0.5],
              [0.5, -0.5, 0.5],
              [0, 0, 1]], dtype=np.float64)  # (4, 3): the filter transform
AT = np.array([[1, 1, 1, 0],
               [0, 1, -1, -1]], dtype=np.float64)  # (2, 4): A^T, the output transform


def fits(w_shape, stride: int = 1) -> bool:
    """Whether F(2x2, 3x3) computes this convolution: 3x3 filters at stride 1."""
    return tuple(w_shape[2:]) == (3, 3) and stride == 1


def _check(x_shape, w_shape, pad: int) -> tuple[int, int, int, int]:
    """(OH, OW, TH, TW): the output size and the 2x2 tiles per column and row."""
    if len(x_shape) != 4 or len(w_shape) != 4 or x_shape[1] != w_shape[1]:
        raise ValueError(f"winograd: expected x (N, C, H, W) and w (F, C, 3, 3) with the same C, "
                         f"got {tuple(x_shape)} and {tuple(w_shape)}")
    if not fits(w_shape):
        raise ValueError(f"winograd: F(2x2, 3x3) needs 3x3 filters, got {tuple(w_shape[2:])}")
    oh, ow = x_shape[2] + 2 * pad - 2, x_shape[3] + 2 * pad - 2
    if pad < 0 or oh < 1 or ow < 1:
        raise ValueError(f"winograd: pad {pad} on {tuple(x_shape[2:])} leaves no output")
    return oh, ow, (oh + 1) // 2, (ow + 1) // 2


def _tiles(x: np.ndarray, pad: int, th: int, tw: int) -> np.ndarray:
    """The overlapping 4x4 input tiles, stride 2: (N, C, TH, TW, 4, 4) (a copy)."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)  # padded, even-sized
    xp[:, :, pad:pad + h, pad:pad + w] = x
    win = np.lib.stride_tricks.sliding_window_view(xp, (4, 4), axis=(2, 3))
    return np.ascontiguousarray(win[:, :, ::2, ::2])  # (N, C, TH, TW, 4, 4)


def filter_transform(w: np.ndarray) -> np.ndarray:
    """U = G g G^T for every (filter, channel): (4, 4, F, C)."""
    g = G.astype(w.dtype)
    return np.einsum("ik,fckl,jl->ijfc", g, w, g, optimize=True)


def tiles_for(x_shape, w_shape, pad: int) -> tuple[int, int, int, int]:
    """(OH, OW, TH, TW) of a convolution F(2x2, 3x3) can compute (ValueError otherwise)."""
    return _check(x_shape, w_shape, pad)


def input_transform(x: np.ndarray, pad: int, th: int, tw: int) -> np.ndarray:
    """V = B^T d B for every (channel, tile): (4, 4, C, P), P = N * TH * TW (image-major)."""
    bt = BT.astype(x.dtype)
    d = _tiles(x, pad, th, tw)  # (N, C, TH, TW, 4, 4)
    v = np.einsum("ik,nctukl,jl->ijcntu", bt, d, bt, optimize=True)  # (4, 4, C, N, TH, TW)
    return v.reshape(4, 4, x.shape[1], -1)


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int = 0, *,
                 transforms=None) -> np.ndarray:
    """The 3x3 stride-1 convolution of x (N, C, H, W) with w (F, C, 3, 3) and bias b (F,):
    (N, F, OH, OW), as F(2x2, 3x3)."""
    return conv_forward_v(x, w, b, pad, transforms=transforms)[0]


def conv_forward_v(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int = 0, *,
                   transforms=None) -> tuple[np.ndarray, np.ndarray]:
    """(out, V): `conv_forward` and its transformed input tiles V (16, C, P), which the backward
    pass needs again (a layer keeps them in its cache, as im2col's layer keeps its columns).
    `transforms`: (input_transform, output_transform) with the signatures of the reference
    functions below reshaped to (16, C, P) and from (16, F, P), e.g. the compiled loops of
    `kernels_numba`; None: the reference."""
    oh, ow, th, tw = _check(x.shape, w.shape, pad)
    n, f = x.shape[0], w.shape[0]
    fin, fout = transforms or (input_transform, output_transform)
    u = filter_transform(w).reshape(16, f, -1)  # (16, F, C)
    v = fin(x, pad, th, tw).reshape(16, x.shape[1], -1)  # (16, C, P)
    m = np.matmul(u, v)  # the 16 GEMMs: (16, F, P)
    return fout(m, n, th, tw, oh, ow) + b.reshape(1, -1, 1, 1), v


def output_transform(m: np.ndarray, n: int, th: int, tw: int, oh: int, ow: int) -> np.ndarray:
    """Y = A^T M A for every (filter, tile) of the 16 products m (16, F, P), assembled into the
    output (N, F, OH, OW) (an odd size's extra row or column cropped)."""
    f = m.shape[1]
    at = AT.astype(m.dtype)
    y = np.einsum("ik,klfntu,jl->nftiuj", at, m.reshape(4, 4, f, n, th, tw), at,
                  optimize=True)  # (N, F, TH, 2, TW, 2)
    return y.reshape(n, f, 2 * th, 2 * tw)[:, :, :oh, :ow]


def output_adjoint(dout: np.ndarray, th: int, tw: int) -> np.ndarray:
    """dM = A dY A^T for every (filter, tile): the adjoint of `output_transform`, from dout
    (N, F, OH, OW) to (16, F, P) (an odd size's missing row or column read as 0)."""
    n, f, oh, ow = dout.shape
    dy = np.zeros((n, f, th, 2, tw, 2), dtype=dout.dtype)  # the output tiles, odd sizes padded
    dy.reshape(n, f, 2 * th, 2 * tw)[:, :, :oh, :ow] = dout
    a = AT.T.astype(dout.dtype)  # (4, 2): A
    return np.einsum("ik,nftkul,jl->ijfntu", a, dy, a, optimize=True).reshape(16, f, -1)


def input_adjoint(dv: np.ndarray, x_shape, pad: int, th: int, tw: int) -> np.ndarray:
    """dd = B dV B^T for every (channel, tile), each 4x4 tile added back where it was read (the
    tiles overlap by 2: col2im's job): the adjoint of `input_transform`, (16, C, P) -> dx
    (N, C, H, W)."""
    n, c, h, wd = x_shape
    bt = BT.astype(dv.dtype)
    dd = np.einsum("ki,klcntu,lj->ncijtu", bt, dv.reshape(4, 4, c, n, th, tw), bt,
                   optimize=True)  # B dV B^T: (N, C, 4, 4, TH, TW)
    dxp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), dtype=dv.dtype)
    for i in range(4):
        for j in range(4):
            dxp[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] += dd[:, :, i, j]
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + wd])


def conv_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, pad: int = 0, *,
                  v: np.ndarray | None = None, need_dx: bool = True, transforms=None):
    """(dx, dw, db) of `conv_forward`: each step's adjoint in reverse (see the module docstring).
    `v`: the forward pass's transformed tiles (16, C, P) (`conv_forward_v`), else recomputed;
    dx is None when not `need_dx` (the first layer's is never used). `transforms`:
    (input_transform, output_adjoint, input_adjoint) with the reference signatures, e.g. the
    compiled loops of `kernels_numba`; None: the reference."""
    oh, ow, th, tw = _check(x.shape, w.shape, pad)
    n, c = x.shape[:2]
    f = w.shape[0]
    if dout.shape != (n, f, oh, ow):
        raise ValueError(f"winograd: dout expected {(n, f, oh, ow)}, got {dout.shape}")
    fin, fout_adj, fin_adj = transforms or (input_transform, output_adjoint, input_adjoint)
    dm = fout_adj(dout, th, tw)  # A dY A^T: (16, F, P)
    if v is None:
        v = fin(x, pad, th, tw)
    v = v.reshape(16, c, -1)  # (16, C, P)
    du = np.matmul(dm, v.transpose(0, 2, 1)).reshape(4, 4, f, c)  # dM V^T: (4, 4, F, C)
    g = G.astype(w.dtype)
    dw = np.einsum("ki,klfc,lj->fcij", g, du, g, optimize=True)  # G^T dU G: (F, C, 3, 3)
    db = dout.sum(axis=(0, 2, 3))
    if not need_dx:
        return None, dw, db
    u = filter_transform(w).reshape(16, f, c)  # (16, F, C)
    dv = np.matmul(u.transpose(0, 2, 1), dm)  # U^T dM: (16, C, P)
    return fin_adj(dv, x.shape, pad, th, tw), dw, db


def multiplications(x_shape, w_shape, pad: int = 0) -> tuple[int, int]:
    """(multiply-adds of the 16 GEMMs, of im2col's one GEMM) for a forward pass: the saving
    Winograd buys, 36/16 = 2.25x for output sizes that are even."""
    oh, ow, th, tw = _check(x_shape, w_shape, pad)
    n, c, f = x_shape[0], x_shape[1], w_shape[0]
    return 16 * f * c * n * th * tw, 9 * f * c * n * oh * ow
