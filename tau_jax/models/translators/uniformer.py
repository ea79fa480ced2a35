"""UniFormer as a SimVP translator (OpenSTL model_type 'uniformer').

OpenSTL picks the block by position: a multi-head self-attention block (SABlock) where the block
keeps its width and is not the first (layer_i > 0 and in == out), a convolution block (CBlock)
otherwise (the first block, and the last when hid_T != T * hid_S). Both start with a depthwise
3x3 position encoding x + pos_embed(x).
  CBlock:  x + DropPath(conv2(dw5x5 `attn`(conv1(BN(x))))), x + DropPath(CMlp(BN(x))); convs
           N(0, sqrt(2/fan_out)).
  SABlock: tokens; x + DropPath(gamma_1 * MHSA(LN(x))), x + DropPath(gamma_2 * MLP(LN(x))),
           8 heads, qkv bias, LayerNorm eps 1e-5, gammas starting at 1e-6; Linear layers
           truncated normal 0.02, pos_embed PyTorch's default init.
"""

from __future__ import annotations

from flax import linen as nn

from tau_jax.models.layers import BatchNorm, DepthwiseConv, DropPath, fan_out_normal_init
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, SelfAttention, SubBlock,
                                                   layer_scale, metaformer_from_config, pointwise)
from tau_jax.models.translators.vit import NUM_HEADS


class ConvBlock(SubBlock):
    """UniFormer's CBlock."""


    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = self.dt
        drop_path = DropPath(self.drop_path)
        conv = dict(bias_init=nn.initializers.zeros, impl=self.dw_impl, **dt)
        x = x + DepthwiseConv(3, padding=1, kernel_init=fan_out_normal_init((3, 3), d, d),
                              name="pos_embed", **conv)(x)
        y = BatchNorm(use_running_average=not train, name="norm1", **dt)(x)
        y = pointwise(d, d, torch_init=False, name="conv1", **dt)(y)
        y = DepthwiseConv(5, padding=2, kernel_init=fan_out_normal_init((5, 5), d, d),
                          name="attn", **conv)(y)
        x = x + drop_path(pointwise(d, d, torch_init=False, name="conv2", **dt)(y), train)
        y = BatchNorm(use_running_average=not train, name="norm2", **dt)(x)
        y = Mlp(int(d * self.mlp_ratio), self.drop, fan_out_init=True, name="mlp", **dt)(y, train)
        return x + drop_path(y, train)


class AttentionBlock(SubBlock):
    """UniFormer's SABlock."""


    @nn.compact
    def __call__(self, x, train: bool):
        b, h, w, d = x.shape
        dt = self.dt
        drop_path = DropPath(self.drop_path)
        gamma_1, gamma_2 = (layer_scale(self, f"gamma_{i}", d, 1e-6) for i in (1, 2))
        x = x + DepthwiseConv(3, padding=1, impl=self.dw_impl, name="pos_embed", **dt)(x)
        x = x.reshape(b, h * w, d)
        y = nn.LayerNorm(epsilon=1e-5, name="norm1", **dt)(x)
        y = SelfAttention(NUM_HEADS, self.drop, name="attn", **dt)(y, train)
        x = x + drop_path(gamma_1.astype(y.dtype) * y, train)
        y = nn.LayerNorm(epsilon=1e-5, name="norm2", **dt)(x)
        y = Mlp(int(d * self.mlp_ratio), self.drop, name="mlp", **dt)(y, train)
        return (x + drop_path(gamma_2.astype(y.dtype) * y, train)).reshape(b, h, w, d)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The UniFormer translator for a model config."""
    attends = cfg.N_T > 2 or cfg.hid_T == cfg.in_shape[0] * cfg.hid_S  # some block is an SABlock
    if attends and cfg.hid_T % NUM_HEADS:
        raise ValueError(f"model.hid_T ({cfg.hid_T}) must be a multiple of {NUM_HEADS} for "
                         f"model.name 'uniformer' (its SABlocks have {NUM_HEADS} heads).")

    def sub_block(layer_i, in_features, out_features, **module_kwargs):
        block = AttentionBlock if layer_i > 0 and in_features == out_features else ConvBlock
        return block(cfg.mlp_ratio, cfg.drop, dw_impl=cfg.dw_impl, **module_kwargs)

    return metaformer_from_config(cfg, sub_block, **dtypes)
