"""Kernels on XLA:CPU through C++ custom calls (`cpu_kernels.cc`), built on first use.

XLA:CPU has no fast depthwise kernel gradient: the best XLA form (`layers.depthwise_conv_taps`)
takes 25-29 ms at the full TAU's 4096-channel 3x3 where the C++ loop takes 1.6 ms; with it the
train steps of the full MMNIST TAU are 18% faster, a small gSTA's 21%, the quickstart's 9% (README,
"Benchmark"). Its dense-convolution kernel gradient goes through channel-major copies of both
operands: `conv_kernel_grad` here is 2.5-4x faster at SimVP's shapes
(`convolutions.conv_cpu_kernel_grad`). Its stride-1 forward pass (Eigen's) runs the recurrent
cells' 5x5 convolutions at 120-215 GFLOP/s on a 2-core Zen 4 and SimVP's 3x3 ones with 1-16
channels at 6-110: `conv_forward`, their forward passes and input gradients, at 180-215 and
30-150 (small PredRNN train step -19%). GroupNorm + SiLU's four passes over a map
(`group_norm.group_norm_silu`) take a small gSTA's train step 7% below XLA's loops for them.
The library is compiled once per machine with the system C++ compiler against the installed
jaxlib's FFI headers and cached under `$TAU_JAX_CACHE` (default `~/.cache/tau_jax`). Without a
working compiler `available()` is False, after one warning, and the callers keep XLA's forms:
same values, slower.

XLA's partitioner cannot split an opaque custom call: in a program sharded over several CPU
devices (`jax_num_cpu_devices`) each device gathers the whole batch for these calls (same values).
`jax.experimental.custom_partitioning` would split them, but it puts a Python pointer into every
program, which then never hits JAX's persistent compilation cache (the warm test suite took
11.6 min with it).
"""
import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
TARGETS = {"tau_jax_depthwise_forward": "DepthwiseForward",
           "tau_jax_depthwise_kernel_grad": "DepthwiseKernelGrad",
           "tau_jax_conv_forward": "ConvForward",
           "tau_jax_conv_kernel_grad": "ConvKernelGrad",
           "tau_jax_channel_sums": "ChannelSums",
           "tau_jax_affine_silu": "AffineSilu",
           "tau_jax_affine_silu_grad_sums": "AffineSiluGradSums",
           "tau_jax_affine_silu_grad": "AffineSiluGrad"}
DTYPES = (jnp.float32, jnp.float64)


def cache_dir() -> Path:
    return Path(os.environ.get("TAU_JAX_CACHE") or Path.home() / ".cache" / "tau_jax")


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _cpu_identity() -> str:
    """What `-march=native` compiles for: the CPU's flags (Linux), else the processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cxx: str) -> Path:
    """The cached shared library, compiled now if missing (written to a temporary name, then
    renamed: a second process sees either nothing or the whole file)."""
    import jaxlib
    include = jax.ffi.include_dir()
    compiler = os.stat(shutil.which(cxx) or cxx)  # a new compiler (size, date) builds anew
    key = hashlib.sha256("\0".join(map(str, [
        SOURCE.read_text(), cxx, compiler.st_size, compiler.st_mtime_ns, jaxlib.__version__,
        _cpu_identity()])).encode()).hexdigest()[:16]
    path = cache_dir() / f"cpu_kernels_{key}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    base = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-w", "-I", include, str(SOURCE)]
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        for arch in (["-march=native"], []):  # some compilers (Apple clang on arm64) lack it
            done = subprocess.run(base + arch + ["-o", tmp], capture_output=True, text=True,
                                  timeout=300)
            if done.returncode == 0:
                os.replace(tmp, path)
                return path
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        raise RuntimeError(errors[0] if errors else f"{cxx} exited with {done.returncode}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@functools.cache
def available() -> bool:
    """Whether the custom calls are registered (building the library if needed); warns once if
    they cannot be."""
    cxx = _compiler()
    try:
        if cxx is None:
            raise RuntimeError("no C++ compiler found (set CXX)")
        library = ctypes.cdll.LoadLibrary(str(_build(cxx)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"tau-jax: the CPU kernels could not be built ({error}); "
                      "using XLA's forms, which train SimVP models up to ~30% slower.", stacklevel=2)
        return False
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    return True


_PORTABLE = contextvars.ContextVar("portable_program", default=False)


@contextlib.contextmanager
def portable_program():
    """Trace without these custom calls, for programs run where this library is absent
    (`Predictor.export`)."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def portable() -> bool:
    """Whether the trace is inside `portable_program()`."""
    return _PORTABLE.get()


def usable(dtype, processes: bool = True) -> bool:
    """Whether a CPU trace may call the kernels: float32/float64 outside `portable_program()`,
    in one process (`processes`: XLA splits its own forms over the processes of a job; these
    calls would gather the batch over the network), with the library built."""
    return (not portable() and not (processes and jax.process_count() > 1)
            and jnp.dtype(dtype) in DTYPES and available())


