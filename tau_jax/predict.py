"""Inference from a trained (or converted) run: any horizon, raw units, batching, export.

    predictor = tau_jax.predict.load("runs/mmnist")      # saved config + newest checkpoint
    future = predictor.predict(frames, horizon=20)        # (N, T, H, W, C) raw -> (N, 20, H, W, C)
    predictor.export("mmnist.jaxexport", horizon=20)      # jax.export, no model code needed
    run = tau_jax.predict.load_exported("mmnist.jaxexport"); run.predict(frames)

Units: inputs are in the dataset's stored units (uint8 images as 0..255, physical values for
float data); they are normalised as the training source normalises (`(x - sub) / div`), and the
predictions are mapped back to the same units. These constants are read from
`<workdir>/normalisation.json`; when that file is missing they are taken from the training source
of the saved config (`tau_jax.data.get_source(config.data, 'train')`, which prepares the dataset
if it is not prepared yet) on first use and written there.

Horizons: the model predicts `out_frames` frames per pass; a longer horizon rolls on with the
model's own outputs (the last T frames known so far feed the next pass, as OpenSTL's roll-out),
a shorter one keeps the first frames. Inputs with more than T frames use their last T.

`convert_openstl(state_dict, config, workdir)` makes a workdir (config.json + a step-0 checkpoint)
from OpenSTL weights that `tau-jax eval` and `load` accept.
"""

from __future__ import annotations

import functools
import json
import logging
import pathlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from tau_jax import models
from tau_jax.models import predrnn

NORM_FILE = "normalisation.json"


# ----------------------------------------------------------------------------------------------
# Shared checks and roll-out
# ----------------------------------------------------------------------------------------------

def check_horizon(horizon) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be a positive number of frames to predict, got "
                         f"{horizon!r}.")
    return int(horizon)


def check_frames(frames, in_shape) -> np.ndarray:
    """(N, T, H, W, C) float32, the last T frames of `frames`; ValueError naming expected vs
    got for a wrong rank, frame size, channel count or too few frames."""
    t, h, w, c = (int(v) for v in in_shape)
    frames = np.asarray(frames)
    if frames.ndim != 5:
        raise ValueError(f"frames must be (N, T, H, W, C) = (N, >={t}, {h}, {w}, {c}), got shape "
                         f"{frames.shape}.")
    if tuple(frames.shape[2:4]) != (h, w):
        raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[3]} (H x W) but the model "
                         f"expects {h}x{w} (model.in_shape {tuple(in_shape)}); resize or crop "
                         "them.")
    if frames.shape[4] != c:
        raise ValueError(f"frames have {frames.shape[4]} channel(s) but the model expects {c} "
                         f"(model.in_shape {tuple(in_shape)}).")
    if frames.shape[1] < t:
        raise ValueError(f"the model needs {t} input frames, got {frames.shape[1]}.")
    if frames.shape[0] < 1:
        raise ValueError("frames hold no sequences (N = 0).")
    return frames[:, -t:].astype(np.float32)


def simvp_rollout(model, variables, inputs, horizon: int):
    """The `horizon` frames after `inputs` (B, T, H, W, C) for the SimVP family, in eval mode:
    passes of the model chained on its own outputs (the last T frames known so far)."""
    t_in = int(model.in_shape[0])
    window, preds, have = inputs, [], 0
    while have < horizon:
        new = model.apply(variables, window, train=False)
        preds.append(new)
        have += new.shape[1]
        if have < horizon:
            window = jnp.concatenate([window.astype(new.dtype), new], axis=1)[:, -t_in:]
    out = preds[0] if len(preds) == 1 else jnp.concatenate(preds, axis=1)
    return out[:, :horizon]


def rollout(model, model_config, variables, inputs, horizon: int):
    """Normalised inputs -> `horizon` normalised float32 predictions, either family."""
    if model_config.name in models.RECURRENT:
        out = predrnn.rollout(model, variables, inputs, horizon)
    else:
        out = simvp_rollout(model, variables, inputs, horizon)
    return out.astype(jnp.float32)


