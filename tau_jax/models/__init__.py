"""Model registry: `model.name` -> its family (tau_jax/models/family.py says what a family
declares), and `build(model_config)` -> the Flax module.

The fields keep OpenSTL's names (hid_S, hid_T, N_S, N_T, num_hidden, ...). Every config error
is raised by `build`, before anything is initialised or compiled.
"""

from __future__ import annotations

from types import ModuleType

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from tau_jax.models import mmvp, phydnet, predformer, recurrent, simvp, swinlstm
from tau_jax.models.family import check_in_shape, identity, require_fields, resolve_dtype
from tau_jax.models.framing import EDGE, Framing, Padding, pad_amounts
from tau_jax.models.layers import chain_passes

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


def padded_size(cfg, h: int, w: int) -> tuple[int, int]:
    """The smallest frame size >= (h, w) the model of `cfg` runs on: multiples of its family's
    `frame_rule`; for a model whose parameters fix the grid, the padded in_shape, which takes
    frames no larger than in_shape's (ValueError naming the sizes it takes otherwise)."""
    try:
        m, fixed = family_of(cfg.name).frame_rule(cfg)
        m = int(m)
    except (TypeError, ValueError, KeyError, AttributeError):
        m, fixed = 1, None  # a field the rule cannot read: the family's build names it
    m = max(m, 1)
    up = lambda v: -(-int(v) // m) * m  # noqa: E731
    if fixed is None:
        return up(h), up(w)
    _, h0, w0, _ = check_in_shape(cfg)
    if h0 % m or w0 % m:
        near = lambda v: f"{v // m * m} or {up(v)}" if v % m else str(v)  # noqa: E731
        raise ValueError(f"model {cfg.name!r} cannot pad its frames ({fixed}): model.in_shape's "
                         f"H and W must be multiples of {m}, got {h0}x{w0}; use frames of "
                         f"H {near(h0)} and W {near(w0)}.")
    if h <= h0 and w <= w0:
        return h0, w0
    raise ValueError(f"model {cfg.name!r} takes only {h0}x{w0} frames (model.in_shape; {fixed}) "
                     f"and pads smaller ones up to that, but these frames are {h}x{w}; crop or "
                     f"resize them to at most {h0}x{w0}.")


def run_config(cfg) -> ml_collections.ConfigDict:
    """`cfg` with in_shape's H x W padded to the size the model runs on (`padded_size`)."""
    if not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(dict(cfg))
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name', one of {names()}.")
    t, h, w, c = check_in_shape(cfg)
    size = padded_size(cfg, h, w)
    if size == (h, w):
        return cfg
    cfg = cfg.copy_and_resolve_references()
    cfg.in_shape = (t, *size, c)
    return cfg


def framing_of(cfg, padding: Padding = EDGE) -> Framing:
    """The padding and crop of in_shape-sized frames around every call of `build(cfg)`."""
    _, h, w, _ = check_in_shape(cfg)
    return Framing(pad_amounts((h, w), padded_size(cfg, h, w)), padding)


def build(cfg) -> nn.Module:
    """The Flax module for `cfg` (a ConfigDict or mapping with OpenSTL-named fields), built for
    the padded frame size (`run_config`): call it through `framing_of(cfg)`."""
    cfg = run_config(cfg)
    family = family_of(cfg.name)
    require_fields(cfg, ("dtype", "param_dtype"))
    dtypes = dict(dtype=resolve_dtype(cfg.dtype, "dtype"),
                  param_dtype=resolve_dtype(cfg.param_dtype, "param_dtype"))
    return family.build(cfg, dtypes)


def example_inputs(cfg) -> dict:
    """Keyword arguments of a batch-1 call of the model (at its padded frame size), for `init`
    and shape inference."""
    return family_of(cfg.name).example_inputs(run_config(cfg))


def init(cfg, rng) -> dict:
    """Freshly initialised variables ({'params', 'batch_stats'?}) for the model of `cfg`."""
    model = build(cfg)
    return model.init({"params": rng}, train=False, **example_inputs(cfg))


def rollout(model, cfg, variables, inputs, horizon: int, around=identity):
    """Normalised inputs (B, T, H, W, C) -> the `horizon` next frames, float32, eval mode:
    passes of the model chained on its own outputs (the last T frames known so far), every model
    call wrapped by `around` (a `Framing.around`: pad before, crop after)."""
    family = family_of(cfg.name)

    def one_pass(window):
        return family.model_pass(model, cfg, variables, window, around)
    return chain_passes(one_pass, inputs, horizon).astype(jnp.float32)


def count_params(params) -> int:
    """Number of trainable parameters (BatchNorm running statistics excluded, as OpenSTL)."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
