"""The C++ kernels (`cpu_kernels`): depthwise values and gradients equal to XLA's grouped
convolution, dense kernel gradients and GroupNorm + SiLU's passes equal to XLA's, where each is
used, sharded programs, the build cache, and the fallback without a compiler."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from conftest import require_cpu_kernel
from tau_jax.models import convolutions, cpu_kernels, layers
from tau_jax.models.group_norm import GroupNormSiLU, group_norm_silu

# (input shape, kernel size, dilation, padding): 'same' paddings of the translators, channels not a
# multiple of the kernels' 64-channel blocks, non-square frames, no padding, more than 'same'.
CASES = [((2, 9, 7, 70), 3, 1, 1), ((3, 16, 12, 130), 7, 3, 9), ((1, 8, 8, 5), 5, 1, 2),
         ((2, 10, 11, 64), 3, 2, 0), ((2, 6, 6, 8), 3, 1, 3)]


def outputs_and_gradients(conv, x, kernel, dilation, padding):
    y, vjp = jax.vjp(lambda a, b: conv(a, b, dilation, padding), x, kernel)
    return (y, *vjp(jnp.cos(y)))


def assert_close(ours, ref, bound, case):
    """Same shapes and dtypes, and every array within `bound` of its reference's largest value."""
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < bound, case


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-13), ("float32", 2e-6)])
def test_values_and_gradients_equal_the_grouped_convolution(dtype, bound):
    require_cpu_kernel()
    with jax.enable_x64(dtype == "float64"):
        for shape, k, dilation, padding in CASES:
            x = jax.random.normal(jax.random.key(0), shape, dtype)
            kernel = jax.random.normal(jax.random.key(1), (k, k, 1, shape[-1]), dtype)
            ours = outputs_and_gradients(cpu_kernels.depthwise_conv, x, kernel, dilation, padding)
            ref = outputs_and_gradients(layers.depthwise_conv_lax, x, kernel, dilation, padding)
            assert_close(ours, ref, bound, (shape, k))


