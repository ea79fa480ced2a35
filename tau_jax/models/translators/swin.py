"""Swin Transformer as a SimVP translator (OpenSTL model_type 'swin').

OpenSTL's SwinSubBlock (timm 0.6's SwinTransformerBlock with OpenSTL's own forward, written here
without timm): the latent map is cut into window x window tiles, cyclically shifted by half a
window in odd blocks, and each tile runs 8-head self-attention with Swin's learnt relative
position bias; x + DropPath(attention(LN(x))), x + DropPath(MLP(LN(x))), LayerNorm eps 1e-5.

Window geometry (OpenSTL + timm 0.6): the window is 7 if the latent height is a multiple of 7,
else max(4, h // 16), at most 8; where the latent's shorter side is no longer than that, the
window becomes that side and nothing shifts. The latent sides must be multiples of the window.

OpenSTL quirk, kept because its weights are trained with it: the shifted blocks attend with no
attention mask (`mask=None`), so a window made of tokens rolled around from the opposite border
attends across that seam, where Swin masks it. timm's checkpoint buffers `attn_mask` and
`relative_position_index` are recomputable and not read when weights are imported.
"""

from __future__ import annotations


import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.attention import latent_size
from tau_jax.models.layers import DropPath
from tau_jax.models.translators.metaformer import (MetaTranslator, Mlp, SelfAttention, SubBlock,
                                                   check_block_widths, metaformer_from_config)
from tau_jax.models.translators.vit import NUM_HEADS


def window_geometry(h: int, w: int) -> tuple[int, bool]:
    """(window side, whether odd blocks shift) for a latent map of h x w."""
    window = min(8, 7 if h % 7 == 0 else max(4, h // 16))
    if min(h, w) <= window:
        return min(h, w), False
    return window, True


def window_partition(x, ws: int):
    """(B, H, W, D) -> (B, H/ws, W/ws, ws*ws, D): ws x ws windows, row-major inside and across
    (timm's window_partition, batch and window grid kept as axes)."""
    b, h, w, d = x.shape
    tiles = x.reshape(b, h // ws, ws, w // ws, ws, d).transpose(0, 1, 3, 2, 4, 5)
    return tiles.reshape(b, h // ws, w // ws, ws * ws, d)


def window_merge(tiles, ws: int):
    """The inverse of `window_partition` (timm's window_reverse)."""
    b, nh, nw, _, d = tiles.shape
    y = tiles.reshape(b, nh, nw, ws, ws, d).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, nh * ws, nw * ws, d)


class SwinSubBlock(SubBlock):
    window: int = 0  # side of the attention windows
    shift: int = 0  # cyclic shift of the windows, 0 in even blocks

    @nn.compact
    def __call__(self, x, train: bool):
        b, h, w, d = x.shape
        ws, s = self.window, self.shift
        dt = self.dt
        drop_path = DropPath(self.drop_path)
        y = nn.LayerNorm(epsilon=1e-5, name="norm1", **dt)(x)
        if s:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        tiles = SelfAttention(NUM_HEADS, self.drop, window=ws, name="attn", **dt)(
            window_partition(y, ws), train)
        y = window_merge(tiles, ws)
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + drop_path(y, train)
        y = nn.LayerNorm(epsilon=1e-5, name="norm2", **dt)(x)
        y = Mlp(int(d * self.mlp_ratio), self.drop, name="mlp", **dt)(y, train)
        return x + drop_path(y, train)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The Swin translator for a model config; the window is fixed by model.in_shape."""
    check_block_widths(cfg, NUM_HEADS, f"{NUM_HEADS} attention heads")
    h, w = latent_size(cfg)
    window, shifts = window_geometry(h, w)
    if h % window or w % window:
        raise ValueError(
            f"model.in_shape gives a latent map of {h} x {w}, which Swin's {window} x {window} "
            f"windows (fixed by the latent height {h}) do not tile; choose H and W whose latent "
            f"(divided by the encoder stride {2 ** (cfg.N_S // 2)}) is a multiple of {window}.")

    def sub_block(layer_i, in_features, out_features, **module_kwargs):
        del in_features, out_features
        shift = window // 2 if shifts and layer_i % 2 else 0
        return SwinSubBlock(cfg.mlp_ratio, cfg.drop, window=window, shift=shift, **module_kwargs)

    return metaformer_from_config(cfg, sub_block, **dtypes)


def latent_rule(cfg) -> tuple[int, None]:
    """Any latent the in_shape's windows tile."""
    return window_geometry(*latent_size(cfg))[0], None
