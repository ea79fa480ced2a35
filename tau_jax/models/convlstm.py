"""ConvLSTM as OpenSTL defines it (HEAD cell, h = o * tanh(c)), on PredRNN's recurrent wrapper.

Same patching, scan, scheduled sampling and loss as PredRNN (tau_jax/models/predrnn.py); the
stack keeps h and c per layer and has no spatiotemporal memory. OpenSTL's ConvLSTMCell also
creates `conv_o` (kxk, 2n -> n) and `conv_last` (1x1, 2n -> n) that its forward never uses; they
are kept here as parameters (untouched by the forward pass, zero gradient) so parameter counts
and OpenSTL checkpoints match exactly.
"""

from __future__ import annotations

from flax import linen as nn
import jax.numpy as jnp

from tau_jax.models.layers import torch_default_kernel_init
from tau_jax.models.predrnn import RecurrentModel, _CellBase, check_recurrent_config


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


class ConvLSTMCell(_CellBase):
    """OpenSTL's ConvLSTMCell (HEAD): conv_x, conv_h k x k -> 4n chunks (i, f, g, o), no forget
    bias; c' = f*c + i*g, h' = o*tanh(c'). `__call__(x, h, c) -> (h', c')`, NHWC."""

    @nn.compact
    def __call__(self, x, h, c):
        n, k = self.num_hidden, self.filter_size
        i_x, f_x, g_x, o_x = jnp.split(self.gate(x, 4 * n, "conv_x"), 4, axis=-1)
        i_h, f_h, g_h, o_h = jnp.split(self.gate(h, 4 * n, "conv_h"), 4, axis=-1)
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


class ConvLSTM(RecurrentModel):
    """OpenSTL's ConvLSTM_Model: stacked ConvLSTM cells (layer l > 0 takes h of layer l-1),
    readout `conv_last` 1x1 n_last -> p*p*C, bias-free."""

    def setup(self):
        self.cell_list = [ConvLSTMCell(n, **self._cell_kwargs()) for n in self.num_hidden]
        self.conv_last = self._readout()

    def _zero_state(self, batch, dtype):
        hp, wp, _ = self.patch_grid
        hs = tuple(jnp.zeros((batch, hp, wp, n), dtype) for n in self.num_hidden)
        cs = tuple(jnp.zeros((batch, hp, wp, n), dtype) for n in self.num_hidden)
        return hs, cs

    def _layers(self, x, state):
        hs, cs = (list(s) for s in state)
        for layer, cell in enumerate(self.cell_list):
            inp = x if layer == 0 else hs[layer - 1]
            hs[layer], cs[layer] = cell(inp, hs[layer], cs[layer])
        return hs[-1], (tuple(hs), tuple(cs)), ()


def build_convlstm(cfg, dtypes) -> nn.Module:
    """ConvLSTM for a checked config (name 'convlstm')."""
    return ConvLSTM(**check_recurrent_config(cfg), **dtypes)
