"""OpenSTL's MIM_Model (Memory In Memory) on the recurrent wrapper (model.py).

Interface the family (__init__.py) uses: `MIM` (the Flax module), `check_config(cfg)`
(model-specific checks, no extra constructor arguments), `KEY_RULES` (Flax path -> OpenSTL key)
and `frame_rule(cfg)` (MIM's elementwise weights fix the frame grid).

Layer 0 is PredRNN's ST-LSTM cell (cells.SpatioTemporalLSTMCell, the same math as OpenSTL's:
h' = sigma(o_x + o_h + conv_o(M)) tanh(conv_last(M)), M = [c', m']); layers i >= 1 are MIM blocks;
between layers i-1 and i a MIMN cell `stlstm_layer_diff_{i-1}` tracks differences. Step t:
  preh = h0;  h0, c0, m = stlstm_layer_0(x, h0, c0, m)
  for i >= 1: if t > 0: d_{i-1}, dc_{i-1} = MIMN_{i-1}(h0 - preh if i = 1 else d_{i-2},
                                                     d_{i-1}, dc_{i-1})
              h_i, c_i, m = MIMBlock_i(h_{i-1}, d_{i-1}, h_i, c_i, m)
  x_gen = conv_last(h_top)
All states start at zero; one memory m zig-zags through the layers, so every width is equal.

OpenSTL forward-pass quirks kept:
  * MIMN's `conv_last` (1x1, 2n -> n) is built but never used: kept as a parameter (zero
    gradient) for parameter-count and checkpoint parity.
  * at t = 0 the MIMN cells run on zeros and their result is discarded: the difference states
    stay zero through step 0.
  * conv_h_concat / conv_x_concat chunks are (i, g, f, o) (g before f); conv_t_cc (i, g, o);
    conv_s_cc / conv_x_cc (i, g, f, o). The MIMN input conv runs even on an all-zero input
    (with layer_norm its LayerNorm bias then still acts).
  * ct_weight (H/p, W/p, 2n) and oc_weight (H/p, W/p, n) are elementwise weights over the patch
    grid (zero-initialised as in OpenSTL), so a model only runs on its in_shape's frame size.
OpenSTL bug not copied: each MIMBlock keeps its MIMS inner cell S (`convlstm_c`) on the module and
never resets it, so one forward call continues from the previous call's last S (which is why
OpenSTL asserts batch_size == val_batch_size). Here S is part of the scanned state and every call
starts from S = 0, as OpenSTL's first call on a fresh model does.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax.numpy as jnp
from flax import linen as nn

from tau_jax.models.recurrent.cells import FORGET_BIAS, CellBase, SpatioTemporalLSTMCell, _Unused
from tau_jax.models.recurrent.model import RecurrentModel

# stlstm_layer{,_diff}_i.conv_* (but conv_last) sit at index 0 of an nn.Sequential in OpenSTL,
# their LayerNorm (Flax `<conv>_ln`) at index 1.
KEY_RULES: list[tuple[str, str]] = [
    (r"^(stlstm_layer(?:_diff)?)_(\d+)\.(conv_(?!last)\w+)_ln\.$", r"\1.\2.\3.1."),
    (r"^(stlstm_layer(?:_diff)?)_(\d+)\.(conv_(?!last)\w+)\.$", r"\1.\2.\3.0."),
    (r"^(stlstm_layer(?:_diff)?)_(\d+)\.", r"\1.\2."),
]


def check_config(cfg) -> dict:
    """MIM needs one width for every layer."""
    from tau_jax.models.recurrent import parse_num_hidden

    num_hidden = parse_num_hidden(cfg.num_hidden)
    if len(set(num_hidden)) != 1:
        raise ValueError(f"model.num_hidden must use one width for every layer in mim (one "
                         f"memory passes through every layer), got {num_hidden}.")
    return {}


def frame_rule(cfg) -> tuple[int, str | None]:
    """Frames of exactly in_shape's size (ct_weight / oc_weight span the patch grid)."""
    return int(cfg.patch_size), (
        "its MIM blocks have elementwise weights (ct_weight, oc_weight) over the whole frame grid")


