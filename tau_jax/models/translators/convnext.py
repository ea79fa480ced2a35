"""ConvNeXt as a SimVP translator (OpenSTL model_type 'convnext').

OpenSTL's ConvNeXtSubBlock is timm's ConvNeXtBlock with conv_mlp=True (written here, no timm):
x + DropPath(gamma * ConvMlp(LayerNorm(depthwise 7x7(x)))), LayerNorm over channels with eps
1e-6, gamma starting at 1e-6. OpenSTL passes no dropout to it (model.drop is not read). Convs
start from N(0, sqrt(2/fan_out)), biases 0.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import DepthwiseConv, DropPath, fan_out_normal_init
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, layer_scale,
                                                   metaformer_from_config, plain_sub_block)

Dtype = Any


class ConvNeXtSubBlock(nn.Module):
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        gamma = layer_scale(self, "gamma", d, 1e-6)
        y = DepthwiseConv(7, padding=3, impl=self.dw_impl, name="conv_dw",
                          kernel_init=fan_out_normal_init((7, 7), d, d),
                          bias_init=nn.initializers.zeros, **dt)(x)
        y = nn.LayerNorm(epsilon=1e-6, name="norm", **dt)(y)
        y = Mlp(int(self.mlp_ratio * d), fan_out_init=True, name="mlp", **dt)(y, train)
        return x + DropPath(self.drop_path)(gamma.astype(y.dtype) * y, train)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The ConvNeXt translator for a model config."""
    return metaformer_from_config(
        cfg, plain_sub_block(ConvNeXtSubBlock, mlp_ratio=cfg.mlp_ratio, dw_impl=cfg.dw_impl),
        **dtypes)
