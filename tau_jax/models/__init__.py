"""Model registry: `model.name` -> its family (tau_jax/models/family.py says what a family
declares), and `build(model_config)` -> the Flax module.

The fields keep OpenSTL's names (hid_S, hid_T, N_S, N_T, num_hidden, ...). Every config error
is raised by `build`, before anything is initialised or compiled.
"""

from __future__ import annotations

from types import ModuleType

import jax
import ml_collections
from flax import linen as nn

from tau_jax.models import mmvp, phydnet, predformer, recurrent, simvp, swinlstm
from tau_jax.models.family import require_fields, resolve_dtype

FAMILIES: tuple[ModuleType, ...] = (simvp, recurrent, predformer, phydnet, swinlstm, mmvp)
_FAMILY_OF = {name: family for family in FAMILIES for name in family.NAMES}


def names() -> list[str]:
    """Model names `build` accepts."""
    return sorted(_FAMILY_OF)


def family_of(name: str) -> ModuleType:
    """The family module that builds model `name`."""
    if name not in _FAMILY_OF:
        raise ValueError(f"Unknown model.name {name!r}; known models: {names()}.")
    return _FAMILY_OF[name]


def default_config(name: str) -> ml_collections.ConfigDict:
    """The defaults of the `model` section of model `name`."""
    return family_of(name).model_config(name)


def build(cfg) -> nn.Module:
    """The Flax module for `cfg` (a ConfigDict or mapping with OpenSTL-named fields)."""
    if not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(dict(cfg))
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name', one of {names()}.")
    family = family_of(cfg.name)
    require_fields(cfg, ("dtype", "param_dtype"))
    dtypes = dict(dtype=resolve_dtype(cfg.dtype, "dtype"),
                  param_dtype=resolve_dtype(cfg.param_dtype, "param_dtype"))
    return family.build(cfg, dtypes)


def example_inputs(cfg) -> dict:
    """Keyword arguments of a batch-1 call of the model, for `init` and shape inference."""
    return family_of(cfg.name).example_inputs(cfg)


def init(cfg, rng) -> dict:
    """Freshly initialised variables ({'params', 'batch_stats'?}) for the model of `cfg`."""
    model = build(cfg)
    return model.init({"params": rng}, train=False, **example_inputs(cfg))


def count_params(params) -> int:
    """Number of trainable parameters (BatchNorm running statistics excluded, as OpenSTL)."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
