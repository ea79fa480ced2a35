"""MMVP's layers (NHWC), named as OpenSTL's modules so that the Flax path of every leaf is its
PyTorch state-dict key (a Sequential / ModuleList index is a submodule named by the digit).
Every conv has PyTorch's default init and 'same' padding k // 2."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.convolutions import conv_by_backend
from tau_jax.models.layers import BatchNorm, ConvTranspose2d, torch_default_conv
from tau_jax.models.mmvp import ops

Dtype = Any


def lrelu(x, slope: float = 0.01):
    """nn.LeakyReLU() (slope 0.01) unless told."""
    return nn.leaky_relu(x, slope)


class _Base(nn.Module):
    """Keyword-only dtypes (so subclasses take their own fields positionally), conv/BN helpers."""

    dtype: Dtype | None = dataclasses.field(default=None, kw_only=True)
    param_dtype: Dtype = dataclasses.field(default=jnp.float32, kw_only=True)

    def c(self, x, features, name, kernel=3, stride=1, bias=True, dims=2):
        """A PyTorch Conv2d (Conv3d with dims=3) child `name` applied to x: square kernel,
        padding k // 2, PyTorch's default init; 2-D ones through `conv_by_backend` (on CPU the
        C++ kernel gradient and the stride-2 input gradient's space-to-depth form: train step
        -18%)."""
        p = kernel // 2
        return nn.Conv(**torch_default_conv(features, (kernel,) * dims, x.shape[-1]),
                       strides=(stride,) * dims, padding=((p, p),) * dims, use_bias=bias,
                       dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                       conv_general_dilated=conv_by_backend)(x)

    def bn(self, x, train, name):
        return BatchNorm(use_running_average=not train, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=name)(x)

    @property
    def dt(self):
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)


class Seq0(_Base):
    """An nn.Sequential whose parameters sit at index 0: one conv (`conv_translate`,
    `temporal_layer` when T' = 1, ConvLayer's `conv`); the activation is the caller's."""

    features: int = 8
    kernel: int = 3
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        return self.c(x, self.features, "0", kernel=self.kernel, bias=self.bias)


class RDB(_Base):
    """ResidualDenseBlock_4C(nf, gc = nf // 2): three dense LReLU(0.2) convs, conv4 * 0.2 + x."""

    nf: int = 8

    @nn.compact
    def __call__(self, x):
        gc, cat = self.nf // 2, lambda *a: jnp.concatenate(a, -1)
        x1 = lrelu(self.c(x, gc, "conv1"), 0.2)
        x2 = lrelu(self.c(cat(x, x1), gc, "conv2"), 0.2)
        x3 = lrelu(self.c(cat(x, x1, x2), gc, "conv3"), 0.2)
        return self.c(cat(x, x1, x2, x3), self.nf, "conv4") * 0.2 + x


class RRDB(_Base):
    """RDB3(RDB2(RDB1(x))) * 0.2 + x."""

    nf: int = 8

    @nn.compact
    def __call__(self, x):
        out = x
        for i in (1, 2, 3):
            out = RDB(nf=self.nf, name=f"RDB{i}", **self.dt)(out)
        return out * 0.2 + x


class RRDBs(_Base):
    """nn.Sequential of `n` RRDBs (keys `<i>`), after an optional 3x3 conv at index 0 (the
    ImageEnhancer's `model`): indices then start at 1."""

    nf: int = 8
    n: int = 1
    first_conv: bool = False

    @nn.compact
    def __call__(self, x):
        if self.first_conv:
            x = self.c(x, self.nf, "0")
        for i in range(self.n):
            x = RRDB(nf=self.nf, name=str(i + int(self.first_conv)), **self.dt)(x)
        return x


class ResBlock(_Base):
    """OpenSTL's down-sampling ResBlock: LReLU(ReLU(conv2(ReLU(conv1 s2(x)))) + shortcut 1x1 s2),
    with a 2x2 max-pool before the LReLU when factor is 4."""

    features: int = 8
    factor: int = 2

    @nn.compact
    def __call__(self, x):
        shortcut = self.c(x, self.features, "shortcut", kernel=1, stride=2)
        y = nn.relu(self.c(x, self.features, "conv1", stride=2))
        y = nn.relu(self.c(y, self.features, "conv2")) + shortcut
        if self.factor == 4:
            y = nn.max_pool(y, (2, 2), (2, 2))
        return lrelu(y)


class ConvLayer(_Base):
    """ConvLayer(motion=False): Sequential(3x3 conv without bias, ReLU); `bn` has no effect."""

    features: int = 8

    @nn.compact
    def __call__(self, x):
        return nn.relu(Seq0(self.features, 3, False, name="conv", **self.dt)(x))


