"""gSTA, the gated spatiotemporal attention translator of SimVP v2 (OpenSTL model_type 'gSTA').

Same MetaFormer skeleton as TAU; the token mixer's gating unit is the decomposed large-kernel
conv (dw 5x5 -> dw 7x7 dilation 3 -> 1x1 to 2d) split into (f, g) and returned as sigmoid(g) * f.
All its convs use OpenSTL's N(0, sqrt(2/fan_out)) init.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import DepthwiseConv, fan_out_normal_init
from tau_jax.models.translators.metaformer import (AttentionShell, MetaTranslator,
                                                  gated_sub_block, metaformer_from_config,
                                                  pointwise)
from tau_jax.models.translators.tau import large_kernel_geometry

Dtype = Any


class GatedSpatialAttention(nn.Module):
    """sigmoid(g) * f with (f, g) = split(1x1(dw7x7_dil3(dw5x5(u)))); `gate_input`: VAN's large
    kernel attention (LKA), u * 1x1(dw7x7_dil3(dw5x5(u))) with a 1x1 conv that keeps the width."""

    kernel_size: int = 21
    dilation: int = 3
    gate_input: bool = False
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, u):
        d = u.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, impl=self.dw_impl,
                  bias_init=nn.initializers.zeros)
        (k0, p0), (k1, p1) = large_kernel_geometry(self.kernel_size, self.dilation)
        x = DepthwiseConv(k0, padding=p0, kernel_init=fan_out_normal_init((k0, k0), d, d),
                          name="conv0", **dt)(u)
        x = DepthwiseConv(k1, padding=p1, dilation=self.dilation,
                          kernel_init=fan_out_normal_init((k1, k1), d, d), name="conv_spatial",
                          **dt)(x)
        x = pointwise(d if self.gate_input else 2 * d, d, torch_init=False, name="conv1",
                      dtype=self.dtype, param_dtype=self.param_dtype)(x)
        if self.gate_input:
            return u * x
        f, g = jnp.split(x, 2, axis=-1)
        return nn.sigmoid(g) * f


def gated_attention(dw_impl: str = "auto", gate_input: bool = False, **kwargs) -> AttentionShell:
    """proj_1 -> GELU -> GatedSpatialAttention -> proj_2, + input (gSTA's SpatialAttention;
    `gate_input`: VAN's Attention around its LKA)."""
    gating = functools.partial(GatedSpatialAttention, dw_impl=dw_impl, gate_input=gate_input)
    return AttentionShell(gating, torch_init=False, **kwargs)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The gSTA translator for a model config."""
    attention = functools.partial(gated_attention, dw_impl=cfg.dw_impl)
    return metaformer_from_config(cfg, gated_sub_block(attention, cfg), **dtypes)
