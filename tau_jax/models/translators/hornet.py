"""HorNet as a SimVP translator (OpenSTL model_type 'hornet').

OpenSTL's HorBlock with its recursive gated convolution gnconv of order 4: proj_in (1x1, d ->
2d) splits into p0 (d/8 channels) and the rest, a depthwise 7x7 conv of the rest splits into
q0..q3 (d/8, d/8, d/4, d/2, d), and p_{k+1} = pws_k(p_k) * q_{k+1} climbs to width d before
proj_out. Block: x + DropPath(gamma1 * gnconv(LN(x))), x + DropPath(gamma2 * MLP(LN(x))), both
LayerNorms over channels with eps 1e-6, gammas starting at 1e-6. Widths must be multiples of 8;
OpenSTL passes no dropout (model.drop is not read). Linear layers start truncated normal 0.02,
convs N(0, sqrt(2/fan_out)).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.attention import dense
from tau_jax.models.layers import DepthwiseConv, DropPath, fan_out_normal_init, gelu
from tau_jax.models.translators.metaformer import (MetaTranslator, SubBlock, check_block_widths,
                                                   layer_scale, metaformer_from_config, pointwise,
                                                   sub_block_from_config)

Dtype = Any
ORDER = 4  # OpenSTL's HorBlock default


class GnConv(nn.Module):
    """The recursive gated convolution (HorNet's g^n conv), order 4, scale 1."""

    order: int = ORDER
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dims = [d // 2 ** i for i in range(self.order)][::-1]
        fused = pointwise(2 * d, d, torch_init=False, name="proj_in", **dt)(x)
        pwa, abc = fused[..., :dims[0]], fused[..., dims[0]:]
        abc = DepthwiseConv(7, padding=3, impl=self.dw_impl, name="dwconv",
                            kernel_init=fan_out_normal_init((7, 7), sum(dims), sum(dims)),
                            bias_init=nn.initializers.zeros, **dt)(abc)
        gates = jnp.split(abc, np.cumsum(dims)[:-1].tolist(), axis=-1)
        y = pwa * gates[0]
        for i in range(self.order - 1):
            y = pointwise(dims[i + 1], dims[i], torch_init=False, name=f"pws_{i}", **dt)(y)
            y = y * gates[i + 1]
        return pointwise(d, d, torch_init=False, name="proj_out", **dt)(y)


class HorNetSubBlock(SubBlock):

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = self.dt
        drop_path = DropPath(self.drop_path)
        gamma1, gamma2 = (layer_scale(self, f"gamma{i}", d, 1e-6) for i in (1, 2))
        y = nn.LayerNorm(epsilon=1e-6, name="norm1", **dt)(x)
        y = GnConv(dw_impl=self.dw_impl, name="gnconv", **dt)(y)
        x = x + drop_path(gamma1.astype(y.dtype) * y, train)
        y = nn.LayerNorm(epsilon=1e-6, name="norm2", **dt)(x)
        y = dense(int(self.mlp_ratio * d), name="pwconv1", **dt)(y)
        y = dense(d, name="pwconv2", **dt)(gelu(y))
        return x + drop_path(gamma2.astype(y.dtype) * y, train)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The HorNet translator for a model config."""
    check_block_widths(cfg, 2 ** (ORDER - 1), "gnconv halves the width three times")
    return metaformer_from_config(cfg, sub_block_from_config(HorNetSubBlock, cfg), **dtypes)
