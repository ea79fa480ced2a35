"""SwinLSTM's modules (OpenSTL c74deb5, openstl/modules/swinlstm_modules.py on timm 0.6's Swin).

Token maps are kept as `(B, R, R, D)` (row-major tokens, as OpenSTL's `(B, R*R, D)`); every
LayerNorm has eps 1e-5 (PyTorch's). Names follow OpenSTL's attributes, `_<i>` standing for
`.<i>`, so `tau_jax.convert.from_openstl` reads OpenSTL's state dicts.

OpenSTL quirks kept (its weights are trained with them):
  * `STB.red` (Linear 2D -> D) folds a second input into the normalised tokens; blocks called
    without one (every odd block of a SwinLSTMCell) still own a `red` that nothing uses, and
    SwinLSTM-D's `Upsample.patch_embed` is built but never called. Both are created here (the
    state dicts hold them; OpenSTL's parameter counts include them) and have no effect.
  * The second input of block 0 is the cell's hidden state, of the even blocks k > 0 the cell's
    input xt; LayerNorm `norm1` normalises both the tokens and that second input.
  * Unlike OpenSTL's SimVP Swin translator, the shifted blocks do apply timm's region mask
    (-100 across the roll's seams).
  * The LSTM gate is one tensor: Ft = sigmoid(o), Ct = Ft * (cx + tanh(o)), Ht = Ft * tanh(Ct).
  * PatchMerging is timm 0.6's (concat x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2],
    LayerNorm(4D), Linear 4D -> 2D without bias); PatchExpanding's Linear D -> 2D has no bias
    and its 2x2 sub-tokens are laid out (row, col) with the D/2 channels innermost.

Initialisation: the patch embedding, `red`, PatchMerging / PatchExpanding Linears and the
transposed conv keep PyTorch's defaults (as in OpenSTL, which never re-initialises them); the
attention and MLP Linears and the relative position tables start truncated normal 0.02 (the
shared `SelfAttention` / `Mlp`, timm's Swin init), biases 0.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.attention import layer_norm
from tau_jax.models.layers import (ConvTranspose2d, DropPath, torch_default_bias_init,
                                   torch_default_conv, torch_default_kernel_init)
from tau_jax.models.translators.metaformer import Mlp, SelfAttention
from tau_jax.models.translators.swin import window_merge, window_partition

Dtype = Any
EPS = 1e-5
MASKED = -100.0  # timm's value for token pairs from different regions of a shifted window


def block_window(resolution: int, window: int, index: int) -> tuple[int, int]:
    """(window side, shift) of block `index` of a cell at `resolution` (timm 0.6): a window no
    smaller than the map becomes the map and nothing shifts; odd blocks shift by window // 2."""
    if resolution <= window:
        return resolution, 0
    return window, (window // 2 if index % 2 else 0)


def region_mask(resolution: int, ws: int, shift: int) -> np.ndarray:
    """timm's `attn_mask` of a shifted block as `(R/ws, R/ws, 1, N, N)`: 0 for token pairs of
    the same region of the rolled map, -100 otherwise."""
    labels = np.zeros((resolution, resolution))
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    n = 0
    for rows in cuts:
        for cols in cuts:
            labels[rows, cols] = n
            n += 1
    tiles = np.asarray(window_partition(labels[None, :, :, None], ws))[0, ..., 0]  # (nh, nw, N)
    diff = tiles[..., None, :] - tiles[..., :, None]
    return np.where(diff != 0, MASKED, 0.0)[:, :, None]


def _linear(features: int, fan_in: int, name: str, use_bias: bool = True, dtype=None,
            param_dtype=jnp.float32) -> nn.Dense:
    """A PyTorch-initialised Linear."""
    return nn.Dense(features, use_bias=use_bias, name=name, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=torch_default_kernel_init(),
                    bias_init=torch_default_bias_init(fan_in))


class STB(nn.Module):
    """OpenSTL's STB: a timm Swin block whose normalised tokens may take a second input through
    `red`. `(x, hx)` -> x + W-MSA(red(cat[LN1 x, LN1 hx])), then + MLP(LN2 x)."""

    num_heads: int
    window: int
    shift: int = 0
    drop_path: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, hx, train: bool):
        b, r, _, d = x.shape
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ws, s = self.window, self.shift
        norm1 = layer_norm(EPS, name="norm1", **dt)
        red = _linear(d, 2 * d, "red", **dt)
        y = norm1(x)
        if hx is not None:
            y = red(jnp.concatenate([y, norm1(hx)], axis=-1))
        elif self.is_initializing():  # OpenSTL's unused `red` of the blocks without hx
            red(jnp.zeros((1, 2 * d), self.param_dtype))
        if s:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        mask = jnp.asarray(region_mask(r, ws, s), y.dtype) if s else None
        tiles = SelfAttention(self.num_heads, 0.0, window=ws, name="attn", **dt)(
            window_partition(y, ws), train, mask=mask)
        y = window_merge(tiles, ws)
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        drop_path = DropPath(self.drop_path)
        x = x + drop_path(y, train)
        y = Mlp(4 * d, 0.0, name="mlp", **dt)(layer_norm(EPS, name="norm2", **dt)(x), train)
        return x + drop_path(y, train)


