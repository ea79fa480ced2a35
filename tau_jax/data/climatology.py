"""Valid times of weather frames, and the climatology of a prepared dataset's training split.

Preparing WeatherBench records each split's frame times in the dataset metadata as runs
[first, step, count] in seconds since 1970 (a regular series is one run). The ACC
(tau_jax.weather_metrics) needs WeatherBench2's climatology of the training split: computed
from the stored training frames when the dataset is prepared (or first needed) and kept in the
prepared dataset's folder (`climatology/`), so every run and `tau-jax eval` of that dataset
uses the same one. Files on a calendar that is not a real-world one give no times: their
sources have no `times`, and runs on them report no ACC. (Datasets prepared before times were
recorded, version 1.0.0, are prepared again: the builder is version 1.1.0.)
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile

import numpy as np

from tau_jax.data import tfds_base
from tau_jax.weather_metrics import Climatology

log = logging.getLogger("tau_jax.data")

FOLDER = "climatology"
CHUNK = 256  # frames read at a time


def encode_times(times) -> list[list[int]] | None:
    """datetime64 `times` as runs [first, step, count] of seconds since 1970 (None: None)."""
    if times is None:
        return None
    t = np.asarray(times, "datetime64[s]").astype(np.int64)
    runs, i = [], 0
    while i < len(t):
        step = int(t[i + 1] - t[i]) if i + 1 < len(t) else 0
        j = i + 1
        while j < len(t) and t[j] - t[j - 1] == step:
            j += 1
        runs.append([int(t[i]), step, j - i])
        i = j
    return runs


def decode_times(runs) -> np.ndarray:
    """The datetime64[s] times of `encode_times` runs."""
    parts = [first + step * np.arange(count, dtype=np.int64) for first, step, count in runs]
    return np.concatenate(parts or [np.zeros(0, np.int64)]).astype("datetime64[s]")


def window_times(metadata: dict, split: str, starts: np.ndarray) -> np.ndarray | None:
    """datetime64 (len(starts), T + T') times of the windows of `split` that start at frames
    `starts`, from the dataset metadata; None when it records no times."""
    runs = metadata.get("times", {}).get(split)
    if runs is None:
        return None
    length = metadata["in_frames"] + metadata["out_frames"]
    return decode_times(runs)[np.asarray(starts)[:, None] + np.arange(length)]


def training_climatology(builder) -> Climatology | None:
    """WeatherBench2's climatology of the prepared `builder`'s training split (memory-mapped),
    computed and saved in its folder the first time; None when it records no frame times."""
    folder = pathlib.Path(os.fspath(builder.data_path)) / FOLDER
    if not folder.is_dir():
        runs = tfds_base.metadata(builder).get("times", {}).get("train")
        if runs is None:
            return None
        times = decode_times(runs)
        records = tfds_base.open_split(builder, "train")
        log.info("Computing the climatology of the training split (%d frames) into %s once.",
                 len(records), folder)
        chunks = (np.stack([r["frame"] for r in records.__getitems__(
            list(range(s, min(s + CHUNK, len(records)))))]) for s in range(0, len(records), CHUNK))
        _save(Climatology.of_frames(chunks, times), folder)
    return Climatology(np.load(folder / "mean.npy", mmap_mode="r"),
                       np.load(folder / "hours.npy"))


def _save(clim: Climatology, folder: pathlib.Path) -> None:
    """Written beside `folder` and renamed into place: readers never see half a climatology,
    and of two processes computing it at once the first to finish wins."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=folder.parent))
    try:
        np.save(tmp / "mean.npy", clim.mean)
        np.save(tmp / "hours.npy", clim.hours)
        tmp.rename(folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
