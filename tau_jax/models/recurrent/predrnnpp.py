"""OpenSTL's PredRNNpp_Model (PredRNN++): stacked causal LSTM cells with a gradient highway unit
(GHU) between layers 0 and 1, on the recurrent wrapper (model.py).

Interface the family (__init__.py) uses: `PredRNNpp` (the Flax module), `check_config(cfg)`
(model-specific checks, no extra constructor arguments) and `KEY_RULES` (Flax path -> OpenSTL key).

Step t (all states start at zero; one spatiotemporal memory m zig-zags through the layers and
carries over to the next step, so every layer has the same width):
  h0, c0, m = cell_0(x, h0, c0, m);  z = GHU(h0, z);  h1, c1, m = cell_1(z, h1, c1, m);
  h_i, c_i, m = cell_i(h_{i-1}, h_i, c_i, m) for i >= 2;  x_gen = conv_last(h_top).

OpenSTL forward-pass quirks kept:
  * `CausalLSTMCell.conv_o` (k x k, 2n -> n) is built but never used: kept as a parameter with
    zero gradient, so parameter counts and checkpoints match.
  * conv_c2m's chunks are (i, g, f, o) (g before f), unlike the other convs' (i, f, g, ...).
  * the output gate is tanh, not sigmoid: o = tanh(o_x + o_h + o_c2m + conv_om(m')).
  * the new memory forgets through tanh(m_m), not m: m' = sigma(f') tanh(m_m) + sigma(i') g'.
  * GHU convs start U(-0.001, 0.001) (OpenSTL's GHU init).
Not supported: layer_norm = 1, which crashes in OpenSTL (its GHU LayerNorm is built for n channels
and applied to 2n).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.convolutions import conv_general_dilated_by_backend
from tau_jax.models.recurrent.cells import FORGET_BIAS, CellBase, _Unused
from tau_jax.models.recurrent.model import RecurrentModel

# cell_list_i.conv_{c,c2m,om} and the GHU convs sit at index 0 of an nn.Sequential in OpenSTL
# (conv_{x,h,m,o} and conv_last are covered by the family's rules).
KEY_RULES: list[tuple[str, str]] = [
    (r"^cell_list_(\d+)\.(conv_(?:c|c2m|om))\.$", r"cell_list.\1.\2.0."),
    (r"^gradient_highway\.([xz]_concat)\.$", r"gradient_highway.\1.0."),
]


def check_config(cfg) -> dict:
    """PredRNN++ needs >= 2 layers of one width and layer_norm = 0."""
    from tau_jax.models.recurrent import parse_num_hidden

    num_hidden = parse_num_hidden(cfg.num_hidden)
    if len(num_hidden) < 2 or len(set(num_hidden)) != 1:
        raise ValueError(f"model.num_hidden must list at least 2 layers of one width for "
                         f"predrnnpp (layer 1 takes the gradient highway's output and one memory "
                         f"passes through every layer), got {num_hidden}.")
    if cfg.layer_norm:
        raise ValueError("model.layer_norm must be 0 for predrnnpp: OpenSTL's PredRNN++ crashes "
                         "with layer_norm = 1 (its gradient highway's LayerNorm has the wrong "
                         "width), so no such model exists to match.")
    return {}


class CausalLSTMCell(CellBase):
    """OpenSTL's CausalLSTMCell. `__call__(x, h, c, m) -> (h', c', m')`, NHWC.

    Chunks: conv_x 7n -> (i, f, g, i', f', g', o); conv_h 4n -> (i, f, g, o); conv_c 3n ->
    (i, f, g); conv_m 3n -> (i', f', m_m); conv_c2m(c') 4n -> (i', g', f', o); conv_om(m') n;
    1x1 conv_last on [c', m']. Forget bias 1.0 in both forget gates.
    """

    step_convs: ClassVar[tuple[str, ...]] = ("conv_x", "conv_h", "conv_c", "conv_m", "conv_c2m",
                                             "conv_om")

    @nn.compact
    def __call__(self, x, h, c, m, collectors=None):
        n, k = self.num_hidden, self.filter_size
        gate = functools.partial(self.gate, collectors=collectors)
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = jnp.split(gate(x, 7 * n, "conv_x"), 7, axis=-1)
        i_h, f_h, g_h, o_h = jnp.split(gate(h, 4 * n, "conv_h"), 4, axis=-1)
        i_c, f_c, g_c = jnp.split(gate(c, 3 * n, "conv_c"), 3, axis=-1)
        i_m, f_m, m_m = jnp.split(gate(m, 3 * n, "conv_m"), 3, axis=-1)

        c_new = (nn.sigmoid(f_x + f_h + f_c + FORGET_BIAS) * c
                 + nn.sigmoid(i_x + i_h + i_c) * jnp.tanh(g_x + g_h + g_c))
        i_c2, g_c2, f_c2, o_c2 = jnp.split(gate(c_new, 4 * n, "conv_c2m"), 4, axis=-1)
        m_new = (nn.sigmoid(f_xp + f_m + f_c2 + FORGET_BIAS) * jnp.tanh(m_m)
                 + nn.sigmoid(i_xp + i_m + i_c2) * jnp.tanh(g_xp + g_c2))
        o = jnp.tanh(o_x + o_h + o_c2 + gate(m_new, n, "conv_om"))
        h_new = o * jnp.tanh(self.conv1x1(jnp.concatenate([c_new, m_new], -1), n, "conv_last"))
        # built, never used (parameter-count and checkpoint parity with OpenSTL)
        _Unused((("kernel", (k, k, 2 * n, n), "torch"),), self.param_dtype, name="conv_o")()
        return h_new, c_new, m_new


def _uniform_pm(a):
    """U(-a, a) initialiser (PyTorch's nn.init.uniform_(w, -a, a))."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -a, a)
    return init


class GHU(nn.Module):
    """OpenSTL's gradient highway unit: p, u = split(x_concat(x) + z_concat(z));
    z' = sigma(u) tanh(p) + (1 - sigma(u)) z. Both convs k x k -> 2n, bias-free."""

    num_hidden: int
    filter_size: int = 5
    dtype: object = None
    param_dtype: object = jnp.float32

    def _conv(self, name):
        k, p = self.filter_size, self.filter_size // 2
        return nn.Conv(2 * self.num_hidden, (k, k), padding=((p, p), (p, p)), use_bias=False,
                       kernel_init=_uniform_pm(1e-3),
                       dtype=self.dtype, param_dtype=self.param_dtype,
                       conv_general_dilated=conv_general_dilated_by_backend, name=name)

    @nn.compact
    def __call__(self, x, z):
        gates = self._conv("x_concat")(x) + self._conv("z_concat")(z)
        p, u = jnp.split(gates, 2, axis=-1)
        u = nn.sigmoid(u)
        return u * jnp.tanh(p) + (1 - u) * z


class PredRNNpp(RecurrentModel):
    """OpenSTL's PredRNNpp_Model (module docstring): causal LSTM cells `cell_list_i`, the GHU
    `gradient_highway` after layer 0, readout `conv_last` 1x1 n -> p*p*C, bias-free."""

    def setup(self):
        kw = self._cell_kwargs()
        self.cell_list = [CausalLSTMCell(n, **kw) for n in self.num_hidden]
        self.gradient_highway = GHU(self.num_hidden[0], self.filter_size, self.dtype,
                                    self.param_dtype)
        self.conv_last = self._readout()

    def _zero_state(self, batch, dtype):
        hp, wp, _ = self.patch_grid
        zeros = lambda n: jnp.zeros((batch, hp, wp, n), dtype)  # noqa: E731
        hs = tuple(zeros(n) for n in self.num_hidden)
        cs = tuple(zeros(n) for n in self.num_hidden)
        n0 = self.num_hidden[0]
        return hs, cs, zeros(n0), zeros(n0)  # ..., memory m, highway state z

    def _layers(self, x, state, collectors):
        hs, cs, m, z = state
        hs, cs = list(hs), list(cs)
        own = lambda i: collectors and collectors[self.cell_list[i].name]  # noqa: E731
        hs[0], cs[0], m = self.cell_list[0](x, hs[0], cs[0], m, own(0))
        z = self.gradient_highway(hs[0], z)
        hs[1], cs[1], m = self.cell_list[1](z, hs[1], cs[1], m, own(1))
        for i in range(2, len(self.cell_list)):
            hs[i], cs[i], m = self.cell_list[i](hs[i - 1], hs[i], cs[i], m, own(i))
        return hs[-1], (tuple(hs), tuple(cs), m, z), ()
