"""OpenSTL's PhyDNet_Model (Le Guen & Thome, "Disentangling Physical Dynamics from Unknown
Factors for Unsupervised Video Prediction", CVPR 2020) in Flax, NHWC, one `nn.scan` over the
T + T' - 1 steps.

One step E(x) (OpenSTL's `PhyD_EncoderRNN`, always called with decoding=False); the widths are
OpenSTL's hard-coded ones, only C, H, W, patch_size (2 or 4) and the lengths are configurable:
  encoder_E   c1 conv3x3 stride 2 (C -> 32), c2 conv3x3 (32 -> 32), c3 conv3x3 stride p/2
              (32 -> 64), each followed by GroupNorm(16) and LeakyReLU(0.2): latent (H/p, W/p, 64)
  encoder_Ep, encoder_Er   2 x [conv3x3 64 -> 64, GroupNorm(16), LeakyReLU(0.2)] each
  PhyCell (1 layer, 64 ch)  K = sigmoid(convgate([x_phys, H])) (3x3, 128 -> 64),
              H~ = H + conv2(GroupNorm(7)(conv1(H))) (conv1 7x7 64 -> 49, conv2 1x1 49 -> 64),
              H' = H~ + K (x_phys - H~)
  ConvLSTM    3 layers (128, 128, 64), 3x3: conv([x, h]) split i, f, o, g (in that order),
              c' = sigma(f) c + sigma(i) tanh(g), h' = sigma(o) tanh(c'); no forget bias
  decoder_Dp(H'), decoder_Dr(h'_top)   2 x [ConvT3x3 stride 1 pad 1 64 -> 64, GN(16), LReLU]
  output = sigmoid(decoder_D(Dp + Dr)): upc1 ConvT3x3 stride 2 output_padding 1 (64 -> 32), upc2
              ConvT3x3 stride 1 (32 -> 32) (each + GN(16) + LReLU), upc3 ConvT3x3 stride p/2
              (output_padding 1 when p = 4) 32 -> C, no activation before the sigmoid.
Step s (0 <= s < T + T' - 1) predicts frame s + 1 from input frame s (s < T) or, after the T
inputs, from the true frame s (teacher forcing) or its own previous output; the states start at
zero at s = 0 (OpenSTL resets them at its first encoder step).

OpenSTL quirks kept: the moment matrices of the constraint loss (`moment_loss`) are OpenSTL's
K2M; the partial reconstructions `out_phys` / `out_conv` OpenSTL also decodes every step are
never used by its loss or outputs and are not computed here (no parameter of theirs exists).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.convolutions import conv_general_dilated_by_backend
from tau_jax.models.layers import ConvTranspose2d, torch_default_conv

Dtype = Any
PHYCELL_CHANNELS = 64     # PhyCell input / state width (OpenSTL's input_dim)
F_HIDDEN = 49             # PhyCell conv1 width, one moment per (i, j) of its 7 x 7 kernel
F_KERNEL = 7
CONVLSTM_HIDDEN = (128, 128, 64)
ENCODER_WIDTH = 32        # encoder_E / decoder_D width nf


def _conv(features, kernel, in_features, stride, padding, dt, name):
    """PyTorch Conv2d with bias and its default init; on CPU its gradients through
    `conv_general_dilated_by_backend` (XLA:CPU's own kernel gradients inside the scan's backward
    loop: a train step at batch 2 took 25.7 s, 2.3 s with it)."""
    return nn.Conv(**torch_default_conv(features, (kernel, kernel), in_features),
                   strides=(stride, stride), padding=((padding, padding), (padding, padding)),
                   conv_general_dilated=conv_general_dilated_by_backend, name=name, **dt)


def _group_norm(groups, dt, name):
    """PyTorch GroupNorm(groups, C), eps 1e-5, statistics over (H, W, channels of the group)."""
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5, use_fast_variance=False, name=name, **dt)


class DcganConv(nn.Module):
    """OpenSTL's dcgan_conv: `main` = [conv3x3 (stride), GroupNorm(16), LeakyReLU(0.2)]."""

    features: int
    stride: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _conv(self.features, 3, x.shape[-1], self.stride, 1, dt, "main_0")(x)
        return nn.leaky_relu(_group_norm(16, dt, "main_1")(x), 0.2)


class DcganUpconv(nn.Module):
    """OpenSTL's dcgan_upconv: [ConvTranspose3x3 (stride, pad 1, output_padding 1 iff stride 2),
    GroupNorm(16), LeakyReLU(0.2)]."""

    features: int
    stride: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvTranspose2d(self.features, 3, self.stride, 1, int(self.stride == 2),
                            name="main_0", **dt)(x)
        return nn.leaky_relu(_group_norm(16, dt, "main_1")(x), 0.2)


