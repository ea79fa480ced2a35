"""OpenSTL's MidMetaNet, the translator frame of TAU, gSTA and the MetaFormer zoo, and the pieces
its sub-blocks share.

A translator maps the encoder's latent video `(B, T, h, w, C)` to one of the same shape. The
MetaFormer translator folds time into channels (channel index t*C + c, as OpenSTL) and runs N_T
blocks, T*hid_S -> hid_T -> ... -> hid_T -> T*hid_S: each is a sub-block at its input width
(OpenSTL's `MetaBlock(model_type)`), then a 1x1 `reduction` conv where the width changes. TAU,
gSTA and VAN use the gated sub-block here, `x + DropPath(ls1 * attn(BN(x)))`,
`x + DropPath(ls2 * MixMlp(BN(x)))`, and differ in the attention they plug in; the other
translators (one file each in this package) bring their own sub-block.
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.attention import dense, dot_product_attention
from tau_jax.models.layers import (BatchNorm, DepthwiseConv, DropPath, drop_path_rates,
                                   fan_out_normal_init, gelu, gradient_stored,
                                   torch_default_bias_init, torch_default_kernel_init)

Dtype = Any


def pointwise(features: int, in_features: int, *, torch_init: bool, use_bias: bool = True,
              name: str | None = None, dtype=None, param_dtype=jnp.float32) -> nn.Dense:
    """A 1x1 convolution on NHWC tensors, as a Dense over channels.

    torch_init=True: PyTorch's default init; False: OpenSTL's N(0, sqrt(2/fan_out)) with zero bias.
    """
    if torch_init:
        inits = dict(kernel_init=torch_default_kernel_init(),
                     bias_init=torch_default_bias_init(in_features))
    else:
        inits = dict(kernel_init=fan_out_normal_init((1, 1), features),
                     bias_init=nn.initializers.zeros)
    return nn.Dense(features, use_bias=use_bias, name=name, dtype=dtype, param_dtype=param_dtype,
                    **inits)


class AttentionShell(nn.Module):
    """proj_1 -> GELU -> gating unit -> proj_2, plus the input (OpenSTL's `attn_shortcut`)."""

    gating_unit: Callable[..., nn.Module]
    torch_init: bool
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        d = z.shape[-1]
        kw = dict(torch_init=self.torch_init, dtype=self.dtype, param_dtype=self.param_dtype)
        y = pointwise(d, d, name="proj_1", **kw)(z)
        y = gelu(y)
        y = self.gating_unit(dtype=self.dtype, param_dtype=self.param_dtype,
                             name="spatial_gating_unit")(y)
        y = pointwise(d, d, name="proj_2", **kw)(y)
        return y + z


class MixMlp(nn.Module):
    """fc1 (1x1) -> depthwise 3x3 -> GELU -> dropout -> fc2 (1x1) -> dropout (OpenSTL van.py)."""

    hidden: int
    drop: float = 0.0
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        kw = dict(torch_init=False, dtype=self.dtype, param_dtype=self.param_dtype)
        x = pointwise(self.hidden, d, name="fc1", **kw)(x)
        x = DepthwiseConv(3, padding=1, impl=self.dw_impl,
                          kernel_init=fan_out_normal_init((3, 3), self.hidden, self.hidden),
                          bias_init=nn.initializers.zeros, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="dwconv")(x)
        x = gelu(x)
        x = nn.Dropout(self.drop, deterministic=not train)(x)
        x = pointwise(d, self.hidden, name="fc2", **kw)(x)
        return nn.Dropout(self.drop, deterministic=not train)(x)


class MetaSubBlock(nn.Module):
    """One translator block at constant width; `attention` is the block's token mixer.
    `mlp_ratio` 0 leaves out the MixMlp half (TAU's conv-baseline ablation)."""

    attention: Callable[..., nn.Module]
    mlp_ratio: float = 8.0
    drop: float = 0.0
    drop_path: float = 0.0
    layer_scale_init: float = 1e-2
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ls1 = layer_scale(self, "layer_scale_1", d, self.layer_scale_init)
        drop_path = DropPath(self.drop_path)

        y = BatchNorm(use_running_average=not train, name="norm1", **dt)(x)
        y = self.attention(name="attn", **dt)(y)
        x = x + drop_path(ls1.astype(y.dtype) * y, train)
        if not self.mlp_ratio:
            return x
        ls2 = layer_scale(self, "layer_scale_2", d, self.layer_scale_init)
        y = BatchNorm(use_running_average=not train, name="norm2", **dt)(x)
        y = MixMlp(int(d * self.mlp_ratio), self.drop, self.dw_impl, name="mlp", **dt)(y, train)
        return x + drop_path(ls2.astype(y.dtype) * y, train)


class MetaBlock(nn.Module):
    """A sub-block at the input width, then a 1x1 `reduction` conv when the width changes."""

    out_features: int
    block: Callable[..., nn.Module]
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = self.block(name="block", dtype=self.dtype, param_dtype=self.param_dtype)(x, train)
        if x.shape[-1] != self.out_features:
            x = pointwise(self.out_features, x.shape[-1], torch_init=True, name="reduction",
                          dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x


class MetaTranslator(nn.Module):
    """OpenSTL's MidMetaNet: N_T blocks, T*hid_S -> hid_T -> ... -> hid_T -> T*hid_S.

    `sub_block(layer_i=, in_features=, out_features=, drop_path=, name=, dtype=, param_dtype=)`
    makes block i's sub-block (called `(x, train)`), as OpenSTL's MetaBlock picks it by
    `model_type`; `out_features` only tells the sub-block what follows it (Uniformer's choice).
    """

    sub_block: Callable[..., nn.Module]
    hid_T: int
    N_T: int
    drop_path: float = 0.0
    drop_path_schedule: str = "openstl"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, train: bool = False):
        b, t, h, w, c = z.shape
        x = z.transpose(0, 2, 3, 1, 4).reshape(b, h, w, t * c)
        rates = drop_path_rates(self.drop_path, self.N_T, self.drop_path_schedule)
        widths = [t * c] + [self.hid_T] * (self.N_T - 1) + [t * c]
        for i, rate in enumerate(rates):
            block = functools.partial(self.sub_block, layer_i=i, in_features=widths[i],
                                      out_features=widths[i + 1], drop_path=rate)
            x = MetaBlock(widths[i + 1], block, name=f"enc_{i}", dtype=self.dtype,
                          param_dtype=self.param_dtype)(gradient_stored(x), train)
        return x.reshape(b, h, w, t, c).transpose(0, 3, 1, 2, 4)


def metaformer_from_config(cfg, sub_block: Callable[..., nn.Module], **dtypes) -> MetaTranslator:
    """A MetaTranslator of `sub_block`s with widths and stochastic depth from a model config."""
    return MetaTranslator(sub_block, hid_T=cfg.hid_T, N_T=cfg.N_T, drop_path=cfg.drop_path,
                          drop_path_schedule=cfg.drop_path_schedule, **dtypes)


def gated_sub_block(attention: Callable[..., nn.Module], cfg, mlp_ratio: float | None = None):
    """The MetaSubBlock factory of TAU, gSTA and VAN: `attention` as token mixer, MixMlp of
    `mlp_ratio` (default the config's) with the config's dropout."""
    mlp_ratio = cfg.mlp_ratio if mlp_ratio is None else mlp_ratio

    def make(layer_i, in_features, out_features, drop_path, **module_kwargs):
        del layer_i, in_features, out_features
        return MetaSubBlock(attention, mlp_ratio, cfg.drop, drop_path, dw_impl=cfg.dw_impl,
                            **module_kwargs)

    return make


class SubBlock(nn.Module):
    """Base of the zoo's sub-blocks: the fields they take from the model config (a block reads
    those its architecture has: OpenSTL's ConvNeXt and HorNet blocks take no dropout)."""

    mlp_ratio: float = 4.0
    drop: float = 0.0
    drop_path: float = 0.0
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @property
    def dt(self) -> dict:
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)