class SwinLSTMCell(nn.Module):
    """`depth` STBs at one resolution and an LSTM-style gate (module docstring); `(xt, state)`
    -> (Ht, (Ht, Ct)), state None meaning zeros."""

    depth: int
    num_heads: int
    window: int
    drop_paths: tuple[float, ...]
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xt, state, train: bool):
        hx, cx = (jnp.zeros_like(xt), jnp.zeros_like(xt)) if state is None else state
        r = xt.shape[1]
        o = None
        for k in range(self.depth):
            ws, shift = block_window(r, self.window, k)
            block = STB(self.num_heads, ws, shift, self.drop_paths[k], name=f"STBs_{k}",
                        dtype=self.dtype, param_dtype=self.param_dtype)
            o = block(xt, hx, train) if k == 0 else block(o, None if k % 2 else xt, train)
        ft = nn.sigmoid(o)
        ct = ft * (cx + jnp.tanh(o))
        ht = ft * jnp.tanh(ct)
        return ht, (ht, ct)


class PatchEmbed(nn.Module):
    """timm's PatchEmbed: conv p x p stride p (C -> E), then LayerNorm over E: `(B, H, W, C)`
    -> `(B, H/p, W/p, E)`."""

    embed_dim: int
    patch_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        x = nn.Conv(**torch_default_conv(self.embed_dim, (p, p), x.shape[-1], strides=(p, p),
                                         padding="VALID", name="proj", dtype=self.dtype,
                                         param_dtype=self.param_dtype))(x)
        return layer_norm(EPS, name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)


class PatchInflated(nn.Module):
    """OpenSTL's PatchInflated: ConvTranspose2d(E -> C, 3x3, stride 2, padding 1, output padding
    1) `Conv`, so only a patch of 2 is undone; the caller applies the sigmoid."""

    channels: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return ConvTranspose2d(self.channels, 3, 2, 1, 1, dtype=self.dtype,
                               param_dtype=self.param_dtype, name="Conv")(x)


class PatchMerging(nn.Module):
    """timm 0.6's PatchMerging: `(B, R, R, D)` -> `(B, R/2, R/2, 2D)` (module docstring)."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                             x[:, 1::2, 1::2]], axis=-1)
        x = layer_norm(EPS, name="norm", **dt)(x)
        return _linear(2 * d, 4 * d, "reduction", use_bias=False, **dt)(x)


class PatchExpanding(nn.Module):
    """OpenSTL's PatchExpanding: Linear D -> 2D (no bias) `expand`, each token becomes a 2x2
    block of D/2-wide tokens, LayerNorm(D/2): `(B, R, R, D)` -> `(B, 2R, 2R, D/2)`."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, r, _, d = x.shape
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _linear(2 * d, d, "expand", use_bias=False, **dt)(x)
        x = x.reshape(b, r, r, 2, 2, d // 2).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, 2 * r, 2 * r, d // 2)
        return layer_norm(EPS, name="norm", **dt)(x)


def drop_path_slices(depths: tuple[int, ...], rate: float, reverse: bool) -> list[tuple]:
    """OpenSTL's per-block DropPath rates: linspace(0, rate) over all blocks of a path, cut by
    level; the up path (`reverse`) reads each level's slice backwards (its flag 0)."""
    dpr = np.linspace(0.0, rate, sum(depths)).tolist()
    out = []
    for k in range(len(depths)):
        part = dpr[sum(depths[:k]):sum(depths[:k + 1])]
        out.append(tuple(float(v) for v in (part[::-1] if reverse else part)))
    return out


class DownSample(nn.Module):
    """SwinLSTM-D's down path: patch embedding, then per level a cell and a PatchMerging."""

    patch_size: int
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window: int
    drop_path_rate: float
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, frame, states, train: bool):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbed(self.embed_dim, self.patch_size, name="patch_embed", **dt)(frame)
        rates = drop_path_slices(self.depths, self.drop_path_rate, reverse=False)
        new = []
        for k, depth in enumerate(self.depths):
            x, state = SwinLSTMCell(depth, self.num_heads[k], self.window, rates[k],
                                    name=f"layers_{k}", **dt)(x, states[k], train)
            x = PatchMerging(name=f"downsample_{k}", **dt)(x)
            new.append(state)
        return new, x


class UpSample(nn.Module):
    """SwinLSTM-D's up path: per level j a cell (depth depths_upsample[K-1-j], heads
    num_heads[K-1-j]: OpenSTL reads both lists backwards) and a PatchExpanding, then
    sigmoid(`Unembed`). `patch_embed` is OpenSTL's unused one."""

    patch_size: int
    embed_dim: int
    channels: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window: int
    drop_path_rate: float
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, states, train: bool):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.is_initializing():  # built by OpenSTL, never called
            p = self.patch_size
            PatchEmbed(self.embed_dim, p, name="patch_embed", **dt)(
                jnp.zeros((1, p, p, self.channels), self.param_dtype))
        big_k = len(self.depths)
        rates = drop_path_slices(self.depths, self.drop_path_rate, reverse=True)
        new = []
        for j in range(big_k):
            level = big_k - 1 - j
            x, state = SwinLSTMCell(self.depths[level], self.num_heads[level], self.window,
                                    rates[level], name=f"layers_{j}", **dt)(x, states[j], train)
            x = PatchExpanding(name=f"upsample_{j}", **dt)(x)
            new.append(state)
        return new, nn.sigmoid(PatchInflated(self.channels, name="Unembed", **dt)(x))


class STconvert(nn.Module):
    """SwinLSTM-B's step: patch embedding, one cell, sigmoid(`patch_inflated`)."""

    patch_size: int
    embed_dim: int
    channels: int
    depth: int
    num_heads: int
    window: int
    drop_path_rate: float
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, frame, state, train: bool):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbed(self.embed_dim, self.patch_size, name="patch_embed", **dt)(frame)
        # OpenSTL's flag 2: the one rate for every block
        x, state = SwinLSTMCell(self.depth, self.num_heads, self.window,
                                (float(self.drop_path_rate),) * self.depth, name="layer",
                                **dt)(x, state, train)
        return nn.sigmoid(PatchInflated(self.channels, name="patch_inflated", **dt)(x)), state
