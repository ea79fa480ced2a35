"""PoolFormer as a SimVP translator (OpenSTL model_type 'poolformer').

OpenSTL's PoolFormerBlock: x + DropPath(ls1 * (AvgPool3x3(GN(x)) - GN(x))), then
x + DropPath(ls2 * Mlp(GN(x))), with GroupNorm of one group (eps 1e-5) and average pooling that
counts only the frame's own pixels at the border (count_include_pad=False). Layer scales start
at 1e-5, the 1x1-conv MLP at truncated normal 0.02.
"""

from __future__ import annotations

from flax import linen as nn

from tau_jax.models.layers import DropPath
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, SubBlock, layer_scale,
                                                   metaformer_from_config, sub_block_from_config)


class PoolFormerSubBlock(SubBlock):

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = self.dt
        drop_path = DropPath(self.drop_path)
        ls1, ls2 = (layer_scale(self, f"layer_scale_{i}", d, 1e-5) for i in (1, 2))
        y = nn.GroupNorm(num_groups=1, epsilon=1e-5, name="norm1", **dt)(x)
        y = nn.avg_pool(y, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                        count_include_pad=False) - y
        x = x + drop_path(ls1.astype(y.dtype) * y, train)
        y = nn.GroupNorm(num_groups=1, epsilon=1e-5, name="norm2", **dt)(x)
        y = Mlp(int(d * self.mlp_ratio), self.drop, name="mlp", **dt)(y, train)
        return x + drop_path(ls2.astype(y.dtype) * y, train)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The PoolFormer translator for a model config."""
    return metaformer_from_config(cfg, sub_block_from_config(PoolFormerSubBlock, cfg), **dtypes)
