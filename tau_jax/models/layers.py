"""Building blocks shared by the model families.

Layouts are channels-last (NHWC). Initialisers reproduce the PyTorch/OpenSTL ones so a freshly
initialised tau-jax model has the same parameter distributions as an OpenSTL one.
"""

from __future__ import annotations

import functools
import math
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any


# ----------------------------------------------------------------------------------------------
# Initialisers
# ----------------------------------------------------------------------------------------------

def torch_default_kernel_init():
    """PyTorch's default Conv/Linear weight init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int):
    """PyTorch's default Conv/Linear bias init, U(+-1/sqrt(fan_in)); fan_in = in/groups * kh * kw."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def fan_out_normal_init(kernel_size: Sequence[int], features: int, groups: int = 1):
    """OpenSTL's MetaFormer conv init N(0, sqrt(2 / fan_out)), fan_out = kh * kw * out / groups."""
    fan_out = int(np.prod(kernel_size)) * features // groups
    return nn.initializers.normal(math.sqrt(2.0 / fan_out))


def torch_default_conv(features: int, kernel_size: Sequence[int], in_features: int, groups: int = 1,
                       **kwargs) -> dict:
    """Keyword arguments giving an `nn.Conv` PyTorch's default weight and bias init."""
    fan_in = in_features // groups * int(np.prod(kernel_size))
    return dict(features=features, kernel_size=tuple(kernel_size), feature_group_count=groups,
                kernel_init=torch_default_kernel_init(), bias_init=torch_default_bias_init(fan_in),
                **kwargs)


# ----------------------------------------------------------------------------------------------
# Depthwise convolution with two interchangeable formulations
# ----------------------------------------------------------------------------------------------

DW_IMPLS = ("lax", "taps", "auto")


def resolve_dw_impl(impl: str) -> str:
    """'auto' picks the formulation measured fastest on the default backend.

    On CPU the shift-and-sum ('taps') form is several times faster than XLA's grouped convolution
    (experiments/results/depthwise_cpu.json). On GPU/TPU the grouped convolution stays the default
    until a GPU benchmark (experiments/gpu_benchmarks.sh) says otherwise.
    """
    if impl not in DW_IMPLS:
        raise ValueError(f"model.dw_impl must be one of {DW_IMPLS}, got {impl!r}.")
    if impl == "auto":
        return "taps" if jax.default_backend() == "cpu" else "lax"
    return impl


def depthwise_conv_lax(x, kernel, dilation: int, padding: int):
    """Depthwise conv as XLA's grouped convolution (`feature_group_count = C`)."""
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=((padding, padding), (padding, padding)),
        rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1])


def _shift_and_sum(x, kernel, dilation: int, pad_h: int, pad_w: int):
    """sum over taps (i, j) of the padded input shifted by (i, j) * dilation, scaled per channel
    by kernel[i, j, 0] (a negative padding crops)."""
    kh, kw = kernel.shape[:2]
    xp = _pad_hw(x, pad_h, pad_w)
    out_h = xp.shape[1] - dilation * (kh - 1)
    out_w = xp.shape[2] - dilation * (kw - 1)
    out = None
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i * dilation:i * dilation + out_h, j * dilation:j * dilation + out_w, :]
            term = window * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


