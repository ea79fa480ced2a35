"""The SimVP family's translators: one module per architecture behind one table, as timm keeps
its zoo. A translator maps the encoder's latent video `(B, T, h, w, hid_S)` to one of the same
shape and takes a `train` flag.

`TRANSLATORS[model.name]` is a `Translator`:
  build(cfg, dtype=, param_dtype=)   the module, after checking the fields it reads
  openstl_type                       OpenSTL SimVP_Model's `model_type`, None if not in OpenSTL
  latent_rule(cfg) -> (k, why)       latent sides it runs on are multiples of k; `why` says why
                                     its parameters fix them to model.in_shape's (None if not)
  key_rules                          (pattern, replacement) pairs taking its Flax paths to
                                     OpenSTL's keys, after the SimVP family's own
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tau_jax.models.translators import (convmixer, convnext, gsta, hornet, incepu, mlpmixer,
                                        moganet, poolformer, swin, tau, timesformer, tps,
                                        uniformer, van, vit)


def any_latent(cfg) -> tuple[int, None]:
    """Convolutions, pooling and attention over all positions take any latent size."""
    del cfg
    return 1, None


@dataclasses.dataclass(frozen=True)
class Translator:
    build: Callable
    openstl_type: str | None
    latent_rule: Callable = any_latent
    key_rules: tuple[tuple[str, str], ...] = ()


# OpenSTL's MixMlp wraps its depthwise conv in a DWConv module of its own.
MIX_MLP_KEYS = ((r"\.mlp\.dwconv\.", ".mlp.dwconv.dwconv."),)


TRANSLATORS = {
    "tau": Translator(tau.translator, "tau", key_rules=MIX_MLP_KEYS),
    "gsta": Translator(gsta.translator, "gSTA", key_rules=MIX_MLP_KEYS),
    "incepu": Translator(incepu.translator, "incepu"),
    "convmixer": Translator(convmixer.translator, "convmixer"),
    "convnext": Translator(convnext.translator, "convnext"),
    "hornet": Translator(hornet.translator, "hornet"),
    "mlpmixer": Translator(mlpmixer.translator, "mlpmixer", mlpmixer.latent_rule),
    "moganet": Translator(moganet.translator, "moganet"),
    "poolformer": Translator(poolformer.translator, "poolformer"),
    "swin": Translator(swin.translator, "swin", swin.latent_rule),
    "uniformer": Translator(uniformer.translator, "uniformer"),
    "van": Translator(van.translator, "van", key_rules=MIX_MLP_KEYS),
    "vit": Translator(vit.translator, "vit"),
    "timesformer": Translator(timesformer.translator, None, timesformer.latent_rule),
    "tps": Translator(tps.translator, None, tps.latent_rule),
}
