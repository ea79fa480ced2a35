"""Training losses: MSE, TAU's differential divergence regularisation (DDR), and their sum.

All losses compute in float32 (or float64 under x64) whatever the model's compute dtype, and
take videos `(B, T', H, W, C)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_pair(pred, target, fn: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{fn}: pred and target shapes differ: {pred.shape} vs {target.shape}.")


def _upcast(x):
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def mse(pred, target):
    """Mean squared error over all elements (PyTorch's nn.MSELoss)."""
    _check_pair(pred, target, "mse")
    return jnp.mean(jnp.square(_upcast(pred) - _upcast(target)))


def ddr(pred, target, tau: float = 0.1, eps: float = 1e-12):
    """Differential divergence regularisation, as OpenSTL computes it.

    Frame differences along time are turned into distributions by a softmax over all C*H*W
    values of each difference frame (temperature `tau`); the loss is the element-wise
    P * log(P / (Q + eps) + eps) averaged over every element, i.e. KL(pred || target) divided by
    C*H*W. Gradients flow through the prediction only. Zero when fewer than 3 frames.
    """
    _check_pair(pred, target, "ddr")
    if pred.ndim != 5:
        raise ValueError(f"ddr expects videos (B, T, H, W, C), got shape {pred.shape}.")
    b, t = pred.shape[:2]
    if t <= 2:
        return jnp.zeros((), jnp.promote_types(pred.dtype, jnp.float32))
    target = jax.lax.stop_gradient(target)
    dp = jnp.diff(_upcast(pred), axis=1).reshape(b, t - 1, -1)
    dt = jnp.diff(_upcast(target), axis=1).reshape(b, t - 1, -1)
    p = jax.nn.softmax(dp / tau, axis=-1)
    q = jax.nn.softmax(dt / tau, axis=-1)
    return jnp.mean(p * jnp.log(p / (q + eps) + eps))


def tau_loss(pred, target, alpha: float = 0.1, tau: float = 0.1):
    """TAU's training loss: mse + alpha * ddr (alpha = 0.1 in every OpenSTL TAU config)."""
    loss = mse(pred, target)
    return loss + alpha * ddr(pred, target, tau) if alpha else loss