class Up(_Base):
    """Up(bilinear=False): ConvTranspose2d(k = stride = scale), zero-padded to x2's size and
    concatenated after x2 when given, then ConvLayer."""

    features: int = 8
    scale: int = 2

    @nn.compact
    def __call__(self, x1, x2=None):
        x1 = ConvTranspose2d(self.features, self.scale, self.scale, 0, 0, name="up",
                             **self.dt)(x1)
        if x2 is not None:
            dy, dx = x2.shape[1] - x1.shape[1], x2.shape[2] - x1.shape[2]
            x1 = jnp.pad(x1, ((0, 0), (dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))
            x1 = jnp.concatenate([x2, x1], -1)
        return ConvLayer(self.features, name="conv", **self.dt)(x1)


class ConvBnLrelu(_Base):
    """A Sequential of [conv3x3, BatchNorm, LReLU] x n (indices 0/1, 3/4, ...): filter_block.<i>
    (n = 3) and the unused hid.scale_fuser_2 (n = 2)."""

    features: int = 8
    n: int = 3

    @nn.compact
    def __call__(self, x, train):
        for i in range(0, 3 * self.n, 3):
            x = lrelu(self.bn(self.c(x, self.features, str(i)), train, str(i + 1)))
        return x


class Conv3D(_Base):
    """OpenSTL's Conv3D on (b, s, h, w, c): conv3d 3x3x3 pad 1 over (s, h, w), BatchNorm3d,
    LReLU."""

    features: int = 8

    @nn.compact
    def __call__(self, x, train):
        return lrelu(self.bn(self.c(x, self.features, "conv3d", dims=3), train, "bn3d"))


class DirectPredictor(_Base):
    """SimpleMatrixPredictor3DConv_direct on (b, T-1, h0, w0, hid_T) -> (b * T', h0, w0, hid_T).
    Its two `F.interpolate(size=...)` are PyTorch's legacy nearest; conv_translate is
    BN(LReLU(conv 1x1)) from the (T-1) * hid_T channels in PyTorch's (t, c) order."""

    fut_len: int = 1

    @nn.compact
    def __call__(self, x, train):
        b, s, h0, w0, c = x.shape
        x = x.reshape(b * s, h0, w0, c)
        x = lrelu(self.bn(self.c(x, c, "conv_pre_1"), train, "bn_pre_1"))
        x = lrelu(self.bn(self.c(x, c, "conv_pre_2"), train, "bn_pre_2"))
        x1 = lrelu(self.bn(self.c(x, c, "conv1_1", stride=2), train, "bn1_1"))
        _, h1, w1, _ = x1.shape
        x1 = Conv3D(c, name="conv3d_1", **self.dt)(x1.reshape(b, s, h1, w1, c), train)
        x1 = x1.transpose(0, 2, 3, 1, 4).reshape(b, h1, w1, s * c)
        x1 = Seq0(c * self.fut_len, 1, name="conv_translate", **self.dt)(x1)
        x1 = self.bn(lrelu(x1), train, "bn_translate")
        x1 = x1.reshape(b, h1, w1, self.fut_len, c).transpose(0, 3, 1, 2, 4)
        x1 = x1.reshape(b * self.fut_len, h1, w1, c)
        x2 = lrelu(self.bn(self.c(x1, 2 * c, "conv2_1", stride=2), train, "bn2_1"))
        _, h2, w2, _ = x2.shape
        if self.fut_len > 1:
            x2 = Conv3D(2 * c, name="temporal_layer", **self.dt)(
                x2.reshape(b, self.fut_len, h2, w2, 2 * c), train).reshape(x2.shape)
        else:
            x2 = lrelu(Seq0(2 * c, name="temporal_layer", **self.dt)(x2))
        x2 = ops.resize2d(x2, (h1, w1), "nearest")
        x3 = lrelu(self.bn(self.c(jnp.concatenate([x2, x1], -1), c, "conv3_1"), train, "bn3_1"))
        x3 = ops.resize2d(x3, (h0, w0), "nearest")
        return lrelu(self.bn(self.c(x3, c, "conv4_1"), train, "bn4_1"))


class PredictModel(_Base):
    """hid.predictor: each row of a past high-level matrix is an (h0, w0) image; conv1 (no bias)
    -> DirectPredictor over the T-1 past matrices -> out_conv (no bias): (B, T', hw0, hw0).
    `fuse_conv` (OpenSTL uses it only with a residual input it is never given) is created at
    init for parameter-count parity and never applied."""

    hid: int = 16
    fut_len: int = 1
    mat_hw: tuple = (4, 4)

    @nn.compact
    def __call__(self, m, train):
        b, s, hw, _ = m.shape
        h0, w0 = self.mat_hw
        x = self.c(m.reshape(b * s * hw, h0, w0, 1), self.hid, "conv1", bias=False)
        x = x.reshape(b, s, hw, h0, w0, self.hid).transpose(0, 2, 1, 3, 4, 5)
        x = DirectPredictor(self.fut_len, name="predictor", **self.dt)(
            x.reshape(b * hw, s, h0, w0, self.hid), train)
        if self.is_initializing():
            self.c(jnp.zeros((1, 1, 1, 2 * self.hid), x.dtype), self.hid, "fuse_conv",
                   bias=False)
        out = self.c(x, 1, "out_conv", bias=False)  # (b*hw*T', h0, w0, 1)
        return out.reshape(b, hw, self.fut_len, h0 * w0).transpose(0, 2, 1, 3)
