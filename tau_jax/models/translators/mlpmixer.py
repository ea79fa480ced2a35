"""MLP-Mixer as a SimVP translator (OpenSTL model_type 'mlpmixer', also 'mlp').

OpenSTL's MLPMixerSubBlock (timm's MixerBlock, written here): the latent map's h*w positions are
tokens; x + DropPath(token-MLP over the positions (hidden d/2) of LN(x)), then
x + DropPath(channel-MLP (hidden mlp_ratio * d) of LN(x)), LayerNorm eps 1e-6. The token MLP's
weights are sized by h*w, so a trained model runs only on model.in_shape's frame size.
"""

from __future__ import annotations

from flax import linen as nn

from tau_jax.models.layers import DropPath
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, SubBlock,
                                                   metaformer_from_config, sub_block_from_config)


class MixerSubBlock(SubBlock):

    @nn.compact
    def __call__(self, x, train: bool):
        b, h, w, d = x.shape
        dt = self.dt
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
    return metaformer_from_config(cfg, sub_block_from_config(MixerSubBlock, cfg), **dtypes)


def latent_rule(cfg) -> tuple[int, str]:
    del cfg
    return 1, "its token-mixing MLP has one weight per position of the in_shape latent grid"
