"""Convolutions with written-out gradients for XLA:CPU, and a convolution whose bias comes apart.

XLA:CPU computes some convolution gradients in forms its library kernels (YNNPACK) do not take,
its dense kernel gradients slowly (`cpu_kernels.conv_kernel_grad` is 2.5-4x faster) and its
stride-1 forward passes below the C++ loop's speed (`cpu_kernels.conv_forward`, 1.05-7x); these
compute the same values and gradients in faster forms (tested against lax). Programs compiled for
GPU/TPU use lax's convolutions (`layers.on_cpu`, or `layers.compiling_for_cpu` where the choice
changes shapes or custom-VJP structure).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models import cpu_kernels
from tau_jax.models.layers import compiling_for_cpu, on_cpu

Dtype = Any


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_plain_grads(x, kernel, padding: tuple):
    """Stride-1 NHWC x HWIO convolution (as `lax.conv_general_dilated`) whose gradients avoid
    the layouts XLA:CPU has no library kernel for: the input gradient is a convolution of dy
    with the flipped, transposed kernel laid out as HWIO, and the kernel gradient
    `cpu_kernels.conv_kernel_grad` where it runs (MAU step -8%, PhyDNet -5%), else a sum over
    taps of matrix products, dW[i, j] = window(x, i, j)^T dy. Inside a `scan` backward XLA's own
    gradient convolutions (kernel as 'oi', batch as features) run there 10-40x slower than the
    forward pass (the PredRNN family; experiments/results/benchmark_predrnn_small_cpu_*.json).
    The forward pass and the input gradient are `_forward`'s. Values and gradients equal the
    plain convolution's (tested)."""
    return _forward(x, kernel, padding)


def _conv(x, kernel, padding, stride: int = 1):
    """The NHWC x HWIO convolution every function here computes or differentiates."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _cpu_forward_runs(x, kernel) -> bool:
    """Whether `cpu_kernels.conv_forward` computes the stride-1 `_conv(x, kernel)` in this
    trace: compiled for CPU, float32/float64, output channels a multiple of 8, a k x k kernel
    (1 x 1 ones are matrix products XLA runs fast)."""
    return (compiling_for_cpu() and x.dtype == kernel.dtype and kernel.shape[:2] != (1, 1)
            and kernel.shape[-1] % 8 == 0 and cpu_kernels.usable(x.dtype))


def _forward(x, kernel, padding):
    """The stride-1 `_conv`: the C++ loop where it runs (timed alone on a 2-core Zen 4: 1.05-1.5x
    the speed of XLA's Eigen convolution at the recurrent cells' 5x5 shapes, 1.3-7x at SimVP's
    3x3 ones with 1-16 channels), else XLA's."""
    if _cpu_forward_runs(x, kernel):
        return cpu_kernels.conv_forward(x, kernel, padding)
    return _conv(x, kernel, padding)


def _cpu_kernel_grad_runs(x, kernel) -> bool:
    """Whether `cpu_kernels.conv_kernel_grad` computes the kernel gradient of `_conv(x, kernel)`
    in this trace: where the forward loop runs (`_cpu_forward_runs`) and the input channels are
    a multiple of 8 too."""
    return _cpu_forward_runs(x, kernel) and x.shape[-1] % 8 == 0


def _kernel_grad(x, kernel, dy, padding, stride: int = 1):
    """The convolution's kernel gradient: the C++ loop where it runs, else XLA's."""
    if _cpu_kernel_grad_runs(x, kernel):
        return cpu_kernels.conv_kernel_grad(x, dy.astype(x.dtype), kernel.shape[:2], padding,
                                            stride)
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, padding, stride), kernel)
    return kernel_vjp(dy)[0]


def _conv_fwd(x, kernel, padding):
    return _forward(x, kernel, padding), (x, kernel)


def flip_kernel(kernel):
    """The kernel of a stride-1 convolution's input gradient: flipped in space, laid out HWIO
    (input and output channels swapped)."""
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def _input_grad(flipped, dy, padding):
    """A stride-1 convolution's input gradient: dy convolved with `flip_kernel(kernel)`, a
    forward convolution (`_forward`)."""
    kh, kw = flipped.shape[:2]
    (top, bottom), (left, right) = padding
    return _forward(dy.astype(flipped.dtype), flipped,
                    ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)))


