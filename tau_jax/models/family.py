"""What a model family declares, and the checks every family shares.

A family is one module (`tau_jax.models.simvp`, `tau_jax.models.recurrent`) that owns all
there is to know about its models; the trainer, `predict`, `convert` and the benchmark look it
up by `model.name` (`tau_jax.models.family_of`) and never name one. It defines:

    NAMES                     the `model.name` values it builds
    OPENSTL_FEED              what OpenSTL's training method feeds the model: 'frames' (T
                              frames in, T' out) or 'patches' (all T+T' frames patched, with a
                              scheduled-sampling mask); the benchmark's PyTorch peer follows it
    model_config(name)        its `model` config section: every field, its default and meaning
    build(cfg, dtypes)        checks the section (one ValueError naming the field), the module;
                              cfg.in_shape is the padded size the module runs on
                              (`tau_jax.models.build` pads it by `frame_rule`)
    example_inputs(cfg)       keyword arguments of a batch-1 call, for `init`
    loss(model, config, variables, frames, rngs, key, step, steps_per_epoch=None, framing=NONE)
                              -> (loss, mutated variables): the training loss of a batch of
                              T+T' frames, train mode, every model call on `framing.pad`ded
                              frames and its output `framing.crop`ped before any loss term
                              (framing.py); `steps_per_epoch` is the trainer's (None outside a
                              run), for schedules counted in epochs (PhyDNet)
    predict(model, cfg, variables, inputs)       the out_frames frames after T inputs, eval mode
    model_pass(model, cfg, variables, window, around)
                              the same, with every model call on a window wrapped by
                              `around(call) -> call` (predict pads before and crops after it)
    frame_rule(cfg) -> (m, why)   frame sizes the model runs on (multiples of m) and, where its
                              parameters fix the grid to the (padded) in_shape's, why
    openstl_key(collection, path, shape, cfg) -> (key, transform)
                              the OpenSTL state-dict key of one Flax leaf and the function
                              taking the PyTorch array to the Flax layout
    openstl_model(cfg) -> (module, class, args, kwargs)   OpenSTL's counterpart, if it has one
                              (None otherwise): `openstl.models.<module>.<class>(*args, **kwargs)`

    CPU_COMPILER_OPTIONS      XLA options for the family's programs compiled for CPU
                              (`tau_jax.models.compiler_options`); {} for most families
    OPENSTL_TWINS             ((copy prefix, canonical prefix), ...) of modules OpenSTL saves
                              twice (PhyDNet's); `tau_jax.convert` checks each copy equals its
                              twin and loads both into one parameter; () for most families

Adding a family is one module with these names, its configs and its tests; `tau_jax.models`
registers it in FAMILIES.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from tau_jax.models.layers import chain_passes

SEAM = ("NAMES", "OPENSTL_FEED", "OPENSTL_TWINS", "CPU_COMPILER_OPTIONS", "model_config", "build",
        "example_inputs", "loss", "predict", "model_pass", "frame_rule", "openstl_key",
        "openstl_model")

# XLA:CPU options for families of convolution models: YNNPACK for matrix products and
# reductions, XLA's Eigen kernels for convolutions. Timed alone at the SimVP and PredRNN shapes
# (3x3 and 5x5, 16-256 channels), Eigen's convolutions and both their gradients run as fast as
# YNNPACK's or up to 2.7x faster (a 64-channel kernel gradient at 64x64: 61 -> 36 ms). In the
# train step: MMVP -32%, full TAU -12%, HorNet -12%, MogaNet -11%, quickstart -7% (bfloat16
# -3%), small gSTA -3%; PredRNN and PhyDNet (Eigen's products too before) even. Not SwinLSTM
# (+5%) or PredFormer (even), which keep XLA's defaults.
# Reductions stay YNNPACK's (XLA's own sums a loss's mean in float32 in order: 1.4e-5 relative
# error against 1.4e-8), and so do the products (the 1x1 convolutions at ~450 GFLOP/s).
EIGEN_CONVOLUTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                      "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16,
           "float64": jnp.float64}


def resolve_dtype(name: str, field: str) -> Any:
    """The jnp dtype of config value `name` of model.`field`."""
    if name not in _DTYPES:
        raise ValueError(f"model.{field} must be one of {sorted(_DTYPES)}, got {name!r}.")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(f"model.{field} = 'float64' needs jax_enable_x64: call "
                         "jax.config.update('jax_enable_x64', True) first.")
    return _DTYPES[name]


def require_fields(cfg, fields: Iterable[str]) -> None:
    """A model section lacking declared fields (built by hand, not from the config) fails here."""
    missing = [f for f in fields if f not in cfg]
    if missing:
        raise ValueError(f"model config for {cfg.name!r} lacks field(s) {missing}; start from "
                         "tau_jax.config.default_model_config(name) or a file under configs/.")


def check_in_shape(cfg) -> tuple[int, int, int, int]:
    """model.in_shape as four positive ints (T, H, W, C)."""
    shape = tuple(cfg.in_shape)
    if len(shape) != 4 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
        raise ValueError(f"model.in_shape must be four positive ints (T, H, W, C), got {shape}.")
    return shape


def identity(call):
    """`around` of a model pass without padding."""
    return call


# The seam of a family whose module maps T input frames to the next T (`predict_window(x,
# train)`) and chains such passes to out_frames in `__call__(x, train)` (SimVP, PredFormer).

def frames_example_inputs(cfg) -> dict:
    """Batch-1 call arguments: the T input frames."""
    dt = resolve_dtype(cfg.param_dtype, "param_dtype")
    return dict(x=jnp.zeros((1,) + tuple(cfg.in_shape), dt))


def frames_predict(model, cfg, variables, inputs):
    """The out_frames frames after `inputs` (B, T, H, W, C), eval mode."""
    del cfg
    return model.apply(variables, inputs, train=False)


def frames_model_pass(model, cfg, variables, window, around=identity):
    """`predict` made of T-frame `predict_window` calls, each wrapped by `around`: the roll-out
    the model itself makes, with every call padded and cropped as the caller asks."""
    def call(frames):
        return model.apply(variables, frames, False, method="predict_window")
    return chain_passes(around(call), window, int(cfg.out_frames))
