"""Inference from a trained (or converted) run: any horizon, any frame size, raw units, export.

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

Frame sizes (pad and crop): the frames may be any H x W, not only model.in_shape's. The model
runs on the sizes its strides, patches and windows divide (each family's `frame_rule`); frames of
another size are padded to the smallest such size that holds them (`tau_jax.models.padded_size`)
before every model call and the output cropped back (`tau_jax.models.framing`), as in training
and evaluation, so the output always has the input's H x W. Models whose parameters fix the grid
(`timesformer`, `mlpmixer`, `predformer`, `mim`, `e3dlstm`, `mau`, SwinLSTM, the recurrent family
with `layer_norm = 1`) take frames no larger than in_shape's, padded up to the size they were
trained on. The band is filled as the training data's was (`Predictor.padding`, saved in
normalisation.json): a global latitude-longitude grid wraps its longitude and folds its latitude
across the poles, video replicates its border pixels. Roll-outs crop after every pass (of T
frames for the SimVP frame, of out_frames for the recurrent family) and re-pad the next pass's
input: every pass sees real frames bordered as the first pass saw them, the model's own guesses
in the padding band never feed back, and a long roll-out equals chained calls of `predict`. A
model on a size other than the one it was trained on is still the same model: how well it
predicts there (TAU's pooled statistics, boundary effects of larger frames) is for the user to
judge. Compilation is per (horizon, frame size): each new size compiles once, later calls with
it reuse the program (batches are padded to one batch shape).

A workdir made from OpenSTL weights (`tau_jax.convert.convert_openstl`) loads the same way.
"""

from __future__ import annotations

import functools
import pathlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from tau_jax import data, models
from tau_jax.data import base, readers
from tau_jax.data.base import check_finite
from tau_jax.models import cpu_kernels
from tau_jax.models.framing import Framing, Padding, pad_amounts
from tau_jax.train import evaluation
from tau_jax.train.checkpoint import has_checkpoints
from tau_jax.train.sharding import make_mesh
from tau_jax.train.workdir import NORM_FILE, atomic_open, load_config, normalisation_of, read_json

# ----------------------------------------------------------------------------------------------
# Shared checks, frame sizes and roll-out
# ----------------------------------------------------------------------------------------------

def check_horizon(horizon) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be a positive number of frames to predict, got "
                         f"{horizon!r}.")
    return int(horizon)


