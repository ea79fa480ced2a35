"""OpenSTL's E3DLSTM_Model (Eidetic 3D LSTM) on the recurrent wrapper (model.py).

Interface the family (__init__.py) uses: `E3DLSTM` (the Flax module), `check_config(cfg)`
(model-specific checks; returns the conv `stride`), `KEY_RULES` (Flax path -> OpenSTL key) and
`frame_rule(cfg)` (the always-on LayerNorm `_norm_c_t` fixes the frame grid).

States are 3-D: (B, 2, h, w, n) channels-last, a window of two time slots over the patch grid
(h, w) = (H/p, W/p). Step t:
  x3 = stack([net_{t-1}, net_t]) (net_{-1} = 0), (B, 2, h, w, p*p*C)
  for each layer i: hist_i gets c_i (before this step's update);
                    h_i, c_i = cell_i(x3 if i = 0 else h_{i-1}, h_i, c_i, gm = 0, hist_i)
  x_gen = conv_last(h_top), a Conv3d (2, 1, 1) with stride (2, 1, 1): (B, h, w, p*p*C)
Cell (x, h, c, gm, hist); every gate conv is a "tf_Conv3d" (below), bias-free:
  conv_h(h) -> i_h, g_h, r_h, o_h;  conv_x(x) -> i_x, g_x, r_x, o_x, ti_x, tg_x, tf_x
  c' = LN_c(c + Attn(sigma(r_x + r_h), hist)) + sigma(i_x + i_h) tanh(g_x + g_h)
  conv_gm(gm) -> i_m, f_m, g_m, m_m
  gm' = sigma(tf_x + f_m + 1) tanh(m_m) + sigma(ti_x + i_m) tanh(tg_x + g_m)
  h' = tanh(conv_last(cat[c', gm'])) * sigma(tanh(o_x + o_h + conv_new_cell(c') + conv_new_gm(gm')))

OpenSTL forward-pass quirks kept:
  * `filter_size` is ignored: the gate convs always have kernel (2, 5, 5), padding (0, 2, 2) and
    stride `stride` in all three axes; the cell's conv_last is 1x1x1 with stride 1.
  * tf_Conv3d = Conv3d, then PyTorch's F.interpolate(mode='nearest') back to the input's
    (2, h, w): source index floor(dst * in / out) in float32 (`nearest_resize`). The (2, 5, 5)
    kernel leaves one time slot, which the resize duplicates; with stride 2 the spatial grid is
    also computed at half resolution and resized back.
  * the global memory gm never updates: the cell returns its input gm, so gm is zero for the
    whole sequence (gm' only acts inside the step, conv_gm's weight has no effect; with
    layer_norm its LayerNorm bias does act).
  * eidetic attention: the history holds c of every step so far (nh*(t+1) channels in OpenSTL),
    and query / keys / values are raw row-major reshapes (n, 2, h, w) -> (2hw, n), not permutes,
    mixing channel and position indices; softmax(Q K^T) without scaling over all t+1 entries.
    Here the history is a fixed buffer of T+T'-1 entries and entries not yet written are
    masked out of the softmax (they get weight exactly 0), which gives the same result.
  * `_norm_c_t` (LayerNorm over (n, 2, h, w), eps 1e-5) exists whatever layer_norm says; with
    layer_norm = 1 each gate conv is followed by a LayerNorm over (C_out, 2, h, w).
  * every num_hidden must be equal (gm has num_hidden[0] channels and enters every layer).
  * loss: MSE + L1 of the T+T'-1 predictions (family `loss`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.convolutions import conv_general_dilated_by_backend
from tau_jax.models.layers import nearest_index, torch_default_kernel_init
from tau_jax.models.recurrent.model import RecurrentModel

FORGET_BIAS = 1.0
WINDOW = 2  # OpenSTL's window_length (window_stride 1)

KEY_RULES: list[tuple[str, str]] = [
    (r"^cell_list_(\d+)\.(conv_\w+?)_ln\.$", r"cell_list.\1.\2.1."),
    (r"^cell_list_(\d+)\.conv_last\.$", r"cell_list.\1.conv_last.conv3d."),
    (r"^cell_list_(\d+)\.(conv_\w+)\.$", r"cell_list.\1.\2.0.conv3d."),
    (r"^cell_list_(\d+)\.norm_c_t\.$", r"cell_list.\1._norm_c_t."),
]


def check_config(cfg) -> dict:
    """All widths equal; returns the gate convs' stride (OpenSTL's KTH config uses 2)."""
    widths = tuple(cfg.num_hidden) if not isinstance(cfg.num_hidden, str) else tuple(
        int(v) for v in cfg.num_hidden.split(",") if v.strip())
    if len(set(widths)) != 1:
        raise ValueError(f"model.num_hidden must use one width for every layer in e3dlstm (its "
                         f"global memory enters every layer), got {widths}.")
    s = cfg.stride
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise ValueError(f"model.stride must be a positive int for e3dlstm (its convs resize "
                         f"their output back to the state size), got {s!r}.")
    return {"stride": int(s)}


def frame_rule(cfg) -> tuple[int, str | None]:
    """Frames of exactly in_shape's size (`_norm_c_t` spans the patch grid whatever layer_norm)."""
    return int(cfg.patch_size), ("its LayerNorms (_norm_c_t, always on) have parameters over the "
                                 "whole frame grid")


