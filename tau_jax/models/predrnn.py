"""PredRNN and PredRNN-V2 (ST-LSTM stacks), as OpenSTL defines them; shared recurrent machinery.

The models work in frame space on the outside and in patch space on the inside: a video
`(B, T+T', H, W, C)` is space-to-depth patched to `(B, T+T', H/p, W/p, p*p*C)` (patch channel
`(p_row*p + p_col)*C + c`), a stack of recurrent cells runs over T+T'-1 steps with `nn.scan`
(step t consumes one frame and predicts frame t+1) and the predictions are patched back.

Which frame step t consumes follows OpenSTL's scheduled sampling; `mask` is `(B, M)` of 0/1
(1 = feed the ground-truth frame):
* standard (`reverse_scheduled_sampling = 0`, M = T'-1): t < T ground truth, t >= T
  `mask[t-T]*x_t + (1 - mask[t-T])*x_hat_t`;
* reverse (`= 1`, M = T+T'-2): t = 0 ground truth, t >= 1 `mask[t-1]*x_t + (1 - mask[t-1])*x_hat_t`.
Without a mask the model uses OpenSTL's test-time mask (pure autoregression after the T inputs).

Also here: the scheduled-sampling schedules (reference spec 6.4 / 9.5), a jittable mask sampler
and the training loss (MSE over all T+T'-1 predictions, + beta * decoupling loss for V2).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.layers import (chain_passes, conv_general_dilated_by_backend,
                                   torch_default_kernel_init)

Dtype = Any

FORGET_BIAS = 1.0  # added inside the forget gates of the ST-LSTM cell (not a parameter)


# ----------------------------------------------------------------------------------------------
# Patch reshaping (space-to-depth over the trailing (H, W, C) axes)
# ----------------------------------------------------------------------------------------------

def reshape_patch(x, patch_size: int):
    """(..., H, W, C) -> (..., H/p, W/p, p*p*C), patch channel (p_row*p + p_col)*C + c."""
    p = patch_size
    *lead, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"frame size {h} x {w} is not divisible by patch_size {p}.")
    x = x.reshape(*lead, h // p, p, w // p, p, c)
    n = len(lead)
    x = jnp.moveaxis(x, n + 2, n + 1)  # (..., H/p, W/p, p_row, p_col, C)
    return x.reshape(*lead, h // p, w // p, p * p * c)


def reshape_patch_back(x, patch_size: int):
    """Inverse of `reshape_patch`: (..., H/p, W/p, p*p*C) -> (..., H, W, C)."""
    p = patch_size
    *lead, hp, wp, pc = x.shape
    if pc % (p * p):
        raise ValueError(f"patch channels {pc} are not a multiple of patch_size**2 = {p * p}.")
    c = pc // (p * p)
    x = x.reshape(*lead, hp, wp, p, p, c)
    n = len(lead)
    x = jnp.moveaxis(x, n + 2, n + 1)  # (..., H/p, p_row, W/p, p_col, C)
    return x.reshape(*lead, hp * p, wp * p, c)


# ----------------------------------------------------------------------------------------------
# Scheduled sampling (OpenSTL openstl/utils/predrnn_utils.py; reference spec 6.4, 9.5)
# ----------------------------------------------------------------------------------------------

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
    """`sample_mask` with sizes and schedule constants read from a recurrent model config
    (schedule fields missing from the config take OpenSTL's defaults)."""
    get = lambda name, default: cfg[name] if name in cfg else default  # noqa: E731
    return sample_mask(
        key, itr, batch_size, int(cfg.in_shape[0]), int(cfg.out_frames),
        reverse=bool(cfg.reverse_scheduled_sampling),
        scheduled_sampling=bool(get("scheduled_sampling", 1)),
        sampling_stop_iter=get("sampling_stop_iter", 50000),
        sampling_changing_rate=get("sampling_changing_rate", 2e-5),
        r_sampling_step_1=get("r_sampling_step_1", 25000),
        r_sampling_step_2=get("r_sampling_step_2", 50000),
        r_exp_alpha=get("r_exp_alpha", 5000), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------

def recurrent_loss(next_frames, frames, aux=None, decouple_beta: float = 0.0):
    """OpenSTL's recurrent training loss: MSE between the T+T'-1 predictions and frames 1..T+T'-1
    (input-phase one-step predictions included), + decouple_beta * aux['decouple_loss'] when the
    model reports one (PredRNN-V2). Patch or frame space give the same mean."""
    target = frames[:, 1:]
    if next_frames.shape != target.shape:
        raise ValueError(f"next_frames {next_frames.shape} must match frames[:, 1:] "
                         f"{target.shape}; pass the full (B, T+T', H, W, C) frames.")
    dt = jnp.promote_types(next_frames.dtype, jnp.float32)
    loss = jnp.mean(jnp.square(next_frames.astype(dt) - target.astype(dt)))
    if aux and "decouple_loss" in aux and decouple_beta:
        loss = loss + decouple_beta * aux["decouple_loss"].astype(dt)
    return loss


def _norm(x, axis):
    """L2 norm with a zero (not NaN) gradient at 0, like PyTorch's."""
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def decouple_term(a_c, a_m):
    """mean over (batch, channel) of |cos| between the spatial maps of adapter(delta_c) and
    adapter(delta_m), each (B, h, w, n): OpenSTL L2-normalises over space (eps 1e-12), then takes
    torch.cosine_similarity over space (eps 1e-8)."""
    b, n = a_c.shape[0], a_c.shape[-1]
    a_c = a_c.reshape(b, -1, n)
    a_m = a_m.reshape(b, -1, n)
    a_c = a_c / jnp.maximum(_norm(a_c, 1), 1e-12)
    a_m = a_m / jnp.maximum(_norm(a_m, 1), 1e-12)
    cos = jnp.sum((a_c / jnp.maximum(_norm(a_c, 1), 1e-8)) * (a_m / jnp.maximum(_norm(a_m, 1), 1e-8)),
                  axis=1)
    return jnp.mean(jnp.abs(cos))


# ----------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------

def conv_bias_free(features: int, kernel_size: int, dtype, param_dtype, name: str) -> nn.Conv:
    """OpenSTL's RNN convolution: bias-free, stride 1, symmetric padding k//2, PyTorch init."""
    p = kernel_size // 2
    return nn.Conv(features, (kernel_size, kernel_size), padding=((p, p), (p, p)), use_bias=False,
                   kernel_init=torch_default_kernel_init(), dtype=dtype, param_dtype=param_dtype,
                   conv_general_dilated=conv_general_dilated_by_backend, name=name)


def spatial_layer_norm(dtype, param_dtype, name: str) -> nn.LayerNorm:
    """PyTorch LayerNorm([C, H, W]) in NHWC: statistics and affine over (H, W, C), eps 1e-5."""
    axes = (-3, -2, -1)
    return nn.LayerNorm(epsilon=1e-5, reduction_axes=axes, feature_axes=axes,
                        use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name)


class _CellBase(nn.Module):
    """Conv helpers shared by the ST-LSTM and ConvLSTM cells (names follow OpenSTL's keys)."""

    num_hidden: int
    filter_size: int = 5
    layer_norm: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def gate(self, x, features: int, name: str):
        """k x k conv `name`, then (layer_norm) the LayerNorm `name`_ln."""
        y = conv_bias_free(features, self.filter_size, self.dtype, self.param_dtype, name)(x)
        if self.layer_norm:
            y = spatial_layer_norm(self.dtype, self.param_dtype, f"{name}_ln")(y)
        return y

    def conv1x1(self, x, features: int, name: str):
        return conv_bias_free(features, 1, self.dtype, self.param_dtype, name)(x)


class SpatioTemporalLSTMCell(_CellBase):
    """OpenSTL's SpatioTemporalLSTMCell (PredRNN; the V2 cell is the same and also reports the
    increments delta_c = i*g and delta_m = i'*g').

    `__call__(x, h, c, m) -> (h', c', m', delta_c, delta_m)`, all NHWC. Chunk orders: conv_x 7n ->
    (i, f, g, i', f', g', o); conv_h 4n -> (i, f, g, o); conv_m 3n -> (i', f', g'); conv_o (kxk) and
    the 1x1 conv_last act on [c', m'] (c' first). Forget bias 1.0 inside both forget gates.
    """

    @nn.compact
    def __call__(self, x, h, c, m):
        n = self.num_hidden
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = jnp.split(self.gate(x, 7 * n, "conv_x"), 7, axis=-1)
        i_h, f_h, g_h, o_h = jnp.split(self.gate(h, 4 * n, "conv_h"), 4, axis=-1)
        i_m, f_m, g_m = jnp.split(self.gate(m, 3 * n, "conv_m"), 3, axis=-1)

        i = nn.sigmoid(i_x + i_h)
        f = nn.sigmoid(f_x + f_h + FORGET_BIAS)
        g = jnp.tanh(g_x + g_h)
        delta_c = i * g
        c_new = f * c + delta_c

        i_p = nn.sigmoid(i_xp + i_m)
        f_p = nn.sigmoid(f_xp + f_m + FORGET_BIAS)
        g_p = jnp.tanh(g_xp + g_m)
        delta_m = i_p * g_p
        m_new = f_p * m + delta_m

        mem = jnp.concatenate([c_new, m_new], axis=-1)
        o = nn.sigmoid(o_x + o_h + self.gate(mem, n, "conv_o"))
        h_new = o * jnp.tanh(self.conv1x1(mem, n, "conv_last"))
        return h_new, c_new, m_new, delta_c, delta_m


# ----------------------------------------------------------------------------------------------
# The recurrent wrapper shared by PredRNN, PredRNN-V2 and ConvLSTM
# ----------------------------------------------------------------------------------------------

class RecurrentModel(nn.Module):
    """Patch, scan the cell stack over T+T'-1 steps with scheduled sampling, un-patch.

    `__call__(frames, mask=None, train=False) -> (next_frames, aux)`: frames `(B, T+T', H, W, C)`
    (or only the T inputs when mask is None), mask `(B, M)` (module docstring), next_frames
    `(B, T+T'-1, H, W, C)` = predictions of frames 1..T+T'-1. Subclasses define the cells
    (`_zero_state`, `_layers`) in `setup` together with the 1x1 readout `conv_last`.
    `train` is accepted for the common interface; these models behave the same in both modes.
    """

    in_shape: Sequence[int]  # (T, H, W, C)
    out_frames: int
    num_hidden: Sequence[int]
    patch_size: int
    filter_size: int = 5
    layer_norm: bool = False
    reverse_scheduled_sampling: bool = False
    remat: bool = False  # recompute each step's activations in the backward pass (saves memory)
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    # -- to be provided by subclasses -----------------------------------------------------------
    def _zero_state(self, batch: int, dtype):
        raise NotImplementedError

    def _layers(self, x, state):
        """One time step through all layers: -> (top hidden, new state, per-step extras)."""
        raise NotImplementedError

    def _aux(self, extras) -> dict:
        return {}

    # -- shared ---------------------------------------------------------------------------------
    @property
    def patch_grid(self) -> tuple[int, int, int]:
        _, h, w, c = self.in_shape
        p = self.patch_size
        return h // p, w // p, p * p * c

    @property
    def num_mask_steps(self) -> int:
        return mask_length(self.in_shape[0], self.out_frames, self.reverse_scheduled_sampling)

    def _cell_kwargs(self) -> dict:
        return dict(filter_size=self.filter_size, layer_norm=bool(self.layer_norm),
                    dtype=self.dtype, param_dtype=self.param_dtype)

    def _readout(self):
        return conv_bias_free(self.patch_grid[2], 1, self.dtype, self.param_dtype, "conv_last")

    def _check_inputs(self, frames, mask):
        t_in, h, w, c = (int(v) for v in self.in_shape)
        total = t_in + self.out_frames
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (h, w, c) or \
                frames.shape[1] not in ((total, t_in) if mask is None else (total,)):
            need = f"(B, {total}, {h}, {w}, {c})" + (
                f" or, without a mask, (B, {t_in}, {h}, {w}, {c})" if mask is None else "")
            raise ValueError(f"frames must be {need} (T+T' frames, channels-last), got "
                             f"{tuple(frames.shape)}.")
        if mask is not None:
            m = self.num_mask_steps
            if tuple(mask.shape) != (frames.shape[0], m):
                kind = ("T+T'-2 (reverse scheduled sampling)" if self.reverse_scheduled_sampling
                        else "T'-1 (standard scheduled sampling)")
                raise ValueError(f"mask must have shape (B, M) = ({frames.shape[0]}, {m}) with "
                                 f"M = {kind}, one 0/1 flag per sample and step; got "
                                 f"{tuple(mask.shape)}.")

    def _step(self, carry, inputs):
        state, x_gen = carry
        frame, alpha = inputs
        a = alpha[:, None, None, None]
        net = a * frame + (1 - a) * x_gen
        h_top, state, extras = self._layers(net, state)
        x_gen = self.conv_last(h_top)
        return (state, x_gen), (x_gen, extras)

    def __call__(self, frames, mask=None, train: bool = False):
        del train  # no mode-dependent layers
        self._check_inputs(frames, mask)
        t_in = int(self.in_shape[0])
        total = t_in + self.out_frames
        dt = self.dtype or jnp.result_type(frames.dtype, self.param_dtype)
        frames = jnp.asarray(frames, dt)
        batch = frames.shape[0]
        if frames.shape[1] < total:  # inference on the inputs only: future frames are never fed
            pad = jnp.zeros((batch, total - frames.shape[1]) + frames.shape[2:], dt)
            frames = jnp.concatenate([frames, pad], axis=1)
        if mask is None:
            mask = inference_mask(batch, t_in, self.out_frames, self.reverse_scheduled_sampling, dt)
        # alpha[:, t] = weight of the ground truth at step t (1 where OpenSTL always feeds it).
        forced = 1 if self.reverse_scheduled_sampling else t_in
        alpha = jnp.concatenate([jnp.ones((batch, forced), dt), jnp.asarray(mask, dt)], axis=1)

        patches = reshape_patch(frames, self.patch_size)
        xs = (jnp.moveaxis(patches[:, :-1], 1, 0), alpha.T)
        hp, wp, pc = self.patch_grid
        carry = (self._zero_state(batch, dt), jnp.zeros((batch, hp, wp, pc), dt))
        step = nn.remat(type(self)._step, prevent_cse=False) if self.remat else type(self)._step
        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=0, out_axes=0)
        _, (preds, extras) = scan(self, carry, xs)
        next_frames = reshape_patch_back(jnp.moveaxis(preds, 0, 1), self.patch_size)
        return next_frames, self._aux(extras)


class PredRNN(RecurrentModel):
    """OpenSTL's PredRNN_Model: stacked ST-LSTM cells with one spatiotemporal memory m that
    zig-zags (up through the layers within a step, from the top layer to the bottom one across
    steps); readout `conv_last` 1x1 n_last -> p*p*C, bias-free, no activation."""

    decouple: bool = False  # PredRNN-V2: shared 1x1 adapter and the decoupling loss

    def setup(self):
        self.cell_list = [SpatioTemporalLSTMCell(n, **self._cell_kwargs())
                          for n in self.num_hidden]
        self.conv_last = self._readout()
        if self.decouple:
            n0 = self.num_hidden[0]
            self.adapter = conv_bias_free(n0, 1, self.dtype, self.param_dtype, "adapter")

    def _zero_state(self, batch, dtype):
        hp, wp, _ = self.patch_grid
        zeros = lambda n: jnp.zeros((batch, hp, wp, n), dtype)  # noqa: E731
        hs = tuple(zeros(n) for n in self.num_hidden)
        cs = tuple(zeros(n) for n in self.num_hidden)
        return hs, cs, zeros(self.num_hidden[0])

    def _layers(self, x, state):
        hs, cs, m = state
        hs, cs, terms = list(hs), list(cs), []
        for layer, cell in enumerate(self.cell_list):
            inp = x if layer == 0 else hs[layer - 1]
            hs[layer], cs[layer], m, delta_c, delta_m = cell(inp, hs[layer], cs[layer], m)
            if self.decouple:  # one adapter call on [delta_c; delta_m] stacked along the batch
                dt = jnp.promote_types(delta_c.dtype, jnp.float32)
                a_c, a_m = jnp.split(self.adapter(jnp.concatenate([delta_c, delta_m])), 2)
                terms.append(decouple_term(a_c.astype(dt), a_m.astype(dt)))
        extras = jnp.stack(terms) if self.decouple else ()
        return hs[-1], (tuple(hs), tuple(cs), m), extras

    def _aux(self, extras) -> dict:
        # mean over all (step, layer) pairs, as OpenSTL averages its list of per-pair terms
        return {"decouple_loss": jnp.mean(extras)} if self.decouple else {}


class PredRNNv2(PredRNN):
    """OpenSTL's PredRNNv2_Model: PredRNN + the memory-decoupling loss, reported as
    aux['decouple_loss'] (the mean over steps and layers of `decouple_term`)."""

    decouple: bool = True


# ----------------------------------------------------------------------------------------------
# Inference at any horizon
# ----------------------------------------------------------------------------------------------

def rollout(model: RecurrentModel, variables, inputs, horizon: int):
    """The `horizon` frames after `inputs` (B, T, H, W, C), for any horizon >= 1, in eval mode.

    One pass of the model predicts its T' frames from the T inputs (pure autoregression after the
    inputs, OpenSTL's test-time mask). horizon <= T' keeps the first `horizon` of them; a longer
    horizon rolls on: the last T frames known so far (inputs or predictions, in time order)
    become the next pass's inputs, and passes repeat until `horizon` frames exist, the surplus
    of the last pass being dropped. So the first T' frames always equal the model's own T'
    prediction, and frame k never depends on the horizon asked for.

    Traceable: jit it with `horizon` static, e.g.
    `jax.jit(functools.partial(rollout, model, horizon=20))(variables, inputs)`.
    Returns (B, horizon, H, W, C) in the model's compute dtype.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be a positive int (frames to predict after the inputs), "
                         f"got {horizon!r}.")
    t_in, h, w, c = (int(v) for v in model.in_shape)
    t_out = int(model.out_frames)
    if inputs.ndim != 5 or tuple(inputs.shape[1:]) != (t_in, h, w, c):
        raise ValueError(f"inputs must be (B, {t_in}, {h}, {w}, {c}) (the T input frames, "
                         f"channels-last), got {tuple(inputs.shape)}.")
    return chain_passes(lambda window: model.apply(variables, window, train=False)[0][:, -t_out:],
                        inputs, horizon)


# ----------------------------------------------------------------------------------------------
# Config checks and builders (called by tau_jax.models.build)
# ----------------------------------------------------------------------------------------------

RECURRENT_FIELDS = ("in_shape", "out_frames", "num_hidden", "filter_size", "stride", "patch_size",
                    "layer_norm", "reverse_scheduled_sampling", "decouple_beta", "dtype",
                    "param_dtype")


def parse_num_hidden(value) -> tuple[int, ...]:
    """num_hidden as a tuple of ints; OpenSTL's comma string '128,128,128,128' is accepted."""
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            value = None
    ok = (value is not None and not isinstance(value, (int, float)) and len(value) > 0
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                  for v in value))
    if not ok:
        raise ValueError(f"model.num_hidden must be a non-empty sequence of positive ints (one "
                         f"width per layer, e.g. (128, 128, 128, 128)), got {value!r}.")
    return tuple(int(v) for v in value)


