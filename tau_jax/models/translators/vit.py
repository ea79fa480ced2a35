"""ViT as a SimVP translator (OpenSTL model_type 'vit').

OpenSTL's ViTSubBlock (timm's vision transformer Block, written here): the latent map's h*w
positions are tokens, with no position embedding; x + DropPath(MHSA(LN(x))), then
x + DropPath(MLP(LN(x))), 8 heads, qkv bias, LayerNorm eps 1e-5, dropout `drop` after the
attention projection and in the MLP (timm 0.6, which OpenSTL was written for; timm >= 0.9
breaks OpenSTL's call, its issue 154). Linear layers start truncated normal 0.02.
"""

from __future__ import annotations

from flax import linen as nn

from tau_jax.models.layers import DropPath
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, SelfAttention, SubBlock,
                                                   check_block_widths, metaformer_from_config,
                                                   sub_block_from_config)

NUM_HEADS = 8  # fixed by OpenSTL's ViT, Swin and Uniformer sub-blocks


class ViTSubBlock(SubBlock):

    @nn.compact
    def __call__(self, x, train: bool):
        b, h, w, d = x.shape
        dt = self.dt
        drop_path = DropPath(self.drop_path)
        x = x.reshape(b, h * w, d)
        y = nn.LayerNorm(epsilon=1e-5, name="norm1", **dt)(x)
        x = x + drop_path(SelfAttention(NUM_HEADS, self.drop, name="attn", **dt)(y, train), train)
        y = nn.LayerNorm(epsilon=1e-5, name="norm2", **dt)(x)
        y = Mlp(int(d * self.mlp_ratio), self.drop, name="mlp", **dt)(y, train)
        return (x + drop_path(y, train)).reshape(b, h, w, d)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The ViT translator for a model config."""
    check_block_widths(cfg, NUM_HEADS, f"{NUM_HEADS} attention heads")
    return metaformer_from_config(cfg, sub_block_from_config(ViTSubBlock, cfg), **dtypes)
