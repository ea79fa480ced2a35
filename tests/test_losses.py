"""MSE and DDR against OpenSTL's reference values, and DDR's defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tau_jax.losses import ddr, mse, tau_loss


def reference_pair():
    """OpenSTL's reference inputs: sin/cos videos (B, T, C, H, W) = (2, 10, 1, 16, 16), made
    channels-last."""
    idx = np.arange(2 * 10 * 1 * 16 * 16, dtype=np.float64)
    to_nhwc = lambda a: a.reshape(2, 10, 1, 16, 16).transpose(0, 1, 3, 4, 2)
    return to_nhwc(0.5 + 0.5 * np.sin(0.37 * idx)), to_nhwc(0.5 + 0.5 * np.cos(0.11 * idx))


def test_reference_values_float64(x64):
    pred, true = reference_pair()
    np.testing.assert_allclose(ddr(pred, true), 0.033794968155362155, rtol=1e-12)
    np.testing.assert_allclose(ddr(true, true), -9.95e-13, atol=1e-14)
    np.testing.assert_allclose(mse(pred, true), 0.25002551644174664, rtol=1e-12)
    np.testing.assert_allclose(tau_loss(pred, true, alpha=0.1), 0.2534050132572829, rtol=1e-12)


def test_reference_values_float32():
    pred, true = (a.astype(np.float32) for a in reference_pair())
    np.testing.assert_allclose(ddr(pred, true), 0.033794968155362155, rtol=1e-5)
    np.testing.assert_allclose(tau_loss(pred, true), 0.2534050132572829, rtol=1e-6)


def test_ddr_is_zero_for_two_frames_or_fewer():
    x = jnp.ones((2, 2, 4, 4, 1))
    assert float(ddr(x, 2 * x)) == 0.0
    assert float(ddr(x[:, :1], x[:, :1])) == 0.0


def test_ddr_gradient_flows_through_prediction_only():
    pred, true = (jnp.asarray(a, jnp.float32) for a in reference_pair())
    g_pred, g_true = jax.grad(ddr, argnums=(0, 1))(pred, true)
    assert float(jnp.abs(g_pred).max()) > 0
    assert float(jnp.abs(g_true).max()) == 0


def test_ddr_is_kl_of_pred_given_target_over_chw():
    # KL(P || Q) / (C*H*W) averaged over (b, t), up to the eps terms.
    pred, true = reference_pair()
    dp, dt = np.diff(pred, axis=1).reshape(2, 9, -1), np.diff(true, axis=1).reshape(2, 9, -1)
    softmax = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(
        z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
    p, q = softmax(dp / 0.1), softmax(dt / 0.1)
    kl = (p * np.log(p / q)).sum(-1).mean() / dp.shape[-1]
    np.testing.assert_allclose(ddr(pred.astype(np.float32), true.astype(np.float32)), kl,
                               rtol=1e-3)  # the eps inside the log moves it by 2e-4


videos = arrays(np.float32, (2, 4, 3, 3, 2),
                elements=st.floats(0, 1, width=32, allow_nan=False, allow_infinity=False))


@settings(max_examples=25, deadline=None)
@given(videos, videos)
def test_loss_properties(a, b):
    assert float(mse(a, b)) >= 0
    np.testing.assert_allclose(mse(a, b), mse(b, a), rtol=1e-6)
    assert float(ddr(a, b)) >= -1e-6  # a KL divergence, up to the eps terms
    assert abs(float(ddr(a, a))) < 1e-6


@settings(max_examples=25, deadline=None)
@given(videos, videos, st.lists(st.floats(-1, 1, width=32), min_size=4, max_size=4))
def test_ddr_ignores_per_frame_offsets(a, b, offsets):
    # A constant added to a whole frame shifts each difference frame by a constant, which the
    # softmax over C*H*W removes.
    shifted = a + np.asarray(offsets, np.float32)[None, :, None, None, None]
    np.testing.assert_allclose(ddr(shifted, b), ddr(a, b), atol=2e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shapes differ"):
        tau_loss(jnp.zeros((1, 3, 4, 4, 1)), jnp.zeros((1, 3, 4, 4, 2)))
