"""Model registry: `build(model_config)` turns a config's `model` section into a Flax module.

`model_config.name` picks the family; the other fields keep OpenSTL's names (hid_S, hid_T,
N_S, N_T, ...). Every config error is raised here, before anything is initialised or compiled.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from tau_jax.models import convlstm, gsta, incepu, predrnn, tau, timesformer, tps
from tau_jax.models.layers import DW_IMPLS
from tau_jax.models.simvp import SimVP

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16,
           "float64": jnp.float64}

# name -> function(model_config, dtype=..., param_dtype=...) -> translator module
SIMVP_TRANSLATORS: dict[str, Callable[..., nn.Module]] = {
    "tau": tau.translator,                  # checks its own field (tau.ablation_of)
    "gsta": gsta.translator,
    "incepu": incepu.translator,
    "timesformer": timesformer.translator,  # checks its own fields (timesformer.check_config)
    "tps": tps.translator,                  # checks its own fields (tps.check_config)
}

SIMVP_FIELDS = ("in_shape", "out_frames", "hid_S", "hid_T", "N_S", "N_T", "spatio_kernel_enc",
                "spatio_kernel_dec", "mlp_ratio", "drop", "drop_path", "drop_path_schedule",
                "dw_impl", "dtype", "param_dtype")


def names() -> list[str]:
    """Model names `build` accepts."""
    return sorted(BUILDERS)


def resolve_dtype(name: str, field: str) -> Any:
    if name not in _DTYPES:
        raise ValueError(f"model.{field} must be one of {sorted(_DTYPES)}, got {name!r}.")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(f"model.{field} = 'float64' needs jax_enable_x64: call "
                         "jax.config.update('jax_enable_x64', True) first.")
    return _DTYPES[name]


def _require(cfg, fields, family: str) -> None:
    missing = [f for f in fields if f not in cfg]
    if missing:
        raise ValueError(f"model config for {family!r} lacks field(s) {missing}; "
                         "start from tau_jax.config.base_config() or a file under configs/.")


def _check_simvp(cfg) -> None:
    _require(cfg, SIMVP_FIELDS, cfg.name)
    shape = tuple(cfg.in_shape)
    if len(shape) != 4 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ValueError(f"model.in_shape must be four positive ints (T, H, W, C), got {shape}.")
    if cfg.N_S < 2 or cfg.N_S % 2:
        raise ValueError(f"model.N_S must be an even number >= 2 (OpenSTL alternates stride 1 "
                         f"and 2 layers), got {cfg.N_S}.")
    stride = 2 ** (cfg.N_S // 2)
    _, h, w, _ = shape
    if h % stride or w % stride:
        raise ValueError(f"model.in_shape H x W = {h} x {w} must be divisible by the encoder's "
                         f"stride {stride} (2 ** (N_S // 2) with N_S = {cfg.N_S}); pad or resize "
                         "the frames.")
    if cfg.hid_S < 2 or cfg.hid_S % 2:
        raise ValueError(f"model.hid_S must be even (GroupNorm with 2 groups), got {cfg.hid_S}.")
    if cfg.N_T < 2:
        raise ValueError(f"model.N_T must be >= 2, got {cfg.N_T}.")
    if cfg.out_frames < 1:
        raise ValueError(f"model.out_frames must be >= 1, got {cfg.out_frames}.")
    if cfg.name != "incepu" and cfg.mlp_ratio <= 1:
        raise ValueError(f"model.mlp_ratio must be > 1, got {cfg.mlp_ratio}.")
    if cfg.dw_impl not in DW_IMPLS:
        raise ValueError(f"model.dw_impl must be one of {DW_IMPLS}, got {cfg.dw_impl!r}.")
    if cfg.drop_path_schedule not in ("openstl", "linear"):
        raise ValueError("model.drop_path_schedule must be 'openstl' or 'linear', got "
                         f"{cfg.drop_path_schedule!r}.")
    if cfg.name != "tau" and cfg.get("tau_ablation", "none") != "none":
        raise ValueError(f"model.tau_ablation applies to model.name 'tau' only, got "
                         f"{cfg.tau_ablation!r} with {cfg.name!r}; set it to 'none'.")
    if not 0.0 <= cfg.drop_path < 1.0 or not 0.0 <= cfg.drop < 1.0:
        raise ValueError(f"model.drop and model.drop_path must lie in [0, 1), got "
                         f"{cfg.drop} and {cfg.drop_path}.")


def _build_simvp(cfg, dtypes) -> nn.Module:
    _check_simvp(cfg)
    return SimVP(tuple(cfg.in_shape), cfg.hid_S, cfg.N_S, SIMVP_TRANSLATORS[cfg.name](cfg, **dtypes),
                 out_frames=cfg.out_frames, spatio_kernel_enc=cfg.spatio_kernel_enc,
                 spatio_kernel_dec=cfg.spatio_kernel_dec, **dtypes)


# name -> function(model_config, dtypes) -> module; a family registers its names here.
BUILDERS: dict[str, Callable[[Any, dict], nn.Module]] = {
    name: _build_simvp for name in SIMVP_TRANSLATORS}

# Recurrent family (called as model(frames, mask=..., train=...) -> (next_frames, aux)).
RECURRENT = ("predrnn", "predrnnv2", "convlstm")
BUILDERS.update(predrnn=predrnn.build_predrnn, predrnnv2=predrnn.build_predrnn,
                convlstm=convlstm.build_convlstm)


def build(cfg) -> nn.Module:
    """The Flax module for `cfg` (a ConfigDict or mapping with OpenSTL-named fields)."""
    if not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(dict(cfg))
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name', one of {names()}.")
    if cfg.name not in BUILDERS:
        raise ValueError(f"Unknown model.name {cfg.name!r}; known models: {names()}.")
    _require(cfg, ("dtype", "param_dtype"), cfg.name)
    dtypes = dict(dtype=resolve_dtype(cfg.dtype, "dtype"),
                  param_dtype=resolve_dtype(cfg.param_dtype, "param_dtype"))
    return BUILDERS[cfg.name](cfg, dtypes)


def example_inputs(cfg) -> dict:
    """Keyword arguments of a batch-1 call of the model, for `init` and shape inference."""
    if cfg.name in RECURRENT:
        return predrnn.example_inputs(cfg)
    return dict(x=jnp.zeros((1,) + tuple(cfg.in_shape), resolve_dtype(cfg.param_dtype, "param_dtype")))


def init(cfg, rng) -> dict:
    """Freshly initialised variables ({'params', 'batch_stats'?}) for the model of `cfg`."""
    model = build(cfg)
    return model.init({"params": rng}, train=False, **example_inputs(cfg))


def count_params(params) -> int:
    """Number of trainable parameters (BatchNorm running statistics excluded, as OpenSTL)."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