def _attrs(dilation: int, padding: int) -> dict:
    return dict(dilation=np.int64(dilation), padding=np.int64(padding))


def _forward(dilation, padding, x, kernel):
    """Output size from the padding, as `lax.conv` with symmetric padding."""
    kh, kw = kernel.shape[:2]
    out_h, out_w = (n + 2 * padding - dilation * (k - 1) for n, k in zip(x.shape[1:3], (kh, kw)))
    out = jax.ShapeDtypeStruct((x.shape[0], out_h, out_w, x.shape[3]), x.dtype)
    return jax.ffi.ffi_call("tau_jax_depthwise_forward", out)(x, kernel, **_attrs(dilation, padding))


def _kernel_grad(dilation, padding, kernel_hw, x, g):
    out = jax.ShapeDtypeStruct((*kernel_hw, x.shape[3]), x.dtype)
    return jax.ffi.ffi_call("tau_jax_depthwise_kernel_grad", out)(x, g,
                                                                  **_attrs(dilation, padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x, kernel, dilation: int, padding: int):
    """Depthwise conv (NHWC input, (kh, kw, 1, C) kernel, stride 1, symmetric zero padding) by the
    C++ kernels; float32 and float64 only. Call `available()` first."""
    return _forward(dilation, padding, x, kernel[:, :, 0])


def _depthwise_conv_fwd(x, kernel, dilation, padding):
    return depthwise_conv(x, kernel, dilation, padding), (x, kernel)


def _depthwise_conv_bwd(dilation, padding, residuals, g):
    """Input gradient: the forward pass of g with the flipped kernel, padding d (k - 1) - p."""
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    flipped = kernel[::-1, ::-1, 0]
    dx = _forward(dilation, dilation * (kh - 1) - padding, g, flipped)
    dk = _kernel_grad(dilation, padding, (kh, kw), x, g)
    return dx, dk[:, :, None, :]


depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)


def _pads(padding) -> dict:
    """The dense kernel gradients' attributes: padding ((top, _), (left, _)) before the input."""
    return dict(pad_top=np.int64(padding[0][0]), pad_left=np.int64(padding[1][0]))


def conv_forward(x, kernel, padding: tuple):
    """The stride-1 NHWC x HWIO convolution of x (B, H, W, Ci) with padding ((top, bottom),
    (left, right)): the C++ loop; Co a multiple of 8, float32 or float64. Call `available()`
    first."""
    (top, bottom), (left, right) = padding
    kh, kw, _, co = kernel.shape
    b, h, w, _ = x.shape
    out = jax.ShapeDtypeStruct((b, h + top + bottom - kh + 1, w + left + right - kw + 1, co),
                               x.dtype)
    return jax.ffi.ffi_call("tau_jax_conv_forward", out)(x, kernel, **_pads(padding))


def conv_kernel_grad(x, g, kernel_hw: tuple[int, int], padding: tuple, stride: int = 1):
    """Kernel gradient (kh, kw, Ci, Co) of the NHWC x HWIO convolution of x (B, H, W, Ci) with
    padding ((top, bottom), (left, right)) and `stride` on both axes, given its output gradient
    g (B, Ho, Wo, Co): the C++ loop; Ci and Co multiples of 8, float32 or float64. Call
    `available()` first."""
    out = jax.ShapeDtypeStruct((*kernel_hw, x.shape[3], g.shape[3]), x.dtype)
    return jax.ffi.ffi_call("tau_jax_conv_kernel_grad", out)(x, g, **_pads(padding),
                                                             stride=np.int64(stride))


# GroupNorm + SiLU's passes over a map x (B, P, C) (group_norm.py), per-(sample, channel)
# coefficients k (n, B, C); float32 or float64. Call `available()` first.

def _map_call(target, out_shape, *arrays):
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, arrays[0].dtype))(*arrays)


def channel_sums(x):
    """(2, B, C): sums of x and of x^2 over P (accumulated in float64)."""
    return _map_call("tau_jax_channel_sums", (2, x.shape[0], x.shape[2]), x)


def affine_silu(x, k):
    """silu(x * k[0] + k[1]), k[i] broadcast as (B, 1, C)."""
    return _map_call("tau_jax_affine_silu", x.shape, x, k)


def affine_silu_grad_sums(x, dy, k):
    """(2, B, C): sums over P of dz and of dz * (x * k[2] + k[3]), dz the gradient of
    z = x * k[0] + k[1] given dy, that of silu(z)."""
    return _map_call("tau_jax_affine_silu_grad_sums", (2, x.shape[0], x.shape[2]), x, dy, k)


def affine_silu_grad(x, dy, k):
    """dz * k[2] + x * k[3] + k[4], dz as in `affine_silu_grad_sums`."""
    return _map_call("tau_jax_affine_silu_grad", x.shape, x, dy, k)
