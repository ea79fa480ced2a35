"""TAU: the Temporal Attention Unit (Tan et al., CVPR 2023), as OpenSTL implements it.

The translator is the MetaFormer one (metaformer.py) with TemporalAttention as token mixer:
statical attention (depthwise 5x5 -> depthwise 7x7 dilation 3 -> 1x1, no nonlinearity) times
dynamical attention (squeeze-excitation: avgpool -> FC -> ReLU -> FC -> sigmoid) times the input.
TemporalAttention keeps PyTorch's default init: OpenSTL builds it after the block's custom init.

Ablations. `model.tau_ablation` picks a row of the TAU paper's ablation table (numbers there:
Moving MNIST MSE / TaxiBJ MSE x 100 / Moving MNIST GFLOPs):
  'none'           "Ours" (19.8 / 34.4 / 16.0): the exact OpenSTL TAU, same parameters and outputs.
  'no_sa'          "w/o SA" (23.2 / 40.8 / 15.3): the gating unit is DA(u) * u; the statical
                   attention's conv0, conv_spatial, conv1 are gone (d^2 + 77d parameters a block).
  'no_da'          "w/o DA" (22.4 / 38.4 / 16.0): the gating unit is SA(u) * u; the
                   squeeze-excitation's fc_0 and fc_2 are gone (2dh parameters a block).
  'conv_baseline'  "Conv Baseline" (58.9 / 43.5 / 6.1): see below.
"w/o DDR" (21.1 / 37.7 / 16.0) is a loss setting, not a model one: `loss.alpha = 0`.

The conv baseline is our interpretation: our notes of the paper give the row's numbers, not its
architecture. We keep the SimVP frame and the translator's frame (widths, N_T blocks with their
BatchNorm, layer scale, residual and DropPath, the 1x1 reductions between widths) and reduce each
block to its convolutional token mixer, `x + DropPath(ls * (proj_2(GELU(proj_1(BN(x)))) + BN(x)))`:
the TAU block without both attentions (the gating unit is the identity) and without the MixMlp
sub-block. The FLOPs decide the MLP question. At the Moving MNIST config (fvcore-style multiply-
adds) the encoder and decoder cost 4.65 G, the statical attention 0.65 G (16.0 - 15.3 in the
table: the 'no_sa' row matches), the MixMlp 9.27 G. TAU without SA, DA and MixMlp comes to 6.02 G
against the table's 6.1 G, whereas any variant that keeps the MixMlp (a TAU block with an identity
or plain-conv token mixer) costs 14 G or more.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.layers import DepthwiseConv, torch_default_kernel_init
from tau_jax.models.translators.metaformer import (AttentionShell, MetaTranslator,
                                                  gated_sub_block, metaformer_from_config,
                                                  pointwise)

Dtype = Any

ABLATIONS = ("none", "no_sa", "no_da", "conv_baseline")


def large_kernel_geometry(kernel_size: int = 21, dilation: int = 3):
    """Decompose a KxK kernel into (dw k, pad) and (dilated dw k, pad): 21 -> (5, 2), (7, 9)."""
    d_k = 2 * dilation - 1
    dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
    return (d_k, (d_k - 1) // 2), (dd_k, dilation * (dd_k - 1) // 2)


def se_hidden(d: int, reduction: int = 16) -> int:
    """Hidden width of TAU's squeeze-excitation: d // max(d // reduction, 4) (16 for d >= 64)."""
    return d // max(d // reduction, 4)


class TemporalAttentionModule(nn.Module):
    """DA(u) * SA(u) * u with SA the decomposed large-kernel conv and DA squeeze-excitation;
    `statical` / `dynamical` = False leaves SA / DA out (the paper's ablations)."""

    kernel_size: int = 21
    dilation: int = 3
    reduction: int = 16
    statical: bool = True
    dynamical: bool = True
    dw_impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, u):
        d = u.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        sa = da = 1.0  # an attention left out gates with 1
        if self.statical:
            (k0, p0), (k1, p1) = large_kernel_geometry(self.kernel_size, self.dilation)
            sa = DepthwiseConv(k0, padding=p0, impl=self.dw_impl, name="conv0", **dt)(u)
            sa = DepthwiseConv(k1, padding=p1, dilation=self.dilation, impl=self.dw_impl,
                               name="conv_spatial", **dt)(sa)
            sa = pointwise(d, d, torch_init=True, name="conv1", **dt)(sa)
        if self.dynamical:
            pooled = jnp.mean(u, axis=(1, 2))
            dense = functools.partial(nn.Dense, use_bias=False,
                                      kernel_init=torch_default_kernel_init(), **dt)
            s = nn.relu(dense(se_hidden(d, self.reduction), name="fc_0")(pooled))
            da = nn.sigmoid(dense(d, name="fc_2")(s))[:, None, None, :]
        return da * sa * u


def temporal_attention(dw_impl: str = "auto", statical: bool = True, dynamical: bool = True,
                       **kwargs) -> AttentionShell:
    """TAU's token mixer: proj_1 -> GELU -> TemporalAttentionModule -> proj_2, + input."""
    gating = functools.partial(TemporalAttentionModule, statical=statical, dynamical=dynamical,
                               dw_impl=dw_impl)
    return AttentionShell(gating, torch_init=True, **kwargs)


def ablation_of(cfg) -> str:
    """`cfg.tau_ablation`, checked."""
    ablation = cfg.tau_ablation
    if ablation not in ABLATIONS:
        raise ValueError(f"model.tau_ablation must be one of {ABLATIONS}, got {ablation!r}.")
    return ablation


def translator(cfg, **dtypes) -> MetaTranslator:
    """The TAU translator for a model config, ablated as `cfg.tau_ablation` says (the conv
    baseline: neither attention, and blocks without their MixMlp half)."""
    ablation = ablation_of(cfg)
    attention = functools.partial(temporal_attention, dw_impl=cfg.dw_impl,
                                  statical=ablation not in ("no_sa", "conv_baseline"),
                                  dynamical=ablation not in ("no_da", "conv_baseline"))
    mlp_ratio = 0.0 if ablation == "conv_baseline" else None
    return metaformer_from_config(cfg, gated_sub_block(attention, cfg, mlp_ratio), **dtypes)
