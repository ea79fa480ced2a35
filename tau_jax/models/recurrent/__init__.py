"""The recurrent family: PredRNN, PredRNN-V2 and ConvLSTM (model.py), PredRNN++ (predrnnpp.py),
MIM (mim.py), E3D-LSTM (e3dlstm.py) and MAU (mau.py) with OpenSTL's scheduled sampling
(sampling.py), trained on OpenSTL's recurrent loss; the family seam of
tau_jax/models/family.py.

Loss: MSE between the T+T'-1 predictions and frames 1..T+T'-1 (the input phase's one-step
predictions included), + decouple_beta * the memory-decoupling loss for PredRNN-V2, + the L1 of
the same difference for E3D-LSTM; the experiment's `loss` section (TAU's DDR) is not used.
"""

from __future__ import annotations

import re
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from tau_jax.models import openstl_names
from tau_jax.models.family import (EIGEN_CONVOLUTIONS, check_in_shape, identity, require_fields,
                                   resolve_dtype)
from tau_jax.models.framing import NONE as NO_FRAMING
from tau_jax.models.recurrent import e3dlstm, mau, mim, predrnnpp
from tau_jax.models.recurrent.model import ConvLSTM, PredRNN, PredRNNv2, rollout
from tau_jax.models.recurrent.sampling import mask_from_config, mask_length

NAMES = ("predrnn", "predrnnv2", "convlstm", "predrnnpp", "mim", "e3dlstm", "mau")
OPENSTL_FEED = "patches"
OPENSTL_TWINS = ()  # OpenSTL saves no module twice
CPU_COMPILER_OPTIONS = EIGEN_CONVOLUTIONS  # the small PredRNN's train step 420 -> 310 ms
_MODULES = {"predrnn": PredRNN, "predrnnv2": PredRNNv2, "convlstm": ConvLSTM,
            "predrnnpp": predrnnpp.PredRNNpp, "mim": mim.MIM, "e3dlstm": e3dlstm.E3DLSTM,
            "mau": mau.MAU}
# The newer models' own modules: check_config(cfg) -> extra constructor arguments, KEY_RULES.
_OWN = {"predrnnpp": predrnnpp, "mim": mim, "e3dlstm": e3dlstm, "mau": mau}
_OPENSTL_CLASSES = {"predrnn": "PredRNN_Model", "predrnnv2": "PredRNNv2_Model",
                    "convlstm": "ConvLSTM_Model", "predrnnpp": "PredRNNpp_Model",
                    "mim": "MIM_Model", "e3dlstm": "E3DLSTM_Model", "mau": "MAU_Model"}


def model_config(name: str = "predrnn") -> ml_collections.ConfigDict:
    """The `model` section, named as in OpenSTL; defaults are OpenSTL's Moving MNIST configs."""
    m = ml_collections.ConfigDict()
    m.name = name                     # 'predrnn', 'predrnnv2', 'convlstm', 'predrnnpp', 'mim', ...
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames
    m.out_frames = 10                 # T', frames to predict (the model unrolls T+T'-1 steps)
    m.num_hidden = (128,) * 4         # width per layer (one width for predrnn/predrnnv2)
    m.filter_size = 5                 # cell conv kernel size (odd)
    m.stride = 1                      # cell conv stride (OpenSTL only works with 1)
    m.patch_size = 4                  # space-to-depth patch: frames become (H/p, W/p, p*p*C)
    m.layer_norm = 0                  # 1 = LayerNorm over (H/p, W/p, channels) after each gate conv
    m.reverse_scheduled_sampling = int(name == "predrnnv2")  # 1 = reverse sched. sampling
    m.decouple_beta = 0.1             # predrnnv2: weight of the memory-decoupling loss
    m.remat = False                   # recompute each step in the backward pass: less memory, more time
    m.scheduled_sampling = 1          # standard schedule: 0 = always feed own predictions
    m.sampling_stop_iter = 50000      # standard schedule: iteration at which eta reaches 0
    m.sampling_changing_rate = 2e-5   # standard schedule: eta decrease per iteration
    m.r_sampling_step_1 = 25000       # reverse schedule: iteration where both probabilities leave 0.5
    m.r_sampling_step_2 = 50000       # reverse schedule: iteration where r_eta = 1 and eta = 0
    m.r_exp_alpha = 5000              # reverse schedule: time constant of r_eta's exponential rise
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    if name == "mau":
        m.num_hidden = (64,) * 4          # OpenSTL's MMNIST MAU
        m.patch_size = 1                  # MAU works on frames (OpenSTL's MAU needs patch 1)
        m.sr_size = 4                     # encoder / decoder down- and up-sampling factor (power of 2)
        m.tau = 5                         # past steps the motion-aware attention looks at
        m.cell_mode = "normal"            # 'normal' or 'residual' (S' + S)
        m.model_mode = "normal"           # 'normal' or 'recall' (encoder skips in the decoder)
    return m


