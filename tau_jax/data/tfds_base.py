"""The tfds side of the datasets: `Builder`, the template every dataset's builder subclasses,
and preparing a builder once (leaving nothing behind when that fails).

Storage: every builder writes array_record files through tfds with `tfds.features.Tensor`
features (no TensorFlow needed) and `disable_shuffling=True`, so record i is the i-th example
generated. Two layouts:

* clips   - one record per sequence, feature `frames` (T+T', H, W, C) (Moving MNIST, TaxiBJ);
* frames  - one record per frame, feature `frame` (H, W, C), plus the start record of every
            window in the dataset metadata (KTH, WeatherBench, custom): overlapping windows
            are read from shared frames instead of being stored once per window.

Importing this module imports tensorflow_datasets; `base`, `sources` and `readers` do not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import pathlib
import re
import types
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tau_jax.data import base

log = logging.getLogger("tau_jax.data")

VERSION = "1.0.0"


# ----------------------------------------------------------------------------------------
# The builder template


@dataclasses.dataclass(eq=False)
class Variant(tfds.core.BuilderConfig):
    """One variant of a dataset: its name and the parameters its examples are generated from."""

    params: dict = dataclasses.field(default_factory=dict, repr=False)  # tfds logs the repr


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Template of the dataset builders: one Tensor feature, `FEATURE`, per record, written in
    generation order; what the sources need to know (window starts, statistics) goes to the
    dataset metadata.

    A dataset sets `name`, `RELEASE_NOTES`, `MANUAL_DOWNLOAD_INSTRUCTIONS` and `FEATURE`, and
    implements `feature_spec()` and `_split_generators()`, which returns
    `{split: self._generate_examples(arrays, n)}`; its module's docstring is the description.
    The module's `builder(data_config)` returns `for_variant(data_config, name, params)`, the
    variant's name changing with every parameter that shapes the data (`config_name`).
    """

    VERSION = tfds.core.Version(VERSION)
    FEATURE = "frame"  # 'frame': one record per frame; 'frames': one record per sequence

    @classmethod
    def for_variant(cls, data_config, name: str, params: dict) -> Builder:
        """The builder of variant `name` in `data_config.data_dir`."""
        return cls(data_dir=os.fspath(base.data_dir_of(data_config)),
                   config=Variant(name=name, params=params), file_format="array_record")

    @property
    def params(self) -> dict:
        return self.builder_config.params

    def feature_spec(self) -> tuple[tuple[int, ...], Any]:
        """(shape, dtype) of a record's feature."""
        raise NotImplementedError

    def _info(self):
        shape, dtype = self.feature_spec()
        return tfds.core.DatasetInfo(
            builder=self, description=inspect.getmodule(self).__doc__,
            features=tfds.features.FeaturesDict({self.FEATURE: frames_feature(shape, dtype)}),
            disable_shuffling=True, metadata=tfds.core.MetadataDict())

    def _generate_examples(self, arrays: Iterable[np.ndarray], n: int):
        """The `n` arrays as examples, keyed so that tfds keeps their order."""
        for i, x in enumerate(arrays):
            yield ordered_key(i, n), {self.FEATURE: x}

    def _recording_stats(self, split: str, chunks: Iterable[np.ndarray], channels: int
                         ) -> Iterator[np.ndarray]:
        """The frames of `chunks` ((k, H, W, C) arrays) one by one; once the last one is
        generated, their per-channel statistics go to `metadata['stats'][split]`."""
        stats = base.RunningStats(channels)
        for chunk in chunks:
            stats.update(chunk)
            yield from chunk
        self.info.metadata.setdefault("stats", {})[split] = stats.as_dict()


def frames_feature(shape, dtype):
    """A Tensor feature stored as raw bytes (zlib for uint8: video frames compress well)."""
    encoding = tfds.features.Encoding.ZLIB if np.dtype(dtype) == np.uint8 else \
        tfds.features.Encoding.BYTES
    return tfds.features.Tensor(shape=tuple(int(s) for s in shape), dtype=np.dtype(dtype),
                                encoding=encoding)


def ordered_key(i: int, n: int) -> int:
    """tfds example key for example i of n that keeps generation order (disable_shuffling
    sorts by key) and spreads the keys over tfds' 128-bit key space: datasets larger than
    tfds' 1 GB in-memory buffer are then sorted bucket by bucket (~1/1000 of the data in
    memory) instead of all in one bucket. Room for up to 2n examples."""
    return int(i) * ((1 << 127) // max(int(n), 1))


def config_name(prefix: str, params: dict) -> str:
    """A variant name that changes whenever a parameter that shapes the data does."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    prefix = re.sub(r"[^a-z0-9_]+", "_", prefix.lower()).strip("_") or "cfg"
    return f"{prefix[:40]}_{hashlib.sha1(blob).hexdigest()[:10]}"


def json_safe(obj: Any) -> Any:
    """`obj` with numpy values and paths as plain JSON values (for the dataset metadata)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, pathlib.Path):
        return os.fspath(obj)
    return obj


