"""PhyDNet (OpenSTL's PhyDNet_Model and PhyDNet method), a family of its own: its training step
(teacher forcing decided per epoch, a moment-constraint term) differs from every other family's.
The model is in model.py; this is the family seam of tau_jax/models/family.py.

Training (`loss`): OpenSTL's `PhyDNet.training_step` / `PhyDNet_Model.forward`:
  * teacher-forcing ratio max(0, 1 - 0.003 * epoch), epoch = step // steps per epoch as the
    trainer counts them (`tau_jax.train.loop` hands every family loss its `steps_per_epoch`); one
    draw per step from the loss's `key` (OpenSTL: one `random.random() < ratio` per
    forward) decides teacher forcing for all T' decoder steps of the batch;
  * loss = sum over the T + T' - 1 steps of the per-step MSE (the input phase's one-step
    predictions included) + the moment constraint on the PhyCell's 7x7 kernels
    (`model.moment_loss`), in the parameters' dtype. OpenSTL rounds the moment matrices to
    float32 even in float64; not copied.
  * Not copied: OpenSTL's `training_step` then returns `MSELoss(loss_model, batch_y)`, i.e. the
    scalar loss broadcast against the targets, mean((loss_model - y)^2) -- a bug outside the
    model (its gradient is 2 (loss_model - mean(y)) times the model loss's). Here the model's own
    loss is trained on.
Inference (`predict`) decodes like teacher forcing 0 (OpenSTL's `inference`); horizons beyond T'
chain passes on the last T frames known (family.py's roll-out), frame sizes any multiple of
patch_size (every weight is a convolution).

Weights (`openstl_key`): Flax paths keep OpenSTL's names (`_<i>` for `.<i>`). OpenSTL registers
the PhyCell and the ConvLSTM twice (on the model and inside its encoder): its state dict holds
`phycell.*` / `convcell.*` and the same tensors again as `encoder.phycell.*` /
`encoder.convcell.*`. Here each is one parameter (`phycell`, `convcell`, counted once: 3,091,732
at OpenSTL's MMNIST config); `OPENSTL_TWINS` tells `tau_jax.convert` to check every
`encoder.phycell.*` / `encoder.convcell.*` entry equals its twin and map both to that one
parameter. The K2M buffers `k2m._M0`, `_M1`, `_invM0`, `_invM1` are constants (rebuilt by
`model.moment_matrix`) and left out.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from tau_jax.models import openstl_names
from tau_jax.models.family import (EIGEN_CONVOLUTIONS, check_in_shape, identity, require_fields,
                                   resolve_dtype)
from tau_jax.models.framing import NONE as NO_FRAMING
from tau_jax.models.layers import chain_passes
from tau_jax.models.phydnet.model import PhyDNet, moment_loss

NAMES = ("phydnet",)
OPENSTL_FEED = "frames"
# (prefix of a registered copy, prefix of its canonical twin) in OpenSTL's state dict
OPENSTL_TWINS = (("encoder.phycell.", "phycell."), ("encoder.convcell.", "convcell."))
CPU_COMPILER_OPTIONS = EIGEN_CONVOLUTIONS  # train step at batch 2: 2.36 -> 2.22 s
TEACHER_FORCING_DECAY = 0.003  # OpenSTL: ratio = max(0, 1 - 0.003 * current_epoch)


def model_config(name: str = "phydnet") -> ml_collections.ConfigDict:
    """The `model` section, OpenSTL's field names; defaults are OpenSTL's Moving MNIST config
    (3,091,732 parameters). The widths are hard-coded in OpenSTL and here."""
    m = ml_collections.ConfigDict()
    m.name = name                     # 'phydnet'
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames (T >= 2)
    m.out_frames = 10                 # T', frames to predict (the decoder's steps)
    m.patch_size = 4                  # 2 or 4: the encoder's downsampling factor
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    return m


def check_config(cfg) -> dict:
    """One ValueError naming the field for a section no PhyDNet can be built from; the module's
    constructor arguments otherwise."""
    require_fields(cfg, model_config(cfg.name))
    t, h, w, c = check_in_shape(cfg)
    if t < 2:
        raise ValueError(f"model.in_shape T must be >= 2 for phydnet (OpenSTL resets its states "
                         f"at the first of the T - 1 encoder steps), got {t}.")
    out = cfg.out_frames
    if isinstance(out, bool) or not isinstance(out, (int, np.integer)) or out < 1:
        raise ValueError(f"model.out_frames must be a positive int, got {out!r}.")
    p = cfg.patch_size
    if isinstance(p, bool) or p not in (2, 4):
        raise ValueError(f"model.patch_size must be 2 or 4 for phydnet (OpenSTL silently uses 4 "
                         f"for any other value), got {p!r}.")
    return dict(in_shape=(int(t), int(h), int(w), int(c)), out_frames=int(out), patch_size=int(p))


def build(cfg, dtypes) -> nn.Module:
    """PhyDNet for a checked config."""
    return PhyDNet(**check_config(cfg), **dtypes)


def example_inputs(cfg) -> dict:
    """Batch-1 call arguments: the T input frames."""
    dt = resolve_dtype(cfg.param_dtype, "param_dtype")
    return dict(frames=jnp.zeros((1,) + tuple(int(v) for v in cfg.in_shape), dt))


def teacher_forcing_ratio(epoch):
    """OpenSTL's max(0, 1 - 0.003 * epoch)."""
    return jnp.maximum(0.0, 1.0 - TEACHER_FORCING_DECAY * jnp.asarray(epoch, jnp.float32))