def parse_num_hidden(value) -> tuple[int, ...]:
    """num_hidden as a tuple of ints; OpenSTL's comma string '128,128,128,128' is accepted."""
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            value = None
    ok = (value is not None and not isinstance(value, (int, float)) and len(value) > 0
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                  for v in value))
    if not ok:
        raise ValueError(f"model.num_hidden must be a non-empty sequence of positive ints (one "
                         f"width per layer, e.g. (128, 128, 128, 128)), got {value!r}.")
    return tuple(int(v) for v in value)


def check_config(cfg) -> dict:
    """Validate a recurrent model config; return the module's constructor arguments."""
    require_fields(cfg, model_config(cfg.name))
    shape = check_in_shape(cfg)
    if not isinstance(cfg.out_frames, (int, np.integer)) or cfg.out_frames < 1:
        raise ValueError(f"model.out_frames must be a positive int, got {cfg.out_frames!r}.")
    num_hidden = parse_num_hidden(cfg.num_hidden)
    if cfg.name in ("predrnn", "predrnnv2") and len(set(num_hidden)) != 1:
        raise ValueError(f"model.num_hidden must use one width for every layer in {cfg.name} (the "
                         f"spatiotemporal memory passes between all layers), got {num_hidden}.")
    p = cfg.patch_size
    if not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"model.patch_size must be a positive int, got {p!r}.")
    k = cfg.filter_size
    if not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise ValueError(f"model.filter_size must be a positive odd int ('same' padding k//2), "
                         f"got {k!r}.")
    if cfg.stride != 1 and cfg.name != "e3dlstm":  # e3dlstm resizes its conv outputs back
        raise ValueError(f"model.stride must be 1 (OpenSTL's cells keep the state size only with "
                         f"stride 1), got {cfg.stride!r}.")
    for field in ("layer_norm", "reverse_scheduled_sampling"):
        if cfg[field] not in (0, 1):  # True/False compare equal to 1/0
            raise ValueError(f"model.{field} must be 0 or 1, got {cfg[field]!r}.")
    beta = cfg.decouple_beta
    if cfg.name == "predrnnv2" and (not isinstance(beta, (int, float)) or beta < 0):
        raise ValueError(f"model.decouple_beta must be a number >= 0 for predrnnv2, got {beta!r}.")
    extra = _OWN[cfg.name].check_config(cfg) if cfg.name in _OWN else {}
    return dict(in_shape=tuple(int(v) for v in shape), out_frames=int(cfg.out_frames),
                num_hidden=num_hidden, patch_size=int(p), filter_size=int(k),
                layer_norm=bool(cfg.layer_norm),
                reverse_scheduled_sampling=bool(cfg.reverse_scheduled_sampling),
                remat=bool(cfg.remat), **extra)



def build(cfg, dtypes) -> nn.Module:
    """PredRNN, PredRNN-V2 or ConvLSTM for a checked config."""
    return _MODULES[cfg.name](**check_config(cfg), **dtypes)


def example_inputs(cfg) -> dict:
    """Batch-1 call arguments: frames (1, T+T', H, W, C) and a mask (1, M) of zeros."""
    t, h, w, c = (int(v) for v in cfg.in_shape)
    dt = resolve_dtype(cfg.param_dtype, "param_dtype")
    m = mask_length(t, int(cfg.out_frames), bool(cfg.reverse_scheduled_sampling))
    return dict(frames=jnp.zeros((1, t + int(cfg.out_frames), h, w, c), dt),
                mask=jnp.zeros((1, m), dt))


def recurrent_loss(next_frames, frames, aux=None, decouple_beta: float = 0.0, l1: bool = False):
    """OpenSTL's recurrent training loss (module docstring): `next_frames` (B, T+T'-1, ...)
    against frames[:, 1:], + their mean absolute difference with `l1` (E3D-LSTM). Patch or frame
    space give the same mean."""
    target = frames[:, 1:]
    if next_frames.shape != target.shape:
        raise ValueError(f"next_frames {next_frames.shape} must match frames[:, 1:] "
                         f"{target.shape}; pass the full (B, T+T', H, W, C) frames.")
    dt = jnp.promote_types(next_frames.dtype, jnp.float32)
    diff = next_frames.astype(dt) - target.astype(dt)
    loss = jnp.mean(jnp.square(diff))
    if l1:
        loss = loss + jnp.mean(jnp.abs(diff))
    if aux and "decouple_loss" in aux and decouple_beta:
        loss = loss + decouple_beta * aux["decouple_loss"].astype(dt)
    return loss


