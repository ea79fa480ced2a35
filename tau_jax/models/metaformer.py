"""The MetaFormer-style translator shared by TAU and gSTA (OpenSTL's MidMetaNet).

A translator maps the encoder's latent video `(B, T, h, w, C)` to one of the same shape. The
MetaFormer translator folds time into channels (channel index t*C + c, as OpenSTL), runs N_T
blocks `x + DropPath(ls1 * attn(BN(x)))`, `x + DropPath(ls2 * MixMlp(BN(x)))` and unfolds.
TAU and gSTA differ only in the attention module they plug in (tau.py, gsta.py).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import (BatchNorm, DepthwiseConv, DropPath, drop_path_rates,
                                   fan_out_normal_init, gelu, torch_default_bias_init,
                                   torch_default_kernel_init)

Dtype = Any


def pointwise(features: int, in_features: int, *, torch_init: bool, use_bias: bool = True,
              name: str | None = None, dtype=None, param_dtype=jnp.float32) -> nn.Dense:
    """A 1x1 convolution on NHWC tensors, as a Dense over channels.

    torch_init=True: PyTorch's default init; False: OpenSTL's N(0, sqrt(2/fan_out)) with zero bias.
    """
    if torch_init:
        inits = dict(kernel_init=torch_default_kernel_init(),
                     bias_init=torch_default_bias_init(in_features))
    else:
        inits = dict(kernel_init=fan_out_normal_init((1, 1), features),
                     bias_init=nn.initializers.zeros)
    return nn.Dense(features, use_bias=use_bias, name=name, dtype=dtype, param_dtype=param_dtype,
                    **inits)


class AttentionShell(nn.Module):
    """proj_1 -> GELU -> gating unit -> proj_2, plus the input (OpenSTL's `attn_shortcut`)."""

    gating_unit: Callable[..., nn.Module]
    torch_init: bool
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        d = z.shape[-1]
        kw = dict(torch_init=self.torch_init, dtype=self.dtype, param_dtype=self.param_dtype)
        y = pointwise(d, d, name="proj_1", **kw)(z)
        y = gelu(y)
        y = self.gating_unit(dtype=self.dtype, param_dtype=self.param_dtype,
                             name="spatial_gating_unit")(y)
        y = pointwise(d, d, name="proj_2", **kw)(y)
        return y + z


class MixMlp(nn.Module):
    """fc1 (1x1) -> depthwise 3x3 -> GELU -> dropout -> fc2 (1x1) -> dropout (OpenSTL van.py)."""

    hidden: int
    drop: float = 0.0
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        kw = dict(torch_init=False, dtype=self.dtype, param_dtype=self.param_dtype)
        x = pointwise(self.hidden, d, name="fc1", **kw)(x)
        x = DepthwiseConv(3, padding=1, impl=self.dw_impl,
                          kernel_init=fan_out_normal_init((3, 3), self.hidden, self.hidden),
                          bias_init=nn.initializers.zeros, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="dwconv")(x)
        x = gelu(x)
        x = nn.Dropout(self.drop, deterministic=not train)(x)
        x = pointwise(d, self.hidden, name="fc2", **kw)(x)
        return nn.Dropout(self.drop, deterministic=not train)(x)


class MetaSubBlock(nn.Module):
    """One translator block at constant width; `attention` is the block's token mixer.
    `mlp_ratio` 0 leaves out the MixMlp half (TAU's conv-baseline ablation)."""

    attention: Callable[..., nn.Module]
    mlp_ratio: float = 8.0
    drop: float = 0.0
    drop_path: float = 0.0
    layer_scale_init: float = 1e-2
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ls_init = nn.initializers.constant(self.layer_scale_init)
        ls1 = self.param("layer_scale_1", ls_init, (d,), self.param_dtype)
        drop_path = DropPath(self.drop_path)

        y = BatchNorm(use_running_average=not train, name="norm1", **dt)(x)
        y = self.attention(name="attn", **dt)(y)
        x = x + drop_path(ls1.astype(y.dtype) * y, train)
        if not self.mlp_ratio:
            return x
        ls2 = self.param("layer_scale_2", ls_init, (d,), self.param_dtype)
        y = BatchNorm(use_running_average=not train, name="norm2", **dt)(x)
        y = MixMlp(int(d * self.mlp_ratio), self.drop, self.dw_impl, name="mlp", **dt)(y, train)
        return x + drop_path(ls2.astype(y.dtype) * y, train)


class MetaBlock(nn.Module):
    """A sub-block at the input width, then a 1x1 `reduction` conv when the width changes."""

    out_features: int
    block: Callable[..., nn.Module]
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = self.block(name="block", dtype=self.dtype, param_dtype=self.param_dtype)(x, train)
        if x.shape[-1] != self.out_features:
            x = pointwise(self.out_features, x.shape[-1], torch_init=True, name="reduction",
                          dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x


class MetaTranslator(nn.Module):
    """OpenSTL's MidMetaNet: N_T blocks, T*hid_S -> hid_T -> ... -> hid_T -> T*hid_S."""

    attention: Callable[..., nn.Module]
    hid_T: int
    N_T: int
    mlp_ratio: float = 8.0
    drop: float = 0.0
    drop_path: float = 0.0
    drop_path_schedule: str = "openstl"
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, train: bool = False):
        b, t, h, w, c = z.shape
        x = z.transpose(0, 2, 3, 1, 4).reshape(b, h, w, t * c)
        rates = drop_path_rates(self.drop_path, self.N_T, self.drop_path_schedule)
        widths = [t * c] + [self.hid_T] * (self.N_T - 1) + [t * c]
        for i, rate in enumerate(rates):
            sub_block = lambda name, dtype, param_dtype, rate=rate: MetaSubBlock(
                self.attention, self.mlp_ratio, self.drop, rate, dw_impl=self.dw_impl,
                name=name, dtype=dtype, param_dtype=param_dtype)
            x = MetaBlock(widths[i + 1], sub_block, name=f"enc_{i}", dtype=self.dtype,
                          param_dtype=self.param_dtype)(x, train)
        return x.reshape(b, h, w, t, c).transpose(0, 3, 1, 2, 4)


def metaformer_from_config(attention: Callable[..., nn.Module], cfg, mlp_ratio: float | None = None,
                           **dtypes) -> MetaTranslator:
    """A MetaTranslator with `attention` as token mixer and the rest from a model config
    (`mlp_ratio` overrides the config's)."""
    mlp_ratio = cfg.mlp_ratio if mlp_ratio is None else mlp_ratio
    return MetaTranslator(attention, hid_T=cfg.hid_T, N_T=cfg.N_T, mlp_ratio=mlp_ratio,
                          drop=cfg.drop, drop_path=cfg.drop_path,
                          drop_path_schedule=cfg.drop_path_schedule, dw_impl=cfg.dw_impl, **dtypes)
