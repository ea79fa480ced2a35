"""TimeSformer (Bertasius et al., ICML 2021) as a SimVP translator.

Follows the official code (github facebookresearch/TimeSformer), adapted to dense prediction:
no CLS token, tokens are
patches of the encoder's per-frame latent maps, and the tokens are projected back to the latent
map at the end, so the translator maps `(B, T, h, w, C)` to the same shape.

Layout: `(B, T, N, D)` tokens, N = (h/p)(w/p) for `latent_patch` p, D = hid_T.

* Embedding: patchify (p x p latent patches, channel order (row, col, c)), Linear p*p*C -> D,
  plus a learned space embedding (N, D) (truncated normal 0.02, shared by every frame) and,
  except in 'space' mode, a learned time embedding (T, D) initialised to zeros; dropout `drop`.
  Both embeddings are sized from the input at init, so any T, h, w work (no 16 frames / 14x14);
  a model applied to a different T or grid than it was initialised with is a shape error.
* Blocks (pre-norm, LayerNorm eps 1e-6, `N_T` of them), `attention_mode`:
  - 'divided' (default, the paper's best): time attention per spatial location
    `x + fc(DropPath(TAttn(LN_t(x))))` (`temporal`: own LayerNorm, own attention, the extra
    Linear `fc` after it, zero-initialised in every block as the reference ends up doing, so a
    fresh model is a per-frame spatial transformer), then space attention per frame
    `x + DropPath(SAttn(LN(x)))` (`attn`), then `x + DropPath(MLP(LN(x)))` (`mlp`).
    DropPath's sample is a (batch, location) sequence for the temporal branch, a
    (batch, frame) for the spatial one and a batch element for the MLP, as the reference.
  - 'joint': one attention over all N*T tokens of a clip (`attn`), then the MLP.
  - 'space': attention within each frame only and no time embedding; frames never mix, so
    this mode is a per-frame baseline.
  Per-block DropPath rates come from `drop_path_rates(drop_path, N_T, drop_path_schedule)`.
* Head: LayerNorm, Linear D -> p*p*C, unpatchify.

Parameters per block (width D, MLP ratio r, qkv with bias): divided (9 + 2r) D^2 + (16 + r) D
(17 D^2 + 20 D for r = 4), joint and space (4 + 2r) D^2 + (9 + r) D.

Attention is bidirectional in time: all T input frames are observed in SimVP, and output slot t
stands for future frame t.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.attention import (Attention, MlpResidual, TokenEmbed, TokenHead,
                                      check_token_config, dense, layer_norm, trunc_normal)
from tau_jax.models.layers import DropPath, drop_path_rates

Dtype = Any

ATTENTION_MODES = ("divided", "joint", "space")
LN_EPS = 1e-6  # TimeSformer's LayerNorm epsilon


class SpaceTimeAttention(nn.Module):
    """`x + DropPath(Attn(LN(x)))` on `(B, T, N, D)`, attending over `over`:

    'space' (within each frame), 'time' (along T at each location; adds the `fc` Linear after
    DropPath, zero-initialised) or 'joint' (all T*N tokens of a clip).
    """

    over: str
    num_heads: int
    drop_path: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        b, t, n, d = x.shape
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = layer_norm(LN_EPS, name="norm", **dt)(x)
        if self.over == "time":
            y = y.transpose(0, 2, 1, 3).reshape(b * n, t, d)   # one sequence per location
        elif self.over == "space":
            y = y.reshape(b * t, n, d)                         # one sequence per frame
        elif self.over == "joint":
            y = y.reshape(b, t * n, d)                         # one sequence per clip
        else:
            raise ValueError(f"unknown attention axis {self.over!r}")
        y = Attention(self.num_heads, name="attn", **dt)(y)
        y = DropPath(self.drop_path)(y, train)
        if self.over == "time":
            y = y.reshape(b, n, t, d).transpose(0, 2, 1, 3)
            y = dense(d, name="fc", zero=True, **dt)(y)
        return x + y.reshape(b, t, n, d)


class TimeSformerBlock(nn.Module):
    """One block on `(B, T, N, D)` tokens; sub-modules 'temporal' (divided only), 'attn', 'mlp'."""

    attention_mode: str = "divided"
    num_heads: int = 8
    mlp_ratio: float = 4.0
    drop: float = 0.0
    drop_path: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(num_heads=self.num_heads, drop_path=self.drop_path, dtype=self.dtype,
                  param_dtype=self.param_dtype)
        if self.attention_mode == "divided":
            x = SpaceTimeAttention("time", name="temporal", **kw)(x, train)
            x = SpaceTimeAttention("space", name="attn", **kw)(x, train)
        elif self.attention_mode in ("joint", "space"):
            x = SpaceTimeAttention(self.attention_mode, name="attn", **kw)(x, train)
        else:
            raise ValueError(f"model.attention_mode must be one of {ATTENTION_MODES}, got "
                             f"{self.attention_mode!r}.")
        return MlpResidual(self.mlp_ratio, self.drop, self.drop_path, LN_EPS, name="mlp",
                           dtype=self.dtype, param_dtype=self.param_dtype)(x, train)


class TimeSformer(nn.Module):
    """The TimeSformer translator: `(B, T, h, w, C)` -> same shape (see the module docstring)."""

    hid_T: int
    N_T: int
    num_heads: int = 8
    latent_patch: int = 1
    attention_mode: str = "divided"
    mlp_ratio: float = 4.0
    drop: float = 0.0
    drop_path: float = 0.0
    drop_path_schedule: str = "linear"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, train: bool = False):
        b, t, h, w, c = z.shape
        p, d = self.latent_patch, self.hid_T
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = TokenEmbed(d, p, name="embed", **dt)(z)             # (B, T, h/p, w/p, D)
        gh, gw = x.shape[2:4]
        x = x.reshape(b, t, gh * gw, d)
        pos = self.param("pos_embed", trunc_normal(),
                         (gh * gw, d), self.param_dtype)
        x = x + pos.astype(x.dtype)
        if self.attention_mode != "space":
            time = self.param("time_embed", nn.initializers.zeros,
                              (t, d), self.param_dtype)
            x = x + time.astype(x.dtype)[:, None, :]
        x = nn.Dropout(self.drop, deterministic=not train)(x)
        rates = drop_path_rates(self.drop_path, self.N_T, self.drop_path_schedule)
        for i, rate in enumerate(rates):
            x = TimeSformerBlock(self.attention_mode, self.num_heads, self.mlp_ratio, self.drop,
                                 rate, name=f"block_{i}", **dt)(x, train)
        x = x.reshape(b, t, gh, gw, d)
        return TokenHead(c, p, LN_EPS, name="head", **dt)(x)


def check_config(cfg) -> None:
    """TimeSformer-specific config checks (the SimVP frame's run first, in simvp.check_config)."""
    if cfg.attention_mode not in ATTENTION_MODES:
        raise ValueError(f"model.attention_mode must be one of {ATTENTION_MODES}, got "
                         f"{cfg.attention_mode!r}.")
    check_token_config(cfg)


def translator(cfg, **dtypes) -> TimeSformer:
    """The TimeSformer translator for a model config (checks the config first)."""
    check_config(cfg)
    return TimeSformer(hid_T=cfg.hid_T, N_T=cfg.N_T, num_heads=cfg.num_heads,
                       latent_patch=cfg.latent_patch, attention_mode=cfg.attention_mode,
                       mlp_ratio=cfg.mlp_ratio, drop=cfg.drop, drop_path=cfg.drop_path,
                       drop_path_schedule=cfg.drop_path_schedule, **dtypes)


def latent_rule(cfg) -> tuple[int, str]:
    return int(cfg.latent_patch), "its position embedding is learnt per token of the in_shape grid"
