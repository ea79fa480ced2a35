"""MogaNet as a SimVP translator (OpenSTL model_type 'moganet', also 'moga').

OpenSTL's MogaSubBlock: x + DropPath(ls1 * MOGA(BN(x))), x + DropPath(ls2 * CAFFN(BN(x))).
The multi-order gated aggregation (MOGA) decomposes proj_1(x) against its spatial mean
(x + sigma * (x - mean)), SiLU, and gates SiLU(gate(x)) * SiLU(value(x)), the value a depthwise
5x5 over all channels followed by depthwise 5x5 dilation 2 on 3/8 and 7x7 dilation 3 on the last
4/8 of them, mixed by a 1x1; plus the input. The channel-aggregation FFN is fc1 -> depthwise 3x3
-> GELU -> x + sigma * (x - GELU(decompose(x))) (decompose: a 1x1 to one channel) -> fc2. Layer
scales and sigmas start at 1e-5 (OpenSTL stores them as (1, C, 1, 1)); convs N(0,
sqrt(2/fan_out)). Widths must be multiples of 8 (the 1:3:4 channel split).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import (BatchNorm, DepthwiseConv, DropPath, fan_out_normal_init,
                                   gelu)
from tau_jax.models.translators.metaformer import (MetaTranslator, SubBlock, check_block_widths,
                                                   layer_scale, metaformer_from_config, pointwise,
                                                   sub_block_from_config)

Dtype = Any
CHANNEL_SPLIT = (1, 3, 4)  # MOGA's value branch: channels left alone, dilation 2, dilation 3


def _dw(kernel_size: int, dilation: int, channels: int, name: str, impl: str, dt: dict):
    """A depthwise conv keeping the size, with OpenSTL's fan-out init and zero bias."""
    return DepthwiseConv(kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                         impl=impl, kernel_init=fan_out_normal_init(
                             (kernel_size, kernel_size), channels, channels),
                         bias_init=nn.initializers.zeros, name=name, **dt)


def _pw(features: int, in_features: int, name: str, dt: dict):
    return pointwise(features, in_features, torch_init=False, name=name, **dt)


class MultiOrderDWConv(nn.Module):
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d1, d2 = (d * CHANNEL_SPLIT[i] // sum(CHANNEL_SPLIT) for i in (1, 2))
        d0 = d - d1 - d2
        x0 = _dw(5, 1, d, "DW_conv0", self.dw_impl, dt)(x)
        x1 = _dw(5, 2, d1, "DW_conv1", self.dw_impl, dt)(x0[..., d0:d0 + d1])
        x2 = _dw(7, 3, d2, "DW_conv2", self.dw_impl, dt)(x0[..., d - d2:])
        return _pw(d, d, "PW_conv", dt)(jnp.concatenate([x0[..., :d0], x1, x2], axis=-1))


class MultiOrderGatedAggregation(nn.Module):
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        sigma = layer_scale(self, "sigma", d, 1e-5)
        y = _pw(d, d, "proj_1", dt)(x)
        y = nn.silu(y + sigma.astype(y.dtype) * (y - jnp.mean(y, axis=(1, 2), keepdims=True)))
        g = _pw(d, d, "gate", dt)(y)
        v = MultiOrderDWConv(self.dw_impl, name="value", **dt)(y)
        return _pw(d, d, "proj_2", dt)(nn.silu(g) * nn.silu(v)) + x


class ChannelAggregationFFN(nn.Module):
    hidden: int
    drop: float = 0.0
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        sigma = layer_scale(self, "sigma", self.hidden, 1e-5)
        y = _pw(self.hidden, d, "fc1", dt)(x)
        y = gelu(_dw(3, 1, self.hidden, "dwconv", self.dw_impl, dt)(y))
        y = nn.Dropout(self.drop, deterministic=not train)(y)
        y = y + sigma.astype(y.dtype) * (y - gelu(_pw(1, self.hidden, "decompose", dt)(y)))
        y = _pw(d, self.hidden, "fc2", dt)(y)
        return nn.Dropout(self.drop, deterministic=not train)(y)


class MogaSubBlock(SubBlock):

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = self.dt
        drop_path = DropPath(self.drop_path)
        ls1, ls2 = (layer_scale(self, f"layer_scale_{i}", d, 1e-5) for i in (1, 2))
        y = BatchNorm(use_running_average=not train, name="norm1", **dt)(x)
        y = MultiOrderGatedAggregation(self.dw_impl, name="attn", **dt)(y)
        x = x + drop_path(ls1.astype(y.dtype) * y, train)
        y = BatchNorm(use_running_average=not train, name="norm2", **dt)(x)
        y = ChannelAggregationFFN(int(d * self.mlp_ratio), self.drop, self.dw_impl, name="mlp",
                                  **dt)(y, train)
        return x + drop_path(ls2.astype(y.dtype) * y, train)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The MogaNet translator for a model config."""
    check_block_widths(cfg, sum(CHANNEL_SPLIT), "the 1:3:4 channel split of its value branch")
    return metaformer_from_config(cfg, sub_block_from_config(MogaSubBlock, cfg), **dtypes)
