"""PredRNN, PredRNN-V2 and ConvLSTM as OpenSTL defines them, on one recurrent wrapper.

The models work in frame space on the outside and in patch space on the inside: a video
`(B, T+T', H, W, C)` is patched to `(B, T+T', H/p, W/p, p*p*C)` (patches.py), a stack of cells
runs over T+T'-1 steps with `nn.scan` (step t consumes one frame, chosen by the scheduled-sampling
mask of sampling.py, and predicts frame t+1) and the predictions are patched back. Without a
mask the model uses OpenSTL's test-time mask (pure autoregression after the T inputs).

OpenSTL's ConvLSTM cell also creates `conv_o` and `conv_last` that its forward never uses; they
are kept as parameters (zero gradient) so parameter counts and OpenSTL checkpoints match exactly.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tau_jax.models.framing import crop
from tau_jax.models.convolutions import CollectorSlot, flip_kernel, kernel_grad_collector
from tau_jax.models.layers import chain_passes, compiling_for_cpu
from tau_jax.models.recurrent.cells import (BiasFreeConv, CellBase, ConvLSTMCell,
                                           SpatioTemporalLSTMCell, decouple_term)
from tau_jax.models.recurrent.patches import reshape_patch, reshape_patch_back
from tau_jax.models.recurrent.sampling import inference_mask, mask_length

Dtype = Any


class RecurrentModel(nn.Module):
    """Patch, scan the cell stack over T+T'-1 steps with scheduled sampling, un-patch.

    `__call__(frames, mask=None, train=False) -> (next_frames, aux)`: frames `(B, T+T', H, W, C)`
    (or only the T inputs when mask is None), mask `(B, M)` (sampling.py), next_frames
    `(B, T+T'-1, H, W, C)` = predictions of frames 1..T+T'-1. Subclasses define the cells
    (`_zero_state`, `_layers`) in `setup` together with the 1x1 readout `conv_last`.
    The layers behave the same in both modes; `train` only lets a CPU training pass collect the
    cells' kernel gradients over all steps (`_collectors`).
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

    def _layers(self, x, state, collectors):
        """One time step through all layers: -> (top hidden, new state, per-step extras).
        `collectors`: None, or this step's {cell name: {conv name: CollectorSlot}} for the
        cells of `_collecting_cells` (pass each cell its own)."""
        raise NotImplementedError

    def _collecting_cells(self) -> dict:
        """{name: cell} of the cells whose `step_convs` kernel gradients are collected: by
        default the ST-LSTM lineage's cells (`CellBase`) of `cell_list`."""
        return {cell.name: cell for cell in self.cell_list if isinstance(cell, CellBase)}

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
        return BiasFreeConv(self.patch_grid[2], 1, self.dtype, self.param_dtype, name="conv_last")

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

    def _collectors(self, batch: int, dtype):
        """For a training pass compiled for CPU: (stacked, flipped), {cell name: {conv name: ...}}
        for each cell of `_collecting_cells`: each convolution's `kernel_grad_collector` over the
        steps (its kernel gradient computed after the scan,
        convolutions.conv_collecting_kernel_grad) and its `flip_kernel`, the same for every step;
        else (None, None). GPU/TPU programs keep per-step gradients (not measured there yet)."""
        cells = self._collecting_cells()
        if not cells or self.is_initializing() or not compiling_for_cpu():
            return None, None
        params = self.variables["params"]
        hp, wp, _ = self.patch_grid
        lead = (int(self.in_shape[0]) + self.out_frames - 1, batch, hp, wp)  # (steps, B, H/p, W/p)
        p = self.filter_size // 2
        kernels = {name: {conv: jnp.asarray(params[name][conv]["kernel"], dtype)
                          for conv in cell.step_convs} for name, cell in cells.items()}
        return (jax.tree.map(lambda k: kernel_grad_collector(k, lead, dtype, ((p, p), (p, p))),
                             kernels),
                jax.tree.map(lambda k: jax.lax.stop_gradient(flip_kernel(k)), kernels))

    def _step(self, carry, inputs, flipped):
        state, x_gen = carry
        frame, alpha, stacked = inputs
        slots = stacked and jax.tree.map(lambda f, s: CollectorSlot(*s, f), flipped, stacked)
        a = alpha[:, None, None, None]
        net = a * frame + (1 - a) * x_gen
        h_top, state, extras = self._layers(net, state, slots)
        x_gen = self.conv_last(h_top)
        return (state, x_gen), (x_gen, extras)

    def __call__(self, frames, mask=None, train: bool = False):
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
        stacked, flipped = self._collectors(batch, dt) if train else (None, None)
        xs = (jnp.moveaxis(patches[:, :-1], 1, 0), alpha.T, stacked)
        hp, wp, pc = self.patch_grid
        carry = (self._zero_state(batch, dt), jnp.zeros((batch, hp, wp, pc), dt))
        step = nn.remat(type(self)._step, prevent_cse=False) if self.remat else type(self)._step
        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast), out_axes=0)
        _, (preds, extras) = scan(self, carry, xs, flipped)
        next_frames = reshape_patch_back(jnp.moveaxis(preds, 0, 1), self.patch_size)
        return next_frames, self._aux(extras)


