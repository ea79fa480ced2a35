"""MMVP (Zhong et al., "MMVP: Motion-Matrix-based Video Prediction", ICCV 2023) as OpenSTL
c74deb5 builds it (`MMVP_Model`, method `MMVP`); the family seam of tau_jax/models/family.py.

Frames are pixel-unshuffled (2), encoded by RRDBs and down-sampling ResBlocks; at two levels a
filter (conv, BatchNorm, LReLU) gives the features whose cosine similarities between consecutive
frames are the motion matrices (hw x hw). A 3-D conv network predicts the T' future high-level
matrices from the T-1 past ones directly (the low-level ones are interpolated from them: PyTorch
bilinear over the target grid, then bicubic A = -0.75 over the source grid), every matrix is
softmax-normalised over all its entries, and each future frame's features (at the skip level,
both matrix levels, and of the image itself) are weighted sums over all T input frames with the
cumulative matrix products. A U-Net decoder and an RRDB enhancer on [decoded image, composed
image] give the frames. One pass maps T frames to T' = out_frames; longer horizons chain passes
fed the last T frames (as the SimVP family). Field names are OpenSTL's.

OpenSTL quirks kept (weights trained there import exactly, `tau_jax.convert.from_openstl`):
  * the output (B*T', C, H, W) is returned as out.permute(0, 2, 3, 1).reshape(B, T', C, H, W):
    the NHWC image re-read as (C, H, W), a channel/pixel scramble for C > 1 (identity for C = 1).
    The loss compares the scrambled frames with the targets, so a model trained here learns to
    undo it; OpenSTL's weights need it.
  * `hid.scale_fuser_1`, `hid.scale_fuser_2` (with BatchNorm statistics) and
    `hid.predictor.fuse_conv` are created (parameter count 14,828,581 at OpenSTL's
    configs/mmnist/MMVP.py) and never applied; `shuffle_setting` has no effect.
  * PyTorch's legacy `nearest` resizes inside the matrix predictor (floor(dst * in / out)).
  * `use_direct_predictor = False` (OpenSTL's MatrixPredictor3DConv) only runs there for T = 4,
    T' = 1; it is refused.

Training (`loss`): OpenSTL's `MMVP.training_step` calls the model on cat(inputs, targets), all
T+T' frames, and takes the MSE of its T' outputs against the targets. The model composes only
the first T frames, so the targets reach the output solely through the train-mode BatchNorm
statistics of the filter (means and variances per channel over the B*(T+T') frames, and from
there the predictor's). That is a by-product of feeding the whole clip (the original MMVP
computes matrices over it; OpenSTL keeps the first T-1), not part of the model: a (weak) leak
of the targets into the training forward, never into evaluation or `predict`, which run in eval
mode on the T inputs with running statistics. `model.train_feed` chooses: 'openstl' (default)
feeds all T+T' frames as OpenSTL does, so gradients, running statistics and trained weights
match OpenSTL's (the bundle tests check this path to 1e-6 in float64); 'inputs' feeds only the
T inputs (no target reaches the training forward; the BatchNorm statistics then cover B*T
frames, as at test time).
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from tau_jax import losses
from tau_jax.models import openstl_names
from tau_jax.models.family import (EIGEN_CONVOLUTIONS, check_in_shape, frames_example_inputs,
                                   frames_predict, identity, require_fields)
from tau_jax.models.framing import NONE as NO_FRAMING
from tau_jax.models.mmvp.model import MMVP, mat_sizes

NAMES = ("mmvp",)
OPENSTL_FEED = "frames"
OPENSTL_TWINS = ()  # OpenSTL saves no module twice
CPU_COMPILER_OPTIONS = EIGEN_CONVOLUTIONS  # MMNIST train step at batch 2: 8.0 -> 5.4 s
TRAIN_FEEDS = ("openstl", "inputs")


def model_config(name: str = "mmvp") -> ml_collections.ConfigDict:
    """The `model` section, OpenSTL's names and MMVP_Model defaults (= configs/mmnist/MMVP.py:
    14,828,581 parameters at 10 x 64 x 64 x 1, 10 -> 10)."""
    m = ml_collections.ConfigDict()
    m.name = name                     # 'mmvp'
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames
    m.out_frames = 10                 # T' frames per pass (OpenSTL's aft_seq_length)
    m.hid_S = 32                      # encoder / decoder width (level i: hid_S * 2 ** i)
    m.hid_T = 192                     # width of the matrix predictor
    m.rrdb_encoder_num = 2            # RRDBs after the encoder's first conv
    m.rrdb_decoder_num = 2            # RRDBs before the decoder's output conv
    m.rrdb_enhance_num = 2            # RRDBs of the image enhancer
    m.downsample_setting = "2,2,2"    # encoder down-sampling factors (each 2 or 4), comma string
    m.shuffle_setting = True          # accepted, no effect (as in OpenSTL)
    m.use_direct_predictor = True     # OpenSTL's direct matrix predictor (False is refused)
    m.train_feed = "openstl"          # training forward on 'openstl' (T+T' frames) or 'inputs' (T)
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    return m


def _int(cfg, field: str, low: int) -> int:
    value = cfg[field]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"model.{field} must be an int >= {low}, got {value!r}.")
    return int(value)


def downsample_factors(cfg) -> tuple[int, ...]:
    """model.downsample_setting as a tuple of ints."""
    text = cfg.downsample_setting
    try:
        ds = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        ds = ()
    if len(ds) < 2 or any(v not in (2, 4) for v in ds):
        raise ValueError(f"model.downsample_setting must be a comma string of at least two "
                         f"factors, each 2 or 4 (OpenSTL's ResBlock halves, or quarters with a "
                         f"max-pool), got {text!r}.")
    return ds


def check_config(cfg) -> dict:
    """One ValueError naming the field for a section no MMVP can be built from; the module's
    constructor arguments otherwise."""
    require_fields(cfg, model_config(cfg.name))
    t, h, w, c = check_in_shape(cfg)
    ds = downsample_factors(cfg)
    ints = {f: _int(cfg, f, low) for f, low in (
        ("out_frames", 1), ("hid_S", 2), ("hid_T", 1), ("rrdb_encoder_num", 0),
        ("rrdb_decoder_num", 0), ("rrdb_enhance_num", 0))}
    if t < 2:
        raise ValueError(f"model.in_shape T = {t} must be >= 2: the motion matrices relate "
                         "consecutive input frames.")
    if cfg.use_direct_predictor is not True:
        raise ValueError("model.use_direct_predictor must be True: OpenSTL's other predictor "
                         "(MatrixPredictor3DConv) only runs with T = 4 and T' = 1 there.")
    if cfg.train_feed not in TRAIN_FEEDS:
        raise ValueError(f"model.train_feed must be one of {TRAIN_FEEDS}, got "
                         f"{cfg.train_feed!r}.")
    return dict(in_shape=(t, h, w, c), downsample=ds, **ints)


def build(cfg, dtypes):
    """MMVP for a checked config (the derived matrix grids: `mat_sizes`)."""
    return MMVP(**check_config(cfg), **dtypes)


def loss(model, config, variables, frames, rngs, key, step, steps_per_epoch=None,
         framing=NO_FRAMING):
    """MSE of the T' frames predicted in train mode against frames[:, T:], the model fed all
    T+T' frames (train_feed 'openstl', OpenSTL's training_step) or the T inputs ('inputs')."""
    del steps_per_epoch  # no schedule counted in epochs
    del key, step
    t = config.model.in_shape[0]
    feed = frames if config.model.train_feed == "openstl" else frames[:, :t]
    pred, mutated = model.apply(variables, framing.pad(feed), train=True, rngs=rngs,
                                mutable=["batch_stats"])
    return losses.mse(framing.crop(pred), frames[:, t:]), mutated


example_inputs = frames_example_inputs
predict = frames_predict


def model_pass(model, cfg, variables, window, around=identity):
    """One pass (T frames -> out_frames), wrapped by `around`."""
    del cfg
    return around(lambda frames: model.apply(variables, frames, False))(window)


def frame_rule(cfg) -> tuple[int, str | None]:
    """No parameter depends on the frame size: multiples of 2 * prod(downsample_setting)."""
    return 2 * math.prod(downsample_factors(cfg)), None


def openstl_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """Flax paths are OpenSTL's module paths (indices as digit names). ConvTranspose2d ('up')
    weights are (I, O, k, k) there, Conv3d ones (O, I, kt, kh, kw)."""
    del collection, cfg
    key = ".".join(path[:-1] + (openstl_names.leaf_name(path[-1]),))
    if path[-2] == "up" and path[-1] == "kernel":
        return key, lambda w: np.transpose(w, (2, 3, 1, 0))
    if len(shape) == 5:
        return key, lambda w: np.transpose(w, (2, 3, 4, 1, 0))
    return key, openstl_names.torch_layout(shape)


def openstl_model(cfg):
    """None: the benchmark's PyTorch peer (OPENSTL_FEED 'frames') would feed OpenSTL's MMVP only
    the T inputs and chain T-frame passes, where OpenSTL's method trains on all T+T' frames and
    predicts T' in one pass; a peer for it is not written yet."""
    del cfg
    return None


__all__ = ["MMVP", "mat_sizes"]
