"""The recurrent cells, named as OpenSTL's keys: PredRNN's spatiotemporal LSTM and ConvLSTM, and
PredRNN-V2's memory-decoupling term."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.convolutions import conv_collecting_kernel_grad, conv_general_dilated_by_backend
from tau_jax.models.layers import torch_default_kernel_init

Dtype = Any

FORGET_BIAS = 1.0  # added inside the forget gates of the ST-LSTM cell (not a parameter)


class BiasFreeConv(nn.Module):
    """OpenSTL's RNN convolution: bias-free, stride 1, symmetric padding k//2, PyTorch init
    (nn.Conv's parameter and values). `__call__(x, collector=None)`: with a collector (this
    convolution's `convolutions.CollectorSlot`, CPU training) the kernel gradient is left to the
    collector; without, `conv_general_dilated_by_backend`."""

    features: int
    kernel_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, collector=None):
        k, p = self.kernel_size, self.kernel_size // 2
        kernel = self.param("kernel", torch_default_kernel_init(),
                            (k, k, x.shape[-1], self.features), self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        padding = ((p, p), (p, p))
        if collector is not None:
            return conv_collecting_kernel_grad(x, kernel, collector, padding)
        return conv_general_dilated_by_backend(x, kernel, (1, 1), padding,
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))


def spatial_layer_norm(dtype, param_dtype, name: str) -> nn.LayerNorm:
    """PyTorch LayerNorm([C, H, W]) in NHWC: statistics and affine over (H, W, C), eps 1e-5."""
    axes = (-3, -2, -1)
    return nn.LayerNorm(epsilon=1e-5, reduction_axes=axes, feature_axes=axes,
                        use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name)


class CellBase(nn.Module):
    """Conv helpers shared by the ST-LSTM and ConvLSTM cells (names follow OpenSTL's keys).

    `step_convs` names the k x k gate convolutions a cell runs every step: the ones whose kernel
    gradients a recurrent model can collect (`collectors`, {conv name: CollectorSlot})."""

    step_convs: ClassVar[tuple[str, ...]] = ()

    num_hidden: int
    filter_size: int = 5
    layer_norm: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def gate(self, x, features: int, name: str, collectors=None):
        """k x k conv `name` (its kernel gradient left to collectors[name] if given), then
        (layer_norm) the LayerNorm `name`_ln."""
        collector = None if collectors is None else collectors[name]
        y = BiasFreeConv(features, self.filter_size, self.dtype, self.param_dtype,
                         name=name)(x, collector)
        if self.layer_norm:
            y = spatial_layer_norm(self.dtype, self.param_dtype, f"{name}_ln")(y)
        return y

    def conv1x1(self, x, features: int, name: str):
        return BiasFreeConv(features, 1, self.dtype, self.param_dtype, name=name)(x)


class SpatioTemporalLSTMCell(CellBase):
    """OpenSTL's SpatioTemporalLSTMCell (PredRNN; the V2 cell is the same and also reports the
    increments delta_c = i*g and delta_m = i'*g').

    `__call__(x, h, c, m) -> (h', c', m', delta_c, delta_m)`, all NHWC. Chunk orders: conv_x 7n ->
    (i, f, g, i', f', g', o); conv_h 4n -> (i, f, g, o); conv_m 3n -> (i', f', g'); conv_o (kxk) and
    the 1x1 conv_last act on [c', m'] (c' first). Forget bias 1.0 inside both forget gates.
    """

    step_convs: ClassVar[tuple[str, ...]] = ("conv_x", "conv_h", "conv_m", "conv_o")

    @nn.compact
    def __call__(self, x, h, c, m, collectors=None):
        n, gate = self.num_hidden, functools.partial(self.gate, collectors=collectors)
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = jnp.split(gate(x, 7 * n, "conv_x"), 7, axis=-1)
        i_h, f_h, g_h, o_h = jnp.split(gate(h, 4 * n, "conv_h"), 4, axis=-1)
        i_m, f_m, g_m = jnp.split(gate(m, 3 * n, "conv_m"), 3, axis=-1)

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
        o = nn.sigmoid(o_x + o_h + gate(mem, n, "conv_o"))
        h_new = o * jnp.tanh(self.conv1x1(mem, n, "conv_last"))
        return h_new, c_new, m_new, delta_c, delta_m


class _Unused(nn.Module):
    """Holds parameters OpenSTL creates but never uses, named like the real leaves:
    `leaves` = ((leaf name, shape, init), ...) with init 'torch' (conv kernel), 'ones' or 'zeros'."""

    leaves: tuple
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self):
        inits = {"torch": torch_default_kernel_init(), "ones": nn.initializers.ones,
                 "zeros": nn.initializers.zeros}
        for leaf, shape, init in self.leaves:
            self.param(leaf, inits[init], tuple(shape), self.param_dtype)


class ConvLSTMCell(CellBase):
    """OpenSTL's ConvLSTMCell (HEAD): conv_x, conv_h k x k -> 4n chunks (i, f, g, o), no forget
    bias; c' = f*c + i*g, h' = o*tanh(c'). `__call__(x, h, c) -> (h', c')`, NHWC."""

    step_convs: ClassVar[tuple[str, ...]] = ("conv_x", "conv_h")

    @nn.compact
    def __call__(self, x, h, c, collectors=None):
        n, k = self.num_hidden, self.filter_size
        i_x, f_x, g_x, o_x = jnp.split(self.gate(x, 4 * n, "conv_x", collectors), 4, axis=-1)
        i_h, f_h, g_h, o_h = jnp.split(self.gate(h, 4 * n, "conv_h", collectors), 4, axis=-1)
        i = nn.sigmoid(i_x + i_h)
        f = nn.sigmoid(f_x + f_h)
        g = jnp.tanh(g_x + g_h)
        o = nn.sigmoid(o_x + o_h)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        # created, never used (parameter-count and checkpoint parity with OpenSTL)
        pd = self.param_dtype
        _Unused((("kernel", (k, k, 2 * n, n), "torch"),), pd, name="conv_o")()
        if self.layer_norm:
            hwn = tuple(x.shape[-3:-1]) + (n,)
            _Unused((("scale", hwn, "ones"), ("bias", hwn, "zeros")), pd, name="conv_o_ln")()
        _Unused((("kernel", (1, 1, 2 * n, n), "torch"),), pd, name="conv_last")()
        return h_new, c_new



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
