"""OpenSTL's MAU_Model (Motion-Aware Unit) on the recurrent wrapper (model.py).

Interface the family (__init__.py) uses: `MAU` (the Flax module), `check_config(cfg)` (returns
sr_size, tau, cell_mode, model_mode), `KEY_RULES` (Flax path -> OpenSTL key) and
`frame_rule(cfg)` (the always-on LayerNorms fix the frame grid).

MAU works on frames (patch_size 1). Step t, with n = log2(sr_size):
  f_0 = LeakyReLU_0.2(encoder 1x1 C -> nh (net)); f_k = LeakyReLU_0.2(3x3 stride-2 conv(f_{k-1}))
  S = f_n (B, H/sr, W/sr, nh)
  for each layer i: t_att, s_att = the last tau T's and S's of layer i (zeros at first)
                    S_hist_i += S;  T_i, S = cell_i(T_i, S, t_att, s_att);  T_hist_i += T_i
  out = S; decoders 0..n-1 (ConvTranspose2d 3x3, stride 2, pad 1, output_padding 1), LeakyReLU_0.2
  after all but the last ('recall' mode: out += f_{n-1-k} after decoder k); x_gen = srcnn(out) (1x1)
Cell (T, S, t_att, s_att): s_n = LN(conv_s_next(S)), t_n = LN(conv_t_next(T));
  w = softmax_k(sum_{h,w,c}(s_att[k] * s_n) / sqrt(nh * h * w)); T_trend = sum_k w_k t_att[k]
  T_f = T sigma(t_n) + (1 - sigma(t_n)) T_trend
  LN(conv_t(T_f)) -> t_g, t_t, t_s;  LN(conv_s(S)) -> s_g, s_t, s_s
  T' = sigma(t_g) t_t + (1 - sigma(t_g)) s_t;  S' = sigma(s_g) s_s + (1 - sigma(s_g)) t_s
  ('residual' cell_mode: S' += S)

OpenSTL forward-pass quirks kept:
  * `merge` (1x1, 2nh -> nh) and `conv_last_sr` (1x1, 2C -> C) are built but never used: kept as
    parameters (zero gradient) for parameter-count and checkpoint parity.
  * the cell convs have biases and are always followed by a LayerNorm over (C_out, H/sr, W/sr);
    `layer_norm` has no effect.
  * the histories are lists that start with tau zero tensors and grow by one per step; the cell
    sees the last tau entries, so zeros take part in the softmax for the first tau steps. Here
    they are fixed buffers of tau entries, oldest first, shifted by one per step.
  * no patching (patch_size 1) and no reverse scheduled sampling (OpenSTL's MAU method only has
    the standard schedule); every num_hidden must be equal (cell i's input width is
    num_hidden[i-1], cell 0's num_hidden[-1]).
The transposed convs' kernels are stored (kh, kw, out, in), PyTorch's (in, out, kh, kw) under
the family's conv transpose, and applied as PyTorch's ConvTranspose2d (`conv_transpose_torch`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.convolutions import conv_general_dilated_by_backend
from tau_jax.models.layers import ConvTranspose2d, torch_default_bias_init, torch_default_kernel_init
from tau_jax.models.recurrent.cells import _Unused, spatial_layer_norm
from tau_jax.models.recurrent.model import RecurrentModel

KEY_RULES: list[tuple[str, str]] = [
    (r"^cell_list_(\d+)\.(conv_\w+?)_ln\.$", r"cell_list.\1.\2.1."),
    (r"^cell_list_(\d+)\.(conv_\w+)\.$", r"cell_list.\1.\2.0."),
    (r"^encoders_0\.$", r"encoders.0.encoder_t_conv-1."),
    (r"^encoders_(\d+)_(encoder_t\d+)\.$", r"encoders.\1.\2."),
    (r"^decoders_(\d+)\.$", r"decoders.\1.c_decoder\1."),
    (r"^srcnn\.$", r"srcnn.0."),
]


def check_config(cfg) -> dict:
    """MAU's own fields; returns sr_size, tau, cell_mode and model_mode."""
    widths = tuple(cfg.num_hidden) if not isinstance(cfg.num_hidden, str) else tuple(
        int(v) for v in cfg.num_hidden.split(",") if v.strip())
    if len(set(widths)) != 1:
        raise ValueError(f"model.num_hidden must use one width for every layer in mau (each cell "
                         f"takes the previous layer's width), got {widths}.")
    if cfg.patch_size != 1:
        raise ValueError(f"model.patch_size must be 1 for mau (OpenSTL's MAU works on whole "
                         f"frames), got {cfg.patch_size!r}.")
    if cfg.reverse_scheduled_sampling:
        raise ValueError("model.reverse_scheduled_sampling must be 0 for mau (OpenSTL's MAU "
                         "method only has the standard schedule).")
    sr = cfg.get("sr_size")
    _, h, w, _ = (int(v) for v in cfg.in_shape)
    if (isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 1
            or sr & (sr - 1) or h % sr or w % sr):
        raise ValueError(f"model.sr_size must be a power of 2 that divides H and W = {h}, {w} "
                         f"for mau, got {sr!r}.")
    tau = cfg.get("tau")
    if isinstance(tau, bool) or not isinstance(tau, (int, np.integer)) or tau < 1:
        raise ValueError(f"model.tau must be a positive int for mau, got {tau!r}.")
    if cfg.get("cell_mode") not in ("normal", "residual"):
        raise ValueError(f"model.cell_mode must be 'normal' or 'residual' for mau, got "
                         f"{cfg.get('cell_mode')!r}.")
    if cfg.get("model_mode") not in ("normal", "recall"):
        raise ValueError(f"model.model_mode must be 'normal' or 'recall' for mau, got "
                         f"{cfg.get('model_mode')!r}.")
    return dict(sr_size=int(sr), tau=int(tau), cell_mode=str(cfg.cell_mode),
                model_mode=str(cfg.model_mode))