def nearest_resize(x, size):
    """F.interpolate(x, size, mode='nearest') on the axes (1, 2, 3) of an NDHWC tensor."""
    for axis, out in zip((1, 2, 3), size):
        if x.shape[axis] != out:
            x = jnp.take(x, jnp.asarray(nearest_index(x.shape[axis], out)), axis=axis)
    return x


def grid_layer_norm(dtype, param_dtype, name):
    """PyTorch LayerNorm([C, 2, h, w]) on (B, 2, h, w, C): statistics and affine over all four."""
    axes = (-4, -3, -2, -1)
    return nn.LayerNorm(epsilon=1e-5, reduction_axes=axes, feature_axes=axes,
                        use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name)


class FoldedConv3d(nn.Module):
    """Bias-free nn.Conv with kernel (D, kh, kw) over (B, D_in, H, W, C), no depth padding,
    spatial stride `stride` and padding (kh // 2, kw // 2), with D = D_in (one output slot) or
    D = 1 (each slot alone), computed as a 2-D convolution of the slots stacked along channels
    or along the batch. Same parameter `kernel` (D, kh, kw, C, F), init and values as nn.Conv;
    the 2-D form gets XLA:CPU's fast gradient forms (`conv_general_dilated_by_backend`), where
    the 3-D kernel gradients inside the scan's backward loop took most of the train step."""

    features: int
    kernel_size: tuple[int, int, int]
    stride: int = 1
    dtype: object = None
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x):
        (d, kh, kw), (b, slots, h, w, c) = self.kernel_size, x.shape
        kernel = self.param("kernel", torch_default_kernel_init(),
                            (d, kh, kw, c, self.features), self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        if d == slots:  # one output slot: the D slots are D times the channels
            x2 = jnp.moveaxis(x, 1, 3).reshape(b, h, w, d * c)
            k2 = jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, d * c, self.features)
        elif d == 1:  # each slot alone: slots join the batch
            x2, k2 = x.reshape(b * slots, h, w, c), kernel[0]
        else:
            raise ValueError(f"FoldedConv3d takes kernel depth 1 or the input's ({slots}), got {d}.")
        s = self.stride
        y = conv_general_dilated_by_backend(x2, k2, (s, s), ((kh // 2,) * 2, (kw // 2,) * 2),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(b, slots // d, *y.shape[1:])


def _split(x, parts):
    return jnp.split(x, parts, axis=-1)


def raw_rows(x):
    """OpenSTL's `x.reshape(B, -1, n)` of a (B, n, 2, h, w) tensor, from our (B, 2, h, w, n)."""
    b, n = x.shape[0], x.shape[-1]
    return jnp.moveaxis(x, -1, 1).reshape(b, -1, n)


def raw_rows_back(rows, like_shape):
    """Inverse of `raw_rows`: (B, 2hw, n) -> (B, 2, h, w, n)."""
    b, d, h, w, n = like_shape
    return jnp.moveaxis(rows.reshape(b, n, d, h, w), 1, -1)


def eidetic_attention(query, hist, count):
    """softmax(Q K^T) V over the first `count` history entries: query (B, N, n) raw rows,
    hist (S, B, N, n) raw rows of the stored c's (keys = values)."""
    logits = jnp.einsum("bxc,kbyc->bxky", query, hist)
    valid = (jnp.arange(hist.shape[0]) < count)[None, None, :, None]
    logits = jnp.where(valid, logits, -jnp.inf)
    b, nq, s, ny = logits.shape
    attn = jax.nn.softmax(logits.reshape(b, nq, s * ny), axis=-1).reshape(b, nq, s, ny)
    return jnp.einsum("bxky,kbyc->bxc", attn, hist)


class Eidetic3DLSTMCell(nn.Module):
    """OpenSTL's Eidetic3DLSTMCell (module docstring). `__call__(x, h, c, gm, hist, count)
    -> (h', c')`; gm is returned unchanged by OpenSTL, so it is not returned here."""

    num_hidden: int
    stride: int = 1
    layer_norm: bool = False
    dtype: object = None
    param_dtype: object = jnp.float32

    def tf_conv(self, x, features, name, kernel=(2, 5, 5), stride=None, norm=True):
        s = self.stride if stride is None else stride
        y = FoldedConv3d(features, kernel, s, self.dtype, self.param_dtype, name=name)(x)
        y = nearest_resize(y, x.shape[1:4])
        if norm and self.layer_norm:
            y = grid_layer_norm(self.dtype, self.param_dtype, f"{name}_ln")(y)
        return y

    @nn.compact
    def __call__(self, x, h, c, gm, hist, count):
        n = self.num_hidden
        i_h, g_h, r_h, o_h = _split(self.tf_conv(h, 4 * n, "conv_h"), 4)
        i_x, g_x, r_x, o_x, ti_x, tg_x, tf_x = _split(self.tf_conv(x, 7 * n, "conv_x"), 7)
        i_t = nn.sigmoid(i_x + i_h)
        r_t = nn.sigmoid(r_x + r_h)
        g_t = jnp.tanh(g_x + g_h)
        recall = raw_rows_back(eidetic_attention(raw_rows(r_t), hist, count), r_t.shape)
        c_new = grid_layer_norm(self.dtype, self.param_dtype, "norm_c_t")(c + recall) + i_t * g_t

        i_m, f_m, g_m, m_m = _split(self.tf_conv(gm, 4 * n, "conv_gm"), 4)
        ti = nn.sigmoid(ti_x + i_m)
        tf = nn.sigmoid(tf_x + f_m + FORGET_BIAS)
        tg = jnp.tanh(tg_x + g_m)
        gm_new = tf * jnp.tanh(m_m) + ti * tg

        o_c = self.tf_conv(c_new, n, "conv_new_cell")
        o_m = self.tf_conv(gm_new, n, "conv_new_gm")
        gate = jnp.tanh(o_x + o_h + o_c + o_m)
        mem = self.tf_conv(jnp.concatenate([c_new, gm_new], axis=-1), n, "conv_last",
                           kernel=(1, 1, 1), stride=1, norm=False)
        return jnp.tanh(mem) * nn.sigmoid(gate), c_new


class E3DLSTM(RecurrentModel):
    """OpenSTL's E3DLSTM_Model (module docstring): a stack of Eidetic 3D LSTM cells over a
    two-frame window, read out by a stride-(2, 1, 1) Conv3d."""

    stride: int = 1

    def setup(self):
        self.cell_list = [Eidetic3DLSTMCell(n, self.stride, bool(self.layer_norm), self.dtype,
                                            self.param_dtype) for n in self.num_hidden]
        self.conv_last = FoldedConv3d(self.patch_grid[2], (WINDOW, 1, 1), 1, self.dtype,
                                      self.param_dtype)

    @property
    def num_steps(self) -> int:
        return int(self.in_shape[0]) + int(self.out_frames) - 1

    def _zero_state(self, batch, dtype):
        hp, wp, pc = self.patch_grid
        zeros = lambda n: jnp.zeros((batch, WINDOW, hp, wp, n), dtype)  # noqa: E731
        hs = tuple(zeros(n) for n in self.num_hidden)
        cs = tuple(zeros(n) for n in self.num_hidden)
        hist = tuple(jnp.zeros((self.num_steps, batch, WINDOW * hp * wp, n), dtype)
                     for n in self.num_hidden)
        prev = jnp.zeros((batch, hp, wp, pc), dtype)
        return hs, cs, hist, prev, jnp.zeros((), jnp.int32)

    def _step(self, carry, inputs, flipped):
        (hs, cs, hist, prev, t), x_gen = carry
        del flipped  # no kernel-gradient collectors (`_collecting_cells` is empty)
        frame, alpha, _ = inputs
        a = alpha[:, None, None, None]
        net = a * frame + (1 - a) * x_gen
        x3 = jnp.stack([prev, net], axis=1)
        hs, cs, hist = list(hs), list(cs), list(hist)
        gm = jnp.zeros(hs[0].shape[:-1] + (self.num_hidden[0],), hs[0].dtype)
        for i, cell in enumerate(self.cell_list):
            hist[i] = jax.lax.dynamic_update_index_in_dim(hist[i], raw_rows(cs[i]), t, 0)
            hs[i], cs[i] = cell(x3 if i == 0 else hs[i - 1], hs[i], cs[i], gm, hist[i], t + 1)
        x_gen = self.conv_last(hs[-1])[:, 0]
        state = (tuple(hs), tuple(cs), tuple(hist), net, t + 1)
        return (state, x_gen), (x_gen, ())
