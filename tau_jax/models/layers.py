"""Building blocks shared by the model families.

Layouts are channels-last (NHWC). Initialisers reproduce the PyTorch/OpenSTL ones so a freshly
initialised tau-jax model has the same parameter distributions as an OpenSTL one.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models import cpu_kernels

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
# Depthwise convolution with interchangeable formulations (lax, taps, the C++ kernel)
# ----------------------------------------------------------------------------------------------

DW_IMPLS = ("lax", "taps", "kernel", "auto")


def resolve_dw_impl(impl: str, dtype=jnp.float32) -> str:
    """'auto' picks the formulation measured fastest on the platform traced for
    (`compiling_for_cpu`).

    On CPU: the C++ custom calls ('kernel', `cpu_kernels`) for float32/float64 in one process
    where they build, else the shift-and-sum ('taps') form, several times faster than XLA's grouped
    convolution (experiments/results/depthwise_cpu*.json). On GPU/TPU the grouped convolution
    stays the default until a GPU benchmark (experiments/gpu_benchmarks.sh) says otherwise.
    Inside `cpu_kernels.portable_program()` 'kernel' gives way to 'taps' (same values).
    """
    if impl not in DW_IMPLS:
        raise ValueError(f"model.dw_impl must be one of {DW_IMPLS}, got {impl!r}.")
    if impl in ("lax", "taps"):
        return impl
    if not compiling_for_cpu():
        if impl == "kernel":
            raise ValueError("model.dw_impl='kernel' runs on CPU only; use 'auto' on GPU/TPU.")
        return "lax"
    if cpu_kernels.usable(dtype, processes=impl == "auto"):
        return "kernel"
    if impl == "kernel" and not cpu_kernels.portable():
        raise ValueError(f"model.dw_impl='kernel' needs float32 or float64 (got {jnp.dtype(dtype)}) "
                         "and a C++ compiler (see the warning above); use 'auto'.")
    return "taps"


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

    The parameters are the same for every formulation (`kernel` (k, k, 1, C), `bias` (C,)), so
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
        conv = {"lax": depthwise_conv_lax, "taps": depthwise_conv_taps,
                "kernel": cpu_kernels.depthwise_conv}[resolve_dw_impl(self.impl, x.dtype)]
        return conv(x, kernel, self.dilation, self.padding) + bias


# ----------------------------------------------------------------------------------------------
# Choices by platform
# ----------------------------------------------------------------------------------------------

_TARGET_PLATFORM = contextvars.ContextVar("target_platform", default=None)


@contextlib.contextmanager
def target_platform(platform: str):
    """Trace for `platform` ('cpu', 'gpu' or 'tpu') whatever the host's default backend, for the
    choices `compiling_for_cpu` makes; the TPU planner traces under `target_platform('tpu')`."""
    token = _TARGET_PLATFORM.set(platform)
    try:
        yield
    finally:
        _TARGET_PLATFORM.reset(token)


def compiling_for_cpu() -> bool:
    """Whether the program being traced is for CPU: the `target_platform` in force, else the
    default backend. For choices that change a program's shapes, which `on_cpu` cannot make (it
    needs both branches to return the same shapes); prefer `on_cpu` elsewhere."""
    return (_TARGET_PLATFORM.get() or jax.default_backend()) == "cpu"


def on_cpu(cpu, other, *args):
    """`cpu(*args)` in a program compiled for CPU, `other(*args)` for GPU/TPU: the choice
    follows the platform XLA compiles for (`jax.lax.platform_dependent`), not the host's
    default backend, so an ahead-of-time TPU plan made on a CPU host sees the TPU program."""
    return jax.lax.platform_dependent(*args, cpu=cpu, default=other)


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
    the time of erf's polynomial: a third of the quickstart translator's forward pass). Halved
    inside, x * (erf / 2 + 1 / 2): a trailing `/ 2` becomes, in the backward pass, a product by a
    broadcast 0.5 that XLA:CPU fuses into the next layer's matrix product as a stored 4 MB array
    (a small gSTA's train step 2% slower)."""
    return x * (jax.lax.erf(x * np.float32(1 / math.sqrt(2))).astype(x.dtype) * 0.5 + 0.5)


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
