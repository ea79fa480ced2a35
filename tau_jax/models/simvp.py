"""The SimVP family: a per-frame conv encoder, a pluggable translator, a per-frame conv decoder;
the family seam of tau_jax/models/family.py.

Input and output are videos `(B, T, H, W, C)`. The encoder folds time into the batch, the
translator sees the latent video `(B, T, h, w, hid_S)` and the decoder upsamples back with
sub-pixel convolutions, adding the encoder's first-layer output as a skip. Predicting T' != T
frames follows OpenSTL's roll-out: the model is fed its own T-frame outputs until T' are made.
Translators (tau_jax/models/translators/, one file each): TAU, gSTA (SimVP v2), IncepU (SimVP v1),
OpenSTL's MetaFormer zoo (ConvMixer, ConvNeXt, HorNet, MLP-Mixer, MogaNet, PoolFormer, Swin,
UniFormer, VAN, ViT), and two attention translators that are not OpenSTL models (TimeSformer's
divided space-time attention, Temporal Patch Shift). Training loss:
MSE + loss.alpha * TAU's differential divergence regularisation (alpha 0: plain MSE, SimVP).
"""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from tau_jax import losses
from tau_jax.models import openstl_names
from tau_jax.models.family import (EIGEN_CONVOLUTIONS, check_in_shape, frames_example_inputs,
                                   frames_model_pass, frames_predict, require_fields)
from tau_jax.models.framing import NONE as NO_FRAMING
from tau_jax.models.convolutions import ConvApartBias
from tau_jax.models.group_norm import GroupNormSiLU
from tau_jax.models.layers import checked_roll_out, resolve_dw_impl
from tau_jax.models.translators import TRANSLATORS
from tau_jax.models.translators.metaformer import pointwise

Dtype = Any


