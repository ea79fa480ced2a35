"""Scheduled sampling: which frame each recurrent step consumes, as OpenSTL samples it.

A mask `(B, M)` of 0/1 says, per sequence and step, whether the ground-truth frame (1) or the
model's own prediction (0) is fed:
* standard (`reverse_scheduled_sampling = 0`, M = T'-1): steps t < T always take the ground
  truth, step t >= T takes `mask[t-T]`; the probability of a 1 falls linearly with training;
* reverse (`= 1`, M = T+T'-2): step 0 takes the ground truth, step t >= 1 takes `mask[t-1]`;
  input positions move towards the truth and future ones towards own predictions.
The schedules take the optimiser step and work on numbers (exact float64) and on traced arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _xp(itr):
    """numpy for concrete Python/numpy numbers (exact float64 values), jax.numpy for jax arrays
    and tracers (so the schedules also work inside a jitted train step)."""
    return jnp if isinstance(itr, jax.Array) else np


def _out(xp, value):
    """A Python float for a concrete scalar iteration, the array otherwise."""
    return float(value) if xp is np and np.ndim(value) == 0 else value


def ss_eta(itr, sampling_stop_iter: int = 50000, sampling_changing_rate: float = 2e-5,
           scheduled_sampling: bool = True):
    """Standard scheduled sampling: probability of feeding the ground truth at iteration `itr`
    (optimiser steps so far). OpenSTL starts from 1.0 and subtracts the rate *before* sampling,
    so eta(itr) = 1 - rate*(itr+1) while itr < sampling_stop_iter, 0 afterwards (0 throughout
    when scheduled_sampling is off)."""
    xp = _xp(itr)
    itr = xp.asarray(itr)
    if not scheduled_sampling:
        return _out(xp, xp.zeros_like(itr * 1.0))
    eta = xp.maximum(1.0 - sampling_changing_rate * (itr + 1.0), 0.0)
    return _out(xp, xp.where(itr < sampling_stop_iter, eta, 0.0))


def rss_eta(itr, r_sampling_step_1: int = 25000, r_sampling_step_2: int = 50000,
            r_exp_alpha: float = 5000):
    """Reverse scheduled sampling: (r_eta, eta) at iteration `itr`.

    r_eta (input positions t = 1..T-1): 0.5 before step_1, 1 - 0.5*exp(-(itr-step_1)/alpha) up to
    step_2, 1 afterwards. eta (future positions): 0.5 before step_1, linear decay to 0 at step_2,
    0 afterwards.
    """
    xp = _xp(itr)
    itr = xp.asarray(itr) * 1.0
    s1, s2 = r_sampling_step_1, r_sampling_step_2
    r_mid = 1.0 - 0.5 * xp.exp(-(itr - s1) / r_exp_alpha)
    r_eta = xp.where(itr < s1, 0.5, xp.where(itr < s2, r_mid, 1.0))
    e_mid = 0.5 - (0.5 / (s2 - s1)) * (itr - s1)
    eta = xp.where(itr < s1, 0.5, xp.where(itr < s2, e_mid, 0.0))
    return _out(xp, r_eta), _out(xp, eta)


def mask_length(pre_seq_length: int, aft_seq_length: int, reverse: bool) -> int:
    """M, the number of mask steps: T'-1 (standard) or T+T'-2 (reverse scheduled sampling)."""
    return pre_seq_length + aft_seq_length - 2 if reverse else aft_seq_length - 1


def inference_mask(batch_size: int, pre_seq_length: int, aft_seq_length: int, reverse: bool,
              dtype=jnp.float32):
    """OpenSTL's inference mask (B, M): all zeros (standard), or ones on the T-1 input positions
    and zeros on the future ones (reverse). Both mean: ground truth for the T inputs, own
    predictions afterwards."""
    m = mask_length(pre_seq_length, aft_seq_length, reverse)
    flags = np.zeros((m,))
    if reverse:
        flags[:pre_seq_length - 1] = 1.0
    return jnp.broadcast_to(jnp.asarray(flags, dtype), (batch_size, m))


def sample_mask(key, itr, batch_size: int, pre_seq_length: int, aft_seq_length: int,
                reverse: bool = False, scheduled_sampling: bool = True,
                sampling_stop_iter: int = 50000, sampling_changing_rate: float = 2e-5,
                r_sampling_step_1: int = 25000, r_sampling_step_2: int = 50000,
                r_exp_alpha: float = 5000, dtype=jnp.float32):
    """Training mask (B, M) for iteration `itr` (may be traced), one Bernoulli draw per
    (sample, step): 1 = feed the ground truth. Jittable with static sizes and flags."""
    m = mask_length(pre_seq_length, aft_seq_length, reverse)
    u = jax.random.uniform(key, (batch_size, m))
    itr = jnp.asarray(itr)
    if reverse:
        r_eta, eta = rss_eta(itr, r_sampling_step_1, r_sampling_step_2, r_exp_alpha)
        prob = jnp.where(jnp.arange(m) < pre_seq_length - 1, r_eta, eta)
    else:
        prob = ss_eta(itr, sampling_stop_iter, sampling_changing_rate, scheduled_sampling)
    return (u < prob).astype(dtype)


def mask_from_config(cfg, key, itr, batch_size: int, dtype=jnp.float32):
    """`sample_mask` with sizes and schedule constants read from a recurrent model config."""
    return sample_mask(
        key, itr, batch_size, int(cfg.in_shape[0]), int(cfg.out_frames),
        reverse=bool(cfg.reverse_scheduled_sampling),
        scheduled_sampling=bool(cfg.scheduled_sampling),
        sampling_stop_iter=cfg.sampling_stop_iter,
        sampling_changing_rate=cfg.sampling_changing_rate,
        r_sampling_step_1=cfg.r_sampling_step_1, r_sampling_step_2=cfg.r_sampling_step_2,
        r_exp_alpha=cfg.r_exp_alpha, dtype=dtype)
