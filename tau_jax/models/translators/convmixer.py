"""ConvMixer as a SimVP translator (OpenSTL model_type 'convmixer').

OpenSTL's ConvMixerSubBlock: x + BN(GELU(depthwise 11x11(x))), then BN(GELU(1x1(x))) with no
residual. It reads neither mlp_ratio, drop nor drop_path (OpenSTL's block takes none of them),
which is why the MMNIST model has 3.9M parameters where the other translators have 37-47M.
Convs start from N(0, sqrt(2/fan_out)), biases 0, BatchNorm 1 / 0.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import BatchNorm, DepthwiseConv, fan_out_normal_init, gelu
from tau_jax.models.translators.metaformer import (MetaTranslator, metaformer_from_config,
                                                   pointwise)

Dtype = Any


class ConvMixerSubBlock(nn.Module):
    kernel_size: int = 11
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d, k = x.shape[-1], self.kernel_size
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = DepthwiseConv(k, padding=k // 2, impl=self.dw_impl, name="conv_dw",
                          kernel_init=fan_out_normal_init((k, k), d, d),
                          bias_init=nn.initializers.zeros, **dt)(x)
        x = x + BatchNorm(use_running_average=not train, name="norm_1", **dt)(gelu(y))
        y = pointwise(d, d, torch_init=False, name="conv_pw", **dt)(x)
        return BatchNorm(use_running_average=not train, name="norm_2", **dt)(gelu(y))


def translator(cfg, **dtypes) -> MetaTranslator:
    """The ConvMixer translator for a model config."""

    def sub_block(layer_i, in_features, out_features, drop_path, **module_kwargs):
        del layer_i, in_features, out_features, drop_path  # OpenSTL's block has no DropPath
        return ConvMixerSubBlock(dw_impl=cfg.dw_impl, **module_kwargs)

    return metaformer_from_config(cfg, sub_block, **dtypes)
