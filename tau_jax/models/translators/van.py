"""VAN (Visual Attention Network) as a SimVP translator (OpenSTL model_type 'van').

OpenSTL's VANBlock is gSTA's sub-block with another gating unit: the large kernel attention
(LKA), u * 1x1(dw 7x7 dilation 3(dw 5x5(u))), where gSTA splits the 1x1 output into a sigmoid
gate and a value. BatchNorm, layer scales 1e-2 and the MixMlp are the same; every conv starts
from OpenSTL's N(0, sqrt(2/fan_out)) init (VANSubBlock re-initialises them all).
"""

from __future__ import annotations

import functools

from tau_jax.models.translators.gsta import gated_attention
from tau_jax.models.translators.metaformer import (MetaTranslator, gated_sub_block,
                                                   metaformer_from_config)


def translator(cfg, **dtypes) -> MetaTranslator:
    """The VAN translator for a model config."""
    attention = functools.partial(gated_attention, dw_impl=cfg.dw_impl, gate_input=True)
    return metaformer_from_config(cfg, gated_sub_block(attention, cfg), **dtypes)