# (input shape, kernel (kh, kw), output channels, padding): every register-block path (output
# channels 8, 16, 24, 32, 40, 64; input 8, 16, 24), 'same' and asymmetric paddings, none, more
# than 'same', non-square kernels and frames.
DENSE_CASES = [((2, 9, 7, 8), (3, 3), 16, ((1, 1), (1, 1))), ((3, 8, 10, 16), (5, 5), 8, ((2, 2),) * 2),
               ((2, 6, 6, 24), (3, 3), 40, ((0, 2), (1, 0))), ((1, 7, 7, 8), (3, 3), 8, ((0, 0),) * 2),
               ((2, 5, 9, 16), (3, 5), 64, ((3, 3), (2, 2))), ((2, 8, 8, 16), (3, 3), 24, ((1, 1),) * 2),
               ((1, 6, 6, 16), (3, 3), 32, ((1, 1),) * 2)]


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-13), ("float32", 2e-6)])
def test_dense_forward_equals_xlas(dtype, bound):
    """cpu_kernels.conv_forward against lax: every register-block path (output channels 8, 16,
    24 (float64: 8-wide vectors), 32, 48, 224), input channels 1, 3, 8, 20, frames whose width
    leaves a partial block of pixels, 'same', asymmetric, zero and more-than-'same' paddings
    (the input gradient's padding is then negative), non-square kernels and frames."""
    require_cpu_kernel()
    cases = [((2, 9, 7, 1), (3, 3), 8, ((1, 1), (1, 1))), ((1, 16, 16, 3), (5, 5), 224, ((2, 2),) * 2),
             ((2, 6, 11, 20), (3, 3), 24, ((0, 2), (1, 0))), ((1, 7, 7, 8), (3, 3), 16, ((0, 0),) * 2),
             ((2, 5, 9, 16), (3, 5), 48, ((3, 3), (2, 2))), ((2, 6, 6, 8), (3, 3), 32, ((-1, 1),) * 2),
             ((1, 4, 19, 8), (1, 3), 8, ((0, 0), (1, 1)))]
    with jax.enable_x64(dtype == "float64"):
        for shape, kernel_hw, features, padding in cases:
            x = jax.random.normal(jax.random.key(0), shape, dtype)
            kernel = jax.random.normal(jax.random.key(1), (*kernel_hw, shape[-1], features), dtype)
            ours = jax.jit(cpu_kernels.conv_forward, static_argnums=2)(x, kernel, padding)
            assert_close(ours, convolutions._conv(x, kernel, padding), bound, shape)


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-13), ("float32", 2e-6)])
def test_dense_kernel_gradient_equals_xlas(dtype, bound):
    """conv_cpu_kernel_grad (the C++ forward pass, input and kernel gradients) against lax's:
    outputs and both gradients for an output gradient cos(y). The kernel is scaled to outputs of
    order 1: cos of outputs of order 20 turns the two forward passes' float32 rounding (sums in
    another order) into 1e-5 differences of the output gradient."""
    require_cpu_kernel()
    with jax.enable_x64(dtype == "float64"):
        for shape, kernel_hw, features, padding in DENSE_CASES:
            x = jax.random.normal(jax.random.key(0), shape, dtype)
            kernel = jax.random.normal(jax.random.key(1), (*kernel_hw, shape[-1], features),
                                       dtype) / np.sqrt(np.prod(kernel_hw) * shape[-1])
            run = jax.jit(outputs_and_gradients, static_argnums=(0, 3, 4))
            ours = run(lambda x, k, _, p: convolutions.conv_cpu_kernel_grad(x, k, p), x, kernel,
                       None, padding)
            ref = run(lambda x, k, _, p: convolutions._conv(x, k, p), x, kernel, None, padding)
            assert_close(ours, ref, bound, shape)


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-13), ("float32", 2e-6)])
def test_stride2_kernel_gradient_equals_xlas(dtype, bound):
    """The C++ kernel gradient of SimVP's stride-2 convolutions (conv_stride2_grads): odd and
    even kernels, paddings that leave the last input row or column out, non-square frames."""
    require_cpu_kernel()
    cases = [((2, 8, 8, 16), 3, 16, ((1, 1),) * 2), ((1, 12, 8, 8), 5, 24, ((2, 2),) * 2),
             ((2, 6, 10, 16), 4, 8, ((1, 1),) * 2), ((1, 8, 6, 24), 1, 16, ((0, 0),) * 2)]
    with jax.enable_x64(dtype == "float64"):
        for shape, k, features, padding in cases:
            x = jax.random.normal(jax.random.key(0), shape, dtype)
            kernel = jax.random.normal(jax.random.key(1), (k, k, shape[-1], features), dtype)
            dy = jnp.cos(convolutions._conv(x, kernel, padding, 2))
            ours = cpu_kernels.conv_kernel_grad(x, dy, (k, k), padding, 2)
            _, kernel_vjp = jax.vjp(lambda w: convolutions._conv(x, w, padding, 2), kernel)  # noqa: B023
            assert_close(ours, kernel_vjp(dy)[0], bound, shape)
            grads = jax.grad(lambda *a: jnp.sum(jnp.sin(convolutions.conv_stride2_grads(  # noqa: B023
                *a, padding))), (0, 1))(x, kernel)
            ref = jax.grad(lambda *a: jnp.sum(jnp.sin(convolutions._conv(  # noqa: B023
                *a, padding, 2))), (0, 1))(x, kernel)
            assert_close(grads, ref, bound, shape)


