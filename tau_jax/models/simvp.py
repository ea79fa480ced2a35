"""The SimVP frame: a per-frame conv encoder, a pluggable translator, a per-frame conv decoder.

Input and output are videos `(B, T, H, W, C)`. The encoder folds time into the batch, the
translator sees the latent video `(B, T, h, w, hid_S)` and the decoder upsamples back with
sub-pixel convolutions, adding the encoder's first-layer output as a skip. Predicting T' != T
frames follows OpenSTL's roll-out: the model is fed its own T-frame outputs until T' are made.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import chain_passes
from tau_jax.models.metaformer import pointwise

Dtype = Any


def sampling_strides(num_layers: int, reverse: bool = False) -> list[bool]:
    """OpenSTL's sampling_generator: every second layer down/up-samples ([F, T, F, T] for 4)."""
    flags = ([False, True] * (num_layers // 2))[:num_layers]
    return flags[::-1] if reverse else flags


def depth_to_space(x, block: int = 2):
    """(N, H, W, b*b*C) -> (N, b*H, b*W, C) with channel order (i*b + j)*C + c (TF's order)."""
    n, h, w, c = x.shape
    c_out = c // (block * block)
    x = x.reshape(n, h, w, block, block, c_out).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, c_out)


class ConvSC(nn.Module):
    """Conv (stride 2 when downsampling, x4 channels + pixel shuffle when upsampling) ->
    GroupNorm(2) -> SiLU, with OpenSTL's N(0, 0.02) weights and zero biases."""

    features: int
    kernel_size: int = 3
    downsample: bool = False
    upsample: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        stride = 2 if self.downsample else 1
        k = self.kernel_size
        pad = (k - stride + 1) // 2
        features = self.features * 4 if self.upsample else self.features
        x = nn.Conv(features, (k, k), strides=stride, padding=((pad, pad), (pad, pad)),
                    kernel_init=nn.initializers.normal(0.02), bias_init=nn.initializers.zeros,
                    dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
        if self.upsample:
            x = depth_to_space(x, 2)
        x = nn.GroupNorm(num_groups=2, epsilon=1e-5, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="norm")(x)
        return nn.silu(x)


class Encoder(nn.Module):
    """N_S ConvSC layers; returns the latent and the first layer's full-resolution output."""

    hid_S: int
    N_S: int
    kernel_size: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        skip = None
        for i, down in enumerate(sampling_strides(self.N_S)):
            x = ConvSC(self.hid_S, self.kernel_size, downsample=down, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"enc_{i}")(x)
            if i == 0:
                skip = x
        return x, skip


class Decoder(nn.Module):
    """N_S ConvSC layers mirroring the encoder; the last sees hidden + skip; 1x1 readout to C."""

    hid_S: int
    out_channels: int
    N_S: int
    kernel_size: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, skip):
        ups = sampling_strides(self.N_S, reverse=True)
        for i, up in enumerate(ups):
            if i == len(ups) - 1:
                x = x + skip
            x = ConvSC(self.hid_S, self.kernel_size, upsample=up, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"dec_{i}")(x)
        return pointwise(self.out_channels, self.hid_S, torch_init=True, name="readout",
                         dtype=self.dtype, param_dtype=self.param_dtype)(x)


class SimVP(nn.Module):
    """Encoder -> translator -> decoder, rolled out to `out_frames` frames.

    `translator` is an unbound module mapping `(B, T, h, w, hid_S)` to the same shape and taking
    a `train` flag (TAU, gSTA, IncepU, TimeSformer, TPS, ...).
    """

    in_shape: tuple[int, int, int, int]  # (T, H, W, C)
    hid_S: int
    N_S: int
    translator: nn.Module
    out_frames: int
    spatio_kernel_enc: int = 3
    spatio_kernel_dec: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        t, h, w, c = self.in_shape
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.enc = Encoder(self.hid_S, self.N_S, self.spatio_kernel_enc, **dt)
        self.dec = Decoder(self.hid_S, c, self.N_S, self.spatio_kernel_dec, **dt)

    def __call__(self, x, train: bool = False):
        """Predict `out_frames` future frames from `x` `(B, T, H, W, C)`."""
        if x.ndim != 5 or tuple(x.shape[1:]) != tuple(self.in_shape):
            raise ValueError(
                f"SimVP expects input frames of shape (B, {', '.join(map(str, self.in_shape))}) "
                f"= (B, T, H, W, C) per model.in_shape, got {tuple(x.shape)}.")
        return chain_passes(lambda window: self.predict_window(window, train), x, self.out_frames)

    def predict_window(self, x, train: bool):
        """One pass: T input frames -> the next T frames."""
        b, t, h, w, c = x.shape
        if self.dtype is not None:
            x = x.astype(self.dtype)
        latent, skip = self.enc(x.reshape(b * t, h, w, c))
        _, lh, lw, lc = latent.shape
        z = self.translator(latent.reshape(b, t, lh, lw, lc), train=train)
        y = self.dec(z.reshape(b * t, lh, lw, lc), skip)
        return y.reshape(b, t, h, w, c)
