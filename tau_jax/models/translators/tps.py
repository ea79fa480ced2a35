"""TPS, Temporal Patch Shift (Xiang et al., ECCV 2022), as a SimVP translator.

Follows the official code (github MartinXM/TPS), adapted to dense prediction: one Swin stage at
one resolution works on the latent video's tokens
`(B, T, h/p, w/p, D)` (`latent_patch` p, D = hid_T): 2D window attention inside each frame, with
temporal mixing injected by parameter-free shifts of the window tokens.

Blocks (`N_T`, pre-norm Swin, LayerNorm eps 1e-5): `x + DropPath(WinAttn(LN1(x)))`, then
`x + DropPath(MLP(LN2(x)))`. Block i alternates as the reference:

* even i: plain windows (W-MSA) with a **channel shift** (TSM style): in every head, channels
  [0, f) at frame t take frame t-1's values and [f, 2f) take frame t+1's, f =
  int(head_dim * channel_shift_ratio) (1/8 forward and 1/8 backward by default). Not cyclic; the
  boundary frames keep their own values (the reference's choice, not TSM's zero fill). No shift
  back.
* odd i: cyclically shifted windows (SW-MSA, shift window_size // 2 with the usual mask; 0 along
  an axis the window covers entirely) with a **temporal patch shift**: before the QKV
  projection the token at (t, p), p a position inside its window, is replaced by the token at
  ((t + off(p)) mod T, p); the per-head attention output is rolled back by -off(p) before the
  output projection, so every token returns to its frame. Only the channels of the first
  int(num_heads * shift_ratio) heads move (shift_ratio 1, the paper's value, moves whole
  tokens).

The offset pattern is the reference's "pattern C" on 3x3 cells, anchored at each window's
top-left corner: off(p) = C[r mod 3][c mod 3] for window-local row r and column c, with

    C = [[+4, -1, -2],
         [+1,  0, -3],
         [+2, +3, -4]]

which generalises the reference's hard-coded 7x7 window to any `window_size` (windows smaller
than 3 only see the top-left part of C) and to any T. The shift is cyclic in time. **When T is
smaller than the pattern's span of 9 frames (-4..+4), offsets alias mod T**: e.g. T = 4 (TaxiBJ)
maps +4 and -4 to 0 (those positions stay in their own frame) and -1 to +3, so a 3x3 cell reads
from the T distinct frames instead of 9, and the first and last frames exchange tokens through
the wrap; since the nine offsets are consecutive integers, every frame is still reached for any
T <= 9. T = 1 makes both shifts the identity. Temporal reach per patch-shift block is +-8 frames
for T >= 18.

Relative position bias (`relative_bias`):

* '3d' (the paper): a table of (2T - 1)(2w - 1)^2 rows per head (w = window_size), sized for the
  actual T (the reference hard-codes 16 frames). In patch-shift blocks each token's temporal
  coordinate is the frame its content came from, so the bias is per frame, (T, heads, P, P);
  channel-shift blocks use the Δt = 0 slice, as the reference (every block owns a full table).
* '2d': a Swin table of (2w - 1)^2 rows per head, Δt ignored. The shifts then add no parameter
  at all: the parameter tree is that of a plain 2D Swin translator.

With shift_ratio = 0 and channel_shift_ratio = 0 the translator is a plain (shifted-)window
attention transformer over each frame.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.attention import (Attention, MlpResidual, TokenEmbed, TokenHead,
                                      check_token_config, layer_norm, trunc_normal)
from tau_jax.models.layers import DropPath, drop_path_rates

Dtype = Any

PATTERN_C = np.array([[4, -1, -2], [1, 0, -3], [2, 3, -4]])
RELATIVE_BIAS = ("3d", "2d")
LN_EPS = 1e-5  # Swin / TPS LayerNorm epsilon (torch default)
MASK_VALUE = -1e9  # added to logits across shifted-window region boundaries


# ----------------------------------------------------------------------------------------------
# Parameter-free shifts on window tokens (B, T, num_windows, P, C)
# ----------------------------------------------------------------------------------------------

def shift_offsets(window_size: int) -> np.ndarray:
    """Pattern-C source-frame offset of each window position p = r * window_size + c, (P,)."""
    r, c = np.divmod(np.arange(window_size * window_size), window_size)
    return PATTERN_C[r % 3, c % 3]


def source_frames(frames: int, window_size: int, inverse: bool = False) -> np.ndarray:
    """(T, P) frame each token comes from after the patch shift (its inverse: -offsets), mod T."""
    off = -shift_offsets(window_size) if inverse else shift_offsets(window_size)
    return (np.arange(frames)[:, None] + off[None, :]) % frames


def patch_shift(x, window_size: int, inverse: bool = False, channels: int | None = None):
    """Temporal patch shift of window tokens `(B, T, nW, P, C)`.

    Output (t, p) holds input ((t + off(p)) mod T, p) (`inverse`: (t - off(p)) mod T), for the
    first `channels` channels (None = all); the other channels stay. A gather, no arithmetic.
    """
    t = x.shape[1]
    channels = x.shape[-1] if channels is None else channels
    if channels == 0 or t == 1:
        return x
    idx = jnp.asarray(source_frames(t, window_size, inverse))[None, :, None, :, None]
    moved = jnp.take_along_axis(x[..., :channels], idx, axis=1)
    if channels == x.shape[-1]:
        return moved
    return jnp.concatenate([moved, x[..., channels:]], axis=-1)


def channel_shift(x, num_heads: int, fold: int):
    """TSM-style shift of `(B, T, ..., C)`: per head, channels [0, fold) from frame t-1 and
    [fold, 2 fold) from frame t+1; frame 0 / T-1 keep their own values there (no wrap, no zeros).
    """
    if fold == 0 or x.shape[1] == 1:
        return x
    shape = x.shape
    x = x.reshape(shape[:-1] + (num_heads, shape[-1] // num_heads))
    prev = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
    nxt = jnp.concatenate([x[:, 1:], x[:, -1:]], axis=1)
    out = jnp.concatenate([prev[..., :fold], nxt[..., fold:2 * fold], x[..., 2 * fold:]], axis=-1)
    return out.reshape(shape)


# ----------------------------------------------------------------------------------------------
# Windows, masks, relative position indices (static, numpy)
# ----------------------------------------------------------------------------------------------

def window_partition(x, window_size: int):
    """(B, T, H, W, C) -> (B, T, nW, P, C), windows in row-major order, P = window_size ** 2."""
    b, t, h, w, c = x.shape
    ws = window_size
    x = x.reshape(b, t, h // ws, ws, w // ws, ws, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(x, window_size: int, h: int, w: int):
    """Inverse of `window_partition`."""
    b, t, _, _, c = x.shape
    ws = window_size
    x = x.reshape(b, t, h // ws, w // ws, ws, ws, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h, w, c)


def window_shifts(h: int, w: int, window_size: int, shifted: bool) -> tuple[int, int]:
    """SW-MSA cyclic shift per axis: window_size // 2, or 0 where one window covers the axis."""
    if not shifted:
        return 0, 0
    return (window_size // 2 if h > window_size else 0, window_size // 2 if w > window_size else 0)


def shifted_window_mask(h: int, w: int, window_size: int, shifts: tuple[int, int]):
    """(nW, P, P) additive mask: MASK_VALUE between tokens from different pre-roll regions."""
    labels = np.zeros((h, w), np.int64)
    cuts = []
    for size, shift in zip((h, w), shifts):
        edge = size - window_size
        cuts.append([(0, edge), (edge, size - shift), (size - shift, size)] if shift
                    else [(0, size)])
    count = 0
    for r0, r1 in cuts[0]:
        for c0, c1 in cuts[1]:
            labels[r0:r1, c0:c1] = count
            count += 1
    windows = window_partition(labels[None, None, :, :, None], window_size)[0, 0, :, :, 0]
    different = windows[:, :, None] != windows[:, None, :]
    return np.where(different, MASK_VALUE, 0.0).astype(np.float32)


def relative_position_index(window_size: int, frames: int, mode: str,
                            patch_shifted: bool) -> np.ndarray:
    """Rows of the bias table for each (query, key) pair: (P, P), or (T, P, P) for a '3d' table
    in a patch-shift block (temporal coordinates = source frames, so the bias differs per frame).
    """
    ws = window_size
    r, c = np.divmod(np.arange(ws * ws), ws)
    spatial = (r[:, None] - r[None, :] + ws - 1) * (2 * ws - 1) + (c[:, None] - c[None, :] + ws - 1)
    if mode == "2d":
        return spatial
    if not patch_shifted:
        return (frames - 1) * (2 * ws - 1) ** 2 + spatial  # the Δt = 0 slice
    src = source_frames(frames, ws)                         # (T, P)
    dt = src[:, :, None] - src[:, None, :] + frames - 1     # (T, P, P), in [0, 2T - 2]
    return dt * (2 * ws - 1) ** 2 + spatial[None]


def bias_table_rows(window_size: int, frames: int, mode: str) -> int:
    spatial = (2 * window_size - 1) ** 2
    return spatial if mode == "2d" else (2 * frames - 1) * spatial


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------

class TPSBlock(nn.Module):
    """One Swin block on `(B, T, h, w, D)` tokens with a temporal shift inside its attention.

    `temporal`: 'channel' (channel shift) or 'patch' (patch shift + shift back); `shifted`:
    SW-MSA. Sub-modules 'norm1', 'attn' (qkv, proj), param 'relative_position_bias_table', 'mlp'.
    """

    num_heads: int
    window_size: int
    temporal: str = "channel"
    shifted: bool = False
    mlp_ratio: float = 4.0
    drop: float = 0.0
    drop_path: float = 0.0
    shift_ratio: float = 1.0
    channel_shift_ratio: float = 0.125
    relative_bias: str = "3d"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        b, t, h, w, d = x.shape
        ws, heads = self.window_size, self.num_heads
        head_dim = d // heads
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        patch_channels = int(heads * self.shift_ratio) * head_dim if self.temporal == "patch" else 0
        fold = int(head_dim * self.channel_shift_ratio) if self.temporal == "channel" else 0

        table = self.param("relative_position_bias_table",
                           trunc_normal(),
                           (bias_table_rows(ws, t, self.relative_bias), heads), self.param_dtype)
        index = relative_position_index(ws, t, self.relative_bias, patch_channels > 0)
        bias = jnp.moveaxis(table[index], -1, -3)            # (T?, heads, P, P)
        bias = bias[:, None] if bias.ndim == 4 else bias     # (T, 1, heads, P, P) vs windows

        y = layer_norm(LN_EPS, name="norm1", **dt)(x)
        shifts = window_shifts(h, w, ws, self.shifted)
        if any(shifts):
            y = jnp.roll(y, (-shifts[0], -shifts[1]), axis=(2, 3))
            mask = jnp.asarray(shifted_window_mask(h, w, ws, shifts))[:, None]  # (nW, 1, P, P)
            bias = bias.astype(jnp.float32) + mask
        y = window_partition(y, ws)                           # (B, T, nW, P, D)
        y = patch_shift(y, ws, channels=patch_channels)
        y = channel_shift(y, heads, fold)

        def shift_back(out):                                  # (B, T, nW, P, heads, head_dim)
            flat = out.reshape(out.shape[:-2] + (d,))
            return patch_shift(flat, ws, inverse=True, channels=patch_channels).reshape(out.shape)

        y = Attention(heads, name="attn", **dt)(y, bias, shift_back if patch_channels else None)
        y = window_reverse(y, ws, h, w)
        if any(shifts):
            y = jnp.roll(y, shifts, axis=(2, 3))
        x = x + DropPath(self.drop_path)(y, train)
        return MlpResidual(self.mlp_ratio, self.drop, self.drop_path, LN_EPS, name="mlp",
                           **dt)(x, train)


class TPS(nn.Module):
    """The TPS translator: `(B, T, h, w, C)` -> same shape (see the module docstring)."""

    hid_T: int
    N_T: int
    num_heads: int = 8
    window_size: int = 8
    latent_patch: int = 1
    mlp_ratio: float = 4.0
    drop: float = 0.0
    drop_path: float = 0.0
    drop_path_schedule: str = "linear"
    shift_ratio: float = 1.0
    channel_shift_ratio: float = 0.125
    relative_bias: str = "3d"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, train: bool = False):
        c = z.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = TokenEmbed(self.hid_T, self.latent_patch, name="embed", **dt)(z)
        x = nn.Dropout(self.drop, deterministic=not train)(x)
        rates = drop_path_rates(self.drop_path, self.N_T, self.drop_path_schedule)
        for i, rate in enumerate(rates):
            odd = i % 2 == 1
            x = TPSBlock(self.num_heads, self.window_size, "patch" if odd else "channel", odd,
                         self.mlp_ratio, self.drop, rate, self.shift_ratio,
                         self.channel_shift_ratio, self.relative_bias, name=f"block_{i}",
                         **dt)(x, train)
        return TokenHead(c, self.latent_patch, LN_EPS, name="head", **dt)(x)


