"""SwinLSTM (Tang et al., "SwinLSTM: Improving Spatiotemporal Prediction Accuracy using Swin
Transformer and LSTM", ICCV 2023; arXiv 2308.09891) as in OpenSTL c74deb5: SwinLSTM-D
(`swinlstm_d`, a Swin U-Net of SwinLSTM cells) and SwinLSTM-B (`swinlstm_b`, one cell); the
family seam of tau_jax/models/family.py. Modules in model.py.

One step maps a frame to the next: B embeds it in 2x2 patches, runs a SwinLSTM cell and inflates
the tokens back (stride-2 transposed conv, sigmoid); D embeds it, runs K cells each followed by
a PatchMerging (down path), then K cells each followed by a PatchExpanding (up path), then the
same inflation. Cells keep their (hidden, cell) states across steps.

Sequence (OpenSTL's `forward`, kept exactly): the steps read input frames 0 .. T-2, then frame
T-1, then their own outputs T'-1 times, so the T+T'-1 outputs predict frames 1 .. T+T'-1. The
ground-truth future frames are never fed (no scheduled sampling): they only enter the loss,
MSE(next_frames, frames[:, 1:]) over all T+T'-1 outputs (OpenSTL's SwinLSTM method; the
experiment's `loss` section is not used). predict returns the last T' outputs; horizons beyond
T' chain passes on the last T frames known (as every family's roll-out), each pass starting
from zero states. The steps run in one `nn.scan` (one copy of
the network in the graph).

OpenSTL's constraints, each checked in one sentence naming the field: square frames (its
assert), patch_size 2 (the inflation only undoes a patch of 2), an even patch grid (B's
PatchInflated asserts it), a grid divisible by 2^K (D), heads dividing every level's width, and
windows that tile every map they are smaller than. Fields keep OpenSTL's names; OpenSTL's
comma strings ('2,6') are accepted. `drop_path_rate` is OpenSTL's hard-coded 0.1
(linspace(0, 0.1) over each path's blocks for D, 0.1 for every block of B).
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
from tau_jax.models.family import (check_in_shape, frames_example_inputs, identity,
                                   require_fields)
from tau_jax.models.framing import NONE as NO_FRAMING
from tau_jax.models.swinlstm.model import DownSample, STconvert, UpSample, block_window

Dtype = Any
NAMES = ("swinlstm_d", "swinlstm_b")
OPENSTL_FEED = "frames"  # OpenSTL feeds all T+T' frames, unpatched, with no mask (see openstl_model)
OPENSTL_TWINS = ()  # OpenSTL saves no module twice
CPU_COMPILER_OPTIONS: dict = {}  # XLA:CPU's defaults (Eigen convolutions: train step +5%)


class SwinLSTM(nn.Module):
    """SwinLSTM-D (`variant` 'd') or -B ('b'). `__call__(x, train, horizon)`: the T+horizon-1
    step outputs (OpenSTL's next_frames) from the T frames `x` `(B, T, H, W, C)`."""

    variant: str
    in_shape: tuple[int, int, int, int]  # (T, H, W, C)
    out_frames: int
    patch_size: int
    embed_dim: int
    window_size: int
    depths: tuple[int, ...]  # D: depths_downsample; B: (depths,)
    depths_upsample: tuple[int, ...]
    num_heads: tuple[int, ...]
    drop_path_rate: float = 0.1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = self.in_shape[3]
        common = dict(patch_size=self.patch_size, embed_dim=self.embed_dim,
                      window=self.window_size, drop_path_rate=self.drop_path_rate, **dt)
        if self.variant == "d":
            self.Downsample = DownSample(depths=self.depths, num_heads=self.num_heads, **common)
            self.Upsample = UpSample(channels=c, depths=self.depths_upsample,
                                     num_heads=self.num_heads, **common)
        else:
            self.ST = STconvert(channels=c, depth=self.depths[0], num_heads=self.num_heads[0],
                                **common)

    def zero_states(self, batch: int, dtype):
        """The cells' (hidden, cell) states at the start: zeros, as OpenSTL's `None`."""
        _, h, _, _ = self.in_shape
        grid, e = h // self.patch_size, self.embed_dim

        def zeros(level):  # a map of grid / 2^level tokens of width e * 2^level
            z = jnp.zeros((batch, grid // 2 ** level, grid // 2 ** level, e * 2 ** level), dtype)
            return (z, z)
        if self.variant == "b":
            return zeros(0)
        k = len(self.depths)
        return ([zeros(i) for i in range(k)], [zeros(k - j) for j in range(k)])

    def step(self, frame, states, train: bool):
        """One frame `(B, H, W, C)` -> (the next, the new states)."""
        if self.variant == "b":
            return self.ST(frame, states, train)
        down, x = self.Downsample(frame, states[0], train)
        up, out = self.Upsample(x, states[1], train)
        return out, (down, up)

    def __call__(self, x, train: bool = False, horizon: int | None = None):
        t = self.in_shape[0]
        if x.ndim != 5 or tuple(x.shape[1:]) != tuple(self.in_shape):
            raise ValueError(
                f"SwinLSTM expects input frames of shape (B, {', '.join(map(str, self.in_shape))})"
                f" = (B, T, H, W, C) per model.in_shape, got {tuple(x.shape)}.")
        horizon = self.out_frames if horizon is None else int(horizon)
        dt = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        x = x.astype(dt)
        steps = t - 1 + horizon
        # step i reads frame i while i < T, else its previous output
        frames = jnp.moveaxis(x, 1, 0)
        frames = jnp.concatenate([frames, jnp.zeros((steps - t,) + frames.shape[1:], dt)])
        feed = jnp.arange(steps) < t

        def body(module, carry, xs):
            states, last = carry
            frame, use_frame = xs
            out, states = module.step(jnp.where(use_frame, frame, last), states, train)
            return (states, out.astype(dt)), out.astype(dt)

        scan = nn.scan(body, variable_broadcast="params", length=steps,
                       split_rngs={"params": False, "drop_path": True, "dropout": True})
        carry = (self.zero_states(x.shape[0], dt), jnp.zeros_like(frames[0]))
        _, outs = scan(self, carry, (frames[:steps], feed))
        return jnp.moveaxis(outs, 0, 1)


# ----------------------------------------------------------------------------------------------
# The family seam
# ----------------------------------------------------------------------------------------------

def model_config(name: str = "swinlstm_d") -> ml_collections.ConfigDict:
    """The `model` section, OpenSTL's field names; defaults are OpenSTL's configs at the Moving
    MNIST shape: configs/mmnist/SwinLSTM-D.py (20,191,969 parameters) and, as OpenSTL has no
    Moving MNIST SwinLSTM-B, configs/human/SwinLSTM-B.py's fields (2,778,417)."""
    m = ml_collections.ConfigDict()
    m.name = name                     # 'swinlstm_d' or 'swinlstm_b'
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames; H == W
    m.out_frames = 10                 # T', frames to predict
    if name == "swinlstm_d":
        m.depths_downsample = (2, 6)  # blocks per cell of the down path, level 0 first
        m.depths_upsample = (6, 2)    # blocks per cell of the up path, read backwards by level
        m.num_heads = (4, 8)          # heads per down level (the up path reads them backwards)
    else:
        m.depths = 12                 # blocks of the one cell
        m.num_heads = 4               # attention heads
    m.patch_size = 2                  # patch embedding side; OpenSTL's inflation needs 2
    m.window_size = 4                 # Swin window side (the map side where that is smaller)
    m.embed_dim = 128                 # token width of the patch grid (level k: embed_dim * 2^k)
    m.drop_path_rate = 0.1            # stochastic depth (OpenSTL's hard-coded 0.1)
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    return m


def _ints(cfg, field: str, one: bool = False) -> tuple[int, ...]:
    """A field given as an int, a tuple / list or OpenSTL's comma string, as positive ints."""
    value = cfg[field]
    try:
        if isinstance(value, str):
            vals = tuple(int(v) for v in value.split(",") if v.strip())
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            vals = (int(value),)
        else:
            vals = tuple(int(v) for v in value if not isinstance(v, bool) and int(v) == v)
            if len(vals) != len(value):
                raise ValueError
    except (TypeError, ValueError):
        vals = ()
    if not vals or any(v < 1 for v in vals) or (one and len(vals) != 1):
        kind = "a positive int" if one else "positive ints (a tuple or OpenSTL's '2,6' string)"
        raise ValueError(f"model.{field} must be {kind}, got {value!r}.")
    return vals


def check_config(cfg) -> dict:
    """One ValueError naming the field for a section OpenSTL's SwinLSTM cannot be built from;
    the module's constructor arguments otherwise."""
    require_fields(cfg, model_config(cfg.name))
    t, h, w, c = check_in_shape(cfg)
    out_frames, p, e, ws = (_ints(cfg, f, one=True)[0] for f in
                            ("out_frames", "patch_size", "embed_dim", "window_size"))
    if h != w:
        raise ValueError(f"model.in_shape must have square frames (H == W, OpenSTL's SwinLSTM "
                         f"asserts it), got {h} x {w}.")
    if p != 2:
        raise ValueError(f"model.patch_size must be 2 (SwinLSTM's stride-2 transposed conv only "
                         f"undoes a patch of 2), got {p}.")
    if h % (2 * p):
        raise ValueError(f"model.in_shape H = {h} must be a multiple of 2 * model.patch_size = "
                         f"{2 * p} (OpenSTL's PatchInflated needs an even patch grid).")
    grid = h // p
    rate = cfg.drop_path_rate
    if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"model.drop_path_rate must lie in [0, 1), got {rate!r}.")
    if cfg.name == "swinlstm_d":
        down, up = _ints(cfg, "depths_downsample"), _ints(cfg, "depths_upsample")
        heads = _ints(cfg, "num_heads")
        k = len(down)
        if len(up) != k or len(heads) != k:
            raise ValueError(f"model.depths_upsample ({len(up)} levels) and model.num_heads "
                             f"({len(heads)}) must have as many entries as "
                             f"model.depths_downsample ({k}).")
        if grid % 2 ** k:
            raise ValueError(f"model.in_shape H / patch_size = {grid} must be divisible by "
                             f"2^{k} = {2 ** k} (one halving per entry of "
                             f"model.depths_downsample).")
        levels = [(grid // 2 ** i, e * 2 ** i, heads[i]) for i in range(k)]
        levels += [(grid // 2 ** (k - j), e * 2 ** (k - j), heads[k - 1 - j]) for j in range(k)]
    else:
        down, up, heads = _ints(cfg, "depths", one=True), (), _ints(cfg, "num_heads", one=True)
        levels = [(grid, e, heads[0])]
    for res, dim, nh in levels:
        if dim % nh:
            raise ValueError(f"model.num_heads: {nh} heads do not divide a level's width {dim} "
                             f"(model.embed_dim {e} times 2^level).")
        win, _ = block_window(res, ws, 0)
        if res % win:
            raise ValueError(f"model.window_size {ws} does not tile a level's {res} x {res} token "
                             f"map (H / patch_size {grid} halved per level); pick a window "
                             f"dividing every map side larger than it.")
    return dict(variant=cfg.name[-1], in_shape=(t, h, w, c), out_frames=out_frames,
                patch_size=p, embed_dim=e, window_size=ws, depths=down, depths_upsample=up,
                num_heads=heads, drop_path_rate=float(rate))


def build(cfg, dtypes) -> nn.Module:
    """SwinLSTM-D or -B for a checked config."""
    return SwinLSTM(**check_config(cfg), **dtypes)


example_inputs = frames_example_inputs


def loss(model, config, variables, frames, rngs, key, step, steps_per_epoch=None,
         framing=NO_FRAMING):
    """OpenSTL's SwinLSTM loss: MSE of the T+T'-1 step outputs (train mode) against frames
    1 .. T+T'-1 of the T+T' `frames`."""
    del steps_per_epoch  # no schedule counted in epochs
    del key, step  # no sampling schedule in this family
    t = int(config.model.in_shape[0])
    next_frames = model.apply(variables, framing.pad(frames[:, :t]), train=True,
                              horizon=frames.shape[1] - t, rngs=rngs)
    return losses.mse(framing.crop(next_frames), frames[:, 1:]), {}


def predict(model, cfg, variables, inputs):
    """The out_frames frames after `inputs` (B, T, H, W, C), eval mode."""
    return model.apply(variables, inputs, train=False)[:, int(cfg.in_shape[0]) - 1:]


def model_pass(model, cfg, variables, window, around=identity):
    """`predict` with the model call wrapped by `around`."""
    return around(lambda w: predict(model, cfg, variables, w))(window)


def frame_rule(cfg) -> tuple[int, str | None]:
    """The windows, shifts and region masks are laid out for in_shape's token maps (a window
    no smaller than a map becomes that map, with its own bias table): in_shape's size only."""
    levels = len(_ints(cfg, "depths_downsample")) if cfg.name == "swinlstm_d" else 0
    return int(cfg.patch_size) * 2 ** max(levels, 1), (
        "its Swin windows, shifts and attention masks are laid out for the in_shape grid")


def openstl_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """OpenSTL's state-dict key of one leaf: Flax names are OpenSTL's attributes with `_<i>`
    for `.<i>`; the bias tables are (offsets, heads) in both; the transposed conv's kernel is
    (I, O, kh, kw) in PyTorch and (kh, kw, O, I) here."""
    del collection, cfg
    parts = [re.sub(r"_(\d+)", r".\1", part) for part in path[:-1]]
    key = ".".join(parts + [openstl_names.leaf_name(path[-1])])
    if path[-1] == "relative_position_bias_table":
        return key, lambda w: w
    return key, openstl_names.torch_layout(shape)


def openstl_model(cfg):
    """None: OpenSTL's SwinLSTM takes all T+T' frames unpatched and needs timm 0.6 (or shims for
    timm 1.0), which the benchmark's PyTorch peer does not feed or provide."""
    del cfg
    return None