def check_frames(frames, in_shape, any_size: bool = False, size_hint: str = "") -> np.ndarray:
    """(N, T, H, W, C) float32, the last T frames of `frames`; ValueError naming expected vs
    got for a wrong rank, channel count, too few frames or (unless `any_size`, for a predictor
    that pads and crops) a frame size other than in_shape's; `size_hint` ends that message."""
    t, h, w, c = (int(v) for v in in_shape)
    frames = np.asarray(frames)
    if frames.ndim != 5:
        size = "H, W" if any_size else f"{h}, {w}"
        raise ValueError(f"frames must be (N, T, H, W, C) = (N, >={t}, {size}, {c}), got shape "
                         f"{frames.shape}.")
    if not any_size and tuple(frames.shape[2:4]) != (h, w):
        raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[3]} (H x W) but this "
                         f"predictor expects {h}x{w} (in_shape {tuple(in_shape)})"
                         f"{size_hint or '; resize or crop them'}.")
    if min(frames.shape[2:4]) < 1:
        raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[3]} (H x W); both must be "
                         ">= 1.")
    if frames.shape[4] != c:
        raise ValueError(f"frames have {frames.shape[4]} channel(s) but the model expects {c} "
                         f"(model.in_shape {tuple(in_shape)}).")
    if frames.shape[1] < t:
        raise ValueError(f"the model needs {t} input frames, got {frames.shape[1]}.")
    if frames.shape[0] < 1:
        raise ValueError("frames hold no sequences (N = 0).")
    return frames[:, -t:].astype(np.float32)


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
        self._facts = None  # NORM_FILE's contents, read on first use
        # padded (H, W) -> the model built for it
        self._models = {models.padded_size(config.model, *self.in_shape[1:3]): self.model}
        self._fns = {}

    # -- what predict needs of the training data -------------------------------------------------
    @property
    def normalisation(self) -> dict:
        """{'sub', 'div'} (C,) float32: normalised = (raw - sub) / div."""
        if self._norm is None:
            self._norm = {k: np.asarray(self._data_fact(k), np.float32) for k in ("sub", "div")}
        return self._norm

    @property
    def padding(self) -> Padding:
        """How frames are padded to a size the model runs on: the training data's
        (`data.frame_padding`: a global grid wraps and folds at the poles, video 'edge')."""
        return Padding.from_json(self._data_fact("frame_padding"))

    def _data_fact(self, key: str):
        """`key` of the workdir's NORM_FILE or, where it lacks it (a converted workdir, a run
        trained before train wrote it), of the training source, prepared if need be."""
        if self._facts is None or key not in self._facts:
            path = None if self.workdir is None else self.workdir / NORM_FILE
            saved = read_json(path) if path is not None and path.exists() else {}
            if key not in saved:
                source = data.get_source(self.config.data, "train")
                saved = {**normalisation_of(source), **saved, "frame_padding":
                         data.frame_padding(self.config.data, source).to_json()}
            self._facts = saved
        return self._facts[key]

    # -- frame sizes -----------------------------------------------------------------------------
    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The frame size H x W frames are padded to for this model (ValueError if none)."""
        return models.padded_size(self.config.model, int(h), int(w))

    def _core(self, horizon: int, h: int, w: int):
        """rollout for (h, w) frames: normalised (B, T, h, w, C) -> (B, horizon, h, w, C)."""
        size = self.padded_size(h, w)
        if size not in self._models:
            cfg = self.config.model.copy_and_resolve_references()
            cfg.in_shape = (self.in_shape[0], *size, self.in_shape[3])
            self._models[size] = models.build(cfg)
        amounts = pad_amounts((h, w), size)
        framing = Framing(amounts, self.padding if any(map(sum, amounts)) else Padding())
        return functools.partial(models.rollout, self._models[size], self.config.model,
                                 horizon=horizon, around=framing.around)

    # -- prediction ------------------------------------------------------------------------------
    def _fn(self, horizon: int, h: int, w: int):
        key = (horizon, h, w)
        if key not in self._fns:  # one compiled program per horizon and frame size
            self._fns[key] = jax.jit(self._core(horizon, h, w),
                                     compiler_options=models.compiler_options(self.config.model))
        return self._fns[key]

    def predict(self, frames, horizon: int, batch_size: int = 16) -> np.ndarray:
        """(N, horizon, H, W, C) float32 predictions, in the units of `frames` (N, >=T, H, W, C);
        any H x W the model takes after padding (module docstring)."""
        horizon = check_horizon(horizon)
        frames = check_frames(frames, self.in_shape, any_size=True)
        check_finite(frames, "frames")
        fn = self._fn(horizon, *frames.shape[2:4])  # size errors before normalisation is derived
        norm = self.normalisation
        x = (frames - norm["sub"]) / norm["div"]
        pred = _batched(lambda b: fn(self.variables, b), x, batch_size)
        return pred * norm["div"] + norm["sub"]

    # -- export ----------------------------------------------------------------------------------
    def export(self, path, horizon: int | None = None, batch_size: int | None = None,
               frame_size: tuple[int, int] | None = None):
        """Serialise raw frames (B, T, H, W, C) -> raw predictions (B, horizon, H, W, C) with
        jax.export (weights, normalisation and any padding baked in) to `path`. The program
        has one frame size, `frame_size` (H, W) (default model.in_shape's; another is padded and
        cropped as `predict` does); B is symbolic unless `batch_size` is given. Read it back
        with `load_exported`."""
        horizon = check_horizon(self.out_frames if horizon is None else horizon)
        size = self.in_shape[1:3] if frame_size is None else tuple(frame_size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
            raise ValueError(f"frame_size must be two positive ints (H, W), got {frame_size!r}.")
        h, w = (int(v) for v in size)
        core = self._core(horizon, h, w)
        norm = self.normalisation
        sub, div = jnp.asarray(norm["sub"]), jnp.asarray(norm["div"])
        variables = self.variables

        def fn(frames):
            return core(variables, (frames - sub) / div) * div + sub

        batch = jax.export.symbolic_shape("b")[0] if batch_size is None else int(batch_size)
        t, _, _, c = self.in_shape
        with cpu_kernels.portable_program():  # the reader has jax only, not this library's kernels
            exported = jax.export.export(jax.jit(fn))(
                jax.ShapeDtypeStruct((batch, t, h, w, c), jnp.float32))
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(exported.serialize())
        return path


class ExportedPredictor:
    """A predictor read back from `Predictor.export`: needs jax only, not the model's code. It
    takes frames of the one size it was exported for (`in_shape`)."""

    def __init__(self, exported):
        self.exported = exported
        aval = exported.in_avals[0]
        self.in_shape = tuple(int(v) for v in aval.shape[1:])
        self.horizon = int(exported.out_avals[0].shape[1])
        b = aval.shape[0]
        self.batch_size = b if isinstance(b, int) else None

    def predict(self, frames, batch_size: int = 16) -> np.ndarray:
        """(N, horizon, H, W, C) raw predictions for raw frames (N, >=T, H, W, C)."""
        frames = check_frames(frames, self.in_shape, size_hint=(
            "; it was exported for that size: export again with "
            f"Predictor.export(..., frame_size=({np.shape(frames)[2]}, {np.shape(frames)[3]}))"
            if np.ndim(frames) == 5 else ""))
        check_finite(frames, "frames")
        if self.batch_size is not None:
            batch_size = self.batch_size
        return _batched(lambda b: self.exported.call(b), frames, batch_size)


def load_exported(path) -> ExportedPredictor:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # noqa: BLE001 - flatbuffers fails in many ways on foreign bytes
        raise ValueError(f"{path} is not a model written by Predictor.export ({type(e).__name__}: "
                         f"{e}).") from None
    return ExportedPredictor(exported)


# ----------------------------------------------------------------------------------------------
# Loading a workdir
# ----------------------------------------------------------------------------------------------

def load(workdir: str | os.PathLike, normalisation: dict | None = None,
         checkpoint: str | int = "best") -> Predictor:
    """Predictor of checkpoint `checkpoint` in `workdir` ('best': the lowest validation MSE,
    'latest': the newest readable, or a step number) with the run's saved config (EMA weights
    when the run kept them). `normalisation` ({'sub', 'div'}) overrides the saved or derived
    constants."""
    workdir = pathlib.Path(workdir)
    config = load_config(workdir)
    if not has_checkpoints(workdir):
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: train "
                                f"(`tau-jax train`) or convert (`tau-jax convert`) into {workdir} "
                                "first.")
    step, variables = evaluation.restore_variables(
        config, workdir, make_mesh((1, 1), jax.devices()[:1]), checkpoint)
    return Predictor(config, variables, step, workdir, normalisation)


# ----------------------------------------------------------------------------------------------
# Writing outputs
# ----------------------------------------------------------------------------------------------

def output_path(path) -> pathlib.Path:
    """The .npy file predictions go to: `path`, with `.npy` added when it has another suffix,
    or `<path>/predictions.npy` for an existing folder. PermissionError (before any work) when
    it cannot be written there."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "predictions.npy"
    elif path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    existing = next(p for p in [path.parent.absolute(), *path.parent.absolute().parents]
                    if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: {existing} is not writable.")
    return path


def save_array(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
    """np.save, all or nothing (train.workdir.atomic_open)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return path


# ----------------------------------------------------------------------------------------------
# Reading inputs (the custom dataset's readers)
# ----------------------------------------------------------------------------------------------

def read_inputs(path, in_frames: int, channels: int | None = None, grayscale: bool = False,
                resize=(0, 0)) -> np.ndarray:
    """(N, in_frames, H, W, C) float32 in stored units: the last `in_frames` frames of each
    sequence in `path`, a .npy/.npz array (N, T, H, W, C) / (N, T, C, H, W) or one sequence
    (T, H, W, C), a folder of images (one sequence), of image folders or of videos, or a video
    file. `grayscale` reduces RGB to luma, `resize` (H, W) resizes (bilinear)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist.")
    if path.is_file() and path.suffix.lower() in readers.ARRAY_SUFFIXES:
        z = base.load_array(path)
        try:
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
        seqs = readers.array_sequences(array, str(path), layout)
    else:
        found = readers.load_unit(path, "auto")
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
