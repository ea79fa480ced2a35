"""PredFormer (Tang et al., "Video Prediction Transformers without Recurrence or Convolution",
arXiv 2410.04733): a pure transformer on space-time patches; the family seam of
tau_jax/models/family.py.

Every frame is cut into `patch_size` patches, each patch a token (Linear p*p*C -> dim) plus a
fixed sinusoidal code of its index t * N + n among the T * N tokens. Gated transformers then
attend over time (the T tokens of one patch position), over space (the N tokens of one frame)
or over both, in the arrangement `variant` names:

    full              one transformer over all T * N tokens, Ndepth layers
    fac_st / fac_ts   a spatial then a temporal transformer (or the reverse), Ndepth layers each
    binary_st / _ts   Ndepth blocks of (space, time) / (time, space)
    triplet_tst / _sts      Ndepth blocks of (time, space, time) / (space, time, space)
    quadruplet_tsst / _stts Ndepth blocks of (time, space, space, time) / (space, time, time, space)

(the blocks' transformers have `depth` layers each; the official configs use 1). A layer is
pre-norm attention and a SwiGLU MLP (hidden dim * scale_dim), each a residual with stochastic
depth; each transformer ends in a LayerNorm. A LayerNorm and a Linear dim -> p*p*C read the
patches back out. The T input frames give the next T; other horizons chain passes (the official
`_predict`). Loss: MSE, as the official training method; the experiment's `loss` section (TAU's
DDR) is not used. Not an OpenSTL model: the official code (github yyyujintang/PredFormer) is an
OpenSTL fork, and its state dicts import with `convert.from_openstl` (names kept: `dim`, `heads`,
`dim_head`, `scale_dim`, `Ndepth`, the transformers' attribute names).

Initialisation as the official model: transformer Linears truncated normal std 0.02 and zero
biases, LayerNorms 1 / 0 (eps 1e-5, PyTorch's); the patch embedding and the head keep PyTorch's
default Linear init.
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
from tau_jax.models.attention import dense, dot_product_attention, layer_norm, patchify
from tau_jax.models.family import (check_in_shape, frames_example_inputs, frames_model_pass,
                                   frames_predict, require_fields)
from tau_jax.models.framing import NONE as NO_FRAMING
from tau_jax.models.layers import (DropPath, checked_roll_out, torch_default_bias_init,
                                   torch_default_kernel_init)

Dtype = Any

# variant -> (stacked in Ndepth blocks?, ((official attribute name, axis), ...)); axis 't'
# attends over time, 's' over space, 'st' over both.
VARIANTS = {
    "full": (False, (("space_temporal_transformer", "st"),)),
    "fac_st": (False, (("space_transformer", "s"), ("temporal_transformer", "t"))),
    "fac_ts": (False, (("temporal_transformer", "t"), ("space_transformer", "s"))),
    "binary_st": (True, (("st_space_transformer", "s"), ("st_temporal_transformer", "t"))),
    "binary_ts": (True, (("ts_temporal_transformer", "t"), ("ts_space_transformer", "s"))),
    "triplet_tst": (True, (("temporal_transformer_first", "t"), ("space_transformer", "s"),
                           ("temporal_transformer_second", "t"))),
    "triplet_sts": (True, (("space_transformer_first", "s"), ("temporal_transformer", "t"),
                           ("space_transformer_second", "s"))),
    "quadruplet_tsst": (True, (("ts_temporal_transformer", "t"), ("ts_space_transformer", "s"),
                               ("st_space_transformer", "s"), ("st_temporal_transformer", "t"))),
    "quadruplet_stts": (True, (("st_space_transformer", "s"), ("st_temporal_transformer", "t"),
                               ("ts_temporal_transformer", "t"), ("ts_space_transformer", "s"))),
}
# The official FacST hands its temporal transformer's tokens, in (patch, time) order, to the head
# as if they were in (time, patch) order (a reshape where a permute belongs); kept, as the
# official weights were trained with it.
TOKENS_LEFT_IN_PATCH_TIME_ORDER = ("fac_st",)
LAYER_NORM_EPS = 1e-5  # PyTorch's nn.LayerNorm default


class Attention(nn.Module):
    """Multi-head self-attention over axis -2, heads x dim_head wide inside (which need not equal
    the token width); no qkv bias; the output projection (and its dropout) is left out when one
    head is as wide as the token, as the official module does."""

    heads: int
    dim_head: int
    dropout: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim, inner = x.shape[-1], self.heads * self.dim_head
        qkv = dense(3 * inner, name="to_qkv", use_bias=False, **dt)(x)
        qkv = qkv.reshape(qkv.shape[:-1] + (3, self.heads, self.dim_head))
        out = dot_product_attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :],
                                    dtype=self.dtype)
        out = out.reshape(out.shape[:-2] + (inner,))
        if self.heads == 1 and self.dim_head == dim:
            return out
        out = dense(dim, name="to_out_0", **dt)(out)
        return nn.Dropout(self.dropout, deterministic=not train)(out)


class SwiGLU(nn.Module):
    """fc2(dropout(silu(fc1_g(x)) * fc1_x(x))), then dropout."""

    hidden: int
    dropout: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = nn.silu(dense(self.hidden, name="fc1_g", **dt)(x)) * dense(self.hidden,
                                                                        name="fc1_x", **dt)(x)
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = dense(x.shape[-1], name="fc2", **dt)(y)
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class PreNorm(nn.Module):
    """fn(LayerNorm(x)): the official PreNorm, whose parameter names (`norm`, `fn`) it keeps."""

    fn: nn.Module
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = layer_norm(LAYER_NORM_EPS, name="norm", dtype=self.dtype,
                       param_dtype=self.param_dtype)(x)
        return self.fn(x, train)


class GatedTransformer(nn.Module):
    """`depth` layers of x + DropPath(attention) and x + DropPath(SwiGLU), both pre-norm, then a
    LayerNorm; attends over axis -2 of `(batch, tokens, dim)`."""

    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(self.depth):
            attn = Attention(self.heads, self.dim_head, self.attn_dropout, **dt, parent=None)
            ff = SwiGLU(self.mlp_dim, self.dropout, **dt, parent=None)
            x = x + DropPath(self.drop_path)(PreNorm(attn, name=f"layers_{j}_0", **dt)(x, train),
                                             train)
            x = x + DropPath(self.drop_path)(PreNorm(ff, name=f"layers_{j}_1", **dt)(x, train),
                                             train)
        return layer_norm(LAYER_NORM_EPS, name="norm", **dt)(x)


def over_axis(transformer: nn.Module, x, axis: str, train: bool):
    """Apply `transformer` to x (B, T, N, D) over time ('t'), space ('s') or both ('st')."""
    b, t, n, d = x.shape
    if axis == "s":
        return transformer(x.reshape(b * t, n, d), train).reshape(b, t, n, d)
    if axis == "t":
        y = transformer(x.transpose(0, 2, 1, 3).reshape(b * n, t, d), train)
        return y.reshape(b, n, t, d).transpose(0, 2, 1, 3)
    return transformer(x.reshape(b, t * n, d), train).reshape(b, t, n, d)


class Stages(nn.Module):
    """Named transformers applied in turn, each over its axis (one official PredFormerLayer, or
    the body of the unstacked variants)."""

    stages: tuple[tuple[str, str], ...]
    depth: int
    kwargs: dict

    @nn.compact
    def __call__(self, x, train: bool):
        for name, axis in self.stages:
            x = over_axis(GatedTransformer(self.depth, **self.kwargs, name=name), x, axis, train)
        return x


def sinusoidal_code(length: int, dim: int) -> np.ndarray:
    """(length, dim) sine (even channels) / cosine (odd) code of positions 0..length-1, computed
    in float32 as the official `sinusoidal_embedding` (which is a constant, not a parameter)."""
    i = np.arange(dim)
    angles = (np.arange(length)[:, None] / 10000.0 ** (2 * (i // 2) / dim)).astype(np.float32)
    angles = angles.astype(np.float64)  # sine and cosine rounded once, to float32
    return np.where(i % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)


class PredFormer(nn.Module):
    """Patches -> tokens + position code -> the variant's transformers -> patches, rolled out to
    `out_frames` frames. Input and output `(B, T, H, W, C)`."""

    in_shape: tuple[int, int, int, int]  # (T, H, W, C)
    out_frames: int
    variant: str
    patch_size: int
    dim: int
    heads: int
    dim_head: int
    scale_dim: int
    Ndepth: int
    depth: int = 1
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        t, h, w, c = self.in_shape
        p = self.patch_size
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.to_patch_embedding_1 = nn.Dense(
            self.dim, kernel_init=torch_default_kernel_init(),
            bias_init=torch_default_bias_init(p * p * c), **dt)
        self.mlp_head_0 = layer_norm(LAYER_NORM_EPS, name=None, **dt)
        self.mlp_head_1 = nn.Dense(c * p * p, kernel_init=torch_default_kernel_init(),
                                   bias_init=torch_default_bias_init(self.dim), **dt)
        stacked, stages = VARIANTS[self.variant]
        kwargs = dict(heads=self.heads, dim_head=self.dim_head, mlp_dim=self.dim * self.scale_dim,
                      dropout=self.dropout, attn_dropout=self.attn_dropout,
                      drop_path=self.drop_path, **dt)
        if stacked:  # official `blocks`, a ModuleList of PredFormerLayers
            self.blocks = [Stages(stages, self.depth, kwargs) for _ in range(self.Ndepth)]
        else:  # the official model's own attributes
            for name, _ in stages:
                setattr(self, name, GatedTransformer(self.Ndepth, **kwargs))

    def __call__(self, x, train: bool = False):
        """Predict `out_frames` future frames from `x` `(B, T, H, W, C)`."""
        return checked_roll_out("PredFormer", self.in_shape,
                                lambda window: self.predict_window(window, train), x,
                                self.out_frames)

    def predict_window(self, x, train: bool):
        """One pass: T input frames -> the next T frames."""
        b, t, h, w, c = x.shape
        p, gh, gw = self.patch_size, h // self.patch_size, w // self.patch_size
        if self.dtype is not None:
            x = x.astype(self.dtype)
        tokens = patchify(x, p)  # (p1 p2 c) patch order, as the official Rearrange
        tokens = self.to_patch_embedding_1(tokens.reshape(b, t, gh * gw, p * p * c))
        code = sinusoidal_code(t * gh * gw, self.dim).reshape(1, t, gh * gw, self.dim)
        tokens = tokens + jnp.asarray(code).astype(tokens.dtype)
        stacked, stages = VARIANTS[self.variant]
        if stacked:
            for block in self.blocks:
                tokens = block(tokens, train)
        else:
            for name, axis in stages:
                tokens = over_axis(getattr(self, name), tokens, axis, train)
        if self.variant in TOKENS_LEFT_IN_PATCH_TIME_ORDER:
            tokens = tokens.transpose(0, 2, 1, 3).reshape(tokens.shape)
        y = self.mlp_head_1(self.mlp_head_0(tokens))
        # the head's (c p1 p2) order, as the official view/permute
        y = y.reshape(b, t, gh, gw, c, p, p).transpose(0, 1, 2, 5, 3, 6, 4)
        return y.reshape(b, t, h, w, c)


# ----------------------------------------------------------------------------------------------
# The family seam
# ----------------------------------------------------------------------------------------------

NAMES = ("predformer",)
OPENSTL_FEED = "frames"
OPENSTL_TWINS = ()  # OpenSTL saves no module twice
CPU_COMPILER_OPTIONS: dict = {}  # XLA:CPU's defaults (Eigen convolutions: train step even)


def model_config(name: str = "predformer") -> ml_collections.ConfigDict:
    """The `model` section with the official field names; defaults are the official Moving MNIST
    config (Quadruplet-TSST, 6 blocks: 25,297,728 parameters)."""
    m = ml_collections.ConfigDict()
    m.name = name                     # 'predformer'
    m.variant = "quadruplet_tsst"     # arrangement of attention: one of VARIANTS (module docstring)
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames
    m.out_frames = 10                 # T', frames to predict; T' > T chains passes
    m.patch_size = 8                  # side of the square patches that become tokens
    m.dim = 256                       # token width
    m.heads = 8                       # attention heads
    m.dim_head = 32                   # width of one head (heads * dim_head need not equal dim)
    m.scale_dim = 4                   # SwiGLU hidden width / dim
    m.Ndepth = 6                      # blocks (stacked variants) or layers (full, fac_*)
    m.depth = 1                       # layers per transformer inside a block (stacked variants)
    m.dropout = 0.0                   # dropout inside and after the SwiGLU MLP
    m.attn_dropout = 0.0              # dropout after the attention's output projection
    m.drop_path = 0.0                 # stochastic depth of every residual branch (one rate)
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    return m


def equal_budget_ndepth(variant: str, quadruplet_blocks: int) -> int:
    """Ndepth giving `variant` as many transformers as `quadruplet_blocks` Quadruplet blocks have
    (4 per block), rounded up: the official configs' table (6 -> full 24, fac / binary 12,
    triplet 8, quadruplet 6; 2 -> 8, 4, 3, 2)."""
    return -(-4 * quadruplet_blocks // len(VARIANTS[check_variant(variant)][1]))


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"model.variant must be one of {sorted(VARIANTS)}, got {variant!r}.")
    return variant


def _positive_int(cfg, field: str) -> int:
    value = cfg[field]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"model.{field} must be a positive int, got {value!r}.")
    return int(value)


def check_config(cfg) -> dict:
    """One ValueError naming the field for a section no PredFormer can be built from; the
    module's constructor arguments otherwise."""
    require_fields(cfg, model_config(cfg.name))
    t, h, w, c = check_in_shape(cfg)
    check_variant(cfg.variant)
    ints = {f: _positive_int(cfg, f) for f in ("out_frames", "patch_size", "dim", "heads",
                                               "dim_head", "scale_dim", "Ndepth", "depth")}
    rates = {f: cfg[f] for f in ("dropout", "attn_dropout", "drop_path")}
    for field, rate in rates.items():
        if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"model.{field} must lie in [0, 1), got {rate!r}.")
    return dict(in_shape=(t, h, w, c), variant=cfg.variant, **ints,
                **{f: float(r) for f, r in rates.items()})


