"""MMVP_Model (NHWC): encoder, filter, motion matrices, compose, decoder, image path, enhancer.

ds = downsample_setting (S entries), T = in_shape[0], T' = out_frames; the frames enter at half
size after a PixelUnshuffle(2); mat0 = (H, W) / (2 prod(ds[:-1])) and mat1 = (H, W) /
(2 prod(ds)) are the grids of the high- and low-level motion matrices.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.mmvp import ops
from tau_jax.models.mmvp.modules import (ConvBnLrelu, PredictModel, ResBlock, RRDBs, Up, _Base)

Dtype = Any


def mat_sizes(in_shape, ds) -> tuple[tuple[int, int], tuple[int, int]]:
    """OpenSTL's mat_size: the (h, w) grids of the high- and low-level matrices."""
    _, h, w, _ = in_shape
    high, low = 2 * math.prod(ds[:-1]), 2 * math.prod(ds)
    return (h // high, w // high), (h // low, w // low)


class Chain(_Base):
    """enc.pre_downsample_block (a ModuleList of down-sampling ResBlocks), applied in turn."""

    features: tuple = ()
    factors: tuple = ()

    @nn.compact
    def __call__(self, x):
        for i, (f, k) in enumerate(zip(self.features, self.factors)):
            x = ResBlock(f, k, name=str(i), **self.dt)(x)
        return x


class Encoder(_Base):
    """RRDBEncoder: inconv, RRDBs, S-2 down-sampling ResBlocks, downsample_high, downsample_low.
    Of its levels only the last pre-down-sampling one (feat0 when S = 2), high and low are used
    (OpenSTL's scale_in_use = 3 drops the others)."""

    hid_S: int = 8
    n_rrdb: int = 2
    ds: tuple = (2, 2, 2)

    @nn.compact
    def __call__(self, x):
        s, hid = len(self.ds), self.hid_S
        x = RRDBs(hid, self.n_rrdb, name="block_rrdb", **self.dt)(self.c(x, hid, "inconv"))
        if s > 2:
            x = Chain(tuple(hid * 2 ** (i + 1) for i in range(s - 2)), self.ds[:s - 2],
                      name="pre_downsample_block", **self.dt)(x)
        high = ResBlock(hid * 2 ** (s - 1), self.ds[-2], name="downsample_high", **self.dt)(x)
        low = ResBlock(hid * 2 ** s, self.ds[-1], name="downsample_low", **self.dt)(high)
        return x, high, low


class FilterBlocks(_Base):
    """filter.filter_block: [conv, BN, LReLU] x 3 on the high (hid_S wide) and the low level
    (2 hid_S wide)."""

    hid_S: int = 8

    @nn.compact
    def __call__(self, high, low, train):
        return (ConvBnLrelu(self.hid_S, 3, name="0", **self.dt)(high, train),
                ConvBnLrelu(2 * self.hid_S, 3, name="1", **self.dt)(low, train))


class Filter(_Base):
    hid_S: int = 8

    @nn.compact
    def __call__(self, high, low, train):
        return FilterBlocks(self.hid_S, name="filter_block", **self.dt)(high, low, train)


class MidMotionMatrix(_Base):
    """hid: the similarity matrices of consecutive frames at both levels (the first T-1 kept),
    the predicted T' future high-level matrices (the low ones interpolated from them),
    each softmax-normalised over all its entries. `scale_fuser_1` / `scale_fuser_2` are created
    at init for parameter-count parity and never applied (as in OpenSTL)."""

    hid_S: int = 8
    hid_T: int = 16
    t_in: int = 4
    fut_len: int = 4
    mats: tuple = ((4, 4), (2, 2))

    @nn.compact
    def __call__(self, g_high, g_low, b, train):
        if self.is_initializing():
            z = jnp.zeros((1, 2, 2, self.hid_S), g_high.dtype)
            Up(self.hid_S, 2, name="scale_fuser_1", **self.dt)(
                jnp.zeros((1, 1, 1, 2 * self.hid_S), g_high.dtype), z)
            ConvBnLrelu(self.hid_S, 2, name="scale_fuser_2", **self.dt)(z, False)
        past = self.t_in - 1
        s_high = ops.similarity(g_high, b)[:, :past]
        s_low = ops.similarity(g_low, b)[:, :past]
        pred = PredictModel(self.hid_T, self.fut_len, tuple(self.mats[0]), name="predictor",
                            **self.dt)(s_high, train)
        pred_low = ops.sim_interpolate(pred, self.mats[0], self.mats[1])
        sim0 = jnp.concatenate([ops.softmax_all(s_high), ops.softmax_all(pred)], 1)
        sim1 = jnp.concatenate([ops.softmax_all(s_low), ops.softmax_all(pred_low)], 1)
        return sim0, sim1


class UpChain(_Base):
    """dec.upsample_block: Up blocks back to half frame size; only the first takes a skip."""

    hid_S: int = 8
    ds: tuple = (2, 2, 2)

    @nn.compact
    def __call__(self, x, skip):
        s = len(self.ds)
        for i in range(s - 1):
            j = s - 2 - i
            x = Up(self.hid_S * 2 ** j, self.ds[j], name=str(i), **self.dt)(
                x, skip if i == 0 else None)
        return x


class Decoder(_Base):
    """RRDBDecoder: Up(low -> high level), the UpChain, RRDBs, 1x1 outc to 4C channels."""

    hid_S: int = 8
    n_rrdb: int = 2
    ds: tuple = (2, 2, 2)
    channels: int = 1

    @nn.compact
    def __call__(self, skip, high, low):
        s = len(self.ds)
        x = Up(self.hid_S * 2 ** (s - 1), self.ds[-1], name="upsample_block_low2high",
               **self.dt)(low, high)
        x = UpChain(self.hid_S, self.ds, name="upsample_block", **self.dt)(x, skip)
        x = RRDBs(self.hid_S, self.n_rrdb, name="rrdb_block", **self.dt)(x)
        return self.c(x, 4 * self.channels, "outc", kernel=1)


class Enhancer(_Base):
    """ImageEnhancer: model = Sequential(conv 2C -> hid_S, RRDBs), 1x1 outconv to C."""

    hid_S: int = 8
    n_rrdb: int = 2
    channels: int = 1

    @nn.compact
    def __call__(self, x):
        x = RRDBs(self.hid_S, self.n_rrdb, first_conv=True, name="model", **self.dt)(x)
        return self.c(x, self.channels, "outconv", kernel=1)


class MMVP(nn.Module):
    """MMVP_Model: `(B, T_in, H, W, C)` with T_in >= T -> the T' = out_frames next frames
    `(B, T', H, W, C)`. Only the first T frames are composed; frames beyond T (OpenSTL's
    training feed) act only through the filter's BatchNorm batch statistics in train mode."""

    in_shape: tuple[int, int, int, int]  # (T, H, W, C)
    out_frames: int
    hid_S: int = 32
    hid_T: int = 192
    rrdb_encoder_num: int = 2
    rrdb_decoder_num: int = 2
    rrdb_enhance_num: int = 2
    downsample: tuple = (2, 2, 2)
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        t, _, _, c = self.in_shape
        if x.ndim != 5 or x.shape[1] < t or x.shape[4] != c:
            raise ValueError(f"MMVP expects input frames (B, >= {t}, H, W, {c}) per "
                             f"model.in_shape, got {tuple(x.shape)}.")
        b, t_in, h, w, _ = x.shape
        if self.dtype is not None:
            x = x.astype(self.dtype)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ds, tp, hid = tuple(self.downsample), self.out_frames, self.hid_S
        mats = mat_sizes((t, h, w, c), ds)
        xr = ops.pixel_unshuffle(x.reshape(b * t_in, h, w, c), 2)
        skip, high, low = Encoder(hid, self.rrdb_encoder_num, ds, name="enc", **dt)(xr)
        g_high, g_low = Filter(hid, name="filter", **dt)(high, low, train)
        sim0, sim1 = MidMotionMatrix(hid, self.hid_T, t, tp, mats, name="hid", **dt)(
            g_high, g_low, b, train)
        r = ds[-2]  # the skip level (H/2 / prod(ds[:S-2])) unshuffled to mat0
        skip = ops.pixel_shuffle(ops.compose(ops.pixel_unshuffle(skip, r), sim0, t, tp), r)
        recon = Decoder(hid, self.rrdb_decoder_num, ds, c, name="dec", **dt)(
            skip, ops.compose(high, sim0, t, tp), ops.compose(low, sim1, t, tp))
        big = math.prod(ds[:-1])  # res_shuffle_scale
        fut = ops.compose(ops.pixel_unshuffle(xr, big), sim0, t, tp)
        fut = ops.pixel_shuffle(ops.pixel_shuffle(fut, big), 2)
        out = Enhancer(hid, self.rrdb_enhance_num, c, name="enhance", **dt)(
            jnp.concatenate([ops.pixel_shuffle(recon, 2), fut], -1))
        # OpenSTL returns out.permute(0, 2, 3, 1).reshape(B, T', C, H, W): the NHWC image
        # re-read as (C, H, W) (a channel/pixel scramble for C > 1), here moved back to NHWC.
        return out.reshape(b, tp, c, h, w).transpose(0, 1, 3, 4, 2)