def loss(model, config, variables, frames, rngs, key, step, steps_per_epoch=None,
         framing=NO_FRAMING):
    """The loss of one batch of T+T' frames with a scheduled-sampling mask drawn for `step`;
    frames padded by `framing`, the predictions cropped (and PredRNN-V2's decoupling term taken
    over the patch cells that hold real pixels)."""
    del steps_per_epoch  # no schedule counted in epochs
    mc = config.model
    mask = mask_from_config(mc, key, step, frames.shape[0])
    if mc.name == "predrnnv2":
        p = int(mc.patch_size)
        model = model.clone(band_cells=tuple((a // p, b // p) for a, b in framing.amounts))
    (next_frames, aux), mutated = model.apply(variables, framing.pad(frames), mask=mask,
                                              train=True, rngs=rngs, mutable=["batch_stats"])
    beta = mc.decouple_beta if mc.name == "predrnnv2" else 0.0
    return recurrent_loss(framing.crop(next_frames), frames, aux, beta,
                          l1=mc.name == "e3dlstm"), mutated


def predict(model, cfg, variables, inputs):
    """The out_frames frames after `inputs` (B, T, H, W, C): pure autoregression after them."""
    next_frames, _ = model.apply(variables, inputs, train=False)
    return next_frames[:, -cfg.out_frames:]


def model_pass(model, cfg, variables, window, around=identity):
    """`predict` with the model call wrapped by `around`."""
    return around(lambda w: rollout(model, variables, w, int(cfg.out_frames)))(window)


def frame_rule(cfg) -> tuple[int, str | None]:
    """Frames whose H and W are multiples of patch_size; LayerNorms fix them to in_shape's (a
    model's own module may define `frame_rule` for other grid-sized weights)."""
    if hasattr(_OWN.get(cfg.name), "frame_rule"):
        return _OWN[cfg.name].frame_rule(cfg)
    if cfg.layer_norm:
        return int(cfg.patch_size), (
            "its LayerNorms (model.layer_norm = 1) have parameters over the whole frame grid")
    return int(cfg.patch_size), None


# Flax path (dotted) -> OpenSTL key prefix; cell convs sit at index 0 of an nn.Sequential
# (conv_x.0.weight), their LayerNorm (Flax `<conv>_ln`) at index 1.
_KEY_RULES = [
    (r"^cell_list_(\d+)\.(conv_[xhmo])_ln\.$", r"cell_list.\1.\2.1."),
    (r"^cell_list_(\d+)\.(conv_[xhmo])\.$", r"cell_list.\1.\2.0."),
    (r"^cell_list_(\d+)\.", r"cell_list.\1."),
]


def openstl_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """OpenSTL key and layout transform of one leaf. LayerNorm affines are (C, H, W) in PyTorch
    and (H, W, C) here."""
    dotted = ".".join(path[:-1]) + "."
    own = _OWN[cfg.name].KEY_RULES if cfg.name in _OWN else []
    for pattern, repl in list(own) + _KEY_RULES:
        dotted = re.sub(pattern, repl, dotted)
    key = dotted + openstl_names.leaf_name(path[-1])
    if len(shape) == 3 or (len(shape) == 4 and path[-1] in ("scale", "bias")):
        return key, lambda w: np.moveaxis(w, 0, -1)  # LayerNorm (C, ...) -> (..., C)
    if len(shape) == 5:  # Conv3d (O, I, kt, kh, kw) -> (kt, kh, kw, I, O)
        return key, lambda w: np.transpose(w, (2, 3, 4, 1, 0))
    return key, openstl_names.torch_layout(shape)


def openstl_model(cfg):
    """OpenSTL's `<Name>_Model(num_layers, num_hidden, configs)`."""
    t, h, w, c = (int(v) for v in cfg.in_shape)
    configs = types.SimpleNamespace(
        in_shape=(t, c, h, w), patch_size=cfg.patch_size, filter_size=cfg.filter_size,
        stride=cfg.stride, layer_norm=cfg.layer_norm, pre_seq_length=t,
        aft_seq_length=cfg.out_frames, total_length=t + cfg.out_frames,
        reverse_scheduled_sampling=cfg.reverse_scheduled_sampling,
        decouple_beta=cfg.decouple_beta,
        **{f: cfg[f] for f in ("sr_size", "tau", "cell_mode", "model_mode") if f in cfg})
    num_hidden = parse_num_hidden(cfg.num_hidden)
    return (f"{cfg.name}_model", _OPENSTL_CLASSES[cfg.name],
            (len(num_hidden), list(num_hidden), configs), {})
