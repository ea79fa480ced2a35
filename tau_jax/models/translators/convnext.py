"""ConvNeXt as a SimVP translator (OpenSTL model_type 'convnext').

OpenSTL's ConvNeXtSubBlock is timm's ConvNeXtBlock with conv_mlp=True (written here, no timm):
x + DropPath(gamma * ConvMlp(LayerNorm(depthwise 7x7(x)))), LayerNorm over channels with eps
1e-6, gamma starting at 1e-6. OpenSTL passes no dropout to it (model.drop is not read). Convs
start from N(0, sqrt(2/fan_out)), biases 0.
"""

from __future__ import annotations

from flax import linen as nn

from tau_jax.models.layers import DepthwiseConv, DropPath, fan_out_normal_init
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, SubBlock, layer_scale,
                                                   metaformer_from_config, sub_block_from_config)


class ConvNeXtSubBlock(SubBlock):

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = self.dt
        gamma = layer_scale(self, "gamma", d, 1e-6)
        y = DepthwiseConv(7, padding=3, impl=self.dw_impl, name="conv_dw",
                          kernel_init=fan_out_normal_init((7, 7), d, d),
                          bias_init=nn.initializers.zeros, **dt)(x)
        y = nn.LayerNorm(epsilon=1e-6, name="norm", **dt)(y)
        y = Mlp(int(self.mlp_ratio * d), fan_out_init=True, name="mlp", **dt)(y, train)
        return x + DropPath(self.drop_path)(gamma.astype(y.dtype) * y, train)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The ConvNeXt translator for a model config."""
    return metaformer_from_config(cfg, sub_block_from_config(ConvNeXtSubBlock, cfg), **dtypes)
