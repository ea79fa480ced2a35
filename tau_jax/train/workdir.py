"""What a run keeps in its workdir besides checkpoints, and the checks made before a run
writes anything: the saved config, whole-or-nothing file writes, config values no run can use,
a workdir holding another model, data that does not fit the model."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pathlib

import jax
import ml_collections
import numpy as np

from tau_jax import data
from tau_jax.config import base_config
from tau_jax.train import optim

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "eval_metrics.json"
LOG_FILE = "train.log"
NORM_FILE = "normalisation.json"  # the training data's normalisation: predict and eval use it
PARAMETERS_FILE = "parameters.txt"  # every parameter's shape, size and statistics at the start
# model fields that change how a run computes, not its parameters: a run may resume with others
COMPUTE_ONLY_FIELDS = ("dtype", "dw_impl", "remat")


def read_json(path: pathlib.Path) -> dict:
    """A JSON file the workdir holds; ValueError naming it when it is damaged."""
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from a backup or move it "
                         "away.") from None


@contextlib.contextmanager
def atomic_open(path: pathlib.Path, mode: str = "w"):
    """A file that appears at `path` whole or not at all: written under a temporary name and
    renamed into place when the block ends (a full disk leaves the old file, not half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: pathlib.Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def normalisation_of(source) -> dict:
    """{'sub', 'div', 'mean', 'std'} lists of a training source (`tau_jax.data.sources.Source`):
    normalised = (stored - sub) / div; x * std + mean is on the scale metrics use."""
    return {"sub": source.sub.tolist(), "div": source.div.tolist(),
            "mean": source.mean.tolist(), "std": source.std.tolist()}


def save_normalisation(workdir: pathlib.Path, source, padding) -> None:
    """NORM_FILE: the training data's normalisation and frame padding (`framing.Padding`), what
    `predict` needs of the data without reading it."""
    facts = {**normalisation_of(source), "frame_padding": padding.to_json()}
    write_atomic(workdir / NORM_FILE, json.dumps(facts, indent=2))


def metrics_json(metrics: dict) -> str:
    """Evaluation metrics as JSON (per-frame curves as lists)."""
    return json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                       for k, v in metrics.items()}, indent=2)


def check_workdir(workdir: pathlib.Path, config) -> None:
    """The workdir holds no run of a different model (reads only: creates nothing)."""
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} is a file, not a folder; choose a folder.")
    if (workdir / CONFIG_FILE).exists():
        old = json.loads(load_config(workdir).model.to_json())
        new = json.loads(config.model.to_json())
        diff = {k for k in set(old) | set(new) if old.get(k) != new.get(k)
                and k not in COMPUTE_ONLY_FIELDS}
        if diff:
            field = sorted(diff)[0]
            raise ValueError(f"workdir {workdir} holds a run of a different model "
                             f"(model.{field}: {old.get(field)!r} there, {new.get(field)!r} "
                             "now); use a new workdir or the same model config.")


# (section, field, smallest allowed value) of the integer fields a run cannot do without
INT_FIELDS = (("data", "batch_size", 1), ("data", "eval_batch_size", 1),
              ("train", "epochs", 1), ("train", "max_steps", 0),
              ("train", "log_every_steps", 1), ("train", "eval_every_steps", 0),
              ("train", "checkpoint_every_steps", 0), ("train", "keep_checkpoints", 1),
              ("train", "num_samples", 0))


def check_config(config) -> None:
    """One ValueError naming the field, for values no run can use, before anything is built."""
    optim.check(config.optim)
    data.metric_conventions(config.data)
    data.check_frame_padding(config.data)
    for section, field, low in INT_FIELDS:
        value = config[section][field]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{section}.{field} must be an integer >= {low}, got {value!r}.")


def schedule_epochs(config, steps_per_epoch: int) -> int:
    """Epochs the learning-rate schedule spans: train.epochs, stretched (with a warning) when
    train.max_steps goes beyond them, so no step runs past the schedule's end at lr ~ 0."""
    epochs, max_steps = config.train.epochs, config.train.max_steps
    if max_steps > epochs * steps_per_epoch:
        stretched = math.ceil(max_steps / steps_per_epoch)
        log.warning("train.max_steps = %d is beyond train.epochs x steps per epoch = %d x %d; "
                    "the learning-rate schedule is stretched to %d epochs.", max_steps,
                    epochs, steps_per_epoch, stretched)
        return stretched
    return epochs


def check_source_matches_model(source, model_config) -> None:
    t, h, w, c = model_config.in_shape
    frames = source[0].shape
    expected = (t + model_config.out_frames, h, w, c)
    if tuple(frames) != expected:
        raise ValueError(
            f"dataset {source.name!r} gives sequences of shape {tuple(frames)} but the model "
            f"needs (in_shape T + out_frames, H, W, C) = {expected}; make model.in_shape / "
            "model.out_frames and data.in_frames / data.out_frames agree.")


def save_config(config, workdir: pathlib.Path) -> None:
    if jax.process_index() == 0:
        write_atomic(workdir / CONFIG_FILE, config.to_json(indent=2))


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a run saved in its workdir, over today's `base_config` of its model: the one
    place where runs saved by older versions are made whole (a field added since takes its
    default; one removed since is dropped)."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {workdir} is not a tau-jax workdir "
                                "(run `tau-jax train` there first).")
    saved = read_json(path)
    name = saved.get("model", {}).get("name")
    if name is None:
        raise ValueError(f"{path} names no model (model.name); restore it from a backup.")
    config = base_config(name)
    for section, fields in saved.items():
        for field, value in fields.items() if section in config else ():
            if field in config[section]:
                try:
                    config[section][field] = value
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{path}: {section}.{field} = {value!r} does not fit the "
                                     f"config ({e}).") from None
    return config