def frame_rule(cfg) -> tuple[int, str | None]:
    """Frames of exactly in_shape's size (the always-on LayerNorms span the H/sr x W/sr grid)."""
    return int(cfg.sr_size), ("its LayerNorms (always on) have parameters over the whole "
                              "frame grid")


def conv_bias(features, kernel, stride, padding, in_ch, dtype, param_dtype, name):
    """PyTorch Conv2d with bias (default init); on CPU its gradients through
    `conv_general_dilated_by_backend` (XLA:CPU's own kernel gradients inside the scan's backward
    loop: a small MAU's train step 1.04 s, 0.27 s with it)."""
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)),
                   kernel_init=torch_default_kernel_init(),
                   bias_init=torch_default_bias_init(in_ch * kernel * kernel), dtype=dtype,
                   param_dtype=param_dtype, conv_general_dilated=conv_general_dilated_by_backend,
                   name=name)


class MAUCell(nn.Module):
    """OpenSTL's MAUCell (module docstring). `__call__(T, S, t_att, s_att) -> (T', S')`,
    t_att / s_att (tau, B, h, w, n)."""

    num_hidden: int
    filter_size: int = 5
    cell_mode: str = "normal"
    dtype: object = None
    param_dtype: object = jnp.float32

    def gate(self, x, features, name):
        k = self.filter_size
        y = conv_bias(features, k, 1, k // 2, x.shape[-1], self.dtype, self.param_dtype, name)(x)
        return spatial_layer_norm(self.dtype, self.param_dtype, f"{name}_ln")(y)

    @nn.compact
    def __call__(self, t, s, t_att, s_att):
        n = self.num_hidden
        s_next = self.gate(s, n, "conv_s_next")
        t_next = self.gate(t, n, "conv_t_next")
        d = n * s.shape[1] * s.shape[2]
        weights = jnp.sum(s_att * s_next[None], axis=(2, 3, 4)) / math.sqrt(d)  # (tau, B)
        weights = jax.nn.softmax(weights, axis=0)[:, :, None, None, None]
        t_trend = jnp.sum(t_att * weights, axis=0)
        t_gate = nn.sigmoid(t_next)
        t_fusion = t * t_gate + (1 - t_gate) * t_trend
        t_g, t_t, t_s = jnp.split(self.gate(t_fusion, 3 * n, "conv_t"), 3, axis=-1)
        s_g, s_t, s_s = jnp.split(self.gate(s, 3 * n, "conv_s"), 3, axis=-1)
        tg, sg = nn.sigmoid(t_g), nn.sigmoid(s_g)
        t_new = tg * t_t + (1 - tg) * s_t
        s_new = sg * s_s + (1 - sg) * t_s
        if self.cell_mode == "residual":
            s_new = s_new + s
        return t_new, s_new


class MAU(RecurrentModel):
    """OpenSTL's MAU_Model (module docstring)."""

    sr_size: int = 4
    tau: int = 5
    cell_mode: str = "normal"
    model_mode: str = "normal"

    @property
    def levels(self) -> int:
        return int(self.sr_size).bit_length() - 1

    def setup(self):
        nh, c = self.num_hidden, self.patch_grid[2]
        dt, pd = self.dtype, self.param_dtype
        self.cell_list = [MAUCell(n, self.filter_size, self.cell_mode, dt, pd)
                          for n in nh]
        enc = [conv_bias(nh[0], 1, 1, 0, c, dt, pd, "encoders_0")]
        enc += [conv_bias(nh[0], 3, 2, 1, nh[0], dt, pd, f"encoders_{k + 1}_encoder_t{k}")
                for k in range(self.levels)]
        self.encoders = enc
        self.decoders = [ConvTranspose2d(nh[-1], dtype=dt, param_dtype=pd, name=f"decoders_{k}")
                         for k in range(self.levels)]
        self.srcnn = conv_bias(c, 1, 1, 0, nh[-1], dt, pd, "srcnn")
        self.merge = _Unused((("kernel", (1, 1, 2 * nh[-1], nh[-1]), "torch"),
                              ("bias", (nh[-1],), "zeros")), pd)
        self.conv_last_sr = _Unused((("kernel", (1, 1, 2 * c, c), "torch"),
                                     ("bias", (c,), "zeros")), pd)

    def _zero_state(self, batch, dtype):
        _, h, w, _ = self.in_shape
        hs, ws = h // self.sr_size, w // self.sr_size
        zeros = lambda *lead: tuple(jnp.zeros(lead + (batch, hs, ws, n), dtype)  # noqa: E731
                                    for n in self.num_hidden)
        return zeros(), zeros(self.tau), zeros(self.tau)

    def _step(self, carry, inputs, flipped):
        (ts, t_hist, s_hist), x_gen = carry
        del flipped  # no kernel-gradient collectors (`_collecting_cells` is empty)
        frame, alpha, _ = inputs
        a = alpha[:, None, None, None]
        net = a * frame + (1 - a) * x_gen
        if self.is_initializing():  # create the unused parameters
            self.merge()
            self.conv_last_sr()
        feats = []
        for enc in self.encoders:
            net = nn.leaky_relu(enc(net), 0.2)
            feats.append(net)
        s = feats[-1]
        ts, t_hist, s_hist = list(ts), list(t_hist), list(s_hist)
        for i, cell in enumerate(self.cell_list):
            t_att, s_att = t_hist[i], s_hist[i]
            s_hist[i] = jnp.concatenate([s_hist[i][1:], s[None]], axis=0)
            ts[i], s = cell(ts[i], s, t_att, s_att)
            t_hist[i] = jnp.concatenate([t_hist[i][1:], ts[i][None]], axis=0)
        out = s
        for k, dec in enumerate(self.decoders):
            out = dec(out)
            if k < self.levels - 1:
                out = nn.leaky_relu(out, 0.2)
            if self.model_mode == "recall":
                out = out + feats[-2 - k]
        x_gen = self.srcnn(out)
        return ((tuple(ts), tuple(t_hist), tuple(s_hist)), x_gen), (x_gen, ())
