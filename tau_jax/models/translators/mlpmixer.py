"""MLP-Mixer as a SimVP translator (OpenSTL model_type 'mlpmixer', also 'mlp').

OpenSTL's MLPMixerSubBlock (timm's MixerBlock, written here): the latent map's h*w positions are
tokens; x + DropPath(token-MLP over the positions (hidden d/2) of LN(x)), then
x + DropPath(channel-MLP (hidden mlp_ratio * d) of LN(x)), LayerNorm eps 1e-6. The token MLP's
weights are sized by h*w, so a trained model runs only on model.in_shape's frame size.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import DropPath
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, metaformer_from_config,
                                                   plain_sub_block)

Dtype = Any


class MixerSubBlock(nn.Module):
    mlp_ratio: float = 4.0
    drop: float = 0.0
    drop_path: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        b, h, w, d = x.shape
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop_path = DropPath(self.drop_path)
        x = x.reshape(b, h * w, d)
        y = nn.LayerNorm(epsilon=1e-6, name="norm1", **dt)(x).swapaxes(1, 2)
        y = Mlp(int(0.5 * d), self.drop, name="mlp_tokens", **dt)(y, train).swapaxes(1, 2)
        x = x + drop_path(y, train)
        y = nn.LayerNorm(epsilon=1e-6, name="norm2", **dt)(x)
        y = Mlp(int(self.mlp_ratio * d), self.drop, name="mlp_channels", **dt)(y, train)
        return (x + drop_path(y, train)).reshape(b, h, w, d)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The MLP-Mixer translator for a model config."""
    return metaformer_from_config(
        cfg, plain_sub_block(MixerSubBlock, mlp_ratio=cfg.mlp_ratio, drop=cfg.drop), **dtypes)


def latent_rule(cfg) -> tuple[int, str]:
    del cfg
    return 1, "its token-mixing MLP has one weight per position of the in_shape latent grid"
