"""The C++ depthwise-convolution kernels (`cpu_depthwise`): values and gradients equal to XLA's
grouped convolution, sharded programs, the build cache, and the fallback without a compiler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from conftest import require_cpu_kernel
from tau_jax.models import cpu_depthwise, layers

# (input shape, kernel size, dilation, padding): 'same' paddings of the translators, channels not a
# multiple of the kernels' 64-channel blocks, non-square frames, no padding, more than 'same'.
CASES = [((2, 9, 7, 70), 3, 1, 1), ((3, 16, 12, 130), 7, 3, 9), ((1, 8, 8, 5), 5, 1, 2),
         ((2, 10, 11, 64), 3, 2, 0), ((2, 6, 6, 8), 3, 1, 3)]


def outputs_and_gradients(conv, x, kernel, dilation, padding):
    y, vjp = jax.vjp(lambda a, b: conv(a, b, dilation, padding), x, kernel)
    return (y, *vjp(jnp.cos(y)))


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-13), ("float32", 2e-6)])
def test_values_and_gradients_equal_the_grouped_convolution(dtype, bound):
    require_cpu_kernel()
    with jax.enable_x64(dtype == "float64"):
        for shape, k, dilation, padding in CASES:
            x = jax.random.normal(jax.random.key(0), shape, dtype)
            kernel = jax.random.normal(jax.random.key(1), (k, k, 1, shape[-1]), dtype)
            ours = outputs_and_gradients(cpu_depthwise.depthwise_conv, x, kernel, dilation, padding)
            ref = outputs_and_gradients(layers.depthwise_conv_lax, x, kernel, dilation, padding)
            for a, b in zip(ours, ref):
                assert a.shape == b.shape and a.dtype == b.dtype
                assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < bound, (shape, k)


@pytest.mark.parametrize("spec", [P(("data", "model")), P("data", None, None, "model")])
def test_sharded_programs_give_the_same_values(spec):
    """XLA gathers the batch for the opaque calls (cpu_depthwise's docstring); values must hold."""
    require_cpu_kernel()
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 32))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 32))

    def loss(x, kernel):
        return jnp.sum(jnp.sin(cpu_depthwise.depthwise_conv(x, kernel, 1, 1)))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    sharded = (jax.device_put(x, NamedSharding(mesh, spec)),
               jax.device_put(kernel, NamedSharding(mesh, P())))
    for a, b in zip(jax.tree.leaves(step(*sharded)), jax.tree.leaves(step(x, kernel))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_build_is_cached_under_tau_jax_cache(tmp_path, monkeypatch):
    require_cpu_kernel()
    monkeypatch.setenv("TAU_JAX_CACHE", str(tmp_path))
    first = cpu_depthwise._build(cpu_depthwise._compiler())
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left
    stamp = first.stat().st_mtime_ns
    assert cpu_depthwise._build(cpu_depthwise._compiler()) == first
    assert first.stat().st_mtime_ns == stamp


def test_without_a_compiler_the_xla_form_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TAU_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    cpu_depthwise.available.cache_clear()
    try:
        with pytest.warns(UserWarning, match="kernel could not be built"):
            assert not cpu_depthwise.available()
        assert layers.resolve_dw_impl("auto") == "taps"
        with pytest.raises(ValueError, match=r"dw_impl='kernel' needs float32 or float64"):
            layers.resolve_dw_impl("kernel")
    finally:
        cpu_depthwise.available.cache_clear()
    assert list(tmp_path.iterdir()) == []


def test_choice_by_platform_dtype_and_processes(monkeypatch):
    require_cpu_kernel()
    assert layers.resolve_dw_impl("auto") == "kernel"
    with monkeypatch.context() as patch:
        patch.setattr(jax, "process_count", lambda: 2)
        assert layers.resolve_dw_impl("auto") == "taps"
        assert layers.resolve_dw_impl("kernel") == "kernel"
    assert layers.resolve_dw_impl("auto", jnp.bfloat16) == "taps"
    with layers.portable_program():
        assert layers.resolve_dw_impl("kernel") == "taps"
    with layers.target_platform("tpu"):
        assert layers.resolve_dw_impl("auto") == "lax"
        with pytest.raises(ValueError, match="runs on CPU only"):
            layers.resolve_dw_impl("kernel")