class _MIMSCell(CellBase):
    """The MIMN / MIMS recurrence with this module's conv_h_concat, conv_x_concat, ct_weight and
    oc_weight: `mims(x, h, c) -> (h', c')`.

      conv_h_concat(h) -> i_h, g_h, f_h, o_h;  i_c, f_c = split([c, c] * ct_weight)
      conv_x_concat(x) -> i_x, g_x, f_x, o_x
      c' = sigma(f_h + f_c + f_x + 1) c + sigma(i_h + i_c + i_x) tanh(g_h + g_x)
      h' = sigma(o_h + o_x + c' * oc_weight) tanh(c')
    """

    def _grid_param(self, name, c, features):
        shape = tuple(c.shape[-3:-1]) + (features,)
        return jnp.asarray(self.param(name, nn.initializers.zeros, shape, self.param_dtype),
                           c.dtype)

    def mims(self, x, h, c, collectors):
        n = self.num_hidden
        i_h, g_h, f_h, o_h = jnp.split(self.gate(h, 4 * n, "conv_h_concat", collectors), 4,
                                       axis=-1)
        ct = self._grid_param("ct_weight", c, 2 * n)
        i_c, f_c = jnp.split(jnp.concatenate([c, c], axis=-1) * ct, 2, axis=-1)
        i_x, g_x, f_x, o_x = jnp.split(self.gate(x, 4 * n, "conv_x_concat", collectors), 4,
                                       axis=-1)
        i = nn.sigmoid(i_h + i_c + i_x)
        f = nn.sigmoid(f_h + f_c + f_x + FORGET_BIAS)
        c_new = f * c + i * jnp.tanh(g_h + g_x)
        o_c = c_new * self._grid_param("oc_weight", c, n)
        h_new = nn.sigmoid(o_h + o_x + o_c) * jnp.tanh(c_new)
        return h_new, c_new


class MIMN(_MIMSCell):
    """OpenSTL's MIMN: `__call__(x, h, c) -> (h', c')` (_MIMSCell.mims); conv_last unused."""

    step_convs: ClassVar[tuple[str, ...]] = ("conv_h_concat", "conv_x_concat")

    @nn.compact
    def __call__(self, x, h, c, collectors=None):
        n = self.num_hidden
        _Unused((("kernel", (1, 1, 2 * n, n), "torch"),), self.param_dtype, name="conv_last")()
        return self.mims(x, h, c, collectors)


class MIMBlock(_MIMSCell):
    """OpenSTL's MIMBlock: `__call__(x, diff_h, h, c, m, s) -> (h', c', m', s')`, where s is the
    block's MIMS inner cell (OpenSTL's `convlstm_c`, carried in the scan state here).

      conv_t_cc(h) -> i_t, g_t, o_t;  conv_s_cc(m) -> i_s, g_s, f_s, o_s;
      conv_x_cc(x) -> i_x, g_x, f_x, o_x
      m' = sigma(f_x + f_s + 1) m + sigma(i_x + i_s) tanh(g_x + g_s)
      c_mims, s' = mims(x=diff_h, h=c, c=s);  c' = c_mims + sigma(i_x + i_t) tanh(g_x + g_t)
      h' = sigma(o_x + o_t + o_s) tanh(conv_last([c', m']))
    """

    step_convs: ClassVar[tuple[str, ...]] = ("conv_t_cc", "conv_s_cc", "conv_x_cc",
                                             "conv_h_concat", "conv_x_concat")

    @nn.compact
    def __call__(self, x, diff_h, h, c, m, s, collectors=None):
        n, gate = self.num_hidden, functools.partial(self.gate, collectors=collectors)
        i_t, g_t, o_t = jnp.split(gate(h, 3 * n, "conv_t_cc"), 3, axis=-1)
        i_s, g_s, f_s, o_s = jnp.split(gate(m, 4 * n, "conv_s_cc"), 4, axis=-1)
        i_x, g_x, f_x, o_x = jnp.split(gate(x, 4 * n, "conv_x_cc"), 4, axis=-1)
        m_new = (nn.sigmoid(f_x + f_s + FORGET_BIAS) * m
                 + nn.sigmoid(i_x + i_s) * jnp.tanh(g_x + g_s))
        c_mims, s_new = self.mims(diff_h, c, s, collectors)
        c_new = c_mims + nn.sigmoid(i_x + i_t) * jnp.tanh(g_x + g_t)
        o = nn.sigmoid(o_x + o_t + o_s)
        h_new = o * jnp.tanh(self.conv1x1(jnp.concatenate([c_new, m_new], -1), n, "conv_last"))
        return h_new, c_new, m_new, s_new