class PredRNN(RecurrentModel):
    """OpenSTL's PredRNN_Model: stacked ST-LSTM cells with one spatiotemporal memory m that
    zig-zags (up through the layers within a step, from the top layer to the bottom one across
    steps); readout `conv_last` 1x1 n_last -> p*p*C, bias-free, no activation."""

    decouple: bool = False  # PredRNN-V2: shared 1x1 adapter and the decoupling loss
    # ((top, bottom), (left, right)) patch cells of padding band (framing.py) that hold no real
    # pixel: left out of the decoupling loss, so it sees the real frame only
    band_cells: tuple = ((0, 0), (0, 0))

    def setup(self):
        self.cell_list = [SpatioTemporalLSTMCell(n, **self._cell_kwargs())
                          for n in self.num_hidden]
        self.conv_last = self._readout()
        if self.decouple:
            n0 = self.num_hidden[0]
            self.adapter = BiasFreeConv(n0, 1, self.dtype, self.param_dtype, name="adapter")

    def _zero_state(self, batch, dtype):
        hp, wp, _ = self.patch_grid
        zeros = lambda n: jnp.zeros((batch, hp, wp, n), dtype)  # noqa: E731
        hs = tuple(zeros(n) for n in self.num_hidden)
        cs = tuple(zeros(n) for n in self.num_hidden)
        return hs, cs, zeros(self.num_hidden[0])

    def _layers(self, x, state, collectors):
        hs, cs, m = state
        hs, cs, terms = list(hs), list(cs), []
        for layer, cell in enumerate(self.cell_list):
            inp = x if layer == 0 else hs[layer - 1]
            hs[layer], cs[layer], m, delta_c, delta_m = cell(
                inp, hs[layer], cs[layer], m, collectors and collectors[cell.name])
            if self.decouple:  # one adapter call on [delta_c; delta_m] stacked along the batch
                dt = jnp.promote_types(delta_c.dtype, jnp.float32)
                a_c, a_m = jnp.split(self.adapter(jnp.concatenate([delta_c, delta_m])), 2)
                a_c, a_m = (crop(a.astype(dt), self.band_cells) for a in (a_c, a_m))
                terms.append(decouple_term(a_c, a_m))
        extras = jnp.stack(terms) if self.decouple else ()
        return hs[-1], (tuple(hs), tuple(cs), m), extras

    def _aux(self, extras) -> dict:
        # mean over all (step, layer) pairs, as OpenSTL averages its list of per-pair terms
        return {"decouple_loss": jnp.mean(extras)} if self.decouple else {}


class PredRNNv2(PredRNN):
    """OpenSTL's PredRNNv2_Model: PredRNN + the memory-decoupling loss, reported as
    aux['decouple_loss'] (the mean over steps and layers of `decouple_term`)."""

    decouple: bool = True


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

    def _layers(self, x, state, collectors):
        hs, cs = (list(s) for s in state)
        for layer, cell in enumerate(self.cell_list):
            inp = x if layer == 0 else hs[layer - 1]
            hs[layer], cs[layer] = cell(inp, hs[layer], cs[layer],
                                        collectors and collectors[cell.name])
        return hs[-1], (tuple(hs), tuple(cs)), ()


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