def build(cfg, dtypes) -> nn.Module:
    """PredFormer for a checked config."""
    return PredFormer(**check_config(cfg), **dtypes)


def loss(model, config, variables, frames, rngs, key, step, steps_per_epoch=None,
         framing=NO_FRAMING):
    """MSE of the T' frames predicted (train mode) from the first T of `frames`."""
    del steps_per_epoch  # no schedule counted in epochs
    del key, step  # no sampling schedule in this family
    t = config.model.in_shape[0]
    pred = model.apply(variables, framing.pad(frames[:, :t]), train=True, rngs=rngs)
    return losses.mse(framing.crop(pred), frames[:, t:]), {}


example_inputs = frames_example_inputs
predict = frames_predict
model_pass = frames_model_pass


def frame_rule(cfg) -> tuple[int, str | None]:
    """The position code numbers the tokens of the in_shape grid (index t * N + n), so on another
    grid every token would carry another position: in_shape's frame size only."""
    return int(cfg.patch_size), ("its sinusoidal position code numbers the tokens of the "
                                 "in_shape grid")


def openstl_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """The official state-dict key of one leaf: Flax names keep the official attribute names,
    with `_<i>` standing for the official `.<i>` (ModuleList / Sequential indices)."""
    del collection, cfg
    parts = [re.sub(r"_(\d+)", r".\1", part) for part in path[:-1]]
    return ".".join(parts + [openstl_names.leaf_name(path[-1])]), openstl_names.torch_layout(shape)


def openstl_model(cfg):
    """None: PredFormer is not in OpenSTL (the benchmark's PyTorch peer has no counterpart)."""
    del cfg
    return None