# ----------------------------------------------------------------------------------------
# Preparing


def ensure_prepared(builder, manual_dir: pathlib.Path | None = None) -> None:
    """`builder.download_and_prepare(file_format='array_record')` unless it is prepared.

    tfds writes into `<variant>.incomplete.XXXXXX` and renames it to the version directory only
    at the end, deleting the temporary directory on any exception; a directory left by a killed
    process is never taken for a prepared dataset (that needs `<version>/dataset_info.json`).
    On failure this also removes the (empty) directories and the `.config` file that the
    attempt created, so the data dir looks as before.
    """
    if builder.is_prepared():
        return
    data_dir = pathlib.Path(builder.data_dir_root)
    dataset_root = data_dir / builder.name
    roots = [dataset_root, data_dir / "downloads"]
    existed_data_dir = data_dir.exists()
    before = _snapshot(roots)
    stale = sorted(dataset_root.glob("**/*incomplete.*")) if dataset_root.exists() else []
    for path in stale:
        log.warning("Ignoring %s, left by an interrupted prepare; it is safe to delete.", path)
    kwargs = {}
    if manual_dir is not None:
        kwargs["download_config"] = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    try:
        with tf_free_spill():
            builder.download_and_prepare(file_format="array_record", **kwargs)
    except BaseException:
        # Another process may have finished the same dataset meanwhile (tfds' final rename
        # then fails here): that is a prepared dataset, not an error.
        fresh = type(builder)(data_dir=os.fspath(data_dir), config=builder.builder_config,
                              file_format="array_record")
        if fresh.is_prepared():
            return
        _remove_created(before, roots, data_dir, existed_data_dir)
        raise


def _snapshot(roots: Iterable[pathlib.Path]) -> set[str]:
    seen = set()
    for root in roots:
        if root.exists():
            for dirpath, _, filenames in os.walk(root):
                seen.add(dirpath)
                seen.update(os.path.join(dirpath, f) for f in filenames)
    return seen


def _empty_dirs_created(paths_before: set[str], roots: Iterable[pathlib.Path]
                        ) -> list[pathlib.Path]:
    out = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, _, _ in os.walk(root, topdown=False):
            if dirpath not in paths_before:
                out.append(pathlib.Path(dirpath))
    return out


def _remove_created(before, roots, data_dir, existed_data_dir):
    for root in roots:
        cfg = root / ".config"
        if cfg.exists() and os.fspath(cfg) not in before:
            for f in cfg.iterdir():
                f.unlink()
            cfg.rmdir()
    for d in _empty_dirs_created(before, roots):
        try:
            d.rmdir()  # only empty ones; anything else is not ours to delete
        except OSError:
            pass
    if not existed_data_dir:
        try:
            data_dir.rmdir()
        except OSError:
            pass


class _NeverRaised(Exception):
    pass


_LOCAL_TF = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(
        GFile=lambda path, mode="r": open(path, mode),  # noqa: SIM115 - tfds closes it
        exists=os.path.exists, remove=os.remove)),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised))


@contextlib.contextmanager
def tf_free_spill():
    """tfds' shuffler writes a split larger than its 1 GB memory buffer to temporary bucket
    files through `tf.io.gfile`, i.e. needs TensorFlow (seen: ModuleNotFoundError while
    building a 40 kB split with the buffer lowered). Without TensorFlow, give it local-file
    equivalents for the duration of a prepare, and raise the open-files limit for its 1000
    bucket files. A patch because tfds (4.9) has no TensorFlow-free way: every generator split
    goes through this shuffler, `disable_shuffling` included."""
    if importlib.util.find_spec("tensorflow") is not None:
        yield
        return
    from tensorflow_datasets.core import shuffle
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass
    saved = shuffle.tf
    shuffle.tf = _LOCAL_TF
    try:
        yield
    finally:
        shuffle.tf = saved


# ----------------------------------------------------------------------------------------
# Reading back


def read_only(builder):
    """`tfds.builder_from_directory` on a prepared builder's version directory."""
    return tfds.builder_from_directory(os.fspath(builder.data_path))


def open_split(builder, split: str):
    """The tfds ArrayRecordDataSource of a prepared builder's split, opened through a
    read-only builder on the version directory (so it pickles without the builder class)."""
    return read_only(builder).as_data_source(split=split)


def metadata(builder) -> dict:
    """The dataset metadata (metadata.json) of a prepared builder."""
    md = read_only(builder).info.metadata
    return dict(md) if md is not None else {}