def check_config(cfg) -> None:
    """TPS-specific config checks (the SimVP frame's run first, in simvp.check_config)."""
    gh, gw = check_token_config(cfg)
    ws = cfg.window_size
    if not isinstance(ws, int) or ws < 1:
        raise ValueError(f"model.window_size must be a positive int, got {ws!r}.")
    if gh % ws or gw % ws:
        raise ValueError(
            f"model.window_size = {ws} must divide the token grid {gh} x {gw} (latent map / "
            f"model.latent_patch = {cfg.latent_patch}); windows are not padded: choose a divisor "
            "of both sides, or change in_shape / N_S / latent_patch.")
    if cfg.relative_bias not in RELATIVE_BIAS:
        raise ValueError(f"model.relative_bias must be one of {RELATIVE_BIAS}, got "
                         f"{cfg.relative_bias!r}.")
    if not 0.0 <= cfg.shift_ratio <= 1.0:
        raise ValueError(f"model.shift_ratio must lie in [0, 1], got {cfg.shift_ratio}.")
    if cfg.shift_ratio > 0 and int(cfg.num_heads * cfg.shift_ratio) == 0:
        raise ValueError(f"model.shift_ratio = {cfg.shift_ratio} moves int(num_heads * ratio) = 0 "
                         f"of model.num_heads = {cfg.num_heads} heads; use 0 or a larger ratio.")
    if not 0.0 <= cfg.channel_shift_ratio <= 0.5:
        raise ValueError("model.channel_shift_ratio must lie in [0, 0.5] (it shifts that fraction "
                         f"of each head both ways), got {cfg.channel_shift_ratio}.")
    head_dim = cfg.hid_T // cfg.num_heads
    if cfg.channel_shift_ratio > 0 and int(head_dim * cfg.channel_shift_ratio) == 0:
        raise ValueError(
            f"model.channel_shift_ratio = {cfg.channel_shift_ratio} shifts int(head_dim * ratio) "
            f"= 0 of the {head_dim} channels per head (hid_T / num_heads); use 0, a larger ratio "
            "or fewer heads.")


def translator(cfg, **dtypes) -> TPS:
    """The TPS translator for a model config (checks the config first)."""
    check_config(cfg)
    return TPS(hid_T=cfg.hid_T, N_T=cfg.N_T, num_heads=cfg.num_heads,
               window_size=cfg.window_size, latent_patch=cfg.latent_patch,
               mlp_ratio=cfg.mlp_ratio, drop=cfg.drop, drop_path=cfg.drop_path,
               drop_path_schedule=cfg.drop_path_schedule, shift_ratio=cfg.shift_ratio,
               channel_shift_ratio=cfg.channel_shift_ratio, relative_bias=cfg.relative_bias,
               **dtypes)


def latent_rule(cfg) -> tuple[int, None]:
    """Any latent that the attention windows of latent patches tile."""
    return int(cfg.latent_patch) * int(cfg.window_size), None
