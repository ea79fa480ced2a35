"""Datasets: tfds builders (array_record, no TensorFlow) and the random-access sources that the
input pipeline reads.

    source = tau_jax.data.get_source(config.data, "train")
    len(source); x = source[i]          # float32 (T+T', H, W, C), normalised
    source.in_frames, source.out_frames, source.sub, source.div, source.mean, source.std

`get_source` prepares the dataset into `config.data.data_dir` the first time (tfds
`download_and_prepare(file_format='array_record')`), then reads it back with
`as_data_source()`; `prepare(config.data)` does the preparing ahead of time.

Datasets (`config.data.name`): `moving_mnist` (alias `mmnist`), `taxibj`, `kth` (`kth20`,
`kth40`), `weatherbench` (alias `weather`), `custom`. Each one's module subclasses
`tfds_base.Builder` and has `builder(data_config)`, `prepare(data_config)` and
`get_source(data_config, split)`.
"""

from __future__ import annotations

import contextlib
import errno
import importlib

from tau_jax import metrics
from tau_jax.models.framing import VIDEO_MODES, Padding, geographic_padding

_MODULES = {
    "moving_mnist": "moving_mnist", "mmnist": "moving_mnist",
    "taxibj": "taxibj",
    "kth": "kth", "kth20": "kth", "kth40": "kth",
    "weatherbench": "weatherbench", "weather": "weatherbench",
    "custom": "custom",
}
NAMES = ("moving_mnist", "taxibj", "kth", "kth20", "kth40", "weatherbench", "custom")


def _data_section(config):
    """Accept `config.data` or a whole experiment config."""
    if "name" not in config and "data" in config:
        return config.data
    return config


def module(name: str):
    """The module that implements dataset `name`."""
    if name not in _MODULES:
        raise ValueError(f"Unknown dataset config.data.name={name!r}; choose one of "
                         f"{sorted(_MODULES)}.")
    return importlib.import_module(f"tau_jax.data.{_MODULES[name]}")


SPATIAL_NORM = {"sum": False, "mean": True}  # config.data.spatial_norm ('auto': the dataset's)


def metric_conventions(data_config) -> dict:
    """Keyword arguments of `tau_jax.metrics.MetricAccumulator` for the dataset: its OpenSTL
    conventions (the dataset module's `conventions`), with config.data.metrics, spatial_norm
    and clip_range overriding them where set. ValueError naming the field for a bad value."""
    data_config = _data_section(data_config)
    own = module(data_config.name).conventions(data_config)
    mode = data_config.spatial_norm
    if mode != "auto" and mode not in SPATIAL_NORM:
        raise ValueError(f"config.data.spatial_norm must be 'auto', 'sum' or 'mean', got "
                         f"{mode!r}.")
    clip = tuple(data_config.clip_range) or own.clip_range
    if len(clip) != 2 or not float(clip[0]) < float(clip[1]):
        raise ValueError(f"config.data.clip_range must be () or (low, high) with low < high, "
                         f"got {tuple(data_config.clip_range)}.")
    try:
        names = metrics.check_metrics(tuple(data_config.metrics) or own.metrics)
    except ValueError as e:
        raise ValueError(f"config.data.metrics: {e}") from None
    return dict(metrics=names, clip_range=(float(clip[0]), float(clip[1])),
                spatial_norm=own.spatial_norm if mode == "auto" else SPATIAL_NORM[mode],
                channel_names=own.channel_names)


def check_frame_padding(data_config) -> str:
    """config.data.frame_padding, checked."""
    mode = _data_section(data_config).frame_padding
    if mode not in ("auto",) + VIDEO_MODES:
        raise ValueError(f"config.data.frame_padding must be one of {('auto',) + VIDEO_MODES}, "
                         f"got {mode!r}.")
    return mode


def frame_padding(data_config, source) -> Padding:
    """How the frames of `source` are padded up to a size the model runs on (framing.py):
    config.data.frame_padding, where 'auto' wraps and folds a geographic grid (its lat / lon)
    and replicates the border of anything else ('edge': experiments/frame_padding.py)."""
    mode = check_frame_padding(data_config)
    if mode != "auto":
        return Padding(mode, mode)
    return Padding() if source.lat is None else geographic_padding(source.lat, source.lon)


def channel_labels(data_config) -> tuple[str, ...] | None:
    """How pictures name the dataset's channels (with units where they have them), or None."""
    data_config = _data_section(data_config)
    return module(data_config.name).conventions(data_config).labels


def get_source(data_config, split: str):
    """Random-access source of `split` ('train', 'test', 'val' where the dataset has one):
    `len(source)`, `source[i]` -> float32 `(T+T', H, W, C)` normalised, deterministic in i,
    picklable; attributes `in_frames`, `out_frames`, `name`, `split`, `epoch_size`, and the
    normalisation as float32 `(C,)` arrays: `sub`, `div` (x = (stored - sub) / div) and
    `mean`, `std` (x * std + mean is on the scale metrics use); see
    `tau_jax.data.sources.Source`. `data_config` is a whole `base_config().data` (or the
    experiment config). Prepares the dataset on first use."""
    data_config = _data_section(data_config)
    with _preparing(data_config):
        return module(data_config.name).get_source(data_config, split)


def training_climatology(data_config):
    """WeatherBench2's climatology of the training split (`tau_jax.weather_metrics.Climatology`,
    in physical units) of a dataset whose sources carry frame times (`source.times`:
    weatherbench), kept beside the prepared dataset; None for the others."""
    from tau_jax.data import climatology
    data_config = _data_section(data_config)
    with _preparing(data_config):
        return climatology.training_climatology(module(data_config.name).prepare(data_config))


def prepare(data_config):
    """Build the dataset into `data_config.data_dir` now (no-op when it is prepared); returns
    the tfds builder."""
    data_config = _data_section(data_config)
    with _preparing(data_config):
        return module(data_config.name).prepare(data_config)


@contextlib.contextmanager
def _preparing(data_config):
    """A dataset that must be prepared where nothing can be written: one error naming the
    folder (tfds fails deep inside its builder otherwise)."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
            raise
        where = data_config.data_dir or "$TFDS_DATA_DIR or ~/tensorflow_datasets"
        raise OSError(e.errno, f"cannot prepare dataset {data_config.name!r} in data.data_dir "
                      f"{where} ({e.strerror} at {e.filename}); choose a data.data_dir you can "
                      "write to, or prepare it there once with `tau-jax data prepare`") from None