def _conv_bwd(padding, residuals, dy):
    x, kernel = residuals
    input_grad = _input_grad(flip_kernel(kernel), dy, padding).astype(x.dtype)
    if _cpu_kernel_grad_runs(x, kernel):
        return input_grad, _kernel_grad(x, kernel, dy, padding)
    kh, kw = kernel.shape[:2]
    ho, wo = dy.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    taps = [jnp.einsum("nhwc,nhwd->cd", xp[:, i:i + ho, j:j + wo], dy,
                       preferred_element_type=jnp.promote_types(kernel.dtype, jnp.float32))
            for i in range(kh) for j in range(kw)]
    kernel_grad = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return input_grad, kernel_grad


conv_plain_grads.defvjp(_conv_fwd, _conv_bwd)


class CollectorSlot(NamedTuple):
    """One step's share of a `kernel_grad_collector`: `x` and `dy`, zeros whose gradients carry
    the step's convolution input and output gradient out of the scan, and `flipped`, the kernel's
    `flip_kernel` for the input gradient, made once outside the scan (XLA:CPU flipped it in
    every step of the backward loop: 11 copies of up to 0.7 MB a step in the small PredRNN)."""

    x: jax.Array
    dy: jax.Array
    flipped: jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv_collecting_kernel_grad(x, kernel, slot: CollectorSlot, padding: tuple):
    """Stride-1 NHWC x HWIO convolution of one recurrent step whose kernel gradient is computed
    once for all steps, after the scan. Its backward pass returns the input gradient (with
    `slot.flipped`), a zero kernel gradient, and -- as the gradients of `slot.x` and `slot.dy`,
    this step's slices of `kernel_grad_collector(kernel, ...)` -- x and the output gradient dy;
    the collector's backward pass turns those of all steps into the kernel gradient. Only that
    pairing gives the kernel its true gradient (tested against the plain convolution's).

    Why: inside a scan's backward loop XLA:CPU computes kernel gradients slowly (its own
    gradient convolution 10-40x slower there; `conv_plain_grads`' per-tap products 3/4 of the
    small PredRNN's train step); one gradient convolution over all steps stacked as a batch
    runs at its library kernels' speed."""
    del slot
    return _forward(x, kernel, padding)


def _collecting_fwd(x, kernel, slot, padding):
    return _forward(x, kernel, padding), (x, kernel, slot.flipped)


def _collecting_bwd(padding, residuals, dy):
    x, kernel, flipped = residuals
    input_grad = _input_grad(flipped, dy, padding).astype(x.dtype)
    return input_grad, jnp.zeros_like(kernel), CollectorSlot(x, dy.astype(x.dtype), None)