def sampling_strides(num_layers: int, reverse: bool = False) -> list[bool]:
    """OpenSTL's sampling_generator: every second layer down/up-samples ([F, T, F, T] for 4)."""
    flags = ([False, True] * (num_layers // 2))[:num_layers]
    return flags[::-1] if reverse else flags


class ConvSC(nn.Module):
    """Conv (stride 2 when downsampling, x4 channels + pixel shuffle when upsampling) ->
    GroupNorm(2) -> SiLU, with OpenSTL's N(0, 0.02) weights and zero biases."""

    features: int
    kernel_size: int = 3
    downsample: bool = False
    upsample: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        stride = 2 if self.downsample else 1
        k = self.kernel_size
        pad = (k - stride + 1) // 2
        shuffle = 2 if self.upsample else 1
        x, conv_bias = ConvApartBias(self.features * shuffle ** 2, (k, k), strides=stride,
                                     padding=((pad, pad), (pad, pad)),
                                     kernel_init=nn.initializers.normal(0.02),
                                     bias_init=nn.initializers.zeros, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name="conv")(x)
        return GroupNormSiLU(num_groups=2, epsilon=1e-5, pixel_shuffle=shuffle, dtype=self.dtype,
                             param_dtype=self.param_dtype, name="norm")(x, conv_bias)


class Encoder(nn.Module):
    """N_S ConvSC layers; returns the latent and the first layer's full-resolution output."""

    hid_S: int
    N_S: int
    kernel_size: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        skip = None
        for i, down in enumerate(sampling_strides(self.N_S)):
            x = ConvSC(self.hid_S, self.kernel_size, downsample=down, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"enc_{i}")(x)
            if i == 0:
                skip = x
        return x, skip


class Decoder(nn.Module):
    """N_S ConvSC layers mirroring the encoder; the last sees hidden + skip; 1x1 readout to C."""

    hid_S: int
    out_channels: int
    N_S: int
    kernel_size: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, skip):
        ups = sampling_strides(self.N_S, reverse=True)
        for i, up in enumerate(ups):
            if i == len(ups) - 1:
                x = x + skip
            x = ConvSC(self.hid_S, self.kernel_size, upsample=up, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"dec_{i}")(x)
        return pointwise(self.out_channels, self.hid_S, torch_init=True, name="readout",
                         dtype=self.dtype, param_dtype=self.param_dtype)(x)


class SimVP(nn.Module):
    """Encoder -> translator -> decoder, rolled out to `out_frames` frames.

    `translator` is an unbound module mapping `(B, T, h, w, hid_S)` to the same shape and taking
    a `train` flag (TAU, gSTA, IncepU, TimeSformer, TPS, ...).
    """

    in_shape: tuple[int, int, int, int]  # (T, H, W, C)
    hid_S: int
    N_S: int
    translator: nn.Module
    out_frames: int
    spatio_kernel_enc: int = 3
    spatio_kernel_dec: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        t, h, w, c = self.in_shape
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.enc = Encoder(self.hid_S, self.N_S, self.spatio_kernel_enc, **dt)
        self.dec = Decoder(self.hid_S, c, self.N_S, self.spatio_kernel_dec, **dt)

    def __call__(self, x, train: bool = False):
        """Predict `out_frames` future frames from `x` `(B, T, H, W, C)`."""
        return checked_roll_out("SimVP", self.in_shape,
                                lambda window: self.predict_window(window, train), x,
                                self.out_frames)

    def predict_window(self, x, train: bool):
        """One pass: T input frames -> the next T frames."""
        b, t, h, w, c = x.shape
        if self.dtype is not None:
            x = x.astype(self.dtype)
        latent, skip = self.enc(x.reshape(b * t, h, w, c))
        _, lh, lw, lc = latent.shape
        z = self.translator(latent.reshape(b, t, lh, lw, lc), train=train)
        y = self.dec(z.reshape(b * t, lh, lw, lc), skip)
        return y.reshape(b, t, h, w, c)


# ----------------------------------------------------------------------------------------------
# The family seam
# ----------------------------------------------------------------------------------------------

NAMES = tuple(TRANSLATORS)
ATTENTION_NAMES = ("timesformer", "tps")
OPENSTL_FEED = "frames"
OPENSTL_TWINS = ()  # OpenSTL saves no module twice
CPU_COMPILER_OPTIONS = EIGEN_CONVOLUTIONS  # full TAU train step -12%, quickstart -7%


def model_config(name: str = "tau") -> ml_collections.ConfigDict:
    """The `model` section, named as in OpenSTL; defaults are OpenSTL's (the SimVP_Model
    constructor, TAU on Moving MNIST). The attention translators add their fields; their width
    is hid_T, their depth N_T, with ViT/Swin defaults (MLP ratio 4, linear stochastic depth)."""
    m = ml_collections.ConfigDict()
    m.name = name                     # the translator: 'tau', 'gsta' (SimVP v2), 'incepu' (v1), ...
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames
    m.out_frames = 10                 # T', frames to predict; T' > T rolls the model out
    m.hid_S = 64                      # encoder/decoder width
    m.hid_T = 512                     # translator width
    m.N_S = 4                         # encoder (and decoder) layers; even, half of them stride 2
    m.N_T = 8                         # translator blocks
    m.spatio_kernel_enc = 3           # encoder conv kernel size
    m.spatio_kernel_dec = 3           # decoder conv kernel size
    m.mlp_ratio = 8.0                 # MLP hidden width / block width (not read by convmixer)
    m.tau_ablation = "none"           # TAU paper ablations: 'none', 'no_sa', 'no_da', 'conv_baseline'
    m.drop = 0.0                      # dropout in the MLPs (and after attention projections)
    m.drop_path = 0.0                 # stochastic depth of the last translator block
    m.drop_path_schedule = "openstl"  # 'openstl': linspace(0.01, drop_path); 'linear': (0, drop_path)
    m.dw_impl = "auto"                # depthwise convs: 'lax' (grouped conv), 'taps', 'kernel' (C++,
                                      # CPU), 'auto' (fastest built for the backend)
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    if name in ATTENTION_NAMES:
        m.hid_T = 256                     # token width D
        m.mlp_ratio = 4.0                 # MLP hidden width / token width (ViT, Swin)
        m.drop_path_schedule = "linear"   # as TimeSformer and Swin: linspace(0, drop_path) over blocks
        m.num_heads = 8                   # attention heads; must divide hid_T
        m.latent_patch = 1                # side of the latent-map patches that become tokens
        m.attention_mode = "divided"      # timesformer: 'divided' (time then space), 'joint', 'space'
        m.window_size = 8                 # tps: attention window side on the token grid; must divide it
        m.shift_ratio = 1.0               # tps: fraction of heads moved by the temporal patch shift
        m.channel_shift_ratio = 0.125     # tps: fraction of each head's channels shifted each way
        m.relative_bias = "3d"            # tps: '3d' (paper; t-aware, per frame), '2d' (parameter-free)
    return m


def check_config(cfg) -> None:
    """One ValueError naming the field for a SimVP-frame section no model can be built from."""
    require_fields(cfg, model_config(cfg.name))
    _, h, w, _ = check_in_shape(cfg)
    if cfg.N_S < 2 or cfg.N_S % 2:
        raise ValueError(f"model.N_S must be an even number >= 2 (OpenSTL alternates stride 1 "
                         f"and 2 layers), got {cfg.N_S}.")
    if cfg.hid_S < 2 or cfg.hid_S % 2:
        raise ValueError(f"model.hid_S must be even (GroupNorm with 2 groups), got {cfg.hid_S}.")
    if cfg.N_T < 2:
        raise ValueError(f"model.N_T must be >= 2, got {cfg.N_T}.")
    if cfg.out_frames < 1:
        raise ValueError(f"model.out_frames must be >= 1, got {cfg.out_frames}.")
    if cfg.name != "incepu" and cfg.mlp_ratio <= 1:
        raise ValueError(f"model.mlp_ratio must be > 1, got {cfg.mlp_ratio}.")
    resolve_dw_impl(cfg.dw_impl, cfg.dtype)  # an unknown name, or 'kernel' where it cannot run
    if cfg.drop_path_schedule not in ("openstl", "linear"):
        raise ValueError("model.drop_path_schedule must be 'openstl' or 'linear', got "
                         f"{cfg.drop_path_schedule!r}.")
    if cfg.name != "tau" and cfg.tau_ablation != "none":
        raise ValueError(f"model.tau_ablation applies to model.name 'tau' only, got "
                         f"{cfg.tau_ablation!r} with {cfg.name!r}; set it to 'none'.")
    if not 0.0 <= cfg.drop_path < 1.0 or not 0.0 <= cfg.drop < 1.0:
        raise ValueError(f"model.drop and model.drop_path must lie in [0, 1), got "
                         f"{cfg.drop} and {cfg.drop_path}.")


def build(cfg, dtypes) -> nn.Module:
    """SimVP with the translator `cfg.name` for a checked config."""
    check_config(cfg)
    return SimVP(tuple(cfg.in_shape), cfg.hid_S, cfg.N_S, TRANSLATORS[cfg.name].build(cfg, **dtypes),
                 out_frames=cfg.out_frames, spatio_kernel_enc=cfg.spatio_kernel_enc,
                 spatio_kernel_dec=cfg.spatio_kernel_dec, **dtypes)


def loss(model, config, variables, frames, rngs, key, step, steps_per_epoch=None,
         framing=NO_FRAMING):
    """MSE + loss.alpha * DDR of the T' frames predicted from the first T of `frames`."""
    del steps_per_epoch  # no schedule counted in epochs
    del key, step  # no sampling schedule in this family
    t = config.model.in_shape[0]
    pred, mutated = model.apply(variables, framing.pad(frames[:, :t]), train=True, rngs=rngs,
                                mutable=["batch_stats"])
    loss = losses.tau_loss(framing.crop(pred), frames[:, t:], config.loss.alpha,
                           config.loss.ddr_tau)
    return loss, mutated


example_inputs = frames_example_inputs
predict = frames_predict
model_pass = frames_model_pass


def frame_rule(cfg) -> tuple[int, str | None]:
    """Multiples of the encoder stride times the translator's latent rule (TPS's windows must
    tile the token grid, Swin's the latent map; TimeSformer's and MLP-Mixer's parameters fix it)."""
    k, why = TRANSLATORS[cfg.name].latent_rule(cfg)
    return 2 ** (int(cfg.N_S) // 2) * k, why


# Flax path (dotted) -> OpenSTL key prefix, applied in order.
_KEY_RULES = [
    (r"^(enc|dec)\.(enc|dec)_(\d+)\.(conv|norm)\.", r"\1.\2.\3.conv.\4."),
    (r"^translator\.", "hid."),
    (r"\b(enc|dec|layers|fc|pws)_(\d+)\b", r"\1.\2"),
]


def openstl_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """OpenSTL key and layout transform of one leaf (the family's renames, then the
    translator's); the decoder's upsampling convs feed a PixelShuffle, whose channel order
    differs from depth_to_space's."""
    dotted = ".".join(path[:-1]) + "."
    for pattern, repl in _KEY_RULES + list(TRANSLATORS[cfg.name].key_rules):
        dotted = re.sub(pattern, repl, dotted)
    leaf = openstl_names.leaf_name(path[-1])
    transform = openstl_names.torch_layout(shape)
    if len(shape) == 1:  # MogaNet keeps its layer scales and sigmas as (1, C, 1, 1)
        transform = lambda w: np.reshape(w, -1)
    if leaf == "relative_position_bias_table":  # Swin's: (offsets, heads) in both, not a Linear
        transform = np.asarray
    up = re.match(r"^dec\.dec\.(\d+)\.conv\.conv\.$", dotted)
    if up and sampling_strides(cfg.N_S, reverse=True)[int(up.group(1))]:
        layout, shuffle = transform, openstl_names.pixel_shuffle_order()
        return dotted + "0." + leaf, lambda w: layout(shuffle(w))
    return dotted + leaf, transform


def openstl_model(cfg):
    """OpenSTL's `SimVP_Model`, or None for the attention translators (not OpenSTL models)."""
    model_type = TRANSLATORS[cfg.name].openstl_type
    if model_type is None:
        return None
    t, h, w, c = (int(v) for v in cfg.in_shape)
    return "simvp_model", "SimVP_Model", ((t, c, h, w),), dict(
        hid_S=cfg.hid_S, hid_T=cfg.hid_T, N_S=cfg.N_S, N_T=cfg.N_T,
        model_type=model_type, mlp_ratio=cfg.mlp_ratio, drop=cfg.drop,
        drop_path=cfg.drop_path, spatio_kernel_enc=cfg.spatio_kernel_enc,
        spatio_kernel_dec=cfg.spatio_kernel_dec)