def check_recurrent_config(cfg) -> dict:
    """Validate a recurrent model config; return the module's constructor arguments."""
    from tau_jax.models import _require  # late: tau_jax.models imports this module

    _require(cfg, RECURRENT_FIELDS, cfg.name)
    shape = tuple(cfg.in_shape)
    if len(shape) != 4 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
        raise ValueError(f"model.in_shape must be four positive ints (T, H, W, C), got {shape}.")
    if not isinstance(cfg.out_frames, (int, np.integer)) or cfg.out_frames < 1:
        raise ValueError(f"model.out_frames must be a positive int, got {cfg.out_frames!r}.")
    num_hidden = parse_num_hidden(cfg.num_hidden)
    if cfg.name in ("predrnn", "predrnnv2") and len(set(num_hidden)) != 1:
        raise ValueError(f"model.num_hidden must use one width for every layer in {cfg.name} (the "
                         f"spatiotemporal memory passes between all layers), got {num_hidden}.")
    p = cfg.patch_size
    if not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"model.patch_size must be a positive int, got {p!r}.")
    _, h, w, _ = shape
    if h % p or w % p:
        raise ValueError(f"model.in_shape H x W = {h} x {w} must be divisible by model.patch_size "
                         f"= {p}; pad or resize the frames or pick another patch size.")
    k = cfg.filter_size
    if not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise ValueError(f"model.filter_size must be a positive odd int ('same' padding k//2), "
                         f"got {k!r}.")
    if cfg.stride != 1:
        raise ValueError(f"model.stride must be 1 (OpenSTL's cells keep the state size only with "
                         f"stride 1), got {cfg.stride!r}.")
    for field in ("layer_norm", "reverse_scheduled_sampling"):
        if cfg[field] not in (0, 1):  # True/False compare equal to 1/0
            raise ValueError(f"model.{field} must be 0 or 1, got {cfg[field]!r}.")
    beta = cfg.decouple_beta
    if cfg.name == "predrnnv2" and (not isinstance(beta, (int, float)) or beta < 0):
        raise ValueError(f"model.decouple_beta must be a number >= 0 for predrnnv2, got {beta!r}.")
    return dict(in_shape=tuple(int(v) for v in shape), out_frames=int(cfg.out_frames),
                num_hidden=num_hidden, patch_size=int(p), filter_size=int(k),
                layer_norm=bool(cfg.layer_norm),
                reverse_scheduled_sampling=bool(cfg.reverse_scheduled_sampling),
                remat=bool(cfg.get("remat", False)))