def test_dense_kernel_gradient_is_used_where_it_runs():
    """k x k NHWC convolutions (stride 1, or 2 where conv_stride2_grads takes them) with channels
    multiples of 8, float32/float64, traced for CPU; not 1 x 1 kernels, other channel counts,
    bfloat16, other stride-2 frames, or programs for TPU."""
    require_cpu_kernel()
    nhwc = ("NHWC", "HWIO", "NHWC")

    def calls(shape, kernel_shape, dtype=jnp.float32, stride=1):
        x, k = jnp.zeros(shape, dtype), jnp.zeros(kernel_shape, dtype)
        conv = lambda x, k: jnp.sum(convolutions.conv_by_backend(  # noqa: E731
            x, k, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=nhwc))
        return "tau_jax_conv_kernel_grad" in str(jax.make_jaxpr(jax.grad(conv, 1))(x, k))

    assert calls((2, 8, 8, 16), (3, 3, 16, 8))
    assert not calls((2, 8, 8, 16), (1, 1, 16, 8))
    assert not calls((2, 8, 8, 12), (3, 3, 12, 8)) and not calls((2, 8, 8, 1), (3, 3, 1, 8))
    assert not calls((2, 8, 8, 16), (3, 3, 16, 8), jnp.bfloat16)
    assert calls((2, 8, 8, 16), (3, 3, 16, 8), stride=2)  # through conv_stride2_grads
    assert not calls((2, 7, 7, 16), (3, 3, 16, 8), stride=2)  # odd frames: lax's convolution
    with layers.target_platform("tpu"):
        assert not calls((2, 8, 8, 16), (3, 3, 16, 8))
    with cpu_kernels.portable_program():
        assert not calls((2, 8, 8, 16), (3, 3, 16, 8))


