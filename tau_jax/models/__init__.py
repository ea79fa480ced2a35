"""Model registry: `model.name` -> its family (tau_jax/models/family.py says what a family
declares), and `build(model_config)` -> the Flax module.

The fields keep OpenSTL's names (hid_S, hid_T, N_S, N_T, num_hidden, ...). Every config error
is raised by `build`, before anything is initialised or compiled.
"""

from __future__ import annotations

import functools
from types import ModuleType

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from tau_jax.models import mmvp, phydnet, predformer, recurrent, simvp, swinlstm
from tau_jax.models.family import check_in_shape, identity, require_fields, resolve_dtype
from tau_jax.models.framing import EDGE, Framing, Padding, pad_amounts
from tau_jax.models.layers import chain_passes, compiling_for_cpu

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


def compiler_options(cfg) -> dict | None:
    """XLA options for compiling model `cfg.name`'s programs (`jax.jit(compiler_options=...)`):
    its family's CPU_COMPILER_OPTIONS when tracing for CPU (`layers.compiling_for_cpu`) and this
    jaxlib's XLA takes them (they are experimental options; a jaxlib without them gets its
    defaults, slower, not wrong), else None."""
    options = family_of(cfg.name).CPU_COMPILER_OPTIONS
    if not options or not compiling_for_cpu():
        return None
    return dict(options) if _xla_takes(tuple(sorted(options.items()))) else None


@functools.cache
def _xla_takes(options: tuple) -> bool:
    try:
        jax.jit(jnp.sum, compiler_options=dict(options)).lower(jnp.zeros(2)).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


def default_config(name: str) -> ml_collections.ConfigDict:
    """The defaults of the `model` section of model `name`."""
    return family_of(name).model_config(name)


def _frame_rule(cfg) -> tuple[int, str | None]:
    """The family's `frame_rule`; (1, None) when a field it reads is invalid (the family's build
    names that field)."""
    try:
        m, fixed = family_of(cfg.name).frame_rule(cfg)
        return max(int(m), 1), fixed
    except (TypeError, ValueError, KeyError, AttributeError):
        return 1, None


def check_fixed_grid(cfg) -> None:
    """A model whose parameters fix the grid cannot pad around its calls: its in_shape must be
    a multiple of its rule (one sentence naming the sizes it takes)."""
    m, fixed = _frame_rule(cfg)
    _, h0, w0, _ = check_in_shape(cfg)
    if fixed is not None and (h0 % m or w0 % m):
        near = lambda v: f"{v // m * m} or {-(-v // m) * m}" if v > m else str(m)  # noqa: E731
        raise ValueError(f"model {cfg.name!r} cannot pad its frames ({fixed}): model.in_shape's "
                         f"H and W must be multiples of {m}, got {h0}x{w0}; use frames of "
                         f"H {near(h0) if h0 % m else h0} and W {near(w0) if w0 % m else w0}.")


def padded_size(cfg, h: int, w: int) -> tuple[int, int]:
    """The smallest frame size >= (h, w) the model of `cfg` runs on: multiples of its family's
    `frame_rule`; for a model whose parameters fix the grid, in_shape's, which takes frames no
    larger than that (ValueError naming the sizes it takes otherwise)."""
    m, fixed = _frame_rule(cfg)
    if fixed is None:
        return -(-int(h) // m) * m, -(-int(w) // m) * m
    check_fixed_grid(cfg)
    _, h0, w0, _ = check_in_shape(cfg)
    if h <= h0 and w <= w0:
        return h0, w0
    raise ValueError(f"model {cfg.name!r} takes only {h0}x{w0} frames (model.in_shape; {fixed}) "
                     f"and pads smaller ones up to that, but these frames are {h}x{w}; crop or "
                     f"resize them to at most {h0}x{w0}.")


def run_config(cfg) -> ml_collections.ConfigDict:
    """`cfg` with in_shape's H x W padded to the size the model runs on (`padded_size`); a
    model whose parameters fix the grid runs on in_shape as it is."""
    if not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(dict(cfg))
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name', one of {names()}.")
    t, h, w, c = check_in_shape(cfg)
    if _frame_rule(cfg)[1] is not None:
        return cfg
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
    the padded frame size (`run_config`): call it through `framing_of(cfg)`. The family's own
    field checks come first, then the grid of a model that cannot pad."""
    cfg = run_config(cfg)
    family = family_of(cfg.name)
    require_fields(cfg, ("dtype", "param_dtype"))
    dtypes = dict(dtype=resolve_dtype(cfg.dtype, "dtype"),
                  param_dtype=resolve_dtype(cfg.param_dtype, "param_dtype"))
    module = family.build(cfg, dtypes)
    check_fixed_grid(cfg)
    return module


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