def sub_block_from_config(cls, cfg, **fields):
    """The factory of a SubBlock that depends on neither its position nor the next width:
    `cls(mlp_ratio, drop, dw_impl from cfg, **fields, drop_path=rate, ...)`."""

    def make(layer_i, in_features, out_features, **module_kwargs):
        del layer_i, in_features, out_features
        return cls(mlp_ratio=cfg.mlp_ratio, drop=cfg.drop, dw_impl=cfg.dw_impl, **fields,
                   **module_kwargs)

    return make


def check_block_widths(cfg, divisor: int, why: str) -> None:
    """One ValueError naming the fields unless every sub-block width (T * hid_S for the first,
    hid_T for the others) is a multiple of `divisor`."""
    folded = int(cfg.in_shape[0]) * int(cfg.hid_S)
    if folded % divisor or cfg.hid_T % divisor:
        raise ValueError(
            f"model.hid_T ({cfg.hid_T}) and the first block's width T * hid_S ({folded}) must be "
            f"multiples of {divisor} for model.name {cfg.name!r} ({why}).")


# ----------------------------------------------------------------------------------------------
# Pieces of the transformer-style sub-blocks (ViT, Swin, MLP-Mixer, Uniformer, PoolFormer, ...)
# ----------------------------------------------------------------------------------------------

