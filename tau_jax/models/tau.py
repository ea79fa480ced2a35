"""TAU: the Temporal Attention Unit (Tan et al., CVPR 2023), as OpenSTL implements it.

The translator is the MetaFormer one (metaformer.py) with TemporalAttention as token mixer:
statical attention (depthwise 5x5 -> depthwise 7x7 dilation 3 -> 1x1, no nonlinearity) times
dynamical attention (squeeze-excitation: avgpool -> FC -> ReLU -> FC -> sigmoid) times the input.
TemporalAttention keeps PyTorch's default init: OpenSTL builds it after the block's custom init.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import DepthwiseConv, torch_default_kernel_init
from tau_jax.models.metaformer import (AttentionShell, MetaTranslator, metaformer_from_config,
                                       pointwise)

Dtype = Any


def large_kernel_geometry(kernel_size: int = 21, dilation: int = 3):
    """Decompose a KxK kernel into (dw k, pad) and (dilated dw k, pad): 21 -> (5, 2), (7, 9)."""
    d_k = 2 * dilation - 1
    dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
    return (d_k, (d_k - 1) // 2), (dd_k, dilation * (dd_k - 1) // 2)


def se_hidden(d: int, reduction: int = 16) -> int:
    """Hidden width of TAU's squeeze-excitation: d // max(d // reduction, 4) (16 for d >= 64)."""
    return d // max(d // reduction, 4)


class TemporalAttentionModule(nn.Module):
    """SA(u) * DA(u) * u with SA the decomposed large-kernel conv and DA squeeze-excitation."""

    kernel_size: int = 21
    dilation: int = 3
    reduction: int = 16
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, u):
        d = u.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        (k0, p0), (k1, p1) = large_kernel_geometry(self.kernel_size, self.dilation)
        attn = DepthwiseConv(k0, padding=p0, impl=self.dw_impl, name="conv0", **dt)(u)
        attn = DepthwiseConv(k1, padding=p1, dilation=self.dilation, impl=self.dw_impl,
                             name="conv_spatial", **dt)(attn)
        attn = pointwise(d, d, torch_init=True, name="conv1", **dt)(attn)

        hidden = se_hidden(d, self.reduction)
        pooled = jnp.mean(u, axis=(1, 2))
        dense = functools.partial(nn.Dense, use_bias=False, kernel_init=torch_default_kernel_init(),
                                  **dt)
        s = nn.relu(dense(hidden, name="fc_0")(pooled))
        s = nn.sigmoid(dense(d, name="fc_2")(s))
        return s[:, None, None, :] * attn * u


def temporal_attention(dw_impl: str = "auto", **kwargs) -> AttentionShell:
    """TAU's token mixer: proj_1 -> GELU -> TemporalAttentionModule -> proj_2, + input."""
    gating = functools.partial(TemporalAttentionModule, dw_impl=dw_impl)
    return AttentionShell(gating, torch_init=True, **kwargs)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The TAU translator for a model config."""
    return metaformer_from_config(functools.partial(temporal_attention, dw_impl=cfg.dw_impl), cfg,
                                  **dtypes)
