"""IncepU, the U-shaped Inception translator of SimVP v1 (OpenSTL model_type 'IncepU').

Encoder and decoder stacks of gInception_ST modules, the decoder fed the concatenation
[z, skip] of mirrored encoder outputs. Time is folded into channels (index t*C + c) as in
OpenSTL. All layers keep PyTorch's default init.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import torch_default_conv
from tau_jax.models.translators.metaformer import pointwise

Dtype = Any


class GroupConv(nn.Module):
    """kxk grouped conv -> GroupNorm(groups) -> LeakyReLU(0.2); groups fall back to 1 if the
    input width is not divisible by them (as OpenSTL's GroupConv2d)."""

    features: int
    kernel_size: int
    groups: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        groups = self.groups if x.shape[-1] % self.groups == 0 else 1
        k, p = self.kernel_size, self.kernel_size // 2
        x = nn.Conv(padding=((p, p), (p, p)), name="conv", dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    **torch_default_conv(self.features, (k, k), x.shape[-1], groups))(x)
        x = nn.GroupNorm(num_groups=groups, epsilon=1e-5, name="norm", dtype=self.dtype,
                         param_dtype=self.param_dtype)(x)
        return nn.leaky_relu(x, 0.2)


class InceptionST(nn.Module):
    """gInception_ST: 1x1 to `hidden`, then the sum of grouped convs with several kernel sizes."""

    hidden: int
    features: int
    kernels: Sequence[int] = (3, 5, 7, 11)
    groups: int = 8
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = pointwise(self.hidden, x.shape[-1], torch_init=True, name="conv1", **dt)(x)
        out = 0
        for i, k in enumerate(self.kernels):
            out = out + GroupConv(self.features, k, self.groups, name=f"layers_{i}", **dt)(x)
        return out


class IncepUTranslator(nn.Module):
    """OpenSTL's MidIncepNet on the time-folded latent video."""

    hid_T: int
    N_T: int
    kernels: Sequence[int] = (3, 5, 7, 11)
    groups: int = 8
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, train: bool = False):
        del train  # no mode-dependent layers
        b, t, h, w, c = z.shape
        x = z.transpose(0, 2, 3, 1, 4).reshape(b, h, w, t * c)
        block = lambda features, name: InceptionST(self.hid_T // 2, features, self.kernels,
                                                   self.groups, name=name, dtype=self.dtype,
                                                   param_dtype=self.param_dtype)
        skips = []
        for i in range(self.N_T):
            x = block(self.hid_T, f"enc_{i}")(x)
            if i < self.N_T - 1:
                skips.append(x)
        x = block(self.hid_T, "dec_0")(x)
        for i in range(1, self.N_T):
            features = self.hid_T if i < self.N_T - 1 else t * c
            x = block(features, f"dec_{i}")(jnp.concatenate([x, skips[-i]], axis=-1))
        return x.reshape(b, h, w, t, c).transpose(0, 3, 1, 2, 4)


def translator(cfg, **dtypes) -> IncepUTranslator:
    """The IncepU translator for a model config."""
    return IncepUTranslator(hid_T=cfg.hid_T, N_T=cfg.N_T, **dtypes)