def build_predrnn(cfg, dtypes) -> nn.Module:
    """PredRNN (name 'predrnn') or PredRNN-V2 ('predrnnv2') for a checked config."""
    cls = PredRNNv2 if cfg.name == "predrnnv2" else PredRNN
    return cls(**check_recurrent_config(cfg), **dtypes)


def example_inputs(cfg) -> dict:
    """Batch-1 call arguments: frames (1, T+T', H, W, C) and a mask (1, M) of zeros."""
    from tau_jax.models import resolve_dtype

    t, h, w, c = (int(v) for v in cfg.in_shape)
    dt = resolve_dtype(cfg.param_dtype, "param_dtype")
    m = mask_length(t, int(cfg.out_frames), bool(cfg.reverse_scheduled_sampling))
    return dict(frames=jnp.zeros((1, t + int(cfg.out_frames), h, w, c), dt),
                mask=jnp.zeros((1, m), dt))


def param_count_formula(in_channels: int, num_hidden: Sequence[int], filter_size: int,
                        out_channels: int, adapter: bool = False) -> int:
    """Closed form of the ST-LSTM stack size without layer norm (reference spec 9.2)."""
    total, k2 = 0, filter_size * filter_size
    for layer, n in enumerate(num_hidden):
        cin = in_channels if layer == 0 else num_hidden[layer - 1]
        total += k2 * (7 * n * cin + 4 * n * n + 3 * n * n + n * 2 * n) + 2 * n * n
    total += num_hidden[-1] * out_channels
    if adapter:
        total += num_hidden[0] ** 2
    return total


__all__ = ["reshape_patch", "reshape_patch_back", "ss_eta", "rss_eta", "mask_length", "inference_mask",
           "sample_mask", "mask_from_config", "recurrent_loss", "decouple_term",
           "SpatioTemporalLSTMCell", "RecurrentModel", "PredRNN", "PredRNNv2", "build_predrnn",
           "check_recurrent_config", "example_inputs", "parse_num_hidden", "rollout"]