class Encoder(nn.Module):
    """OpenSTL's PhyD_EncoderRNN without its two recurrent cells (those are the model's own
    `phycell` and `convcell`, as OpenSTL's canonical keys): `encode(x) -> (x_phys, x_conv)`,
    `decode(H_phys, h_conv) -> sigmoid(decoder_D(decoder_Dp(H_phys) + decoder_Dr(h_conv)))`."""

    channels: int
    patch_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        nf, s2 = ENCODER_WIDTH, self.patch_size // 2
        self.encoder_E = Stack((("c1", nf, 2), ("c2", nf, 1), ("c3", 2 * nf, s2)), False, **dt)
        self.encoder_Ep = Stack((("c1", 2 * nf, 1), ("c2", 2 * nf, 1)), False, **dt)
        self.encoder_Er = Stack((("c1", 2 * nf, 1), ("c2", 2 * nf, 1)), False, **dt)
        self.decoder_Dp = Stack((("upc1", 2 * nf, 1), ("upc2", 2 * nf, 1)), True, **dt)
        self.decoder_Dr = Stack((("upc1", 2 * nf, 1), ("upc2", 2 * nf, 1)), True, **dt)
        self.decoder_D = DecoderD(self.channels, self.patch_size, **dt)

    def encode(self, x):
        h = self.encoder_E(x)
        return self.encoder_Ep(h), self.encoder_Er(h)

    def decode(self, h_phys, h_conv):
        return nn.sigmoid(self.decoder_D(self.decoder_Dp(h_phys) + self.decoder_Dr(h_conv)))


class Stack(nn.Module):
    """Named dcgan_conv (`up` False) or dcgan_upconv blocks in turn: ((name, width, stride), ...)."""

    blocks: tuple
    up: bool
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        block = DcganUpconv if self.up else DcganConv
        for name, features, stride in self.blocks:
            x = block(features, stride, self.dtype, self.param_dtype, name=name)(x)
        return x


class DecoderD(nn.Module):
    """OpenSTL's decoder_D: upc1 (stride 2), upc2 (stride 1), then the bare ConvTranspose2d upc3
    (stride p/2, output_padding 1 iff p/2 = 2) to C channels."""

    channels: int
    patch_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s2 = self.patch_size // 2
        x = DcganUpconv(ENCODER_WIDTH, 2, name="upc1", **dt)(x)
        x = DcganUpconv(ENCODER_WIDTH, 1, name="upc2", **dt)(x)
        return ConvTranspose2d(self.channels, 3, s2, 1, int(s2 == 2), name="upc3", **dt)(x)


class PhyCellF(nn.Module):
    """OpenSTL's PhyCell_Cell.F: conv1 7x7 (64 -> 49, pad 3), bn1 = GroupNorm(7, 49), conv2 1x1."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = _conv(F_HIDDEN, F_KERNEL, h.shape[-1], 1, F_KERNEL // 2, dt, "conv1")(h)
        y = _group_norm(7, dt, "bn1")(y)
        return _conv(h.shape[-1], 1, F_HIDDEN, 1, 0, dt, "conv2")(y)


class PhyCellCell(nn.Module):
    """H' = H~ + K (x - H~) with H~ = H + F(H) and K = sigmoid(convgate([x, H]))."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, h):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        gate = _conv(x.shape[-1], 3, 2 * x.shape[-1], 1, 1, dt, "convgate")
        k = nn.sigmoid(gate(jnp.concatenate([x, h], axis=-1)))
        h_tilde = h + PhyCellF(name="F", **dt)(h)
        return h_tilde + k * (x - h_tilde)


class ConvLSTMCell(nn.Module):
    """OpenSTL's PhyD_ConvLSTM_Cell: conv3x3([x, h]) with bias, split i, f, o, g; no forget bias."""

    hidden: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, h, c):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = _conv(4 * self.hidden, 3, x.shape[-1] + self.hidden, 1, 1, dt, "conv")(
            jnp.concatenate([x, h], axis=-1))
        i, f, o, g = jnp.split(z, 4, axis=-1)
        c_new = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
        return nn.sigmoid(o) * jnp.tanh(c_new), c_new


class Cells(nn.Module):
    """`cell_list_<i>`: one PhyCell cell (`hidden` None) or the three ConvLSTM layers."""

    hidden: tuple | None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.hidden is None:
            self.cell_list = [PhyCellCell(**dt)]
        else:
            self.cell_list = [ConvLSTMCell(n, **dt) for n in self.hidden]

    def __call__(self, x, state):
        if self.hidden is None:
            return self.cell_list[0](x, state)
        hs, cs = list(state[0]), list(state[1])
        for j, cell in enumerate(self.cell_list):
            hs[j], cs[j] = cell(x if j == 0 else hs[j - 1], hs[j], cs[j])
        return tuple(hs), tuple(cs)