class MIM(RecurrentModel):
    """OpenSTL's MIM_Model (module docstring): `stlstm_layer_0` an ST-LSTM cell,
    `stlstm_layer_i` (i >= 1) MIM blocks, `stlstm_layer_diff_j` MIMN cells, readout `conv_last`
    1x1 n -> p*p*C, bias-free."""

    def setup(self):
        kw = self._cell_kwargs()
        n = self.num_hidden
        self.stlstm_layer = [SpatioTemporalLSTMCell(n[0], **kw)] + [
            MIMBlock(n[i], **kw) for i in range(1, len(n))]
        self.stlstm_layer_diff = [MIMN(n[i + 1], **kw) for i in range(len(n) - 1)]
        self.conv_last = self._readout()

    def _zero_state(self, batch, dtype):
        hp, wp, _ = self.patch_grid
        zeros = lambda n: jnp.zeros((batch, hp, wp, n), dtype)  # noqa: E731
        per_layer = lambda: tuple(zeros(n) for n in self.num_hidden)  # noqa: E731
        diffs = lambda: tuple(zeros(n) for n in self.num_hidden[1:])  # noqa: E731
        # h, c, memory m, MIMN hidden d and cell dc, MIMS inner cells s, "step > 0" flag
        return (per_layer(), per_layer(), zeros(self.num_hidden[0]), diffs(), diffs(), diffs(),
                jnp.zeros((), bool))

    def _collecting_cells(self) -> dict:
        return {cell.name: cell for cell in (*self.stlstm_layer, *self.stlstm_layer_diff)}

    def _layers(self, x, state, collectors):
        hs, cs, m, ds, dcs, ss, started = state
        hs, cs, ds, dcs, ss = (list(v) for v in (hs, cs, ds, dcs, ss))
        own = lambda cell: collectors and collectors[cell.name]  # noqa: E731
        preh = hs[0]
        hs[0], cs[0], m, _, _ = self.stlstm_layer[0](x, hs[0], cs[0], m, own(self.stlstm_layer[0]))
        for i in range(1, len(self.stlstm_layer)):
            inp = hs[0] - preh if i == 1 else ds[i - 2]
            diff = self.stlstm_layer_diff[i - 1]
            d, dc = diff(inp, ds[i - 1], dcs[i - 1], own(diff))
            ds[i - 1] = jnp.where(started, d, ds[i - 1])  # step 0: MIMN output discarded
            dcs[i - 1] = jnp.where(started, dc, dcs[i - 1])
            block = self.stlstm_layer[i]
            hs[i], cs[i], m, ss[i - 1] = block(hs[i - 1], ds[i - 1], hs[i], cs[i], m, ss[i - 1],
                                               own(block))
        state = (tuple(hs), tuple(cs), m, tuple(ds), tuple(dcs), tuple(ss), jnp.ones((), bool))
        return hs[-1], state, ()