def _batched(fn, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """fn over `frames` in batches of `batch_size` (the last padded, so one shape compiles)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    n, outs = len(frames), []
    size = min(batch_size, n)
    for s in range(0, n, size):
        chunk = frames[s:s + size]
        k = len(chunk)
        if k < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - k, axis=0)])
        outs.append(np.asarray(fn(chunk))[:k])
    return np.concatenate(outs)


# ----------------------------------------------------------------------------------------------
# Predictor
# ----------------------------------------------------------------------------------------------

class Predictor:
    """A model with its variables and normalisation; see the module docstring."""

    def __init__(self, config, variables, step: int = 0, workdir=None, normalisation=None):
        self.config = config
        self.model = models.build(config.model)
        self.variables = variables
        self.step = int(step)
        self.workdir = None if workdir is None else pathlib.Path(workdir)
        self.in_shape = tuple(int(v) for v in config.model.in_shape)
        self.out_frames = int(config.model.out_frames)
        self._norm = None if normalisation is None else {
            k: np.asarray(normalisation[k], np.float32) for k in ("sub", "div")}
        self._fns = {}

    # -- normalisation ---------------------------------------------------------------------------
    @property
    def normalisation(self) -> dict:
        """{'sub', 'div'} (C,) float32: normalised = (raw - sub) / div."""
        if self._norm is None:
            path = None if self.workdir is None else self.workdir / NORM_FILE
            if path is not None and path.exists():
                saved = json.loads(path.read_text())
            else:
                saved = normalisation_of(self.config)
                if path is not None:
                    try:
                        path.write_text(json.dumps(saved, indent=2))
                    except OSError as e:
                        logging.warning("Could not save %s (%s).", path, e)
            self._norm = {k: np.asarray(saved[k], np.float32) for k in ("sub", "div")}
        return self._norm

    # -- prediction ------------------------------------------------------------------------------
    def _fn(self, horizon: int):
        if horizon not in self._fns:
            self._fns[horizon] = jax.jit(functools.partial(
                rollout, self.model, self.config.model, horizon=horizon))
        return self._fns[horizon]

    def predict(self, frames, horizon: int, batch_size: int = 16) -> np.ndarray:
        """(N, horizon, H, W, C) float32 predictions, in the units of `frames` (N, >=T, H, W, C)."""
        horizon = check_horizon(horizon)
        frames = check_frames(frames, self.in_shape)
        norm = self.normalisation
        fn = self._fn(horizon)
        x = (frames - norm["sub"]) / norm["div"]
        pred = _batched(lambda b: fn(self.variables, b), x, batch_size)
        return pred * norm["div"] + norm["sub"]

    # -- export ----------------------------------------------------------------------------------
    def export(self, path, horizon: int | None = None, batch_size: int | None = None):
        """Serialise raw frames (B, T, H, W, C) -> raw predictions (B, horizon, H, W, C) with
        jax.export (weights and normalisation baked in) to `path`; B is symbolic unless
        `batch_size` is given. Read it back with `load_exported`."""
        horizon = check_horizon(self.out_frames if horizon is None else horizon)
        norm = self.normalisation
        sub, div = jnp.asarray(norm["sub"]), jnp.asarray(norm["div"])
        core = functools.partial(rollout, self.model, self.config.model, horizon=horizon)
        variables = self.variables

        def fn(frames):
            return core(variables, (frames - sub) / div) * div + sub

        batch = jax.export.symbolic_shape("b")[0] if batch_size is None else int(batch_size)
        exported = jax.export.export(jax.jit(fn))(
            jax.ShapeDtypeStruct((batch,) + self.in_shape, jnp.float32))
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(exported.serialize())
        return path


class ExportedPredictor:
    """A predictor read back from `Predictor.export`: needs jax only, not the model's code."""

    def __init__(self, exported):
        self.exported = exported
        aval = exported.in_avals[0]
        self.in_shape = tuple(int(v) for v in aval.shape[1:])
        self.horizon = int(exported.out_avals[0].shape[1])
        b = aval.shape[0]
        self.batch_size = b if isinstance(b, int) else None

    def predict(self, frames, batch_size: int = 16) -> np.ndarray:
        """(N, horizon, H, W, C) raw predictions for raw frames (N, >=T, H, W, C)."""
        frames = check_frames(frames, self.in_shape)
        if self.batch_size is not None:
            batch_size = self.batch_size
        return _batched(lambda b: self.exported.call(b), frames, batch_size)


def load_exported(path) -> ExportedPredictor:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    return ExportedPredictor(jax.export.deserialize(bytearray(path.read_bytes())))


# ----------------------------------------------------------------------------------------------
# Loading a workdir
# ----------------------------------------------------------------------------------------------

def normalisation_of(config) -> dict:
    """{'sub', 'div', 'mean', 'std'} lists of the training source of `config.data`."""
    from tau_jax import data
    source = data.get_source(config.data, "train")
    c = len(np.atleast_1d(source.mean))
    sub = np.broadcast_to(np.asarray(getattr(source, "_sub", source.mean), np.float32), (c,))
    div = np.broadcast_to(np.asarray(getattr(source, "_div", source.std), np.float32), (c,))
    return {"sub": sub.tolist(), "div": div.tolist(),
            "mean": np.asarray(source.mean, np.float32).tolist(),
            "std": np.asarray(source.std, np.float32).tolist()}


def _template(config):
    from tau_jax.train import loop, optim
    from tau_jax.train.sharding import make_mesh
    mesh = make_mesh((1, 1), jax.devices()[:1])
    tx, _ = optim.create_optimizer(config.optim, 1, config.train.epochs)
    abstract, _, make = loop.state_template(config, tx, mesh)
    return abstract, tx


def _has_checkpoints(workdir: pathlib.Path) -> bool:
    directory = workdir / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def load(workdir: str | os.PathLike, normalisation: dict | None = None) -> Predictor:
    """Predictor of the newest readable checkpoint in `workdir` with the run's saved config
    (EMA weights when the run kept them). `normalisation` ({'sub', 'div'}) overrides the saved
    or derived constants."""
    from tau_jax.train import loop
    workdir = pathlib.Path(workdir)
    config = loop.load_config(workdir)
    if not _has_checkpoints(workdir):
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: train "
                                f"(`tau-jax train`) or convert (`tau-jax convert`) into {workdir} "
                                "first.")
    from tau_jax.train.sharding import make_mesh
    step, state = loop.restore_state(config, workdir, make_mesh((1, 1), jax.devices()[:1]))
    variables = state.eval_variables(bool(config.optim.ema_decay))
    return Predictor(config, variables, step, workdir, normalisation)


