"""MMVP's parameter-free operations, NHWC, with PyTorch's exact semantics.

* `pixel_unshuffle` / `pixel_shuffle`: PyTorch's channel order c * r * r + i * r + j (MMVP's
  shuffles feed one another and the convs, so the order is kept rather than TF's).
* `resize_axis(x, axis, size, mode)`: F.interpolate along one axis as a (size x in) matrix.
  'bilinear' and 'bicubic' use align_corners=False and no antialiasing; bicubic has A = -0.75 and
  clamped border taps; its source coordinate is not clamped at 0, bilinear's is. `jax.image.resize`
  differs in all of these (it antialiases when shrinking and its cubic has A = -0.5). 'nearest'
  is PyTorch's legacy floor(dst * in / out) (`layers.nearest_index`).
* `similarity`, `softmax_all`, `sim_interpolate`, `compose`: the motion matrices.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from tau_jax.models.layers import nearest_index

A_CUBIC = -0.75  # PyTorch's bicubic constant


def pixel_unshuffle(x, r: int):
    """nn.PixelUnshuffle(r) on NHWC: (N, H, W, C) -> (N, H/r, W/r, C*r*r), PyTorch's order."""
    if r == 1:
        return x
    n, h, w, c = x.shape
    x = x.reshape(n, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, h // r, w // r, c * r * r)


def pixel_shuffle(x, r: int):
    """nn.PixelShuffle(r) on NHWC: (N, h, w, C*r*r) -> (N, h*r, w*r, C), PyTorch's order."""
    if r == 1:
        return x
    n, h, w, crr = x.shape
    c = crr // (r * r)
    x = x.reshape(n, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, h * r, w * r, c)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """PyTorch's four bicubic tap weights for fractional offsets t (taps at -1, 0, 1, 2)."""
    a = A_CUBIC

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def interp_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """(out_size, in_size) float64 matrix of F.interpolate(mode, align_corners=False) on one axis
    (the size-given form: scale = in / out)."""
    m = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if mode == "nearest":
        m[rows, nearest_index(in_size, out_size)] = 1.0
        return m
    if in_size == out_size:
        return np.eye(in_size)
    src = (rows + 0.5) * (in_size / out_size) - 0.5
    if mode == "bilinear":
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, in_size - 1)
        lam = src - i0
        np.add.at(m, (rows, i0), 1.0 - lam)
        np.add.at(m, (rows, i1), lam)
        return m
    if mode == "bicubic":
        i0 = np.floor(src).astype(np.int64)
        weights = _cubic_weights(src - i0)
        for k in range(4):
            np.add.at(m, (rows, np.clip(i0 - 1 + k, 0, in_size - 1)), weights[:, k])
        return m
    raise ValueError(mode)


def resize_axis(x, axis: int, size: int, mode: str):
    """F.interpolate(mode) along one axis of x."""
    if x.shape[axis] == size:  # PyTorch copies: every mode is the identity at equal size
        return x
    m = jnp.asarray(interp_matrix(x.shape[axis], size, mode), dtype=x.dtype)
    return jnp.moveaxis(jnp.tensordot(x, m, axes=([axis], [1])), -1, axis)


def resize2d(x, size, mode: str, axes=(1, 2)):
    """F.interpolate(x, size, mode) over two axes (NHWC: 1 and 2)."""
    for axis, s in zip(axes, size):
        x = resize_axis(x, axis, int(s), mode)
    return x


def similarity(g, b: int):
    """OpenSTL's build_similarity_matrix on NHWC features g (b*T, h, w, c): per frame pair
    (t, t+1), the cosine similarities of all positions, normalised by (|e| + 1e-6);
    (b, T-1, hw, hw) with rows the positions of frame t."""
    n, h, w, c = g.shape
    e = g.reshape(b, n // b, h * w, c)
    e = e / (jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True)) + 1e-6)
    return jnp.einsum("btpc,btqc->btpq", e[:, :-1], e[:, 1:])


def softmax_all(s):
    """sim_matrix_postprocess: softmax over all hw x hw entries of each (b, t) matrix."""
    b, t, p, q = s.shape
    flat = s.reshape(b, t, p * q)
    flat = jnp.exp(flat - jnp.max(flat, axis=-1, keepdims=True))
    return (flat / jnp.sum(flat, axis=-1, keepdims=True)).reshape(b, t, p, q)


def sim_interpolate(s, hw0, hw1):
    """OpenSTL's sim_matrix_interpolate: (b, t, h0w0, h0w0) -> (b, t, h1w1, h1w1), bilinear over
    the target positions (last two axes of the 6-D view), then bicubic over the source ones."""
    (h0, w0), (h1, w1) = hw0, hw1
    b, t = s.shape[:2]
    x = s.reshape(b, t, h0, w0, h0, w0)
    x = resize2d(x, (h1, w1), "bilinear", axes=(4, 5))
    x = resize2d(x, (h1, w1), "bicubic", axes=(2, 3))
    return x.reshape(b, t, h1 * w1, h1 * w1)


def compose(feats, sims, t_in: int, t_out: int):
    """OpenSTL's Compose.feat_compose for one level: feats (B*T_all, h, w, c) of which the first
    t_in frames of each clip are used, sims (B, t_in - 1 + t_out, hw, hw). Future frame k mixes
    all t_in frames i with the cumulative products A_i = M_i ... M_{t_in-2} F_k (OpenSTL's
    cum_multiply, F_k the k-th future matrix), normalised per target position by the weights'
    sum + 1e-6. Computed as F_k^T G / (F_k^T w + 1e-6) with G = sum_i P_i^T f_i and w = the
    column sums of the P_i (P_i = M_i ... M_{t_in-2}, P_{t_in-1} = I): the same sums (all terms
    are non-negative, so reassociation only moves the last bits) without the (T' T hw x hw)
    products. Returns (B*t_out, h, w, c)."""
    n, h, w, c = feats.shape
    b, hw = sims.shape[0], h * w
    f = feats.reshape(b, n // b, hw, c)[:, :t_in]
    g, wsum, chain = f[:, t_in - 1], jnp.ones((b, hw), sims.dtype), None
    for i in range(t_in - 2, -1, -1):
        chain = sims[:, i] if chain is None else jnp.einsum("bpq,bqr->bpr", sims[:, i], chain)
        g = g + jnp.einsum("bsq,bsc->bqc", chain, f[:, i])
        wsum = wsum + jnp.sum(chain, axis=1)
    fut = sims[:, t_in - 1:t_in - 1 + t_out]  # (B, T', hw src, hw tgt)
    out = jnp.einsum("bkqt,bqc->bktc", fut, g)
    out = out / (jnp.einsum("bkqt,bq->bkt", fut, wsum)[..., None] + 1e-6)
    return out.reshape(b * t_out, h, w, c)