def model_loss(images, frames, params):
    """OpenSTL's `PhyDNet_Model.forward` loss: sum over steps of MSE(image s, frame s + 1) plus
    the moment constraint, in the images' dtype (at least float32)."""
    dt = jnp.promote_types(images.dtype, jnp.float32)
    diff = images.astype(dt) - frames[:, 1:].astype(dt)
    per_step = jnp.mean(jnp.square(diff), axis=(0, 2, 3, 4))
    kernel = params["phycell"]["cell_list_0"]["F"]["conv1"]["kernel"]
    return jnp.sum(per_step) + moment_loss(kernel).astype(dt)


def loss(model, config, variables, frames, rngs, key, step, steps_per_epoch=None,
         framing=NO_FRAMING):
    """The model's own loss (module docstring) of a batch of T+T' frames, train mode. The epoch is
    step // steps_per_epoch; a caller outside an epoch-counting run (benchmark, TPU plan: no
    `steps_per_epoch`) gets epoch 0's ratio 1 -- the computation is the same at every ratio."""
    epoch = 0 if steps_per_epoch is None else jnp.asarray(step) // int(steps_per_epoch)
    forced = jax.random.uniform(key, ()) < teacher_forcing_ratio(epoch)
    images = model.apply(variables, framing.pad(frames), teacher_forcing=forced, train=True,
                         rngs=rngs)
    return model_loss(framing.crop(images), frames, variables["params"]), {}


def predict(model, cfg, variables, inputs):
    """The out_frames frames after `inputs` (B, T, H, W, C), eval mode (teacher forcing 0)."""
    t = int(cfg.in_shape[0])
    return model.apply(variables, inputs, train=False)[:, t - 1:]


def model_pass(model, cfg, variables, window, around=identity):
    """`predict` with the model call wrapped by `around`, chained to out_frames (one pass)."""
    return chain_passes(around(lambda w: predict(model, cfg, variables, w)), window,
                        int(cfg.out_frames))


def frame_rule(cfg) -> tuple[int, str | None]:
    """Every weight is a convolution: frames whose H and W are multiples of patch_size."""
    return int(cfg.patch_size), None


def openstl_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """OpenSTL's (canonical) key of one leaf: Flax names are OpenSTL's with `_<i>` for `.<i>`.
    Conv2d (O, I, kh, kw) and ConvTranspose2d (I, O, kh, kw) both take the transpose
    (2, 3, 1, 0): HWIO here, and (kh, kw, out, in) for the transposed convs."""
    del collection, cfg
    parts = [re.sub(r"_(\d+)$", r".\1", part) for part in path[:-1]]
    return ".".join(parts + [openstl_names.leaf_name(path[-1])]), openstl_names.torch_layout(shape)


def openstl_model(cfg):
    """None: OpenSTL's class is `openstl.models.phydnet_model.PhyDNet_Model(configs)`, but its
    calls (`model(x, y, constraints, ratio)` returning the loss only, `model.inference`) are
    neither of the two the benchmark's PyTorch peer drives (OPENSTL_FEED), so it has no peer."""
    del cfg
    return None
