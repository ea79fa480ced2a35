"""GroupNorm followed by SiLU (SimVP's encoder and decoder layers), with written-out gradients
for XLA:CPU and the plain form for other platforms.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models import cpu_kernels
from tau_jax.models.layers import on_cpu

Dtype = Any


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def group_norm_silu(x, shift, scale, bias, groups: int, epsilon: float, blocks: int = 1,
                    kernels: bool = False):
    """SiLU(GroupNorm(x + shift)) over channels-last `x`, `shift` a per-channel bias (the
    preceding convolution's): statistics per sample and channel group in float32, variance as
    E[v^2] - E[v]^2 (flax's GroupNorm, `use_fast_variance`), result in x's dtype. With `blocks`
    > 1 the channels of `x` are that many stacked copies of the `scale.size` normalised ones (a
    sub-pixel convolution's output before its pixel shuffle, which commutes with this function).

    Written out, gradients included, because left to autodiff XLA:CPU materialises the shifted,
    normalised and activated maps and reduces them in separate passes: forward and backward of
    the quickstart's full-resolution layer (160 x 64 x 64 x 8) took 22 ms that way, 5 ms in this
    form (isolated; README, training speed). Here x + shift is
    never stored: the statistics take the shift in closed form from per-channel sums of x, and
    so does its gradient (the convolution bias's, otherwise one more pass over the map). Only
    `x` and per-channel sums are kept for the backward pass, which recomputes the rest in the
    loops it needs anyway.

    With `kernels` (float32/float64, `cpu_kernels.usable`) the four passes over the map (sums,
    SiLU, gradient sums, gradient) are C++ loops (`cpu_kernels.affine_silu` and kin): a small
    gSTA's train step 7.6% faster, the quickstart's 6.3% (in-process A/B); the per-channel
    arithmetic between them is the same.
    """
    return _gn_silu_forward(x, shift, scale, bias, groups, epsilon, blocks, kernels)[0]


def _rows(x):
    """Channels-last `x` (B, ..., W, C) viewed as (B, rows, W * C): the loops below then run
    over long contiguous rows whatever C is (C = 8 rows vectorise poorly on XLA:CPU)."""
    width = x.shape[-2] * x.shape[-1] if x.ndim > 2 else x.shape[-1]
    return x.reshape(x.shape[0], -1, width)


def _channel_sums(rows, channels: int):
    """(B, C) sums of a `_rows` view over rows and width."""
    return jnp.sum(rows, axis=1).reshape(rows.shape[0], -1, channels).sum(1)


def _per_group(per_channel, groups: int, blocks: int):
    """(B, blocks * C) per-channel values -> (B, G) sums over each group's channels."""
    return per_channel.reshape(per_channel.shape[0], blocks, groups, -1).sum((1, 3))


def _per_channel(per_group, channels: int, blocks: int):
    """(B, G) -> (B, channels): each group's value on its channels of every block."""
    repeat = channels // (blocks * per_group.shape[1])
    return jnp.tile(jnp.repeat(per_group, repeat, axis=-1), (1, blocks))


def _coefficients(rows, *per_channel):
    """(B, C) arrays as (B, 1, W * C) broadcasts against a `_rows` view, stored before the loops
    use them: fused into the loops over the map, their channel -> group and width -> channel
    index arithmetic runs per element (3x the time of the loops themselves with 4 blocks on
    XLA:CPU, which drops optimization barriers before fusing). A product with a 0/1 matrix,
    which XLA does not fuse into loops, stores them; exact, every product but one per entry
    being by zero."""
    stacked = jnp.stack(per_channel)
    channels = stacked.shape[-1]
    spread = jnp.tile(jnp.eye(channels, dtype=stacked.dtype), (1, rows.shape[-1] // channels))
    stored = jnp.einsum("kbc,cd->kbd", stacked, spread, precision=jax.lax.Precision.HIGHEST)
    return [c[:, None, :] for c in stored]


def _map(x):
    """Channels-last x as (B, pixels, C), the C++ passes' layout."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _stack(like, *per_channel):
    """(B, C) coefficients as one (n, B, C) array in `like`'s dtype, for the C++ passes."""
    return jnp.stack(per_channel).astype(like.dtype)


def _gn_silu_forward(x, shift, scale, bias, groups, epsilon, blocks, kernels):
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    shift = shift.astype(xf.dtype)
    channels = xf.shape[-1]
    pixels = xf.size // (xf.shape[0] * channels)
    n = pixels * channels // groups
    if kernels:
        x_sum, x_sq_sum = cpu_kernels.channel_sums(_map(xf))  # (B, C), of x without shift
    else:
        rows = _rows(xf)
        x_sum, x_sq_sum = _channel_sums(rows, channels), _channel_sums(rows * rows, channels)
    mean = _per_group(x_sum + pixels * shift, groups, blocks) / n
    sq_mean = _per_group(x_sq_sum + shift * (2 * x_sum + pixels * shift), groups, blocks) / n
    rstd = jax.lax.rsqrt(jnp.maximum(sq_mean - mean * mean, 0.0) + epsilon)
    mean, rstd = _per_channel(mean, channels, blocks), _per_channel(rstd, channels, blocks)
    mul = rstd * jnp.tile(scale, blocks)
    offset = jnp.tile(bias, blocks) + (shift - mean) * mul
    if kernels:
        y = cpu_kernels.affine_silu(_map(xf), _stack(xf, mul, offset)).reshape(x.shape)
        return y, (x, shift, scale, bias, mean, rstd, x_sum)
    a, c = _coefficients(rows, mul, offset)
    z = rows * a + c
    # z / (1 + exp(-z)) rather than z * sigmoid(z): the same SiLU, but ending in a divide, an
    # operation XLA does not copy into its consumers; ending in a multiply, XLA:CPU recomputes
    # it inside the transposing copies of the next convolution's kernel gradient, reading x
    # and the sigmoid with a stride there (12% of the quickstart's train step).
    y = (z / (1.0 + jnp.exp(-z))).astype(x.dtype).reshape(x.shape)
    return y, (x, shift, scale, bias, mean, rstd, x_sum)


def _gn_silu_backward(groups, epsilon, blocks, kernels, residuals, dy):
    del epsilon  # folded into rstd
    x, shift, scale, bias, mean, rstd, x_sum = residuals
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    channels = xf.shape[-1]
    pixels = xf.size // (xf.shape[0] * channels)
    n = pixels * channels // groups
    scales = jnp.tile(scale, blocks)
    # xhat = x * p + q and z = xhat * scale + bias = x * a + c, per (sample, channel)
    p, q = rstd, (shift - mean) * rstd
    mul, offset = p * scales, q * scales + jnp.tile(bias, blocks)
    if kernels:
        x_map, dy_map = _map(xf), _map(dy.astype(xf.dtype))
        dz_sum, dz_xhat_sum = cpu_kernels.affine_silu_grad_sums(x_map, dy_map,
                                                                _stack(xf, mul, offset, p, q))
    else:
        rows = _rows(xf)
        a, c, p_rows, q_rows = _coefficients(rows, mul, offset, p, q)
        z = rows * a + c
        s = jax.nn.sigmoid(z)
        dz = _rows(dy.astype(xf.dtype)) * (s * (1.0 + z * (1.0 - s)))
        dz_sum = _channel_sums(dz, channels)
        dz_xhat_sum = _channel_sums(dz * (rows * p_rows + q_rows), channels)

    def group_mean(per_channel):
        per_group = _per_group(per_channel * scales, groups, blocks) / n
        return _per_channel(per_group, channels, blocks)

    m1, m2 = group_mean(dz_sum), group_mean(dz_xhat_sum)
    # dx = rstd * (dz * scale - m1 - xhat * m2) = dz * dz_coef + x * x_coef + dx_offset
    dx_coefs = (rstd * scales, -rstd * m2 * p, -rstd * (m1 + m2 * q))
    if kernels:
        dx = cpu_kernels.affine_silu_grad(x_map, dy_map,
                                          _stack(xf, mul, offset, *dx_coefs)).reshape(x.shape)
    else:
        dz_coef, x_coef, dx_offset = _coefficients(rows, *dx_coefs)
        dx = (dz * dz_coef + rows * x_coef + dx_offset).reshape(x.shape)
    # The shift's gradient, sum over (B, pixels) of dx, from the same sums.
    dshift = rstd * (dz_sum * scales - pixels * m1 - (x_sum * p + pixels * q) * m2)

    def summed(per_channel, like, fold):
        total = per_channel.sum(0)
        return (total.reshape(blocks, -1).sum(0) if fold else total).astype(like.dtype)

    return (dx.astype(x.dtype), summed(dshift, shift, False), summed(dz_xhat_sum, scale, True),
            summed(dz_sum, bias, True))


group_norm_silu.defvjp(_gn_silu_forward, _gn_silu_backward)


def group_norm_silu_plain(x, shift, scale, bias, groups: int, epsilon: float):
    """`group_norm_silu` (one block) written plainly, its gradients left to autodiff: flax's
    GroupNorm (fast variance, float32 statistics) of x + shift, then SiLU."""
    b, c = x.shape[0], x.shape[-1]
    v = (x + shift).astype(jnp.promote_types(x.dtype, jnp.float32))
    v = v.reshape(b, -1, groups, c // groups)
    mean = jnp.mean(v, (1, 3), keepdims=True)
    var = jnp.maximum(jnp.mean(v * v, (1, 3), keepdims=True) - mean * mean, 0.0)
    z = ((v - mean) * jax.lax.rsqrt(var + epsilon) * scale.reshape(groups, -1)
         + bias.reshape(groups, -1))
    return nn.silu(z).astype(x.dtype).reshape(x.shape)


def depth_to_space(x, block: int = 2):
    """(N, H, W, b*b*C) -> (N, b*H, b*W, C) with channel order (i*b + j)*C + c (TF's order)."""
    n, h, w, c = x.shape
    c_out = c // (block * block)
    x = x.reshape(n, h, w, block, block, c_out).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, c_out)


class GroupNormSiLU(nn.Module):
    """`nn.silu(nn.GroupNorm(num_groups, epsilon)(x + shift))` with GroupNorm's parameters
    (`scale`, `bias`) and values; `shift` defaults to zero. With `pixel_shuffle` r > 1, `x` is a
    sub-pixel convolution's output (r * r * C channels) and the result its pixel shuffle
    (`depth_to_space`) normalised.

    In programs compiled for CPU this is `group_norm_silu`, normalising before the shuffle (the
    same function: the shuffle only moves values within a sample and channel group) over the
    contiguous layout; for GPU/TPU the plain form in the order written above, its gradients
    left to autodiff, as before the CPU form existed (no measurement there has asked for
    another).
    """

    num_groups: int
    epsilon: float = 1e-5
    pixel_shuffle: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, shift=None):
        r, groups = self.pixel_shuffle, self.num_groups
        channels, rest = divmod(x.shape[-1], r * r)
        if rest or channels % groups:
            raise ValueError(f"GroupNorm: {x.shape[-1]} channels do not split into "
                             f"{r * r} blocks of {groups} groups.")
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        if shift is None:
            shift = jnp.zeros((x.shape[-1],), self.param_dtype)
        shuffle = (lambda v: depth_to_space(v, r)) if r > 1 else (lambda v: v)

        def cpu(x, shift, scale, bias):
            kernels = cpu_kernels.usable(x.dtype)
            return shuffle(group_norm_silu(x, shift, scale, bias, groups, self.epsilon, r * r,
                                           kernels))

        def other(x, shift, scale, bias):  # in x's dtype, like `cpu`, whatever shift's
            return group_norm_silu_plain(shuffle(x + shift), 0.0, scale, bias, groups,
                                         self.epsilon).astype(x.dtype)

        return on_cpu(cpu, other, x, shift, scale, bias).astype(self.dtype or x.dtype)
