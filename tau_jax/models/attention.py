"""Shared pieces of the attention translators (TimeSformer, TPS); `dense`, `layer_norm` and
`dot_product_attention` also serve the MetaFormer zoo's attention blocks and PredFormer.

Both translators see the latent video `(B, T, h, w, C)` as tokens: square `latent_patch` patches
of each frame's latent map are flattened (space-to-depth, channel order (row, col, c)) and
projected to the token width `D = hid_T`; at the end a LayerNorm and a linear map project the
tokens back to patches and the patches back to the latent map, so output shape == input shape.

Precision: every module takes `dtype` (compute) and `param_dtype` (storage). Matmuls run in
`dtype`; attention logits accumulate in float32 and the softmax runs in float32 whatever `dtype`
is, then the weights are cast back to `dtype` for the product with the values. LayerNorm
statistics are float32 (flax promotes them).

Initialisation follows the references: Linear kernels truncated normal std 0.02 (flax truncates
at 2 std and rescales; timm's trunc_normal_ truncates at +-2 absolute, i.e. practically plain
N(0, 0.02)), biases 0, LayerNorm 1 / 0. GELU is the exact (erf) form.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import DropPath, gelu

Dtype = Any

def trunc_normal(std: float = 0.02) -> Callable:
    return nn.initializers.truncated_normal(std)


def dense(features: int, *, name: str, dtype=None, param_dtype=jnp.float32,
          use_bias: bool = True, zero: bool = False) -> nn.Dense:
    """A Linear layer with truncated-normal(0.02) (or zero) kernel and zero bias."""
    kernel_init = nn.initializers.zeros if zero else trunc_normal()
    return nn.Dense(features, use_bias=use_bias, name=name, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=kernel_init, bias_init=nn.initializers.zeros)


def layer_norm(epsilon: float, *, name: str, dtype=None, param_dtype=jnp.float32) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=epsilon, name=name, dtype=dtype, param_dtype=param_dtype)


def dot_product_attention(q, k, v, bias=None, dtype=None):
    """softmax(q k^T / sqrt(d) + bias) v over the second-to-last axis of `(..., L, H, d)` inputs.

    Logits are accumulated and soft-maxed in float32 (float64 for float64 inputs); `bias`
    broadcasts against `(..., H, L, L)`.
    """
    acc = jnp.promote_types(jnp.float32, q.dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=acc)
    logits = logits * jnp.asarray(q.shape[-1] ** -0.5, acc)
    if bias is not None:
        logits = logits + bias.astype(acc)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype or v.dtype)
    return jnp.einsum("...hqk,...khd->...qhd", weights, v)


class Attention(nn.Module):
    """Multi-head self-attention over axis -2 of `(..., L, D)`; all leading axes are batch.

    qkv is one fused Linear D -> (3, heads, D/heads) with bias, as the references' Linear(D, 3D)
    (same column order); `proj` maps the merged heads back to D. `post_attention`, if given,
    transforms the per-head output `(..., L, heads, D/heads)` before `proj` (TPS's shift back).
    """

    num_heads: int
    qkv_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias=None, post_attention: Callable | None = None):
        d = x.shape[-1]
        head_dim = d // self.num_heads
        qkv = nn.DenseGeneral(
            (3, self.num_heads, head_dim), use_bias=self.qkv_bias, name="qkv", dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=trunc_normal(),
            bias_init=nn.initializers.zeros)(x)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        out = dot_product_attention(q, k, v, bias, dtype=self.dtype)
        if post_attention is not None:
            out = post_attention(out)
        return nn.DenseGeneral(
            d, axis=(-2, -1), name="proj", dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=trunc_normal(),
            bias_init=nn.initializers.zeros)(out)


class MlpResidual(nn.Module):
    """x + DropPath(fc2(dropout(GELU(fc1(LN(x)))))) with a final dropout; hidden = D * mlp_ratio.

    Sub-modules 'norm', 'fc1' (D -> hidden), 'fc2' (hidden -> D); DropPath's sample axis is 0.
    """

    mlp_ratio: float
    drop: float = 0.0
    drop_path: float = 0.0
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d = x.shape[-1]
        y = layer_norm(self.epsilon, name="norm", **dt)(x)
        y = dense(int(d * self.mlp_ratio), name="fc1", **dt)(y)
        y = nn.Dropout(self.drop, deterministic=not train)(gelu(y))
        y = dense(d, name="fc2", **dt)(y)
        y = nn.Dropout(self.drop, deterministic=not train)(y)
        return x + DropPath(self.drop_path)(y, train)


# ----------------------------------------------------------------------------------------------
# Latent map <-> tokens
# ----------------------------------------------------------------------------------------------

def patchify(z, patch: int):
    """(B, T, h, w, C) -> (B, T, h/p, w/p, p*p*C), channel order (row-in-patch, col, c)."""
    if patch == 1:
        return z
    b, t, h, w, c = z.shape
    z = z.reshape(b, t, h // patch, patch, w // patch, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return z.reshape(b, t, h // patch, w // patch, patch * patch * c)


def unpatchify(z, patch: int, channels: int):
    """Inverse of `patchify`: (B, T, gh, gw, p*p*C) -> (B, T, gh*p, gw*p, C)."""
    if patch == 1:
        return z
    b, t, gh, gw, _ = z.shape
    z = z.reshape(b, t, gh, gw, patch, patch, channels).transpose(0, 1, 2, 4, 3, 5, 6)
    return z.reshape(b, t, gh * patch, gw * patch, channels)


class TokenEmbed(nn.Module):
    """Latent patches -> tokens: patchify, then Linear p*p*C -> D ('embed_in')."""

    features: int
    patch: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        x = patchify(z, self.patch)
        return dense(self.features, name="proj", dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)


class TokenHead(nn.Module):
    """Tokens -> latent map: LayerNorm, Linear D -> p*p*C, unpatchify."""

    channels: int
    patch: int = 1
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = layer_norm(self.epsilon, name="norm", **dt)(x)
        x = dense(self.patch * self.patch * self.channels, name="proj",
                  **dt)(x)
        return unpatchify(x, self.patch, self.channels)


# ----------------------------------------------------------------------------------------------
# Config checks shared by the attention translators (raised from `build`, before any tracing)
# ----------------------------------------------------------------------------------------------

def latent_size(cfg) -> tuple[int, int]:
    """(h, w) of the encoder's latent map: H, W divided by the stride 2 ** (N_S // 2)."""
    stride = 2 ** (cfg.N_S // 2)
    _, h, w, _ = tuple(cfg.in_shape)
    return h // stride, w // stride


def check_token_config(cfg) -> tuple[int, int]:
    """Checks num_heads / hid_T / latent_patch; returns the token grid (h/p, w/p)."""
    if not isinstance(cfg.num_heads, int) or cfg.num_heads < 1:
        raise ValueError(f"model.num_heads must be a positive int, got {cfg.num_heads!r}.")
    if cfg.hid_T % cfg.num_heads:
        raise ValueError(f"model.num_heads = {cfg.num_heads} must divide the token width "
                         f"model.hid_T = {cfg.hid_T}.")
    h, w = latent_size(cfg)
    p = cfg.latent_patch
    if not isinstance(p, int) or p < 1:
        raise ValueError(f"model.latent_patch must be a positive int, got {p!r}.")
    return h // p, w // p