def test_dense_forward_is_used_where_it_runs():
    """Stride-1 k x k NHWC convolutions with output channels a multiple of 8 (any input
    channels), float32/float64, traced for CPU, forward pass and input gradient: SimVP's
    (conv_by_backend, where the C++ kernel gradient runs too) and the recurrent cells'
    (conv_general_dilated_by_backend); not 1 x 1 kernels, other output channels, bfloat16, or
    programs for TPU or `portable_program()`."""
    require_cpu_kernel()
    nhwc = ("NHWC", "HWIO", "NHWC")

    def calls(conv, shape, kernel_shape, dtype=jnp.float32):
        x, k = jnp.zeros(shape, dtype), jnp.zeros(kernel_shape, dtype)
        loss = lambda x: jnp.sum(conv(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=nhwc))  # noqa: E731,B023
        return str(jax.make_jaxpr(jax.value_and_grad(loss))(x)).count("tau_jax_conv_forward")

    for conv in (convolutions.conv_by_backend, convolutions.conv_general_dilated_by_backend):
        assert calls(conv, (2, 8, 8, 16), (3, 3, 16, 8)) == 2  # forward pass, input gradient
        assert calls(conv, (2, 8, 8, 16), (1, 1, 16, 8)) == 0
        assert calls(conv, (2, 8, 8, 16), (3, 3, 16, 8), jnp.bfloat16) == 0
        with layers.target_platform("tpu"):
            assert calls(conv, (2, 8, 8, 16), (3, 3, 16, 8)) == 0
        with cpu_kernels.portable_program():
            assert calls(conv, (2, 8, 8, 16), (3, 3, 16, 8)) == 0
    # the recurrent cells' form takes any input channels; an output of 12: its input gradient only
    assert calls(convolutions.conv_general_dilated_by_backend, (2, 8, 8, 1), (3, 3, 1, 8)) == 1
    assert calls(convolutions.conv_general_dilated_by_backend, (2, 8, 8, 16), (3, 3, 16, 12)) == 1


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-13), ("float32", 2e-6)])
def test_group_norm_silu_passes_equal_xlas(dtype, bound):
    """group_norm_silu by the C++ passes against its XLA form, values and the gradients of x,
    shift, scale and bias: sub-pixel blocks, channel counts that are not divisors or multiples of
    16 (the loops' period), maps that end mid-period, a sample split over several tasks."""
    require_cpu_kernel()
    cases = [((2, 3, 5, 64), 4, 2), ((4, 9, 9, 8), 1, 2), ((2, 4, 4, 12), 1, 3),
             ((3, 3, 3, 10), 1, 5), ((1, 32, 32, 16), 1, 2)]
    with jax.enable_x64(dtype == "float64"):
        for shape, blocks, groups in cases:
            keys = jax.random.split(jax.random.key(0), 5)
            x = jax.random.normal(keys[0], shape, dtype) * 2 + 0.5
            shift = jax.random.normal(keys[1], shape[-1:], dtype)
            scale, bias = (jax.random.normal(k, (shape[-1] // blocks,), dtype) for k in keys[2:4])
            dy = jax.random.normal(keys[4], shape, dtype)

            @functools.partial(jax.jit, static_argnums=0)
            def run(kernels, *args):
                y, vjp = jax.vjp(lambda *a: group_norm_silu(  # noqa: B023
                    *a, groups, 1e-5, blocks, kernels), *args)
                return (y, *vjp(dy))  # noqa: B023

            assert_close(run(True, x, shift, scale, bias), run(False, x, shift, scale, bias),
                         bound, shape)


def test_group_norm_silu_uses_the_passes_where_they_run():
    """GroupNormSiLU in CPU programs of float32/float64; XLA's loops for bfloat16, portable
    programs and TPU programs."""
    require_cpu_kernel()
    def calls(dtype=jnp.float32, platform="cpu"):
        module = GroupNormSiLU(num_groups=2, dtype=dtype)
        x = jnp.zeros((2, 4, 4, 8), dtype)
        params = module.init(jax.random.key(0), x)
        grad = jax.grad(lambda x: jnp.sum(module.apply(params, x).astype(jnp.float32)))
        lowered = jax.jit(grad).trace(x).lower(lowering_platforms=(platform,))
        return "tau_jax_affine_silu_grad" in lowered.as_text()

    assert calls() and not calls(jnp.bfloat16) and not calls(platform="tpu")
    with cpu_kernels.portable_program():
        assert not calls()


@pytest.mark.parametrize("spec", [P(("data", "model")), P("data", None, None, "model")])
def test_sharded_programs_give_the_same_values(spec):
    """XLA gathers the batch for the opaque calls (cpu_kernels's docstring); values must hold."""
    require_cpu_kernel()
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 32))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 32))

    def loss(x, kernel):
        return jnp.sum(jnp.sin(cpu_kernels.depthwise_conv(x, kernel, 1, 1)))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    sharded = (jax.device_put(x, NamedSharding(mesh, spec)),
               jax.device_put(kernel, NamedSharding(mesh, P())))
    for a, b in zip(jax.tree.leaves(step(*sharded)), jax.tree.leaves(step(x, kernel))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_build_is_cached_under_tau_jax_cache(tmp_path, monkeypatch):
    require_cpu_kernel()
    monkeypatch.setenv("TAU_JAX_CACHE", str(tmp_path))
    first = cpu_kernels._build(cpu_kernels._compiler())
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left
    stamp = first.stat().st_mtime_ns
    assert cpu_kernels._build(cpu_kernels._compiler()) == first
    assert first.stat().st_mtime_ns == stamp


def test_without_a_compiler_the_xla_form_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TAU_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    cpu_kernels.available.cache_clear()
    try:
        with pytest.warns(UserWarning, match="kernels could not be built"):
            assert not cpu_kernels.available()
        assert layers.resolve_dw_impl("auto") == "taps"
        with pytest.raises(ValueError, match=r"dw_impl='kernel' needs float32 or float64"):
            layers.resolve_dw_impl("kernel")
    finally:
        cpu_kernels.available.cache_clear()
    assert list(tmp_path.iterdir()) == []


def test_choice_by_platform_dtype_and_processes(monkeypatch):
    require_cpu_kernel()
    assert layers.resolve_dw_impl("auto") == "kernel"
    with monkeypatch.context() as patch:
        patch.setattr(jax, "process_count", lambda: 2)
        assert layers.resolve_dw_impl("auto") == "taps"
        assert layers.resolve_dw_impl("kernel") == "kernel"
    assert layers.resolve_dw_impl("auto", jnp.bfloat16) == "taps"
    with cpu_kernels.portable_program():
        assert layers.resolve_dw_impl("kernel") == "taps"
    with layers.target_platform("tpu"):
        assert layers.resolve_dw_impl("auto") == "lax"
        with pytest.raises(ValueError, match="runs on CPU only"):
            layers.resolve_dw_impl("kernel")