def _pad_hw(x, pad_h: int, pad_w: int):
    zero = jnp.zeros((), x.dtype)
    return jax.lax.pad(x, zero, ((0, 0, 0), (pad_h, pad_h, 0), (pad_w, pad_w, 0), (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_taps(x, kernel, dilation: int, padding: int):
    """Depthwise conv as a sum of k*k shifted, per-channel-scaled copies of the padded input.

    XLA lowers grouped (and especially dilated grouped) convolutions poorly on some backends; this
    form is plain element-wise work that fuses into one loop. Its gradients are written out
    (`_taps_backward`) rather than left to autodiff, which pads the output gradient once per tap
    and reduces each tap's kernel gradient separately over (B, H, W) -- XLA:CPU's slow column
    reductions: 19 ms against 4.4 ms for the 7x7-dilation-3 convolution of the quickstart's
    translator at batch 16 (experiments/depthwise_bench.py).
    """
    return _shift_and_sum(x, kernel, dilation, padding, padding)


def _taps_forward(x, kernel, dilation, padding):
    return _shift_and_sum(x, kernel, dilation, padding, padding), (x, kernel)


def _taps_backward(dilation, padding, residuals, g):
    """Input gradient: the same shift-and-sum of the output gradient with the flipped kernel
    (padding d(k-1) - p). Kernel gradient: with the channels made the leading axis once, for each
    kernel row i one batched matmul over the channels of the row-shifted input (zero-padded in
    height only) with the output gradient, contracting (B, H): a (W, W) correlation matrix per
    channel whose diagonal p - j*dilation is the tap (i, j) (zero padding adds nothing to it)."""
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    dx = _shift_and_sum(g, kernel[::-1, ::-1], dilation, dilation * (kh - 1) - padding,
                        dilation * (kw - 1) - padding)
    out_h = g.shape[1]
    channels_first = (3, 0, 1, 2)
    xt = jnp.pad(jnp.transpose(x, channels_first), ((0, 0), (0, 0), (padding, padding), (0, 0)))
    gt = jnp.transpose(g, channels_first)
    accumulate = jnp.promote_types(g.dtype, jnp.float32)
    corr = jnp.stack([jnp.einsum("cbhv,cbhw->cvw", xt[:, :, i * dilation:i * dilation + out_h],
                                 gt, preferred_element_type=accumulate)
                      for i in range(kh)], 1)  # (C, kh, W, W)
    taps = jnp.stack([jnp.trace(corr, offset=padding - j * dilation, axis1=2, axis2=3)
                      for j in range(kw)], -1)  # (C, kh, kw)
    dk = jnp.transpose(taps, (1, 2, 0))[:, :, None, :]
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


depthwise_conv_taps.defvjp(_taps_forward, _taps_backward)


class DepthwiseConv(nn.Module):
    """Depthwise kxk convolution (stride 1, symmetric zero padding, optional dilation) with bias.

    The parameters are the same for both formulations (`kernel` (k, k, 1, C), `bias` (C,)), so
    `impl` can be switched on a trained model.
    """

    kernel_size: int
    padding: int
    dilation: int = 1
    impl: str = "auto"
    kernel_init: Any = None
    bias_init: Any = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        k = self.kernel_size
        fan_in = k * k  # in_channels / groups = 1
        kernel = self.param("kernel", self.kernel_init or torch_default_kernel_init(),
                            (k, k, 1, channels), self.param_dtype)
        bias = self.param("bias", self.bias_init or torch_default_bias_init(fan_in), (channels,),
                          self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        conv = depthwise_conv_taps if resolve_dw_impl(self.impl) == "taps" else depthwise_conv_lax
        return conv(x, kernel, self.dilation, self.padding) + bias


# ----------------------------------------------------------------------------------------------
# Convolution with explicit gradients (the recurrent cells on CPU)
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_plain_grads(x, kernel, padding: tuple):
    """Stride-1 NHWC x HWIO convolution (as `lax.conv_general_dilated`) whose gradients avoid
    the layouts XLA:CPU has no library kernel for: the input gradient is a convolution of dy
    with the flipped, transposed kernel laid out as HWIO, and the kernel gradient a sum over taps
    of matrix products, dW[i, j] = window(x, i, j)^T dy. Inside a `scan` backward XLA's own
    gradient convolutions (kernel as 'oi', batch as features) run there 10-40x slower than the
    forward pass (the PredRNN family; experiments/results/benchmark_predrnn_small_cpu_*.json).
    Values and gradients equal the plain convolution's (tested)."""
    return _conv(x, kernel, padding)


def _conv(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_fwd(x, kernel, padding):
    return _conv(x, kernel, padding), (x, kernel)


def _conv_bwd(padding, residuals, dy):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    (top, bottom), (left, right) = padding
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    input_grad = _conv(dy, flipped, ((kh - 1 - top, kh - 1 - bottom),
                                     (kw - 1 - left, kw - 1 - right)))
    ho, wo = dy.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    taps = [jnp.einsum("nhwc,nhwd->cd", xp[:, i:i + ho, j:j + wo], dy,
                       preferred_element_type=jnp.promote_types(kernel.dtype, jnp.float32))
            for i in range(kh) for j in range(kw)]
    kernel_grad = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return input_grad.astype(x.dtype), kernel_grad


conv_plain_grads.defvjp(_conv_fwd, _conv_bwd)


def _s2d_geometry(size: int, k: int, padding: tuple[int, int]):
    """For one spatial axis of a stride-2 convolution (kernel k, padding (lo, hi)) over an
    even `size`: the kernel's (front, back) zero padding and the stride-1 padding (lo, hi) of
    the equivalent convolution on the 2x2 space-to-depth input, or None where it has no such
    form (an odd size, or an output other than size / 2)."""
    lo, hi = padding
    if size % 2 or lo != hi or (size + lo + hi - k) // 2 + 1 != size // 2:
        return None
    front = lo % 2
    taps = -(-(k + front) // 2)  # kernel side on the half-resolution grid
    before = (front + lo) // 2
    after = taps - 1 - before
    if after < 0:
        return None
    return (front, 2 * taps - k - front), (before, after)


def _space_to_depth(x):
    """(N, H, W, C) -> (N, H/2, W/2, 4C), channel (p * 2 + q) * C + c holding x[2i + p, 2j + q, c]."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(
        n, h // 2, w // 2, 4 * c)


def _stride2_as_stride1(x, kernel, geometry):
    """The stride-2 convolution of `x` rewritten as a stride-1 one on its space-to-depth: kernel
    row a = 2 * di + p - front reads the half-resolution row offset di, sub-row p."""
    (kernel_h, pad_h), (kernel_w, pad_w) = geometry
    kh, kw, cin, cout = np.add(kernel.shape, (sum(kernel_h), sum(kernel_w), 0, 0))
    k2 = jnp.pad(kernel, (kernel_h, kernel_w, (0, 0), (0, 0)))
    k2 = k2.reshape(kh // 2, 2, kw // 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    return jax.lax.conv_general_dilated(_space_to_depth(x), k2.reshape(kh // 2, kw // 2, 4 * cin,
                                                                        cout),
                                        (1, 1), (pad_h, pad_w),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride2_grads(x, kernel, padding: tuple):
    """Stride-2 NHWC x HWIO convolution (as `lax.conv_general_dilated`) whose input gradient is
    that of the same convolution written as a stride-1 one on x's 2x2 space-to-depth: XLA:CPU
    computes a strided convolution's input gradient by dilating the output gradient, a form its
    YNNPACK kernels do not take (28 ms against 3 ms for SimVP's first downsampling layer in the
    quickstart's train step at batch 16). Forward pass and kernel gradient stay XLA's (faster
    in their own form). Call it only where `_s2d_geometry` has a form for both axes."""
    return _conv_stride2(x, kernel, padding)


def _conv_stride2(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_stride2_fwd(x, kernel, padding):
    return _conv_stride2(x, kernel, padding), (x, kernel)


def _conv_stride2_bwd(padding, residuals, dy):
    x, kernel = residuals
    geometry = tuple(_s2d_geometry(size, k, pad)
                     for size, k, pad in zip(x.shape[1:3], kernel.shape[:2], padding))
    _, input_vjp = jax.vjp(lambda v: _stride2_as_stride1(v, kernel, geometry), x)
    _, kernel_vjp = jax.vjp(lambda k: _conv_stride2(x, k, padding), kernel)
    return input_vjp(dy)[0], kernel_vjp(dy)[0]


conv_stride2_grads.defvjp(_conv_stride2_fwd, _conv_stride2_bwd)


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
    """Whether `dimension_numbers` say NHWC input, HWIO kernel, NHWC output (flax's)."""
    nhwc = ("NHWC", "HWIO", "NHWC")
    return (jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, nhwc))


def conv_stride2_by_backend(lhs, rhs, window_strides, padding, lhs_dilation=None,
                            rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                            precision=None):
    """`lax.conv_general_dilated`'s signature for `nn.Conv(conv_general_dilated=...)`: lowered
    for CPU, 2-D NHWC stride-2 convolutions with a space-to-depth form go through
    `conv_stride2_grads`; everything else, and every convolution lowered for GPU/TPU, through
    lax (`on_cpu`: the platform the program is compiled for, so a TPU plan made on a CPU host
    gets the TPU form)."""
    def plain(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers, feature_group_count,
                                            precision=precision)

    pads = None if isinstance(padding, str) else tuple(tuple(int(v) for v in p) for p in padding)
    special = (lhs.ndim == 4 and feature_group_count == 1
               and _is_nhwc(lhs, rhs, dimension_numbers)
               and precision is None and pads is not None and tuple(window_strides) == (2, 2)
               and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
               and all(_s2d_geometry(size, k, pad) is not None
                       for size, k, pad in zip(lhs.shape[1:3], rhs.shape[:2], pads)))
    if not special:
        return plain(lhs, rhs)
    return on_cpu(lambda lhs, rhs: conv_stride2_grads(lhs, rhs, pads), plain, lhs, rhs)


def on_cpu(cpu, other, *args):
    """`cpu(*args)` in a program compiled for CPU, `other(*args)` for GPU/TPU: the choice
    follows the platform XLA compiles for (`jax.lax.platform_dependent`), not the host's
    default backend, so an ahead-of-time TPU plan made on a CPU host sees the TPU program."""
    return jax.lax.platform_dependent(*args, cpu=cpu, default=other)


def conv_general_dilated_by_backend(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                  rhs_dilation=None, dimension_numbers=None,
                                  feature_group_count=1, precision=None):
    """`lax.conv_general_dilated`'s signature for `nn.Conv(conv_general_dilated=...)`: on CPU,
    stride-1 2-D NHWC convolutions (flax's layout) go through `conv_plain_grads`; everything
    else, and every convolution on GPU/TPU (cuDNN / the TPU compiler have fast weight gradients;
    not measured against the taps there yet), through lax."""
    plain = (jax.default_backend() == "cpu" and lhs.ndim == 4 and feature_group_count == 1
             and precision is None
             and not isinstance(padding, str)
             and all(d == 1 for d in tuple(window_strides) + (lhs_dilation or (1, 1))
                     + (rhs_dilation or (1, 1))))
    if not plain:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers, feature_group_count,
                                            precision=precision)
    return conv_plain_grads(lhs, rhs, tuple(tuple(int(v) for v in p) for p in padding))


@jax.custom_vjp
def gradient_stored(x):
    """`x`, whose gradient XLA:CPU computes once into a buffer of its own (a plain identity in
    programs compiled for GPU/TPU, `on_cpu`).

    A residual stream's gradient is a chain of cheap element-wise sums and products through
    every block after this one; XLA:CPU copies such chains into each of their consumers
    (the transposing copies of the matrix products' weight gradients most of all), so each
    block recomputed the normalisations of all the blocks above it: 11% of the full Moving
    MNIST TAU's train step. Multiplying by exp(0 * g), exactly 1 for a finite gradient (NaN
    stays NaN, an infinite one becomes NaN), ends the chain in an operation XLA does not copy.
    """
    return x


def _gradient_stored_fwd(x):
    return x, None


def _gradient_stored_bwd(_, g):
    return (on_cpu(lambda g: g * jnp.exp(g * 0), lambda g: g, g),)


gradient_stored.defvjp(_gradient_stored_fwd, _gradient_stored_bwd)


# ----------------------------------------------------------------------------------------------
# Normalisation, stochastic depth
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def group_norm_silu(x, shift, scale, bias, groups: int, epsilon: float, blocks: int = 1):
    """SiLU(GroupNorm(x + shift)) over channels-last `x`, `shift` a per-channel bias (the
    preceding convolution's): statistics per sample and channel group in float32, variance as
    E[v^2] - E[v]^2 (flax's GroupNorm, `use_fast_variance`), result in x's dtype. With `blocks`
    > 1 the channels of `x` are that many stacked copies of the `scale.size` normalised ones (a
    sub-pixel convolution's output before its pixel shuffle, which commutes with this function).

    Written out, gradients included, because left to autodiff XLA:CPU materialises the shifted,
    normalised and activated maps and reduces them in separate passes, about 3x the time of
    this form for SimVP's encoder and decoder layers (README, training speed). Here x + shift is
    never stored: the statistics take the shift in closed form from per-channel sums of x, and
    so does its gradient (the convolution bias's, otherwise one more pass over the map). Only
    `x` and per-channel sums are kept for the backward pass, which recomputes the rest in the
    loops it needs anyway.
    """
    return _gn_silu_forward(x, shift, scale, bias, groups, epsilon, blocks)[0]


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


def _gn_silu_forward(x, shift, scale, bias, groups, epsilon, blocks):
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    shift = shift.astype(xf.dtype)
    channels = xf.shape[-1]
    pixels = xf.size // (xf.shape[0] * channels)
    n = pixels * channels // groups
    rows = _rows(xf)
    x_sum = _channel_sums(rows, channels)  # (B, C), of x without shift
    x_sq_sum = _channel_sums(rows * rows, channels)
    mean = _per_group(x_sum + pixels * shift, groups, blocks) / n
    sq_mean = _per_group(x_sq_sum + shift * (2 * x_sum + pixels * shift), groups, blocks) / n
    rstd = jax.lax.rsqrt(jnp.maximum(sq_mean - mean * mean, 0.0) + epsilon)
    mean, rstd = _per_channel(mean, channels, blocks), _per_channel(rstd, channels, blocks)
    mul = rstd * jnp.tile(scale, blocks)
    a, c = _coefficients(rows, mul, jnp.tile(bias, blocks) + (shift - mean) * mul)
    z = rows * a + c
    # z / (1 + exp(-z)) rather than z * sigmoid(z): the same SiLU, but ending in a divide, an
    # operation XLA does not copy into its consumers; ending in a multiply, XLA:CPU recomputes
    # it inside the transposing copies of the next convolution's kernel gradient, reading x
    # and the sigmoid with a stride there (12% of the quickstart's train step).
    y = (z / (1.0 + jnp.exp(-z))).astype(x.dtype).reshape(x.shape)
    return y, (x, shift, scale, bias, mean, rstd, x_sum)


def _gn_silu_backward(groups, epsilon, blocks, residuals, dy):
    del epsilon  # folded into rstd
    x, shift, scale, bias, mean, rstd, x_sum = residuals
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    channels = xf.shape[-1]
    pixels = xf.size // (xf.shape[0] * channels)
    n = pixels * channels // groups
    rows = _rows(xf)
    scales = jnp.tile(scale, blocks)
    # xhat = x * p + q and z = xhat * scale + bias = x * a + c, per (sample, channel)
    p, q = rstd, (shift - mean) * rstd
    a, c, p_rows, q_rows = _coefficients(rows, p * scales, q * scales + jnp.tile(bias, blocks),
                                         p, q)
    z = rows * a + c
    s = jax.nn.sigmoid(z)
    dz = _rows(dy.astype(xf.dtype)) * (s * (1.0 + z * (1.0 - s)))
    dz_sum = _channel_sums(dz, channels)
    dz_xhat_sum = _channel_sums(dz * (rows * p_rows + q_rows), channels)

    def group_mean(per_channel):
        per_group = _per_group(per_channel * scales, groups, blocks) / n
        return _per_channel(per_group, channels, blocks)

    m1, m2 = group_mean(dz_sum), group_mean(dz_xhat_sum)
    # dx = rstd * (dz * scale - m1 - xhat * m2) = dz * dz_coef + x * x_coef + offset
    dz_coef, x_coef, offset = _coefficients(rows, rstd * scales, -rstd * m2 * p,
                                            -rstd * (m1 + m2 * q))
    dx = (dz * dz_coef + rows * x_coef + offset).reshape(x.shape)
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
            return shuffle(group_norm_silu(x, shift, scale, bias, groups, self.epsilon, r * r))

        def other(x, shift, scale, bias):
            return group_norm_silu_plain(shuffle(x + shift), 0.0, scale, bias, groups,
                                         self.epsilon)

        return on_cpu(cpu, other, x, shift, scale, bias).astype(self.dtype or x.dtype)


class ConvApartBias(nn.Module):
    """`nn.Conv` (2-D, NHWC) with the same parameters, init and values, returning the
    convolution and its bias apart so the caller adds the bias where it costs no pass over the
    map (GroupNormSiLU's `shift`). Stride-2 convolutions go through `conv_stride2_by_backend`."""

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: Any = ((0, 0), (0, 0))
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv_stride2_by_backend(x, kernel, (self.strides, self.strides), self.padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y, bias


class BatchNorm(nn.Module):
    """BatchNorm2d with PyTorch's semantics over all axes but the last.

    Written here because flax's `nn.BatchNorm` updates the running variance with the *biased*
    batch variance, PyTorch with the unbiased one; OpenSTL checkpoints and eval numbers depend on
    the PyTorch rule. Normalisation itself uses the biased variance, as in PyTorch. Statistics are
    computed in float32 whatever the compute dtype.
    """

    use_running_average: bool
    momentum: float = 0.9  # PyTorch momentum 0.1
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        stat_dtype = jnp.promote_types(jnp.float32, self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), stat_dtype)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), stat_dtype)
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)

        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            xs = x.astype(jnp.promote_types(x.dtype, stat_dtype))
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xs, axes)
            var = jnp.mean(jnp.square(xs - mean), axes)
            if not self.is_initializing():
                n = math.prod(x.shape[:-1])
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased

        mul = jax.lax.rsqrt(var + self.epsilon) * scale
        y = (x - mean.astype(x.dtype)) * mul.astype(x.dtype) + bias.astype(x.dtype)
        return y.astype(self.dtype or x.dtype)


def drop_path_rates(drop_path: float, num_blocks: int, schedule: str) -> list[float]:
    """Per-block stochastic-depth rates of a translator.

    'openstl': OpenSTL's MidMetaNet quirk, linspace(0.01, drop_path) for all but the last block,
    which gets `drop_path` itself (so drop_path = 0 still drops blocks 0..N-2 a little).
    'linear': linspace(0, drop_path) over all blocks (drop_path = 0 means no stochastic depth).
    """
    if schedule == "openstl":
        rates = np.linspace(1e-2, drop_path, num_blocks).tolist()
        rates[-1] = drop_path
        return [float(r) for r in rates]
    if schedule == "linear":
        return [float(r) for r in np.linspace(0.0, drop_path, num_blocks)]
    raise ValueError(
        f"model.drop_path_schedule must be 'openstl' or 'linear', got {schedule!r}.")


class DropPath(nn.Module):
    """Per-sample stochastic depth (timm's DropPath): zero a sample's branch with probability
    `rate`, scale survivors by 1/(1-rate). Draws from the 'drop_path' RNG stream."""

    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("drop_path"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def gelu(x):
    """Exact GELU as PyTorch writes it, x * (1 + erf(x / sqrt 2)) / 2 (flax's `nn.gelu` defaults
    to the tanh form, and its exact form goes through erfc, whose branches cost XLA:CPU about 4x
    the time of erf's polynomial: a third of the quickstart translator's forward pass)."""
    return x * (jax.lax.erf(x * np.float32(1 / math.sqrt(2))).astype(x.dtype) + 1) / 2


# ----------------------------------------------------------------------------------------------
# PyTorch operations written exactly (OpenSTL's weights depend on their semantics)
# ----------------------------------------------------------------------------------------------

def conv_transpose_torch(x, kernel, stride: int, padding: int, output_padding: int):
    """PyTorch's ConvTranspose2d on NHWC `x` with `kernel` (kh, kw, out, in): a stride-1 conv of
    the stride-dilated input with the spatially flipped kernel, padded k-1-p before and
    k-1-p+output_padding after."""
    k = kernel.shape[0]
    rhs = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # (kh, kw, in, out), flipped
    lo, hi = k - 1 - padding, k - 1 - padding + output_padding
    return jax.lax.conv_general_dilated(x, rhs, (1, 1), ((lo, hi), (lo, hi)),
                                        lhs_dilation=(stride, stride),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class ConvTranspose2d(nn.Module):
    """PyTorch ConvTranspose2d(k, stride, padding, output_padding) with bias; kernel
    (k, k, out, in)."""

    features: int
    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    output_padding: int = 1
    dtype: object = None
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, cin = self.kernel_size, x.shape[-1]
        # PyTorch's fan_in of a (in, out, k, k) weight is out * k * k
        kernel = self.param("kernel", nn.initializers.variance_scaling(
            1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1, 2), out_axis=3),
            (k, k, self.features, cin), self.param_dtype)
        bias = self.param("bias", torch_default_bias_init(self.features * k * k),
                          (self.features,), self.param_dtype)
        dt = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        y = conv_transpose_torch(x.astype(dt), kernel.astype(dt), self.stride, self.padding,
                                 self.output_padding)
        return y + bias.astype(dt)


def nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """PyTorch's legacy `nearest` source indices: identity, dst >> 1 for exactly 2x, otherwise
    min(floor(dst * (float32(in) / out)), in - 1) in float32."""
    dst = np.arange(out_size)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), in_size - 1)


# ----------------------------------------------------------------------------------------------
# Roll-out
# ----------------------------------------------------------------------------------------------

def checked_roll_out(model_name: str, in_shape, next_frames, inputs, horizon: int):
    """`chain_passes` for a model that takes only `(B, *in_shape)` frames: one sentence naming
    the shape otherwise."""
    if inputs.ndim != 5 or tuple(inputs.shape[1:]) != tuple(in_shape):
        raise ValueError(
            f"{model_name} expects input frames of shape (B, {', '.join(map(str, in_shape))}) "
            f"= (B, T, H, W, C) per model.in_shape, got {tuple(inputs.shape)}.")
    return chain_passes(next_frames, inputs, horizon)


def chain_passes(next_frames, inputs, horizon: int):
    """The `horizon` frames after `inputs` (B, T, ...), where `next_frames(window)` predicts the
    frames after a window of T frames: passes are chained, each fed the last T frames known so
    far (inputs or predictions, in time order), until `horizon` frames exist; the surplus of the
    last pass is dropped. So frame k never depends on the horizon asked for (OpenSTL's roll-out)."""
    t = inputs.shape[1]
    window, preds, have = inputs, [], 0
    while have < horizon:
        new = next_frames(window)
        preds.append(new)
        have += new.shape[1]
        if have < horizon:
            window = jnp.concatenate([window.astype(new.dtype), new], axis=1)[:, -t:]
    out = preds[0] if len(preds) == 1 else jnp.concatenate(preds, axis=1)
    return out[:, :horizon]