conv_collecting_kernel_grad.defvjp(_collecting_fwd, _collecting_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def kernel_grad_collector(kernel, lead: tuple, dtype, padding: tuple):
    """Zeros (lead + (C_in,), lead + (C_out,)) in `dtype`, sliced along the first axis (the
    steps) into the `CollectorSlot`s of each step's `conv_collecting_kernel_grad` with this
    kernel (lead = (steps, batch, height, width) of its input). Backward: the kernel gradient
    summed over all steps, one gradient convolution with steps x batch as its batch (in float32
    or wider)."""
    return tuple(jnp.zeros((*lead, c), dtype) for c in kernel.shape[2:])


def _collector_fwd(kernel, lead, dtype, padding):
    return kernel_grad_collector(kernel, lead, dtype, padding), kernel


def _collector_bwd(lead, dtype, padding, kernel, inputs_and_grads):
    wide = jnp.promote_types(dtype, jnp.float32)
    x, dy = (v.reshape(-1, *v.shape[-3:]).astype(wide) for v in inputs_and_grads)
    return (_kernel_grad(x, kernel.astype(wide), dy, padding).astype(kernel.dtype),)


kernel_grad_collector.defvjp(_collector_fwd, _collector_bwd)


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
    return _conv(_space_to_depth(x), k2.reshape(kh // 2, kw // 2, 4 * cin, cout), (pad_h, pad_w))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride2_grads(x, kernel, padding: tuple):
    """Stride-2 NHWC x HWIO convolution (as `lax.conv_general_dilated`) whose input gradient is
    that of the same convolution written as a stride-1 one on x's 2x2 space-to-depth: XLA:CPU
    computes a strided convolution's input gradient by dilating the output gradient, a form its
    YNNPACK kernels do not take (28 ms against 3 ms for SimVP's first downsampling layer in the
    quickstart's train step at batch 16). The kernel gradient is the C++ loop's where it runs
    (`_kernel_grad`), else XLA's (as the forward pass, faster in its own form). Call it only
    where `_s2d_geometry` has a form for both axes."""
    return _conv(x, kernel, padding, 2)


def _conv_stride2_fwd(x, kernel, padding):
    return _conv(x, kernel, padding, 2), (x, kernel)


def _conv_stride2_bwd(padding, residuals, dy):
    x, kernel = residuals
    geometry = tuple(_s2d_geometry(size, k, pad)
                     for size, k, pad in zip(x.shape[1:3], kernel.shape[:2], padding))
    _, input_vjp = jax.vjp(lambda v: _stride2_as_stride1(v, kernel, geometry), x)
    return input_vjp(dy)[0], _kernel_grad(x, kernel, dy, padding, 2)


conv_stride2_grads.defvjp(_conv_stride2_fwd, _conv_stride2_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_cpu_kernel_grad(x, kernel, padding: tuple):
    """Stride-1 NHWC x HWIO convolution (as `lax.conv_general_dilated`) whose kernel gradient is
    `cpu_kernels.conv_kernel_grad` (XLA:CPU's: 34 -> 13 ms for SimVP's 64-channel 3x3 at 64x64
    over 20 frames, 6.6 -> 1.9 ms for a 16-channel one over 40); forward pass and input gradient
    `_forward`'s. Call it where `_cpu_kernel_grad_runs`."""
    return _forward(x, kernel, padding)


def _conv_cpu_kernel_grad_bwd(padding, residuals, dy):
    x, kernel = residuals
    return (_input_grad(flip_kernel(kernel), dy, padding).astype(x.dtype),
            _kernel_grad(x, kernel, dy, padding))


conv_cpu_kernel_grad.defvjp(_conv_fwd, _conv_cpu_kernel_grad_bwd)


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
    """Whether `dimension_numbers` say NHWC input, HWIO kernel, NHWC output (flax's)."""
    nhwc = ("NHWC", "HWIO", "NHWC")
    return (jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, nhwc))


def conv_by_backend(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                    dimension_numbers=None, feature_group_count=1, precision=None):
    """`lax.conv_general_dilated`'s signature for `nn.Conv(conv_general_dilated=...)`: lowered
    for CPU, 2-D NHWC convolutions go through `conv_stride2_grads` (stride 2, where a
    space-to-depth form exists) or `conv_cpu_kernel_grad` (stride 1, where the C++ kernel
    gradient runs); everything else, and every convolution lowered for GPU/TPU, through lax
    (`on_cpu` / `compiling_for_cpu`: the platform the program is compiled for, so a TPU plan made
    on a CPU host gets the TPU form)."""
    def plain(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers, feature_group_count,
                                            precision=precision)

    pads = None if isinstance(padding, str) else tuple(tuple(int(v) for v in p) for p in padding)
    dense = (lhs.ndim == 4 and feature_group_count == 1
             and _is_nhwc(lhs, rhs, dimension_numbers) and precision is None and pads is not None
             and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1))))
    strides = tuple(window_strides)
    if dense and strides == (1, 1) and _cpu_kernel_grad_runs(lhs, rhs):
        return conv_cpu_kernel_grad(lhs, rhs, pads)
    if not (dense and strides == (2, 2)
            and all(_s2d_geometry(size, k, pad) is not None
                    for size, k, pad in zip(lhs.shape[1:3], rhs.shape[:2], pads))):
        return plain(lhs, rhs)
    return on_cpu(lambda lhs, rhs: conv_stride2_grads(lhs, rhs, pads), plain, lhs, rhs)


def conv_general_dilated_by_backend(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                  rhs_dilation=None, dimension_numbers=None,
                                  feature_group_count=1, precision=None):
    """`lax.conv_general_dilated`'s signature for `nn.Conv(conv_general_dilated=...)`: traced
    for CPU (`compiling_for_cpu`), stride-1 2-D NHWC convolutions (flax's layout) go through
    `conv_plain_grads`; everything else, and every convolution for GPU/TPU (cuDNN / the TPU
    compiler have fast weight gradients; not measured against the taps there yet), through lax."""
    plain = (compiling_for_cpu() and lhs.ndim == 4 and feature_group_count == 1
             and precision is None
             and not isinstance(padding, str)
             and all(d == 1 for d in tuple(window_strides) + (lhs_dilation or (1, 1))
                     + (rhs_dilation or (1, 1))))
    if not plain:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers, feature_group_count,
                                            precision=precision)
    return conv_plain_grads(lhs, rhs, tuple(tuple(int(v) for v in p) for p in padding))


class ConvApartBias(nn.Module):
    """`nn.Conv` (2-D, NHWC) with the same parameters, init and values, returning the
    convolution and its bias apart so the caller adds the bias where it costs no pass over the
    map (GroupNormSiLU's `shift`), through `conv_by_backend`."""

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
        y = conv_by_backend(x, kernel, (self.strides, self.strides), self.padding,
                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y, bias