class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout over the last axis: timm's Mlp, and equally the
    1x1-conv MLPs of PoolFormer, ConvNeXt (ConvMlp) and Uniformer (CMlp) on NHWC maps. Kernels
    start truncated normal 0.02 (timm's Linear init) or, `fan_out_init`, N(0, sqrt(2/fan_out))
    (OpenSTL's conv init); biases 0."""

    hidden: int
    drop: float = 0.0
    fan_out_init: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        d = x.shape[-1]

        def linear(features, name):
            init = (fan_out_normal_init((1, 1), features) if self.fan_out_init
                    else nn.initializers.truncated_normal(0.02))
            return nn.Dense(features, name=name, kernel_init=init, dtype=self.dtype,
                            bias_init=nn.initializers.zeros, param_dtype=self.param_dtype)

        x = nn.Dropout(self.drop, deterministic=not train)(gelu(linear(self.hidden, "fc1")(x)))
        return nn.Dropout(self.drop, deterministic=not train)(linear(d, "fc2")(x))


class SelfAttention(nn.Module):
    """timm's (and Uniformer's) multi-head self-attention over axis -2 of `(..., N, D)`: one
    Linear `qkv` D -> 3D read as (3, heads, D/heads), softmax(q k^T / sqrt(D/heads) + bias) v,
    Linear `proj`, dropout `drop` after it (timm 0.6's proj_drop; attention dropout is 0, as
    OpenSTL's blocks leave it). `window` > 0 adds Swin's learnt relative position bias
    (`relative_position_bias_table`, one row per offset) for tokens of a window x window grid.
    `mask`, if given, is added to the logits as well (broadcast against `(..., heads, N, N)`):
    Swin's shifted-window region mask (SwinLSTM); no parameters depend on it."""

    num_heads: int = 8
    drop: float = 0.0
    window: int = 0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bias = None
        if self.window:
            table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(
                0.02), ((2 * self.window - 1) ** 2, self.num_heads), self.param_dtype)
            n = self.window * self.window
            bias = table[relative_position_index(self.window).reshape(-1)]
            bias = bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)
        if mask is not None:
            bias = mask if bias is None else bias + mask
        qkv = dense(3 * d, name="qkv", **dt)(x)
        qkv = qkv.reshape(x.shape[:-1] + (3, self.num_heads, d // self.num_heads))
        out = dot_product_attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :],
                                    bias, dtype=self.dtype)
        out = dense(d, name="proj", **dt)(out.reshape(x.shape))
        return nn.Dropout(self.drop, deterministic=not train)(out)


def relative_position_index(window: int) -> np.ndarray:
    """Swin's (timm's) `relative_position_index`: for tokens i, j of a window x window grid
    (row-major), the table row of their offset, (dy + w - 1) * (2w - 1) + dx + w - 1."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def layer_scale(module: nn.Module, name: str, features: int, init_value: float):
    """A per-channel layer-scale parameter `(features,)` initialised to `init_value`."""
    return module.param(name, nn.initializers.constant(init_value), (features,),
                        module.param_dtype)