# ----------------------------------------------------------------------------------------------
# Reading inputs (the custom dataset's readers)
# ----------------------------------------------------------------------------------------------

def read_inputs(path, in_frames: int, channels: int | None = None, grayscale: bool = False,
                resize=(0, 0)) -> np.ndarray:
    """(N, in_frames, H, W, C) float32 in stored units: the last `in_frames` frames of each
    sequence in `path`, a .npy/.npz array (N, T, H, W, C) / (N, T, C, H, W) or one sequence
    (T, H, W, C), a folder of images (one sequence), of image folders or of videos, or a video
    file. `grayscale` reduces RGB to luma, `resize` (H, W) resizes (bilinear)."""
    from tau_jax.data import base, custom
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist.")
    if path.is_file() and path.suffix.lower() in custom.ARRAY_SUFFIXES:
        try:
            z = np.load(path, allow_pickle=False)
            array = z if isinstance(z, np.ndarray) else (
                z[z.files[0]] if len(z.files) == 1 else None)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"Cannot read {path} as an array: {e}") from None
        if array is None:
            raise ValueError(f"{path} holds arrays {sorted(z.files)}; predict reads one array.")
        if array.ndim == 4:
            array = array[None]
        layout = "NTHWC" if array.ndim == 5 and channels and array.shape[-1] == channels \
            else "auto"
        seqs = custom.array_sequences(array, str(path), layout)
    else:
        found = custom.load_unit(path, "auto")
        seqs = [q for group in found.values() for q in group]
    out = []
    for q in seqs:
        if q.length < in_frames:
            raise ValueError(f"{q.label} has {q.length} frame(s); the model needs {in_frames} "
                             "input frames.")
        x = np.concatenate(list(q.chunks(q.length - in_frames, q.length)))
        if grayscale:
            x = base.to_luma(x)
        if tuple(resize) != (0, 0):
            x = base.resize_bilinear(x, tuple(resize))
        out.append(x.astype(np.float32))
    shapes = {x.shape for x in out}
    if len(shapes) > 1:
        raise ValueError(f"sequences in {path} have different shapes {sorted(shapes)}.")
    return np.stack(out)


# ----------------------------------------------------------------------------------------------
# OpenSTL weights -> workdir
# ----------------------------------------------------------------------------------------------

def convert_openstl(state_dict, config, workdir: str | os.PathLike) -> pathlib.Path:
    """Write `config` and a step-0 checkpoint holding the converted OpenSTL `state_dict` (a
    mapping of PyTorch key -> array, e.g. from `tau_jax.convert.load_pth`) with a fresh
    optimiser state into `workdir`, for `tau-jax eval` / `predict`. The data iterator state
    saved is empty: `tau-jax train` cannot resume (fine-tune) from it."""
    from tau_jax import convert
    from tau_jax.train import loop
    from tau_jax.train.checkpoint import Checkpointer
    from tau_jax.train.state import TrainState
    workdir = pathlib.Path(workdir)
    loop.check_config(config)
    variables = convert.from_openstl(config.model, state_dict)  # errors name the bad keys
    loop.check_workdir(workdir, config)
    if _has_checkpoints(workdir):
        raise ValueError(f"{workdir / 'checkpoints'} already holds checkpoints; convert into a "
                         "new workdir.")
    abstract, tx = _template(config)
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                       ema_params=params if config.optim.ema_decay else None)
    # same tree, shapes and dtypes as a trained run's checkpoint
    state = jax.tree_util.tree_map(lambda a, s: jax.device_put(jnp.asarray(a, s.dtype),
                                                               s.sharding), state, abstract)
    loop.save_config(config, workdir)
    ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
    ckpt.save(0, state, {})
    ckpt.close()
    return workdir