class PhyDNet(nn.Module):
    """`__call__(frames, teacher_forcing, train) -> images` (B, T + T' - 1, H, W, C): image s is
    the prediction of frame s + 1. `frames` are (B, T + T', H, W, C) for training, or the T inputs
    alone (pure autoregression after them). `teacher_forcing` (a 0/1 scalar, one for the whole
    call as OpenSTL's single draw) feeds the true frame s instead of image s - 1 at the steps
    s >= T; None or 0: the model's own outputs (OpenSTL's `inference`)."""

    in_shape: tuple[int, int, int, int]  # (T, H, W, C)
    out_frames: int
    patch_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.phycell = Cells(None, **dt)
        self.convcell = Cells(CONVLSTM_HIDDEN, **dt)
        self.encoder = Encoder(int(self.in_shape[3]), self.patch_size, **dt)

    def _step(self, carry, inputs):
        (h_phys, hs, cs), prev = carry
        frame, a = inputs
        x_phys, x_conv = self.encoder.encode(a * frame + (1 - a) * prev)
        h_phys = self.phycell(x_phys, h_phys)
        hs, cs = self.convcell(x_conv, (hs, cs))
        image = self.encoder.decode(h_phys, hs[-1])
        return ((h_phys, hs, cs), image), image

    def __call__(self, frames, teacher_forcing=None, train: bool = False):
        del train  # no mode-dependent layers
        t, h, w, c = (int(v) for v in self.in_shape)
        total = t + int(self.out_frames)
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (h, w, c) or frames.shape[1] not in (
                t, total):
            raise ValueError(f"PhyDNet expects frames (B, {t} or {total}, {h}, {w}, {c}) = the T "
                             f"inputs (+ the T' targets) per model.in_shape / out_frames, got "
                             f"{tuple(frames.shape)}.")
        dt = self.dtype or jnp.result_type(frames.dtype, self.param_dtype)
        frames = jnp.asarray(frames, dt)
        b = frames.shape[0]
        if frames.shape[1] < total:  # inference: the future is never fed
            frames = jnp.concatenate(
                [frames, jnp.zeros((b, total - t) + frames.shape[2:], dt)], axis=1)
        forced = jnp.zeros((), dt) if teacher_forcing is None else jnp.asarray(teacher_forcing, dt)
        alpha = jnp.concatenate([jnp.ones((t,), dt), jnp.broadcast_to(forced, (total - 1 - t,))])
        p = self.patch_size
        zeros = _zeros_of(b, h // p, w // p, dt)
        carry = ((zeros(PHYCELL_CHANNELS), tuple(zeros(n) for n in CONVLSTM_HIDDEN),
                  tuple(zeros(n) for n in CONVLSTM_HIDDEN)), jnp.zeros((b, h, w, c), dt))
        scan = nn.scan(type(self)._step, variable_broadcast="params",
                       split_rngs={"params": False}, in_axes=0, out_axes=0)
        _, images = scan(self, carry, (jnp.moveaxis(frames[:, :-1], 1, 0), alpha))
        return jnp.moveaxis(images, 0, 1)


def _zeros_of(b, gh, gw, dt):
    """n -> zeros (b, gh, gw, n): a state at a reset."""
    return lambda n: jnp.zeros((b, gh, gw, n), dt)


# ----------------------------------------------------------------------------------------------
# The moment constraint (OpenSTL's K2M and PhyDNet._get_constraints)
# ----------------------------------------------------------------------------------------------

def moment_matrix(size: int = F_KERNEL) -> np.ndarray:
    """OpenSTL's K2M matrix M[i, k] = (k - (size - 1) // 2) ** i / i!, float64 (`k2m._M0`)."""
    k = np.arange(size) - (size - 1) // 2
    return np.stack([k.astype(np.float64) ** i / math.factorial(i) for i in range(size)])


def constraints(size: int = F_KERNEL) -> np.ndarray:
    """(size^2, size, size) with [k, i, j] = 1 iff k = size * i + j (OpenSTL's constraints)."""
    return np.eye(size * size).reshape(size * size, size, size)


def moment_loss(conv1_kernel):
    """sum over PhyCell input channels b of MSE(K2M(W_b), constraints), W_b the (49, 7, 7) filters
    of conv1 on channel b (`conv1_kernel` is the Flax (7, 7, 64, 49) kernel). Computed in the
    kernel's dtype (at least float32): OpenSTL rounds K2M's output to float32 (`.float()`) even in
    a float64 run; that rounding is not copied."""
    dt = jnp.promote_types(conv1_kernel.dtype, jnp.float32)
    m = jnp.asarray(moment_matrix(conv1_kernel.shape[0]), dt)
    k2m = jnp.einsum("ai,ijbo,cj->boac", m, conv1_kernel.astype(dt), m,
                     precision=jax.lax.Precision.HIGHEST)
    diff = k2m - jnp.asarray(constraints(conv1_kernel.shape[0]), dt)
    return jnp.sum(jnp.mean(jnp.square(diff), axis=(1, 2, 3)))
