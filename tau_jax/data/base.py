"""Shared pieces of the dataset builders: the random-access sources, preparing a tfds builder
once (and leaving nothing behind when that fails), builder-config naming, and image helpers.

Storage: every builder writes array_record files through tfds with `tfds.features.Tensor`
features (no TensorFlow needed) and `disable_shuffling=True`, so record i is the i-th example
generated. Two layouts:

* clips   - one record per sequence, feature `frames` (T+T', H, W, C) (Moving MNIST, TaxiBJ);
* frames  - one record per frame, feature `frame` (H, W, C), plus the start record of every
            window in the dataset metadata (KTH, WeatherBench, custom): overlapping windows
            are read from shared frames instead of being stored once per window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import operator
import os
import pathlib
import re
import types
from typing import Any, Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger("tau_jax.data")

SPLITS = ("train", "val", "test")
VERSION = "1.0.0"


# ----------------------------------------------------------------------------------------
# Config helpers


def data_dir_of(data_config) -> pathlib.Path:
    """`data_config.data_dir`, or tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    raw = str(data_config.get("data_dir", "") or "")
    if not raw:
        raw = os.environ.get("TFDS_DATA_DIR", "") or "~/tensorflow_datasets"
    return pathlib.Path(raw).expanduser().absolute()


def manual_dir_of(data_config) -> pathlib.Path:
    """`data_config.manual_dir`, or `<data_dir>/downloads/manual` (tfds' default)."""
    raw = str(data_config.get("manual_dir", "") or "")
    if raw:
        return pathlib.Path(raw).expanduser().absolute()
    return data_dir_of(data_config) / "downloads" / "manual"


def frames_of(data_config, default_in: int, default_out: int, name: str,
              fixed: bool = False) -> tuple[int, int]:
    """(T, T') from `data.in_frames` / `data.out_frames`; 0 means the dataset's own numbers.
    A dataset whose files fix them (`fixed`) rejects other values."""
    t_in = int(data_config.get("in_frames", 0) or 0) or default_in
    t_out = int(data_config.get("out_frames", 0) or 0) or default_out
    if t_in < 1 or t_out < 1:
        raise ValueError(f"config.data.in_frames / out_frames must be positive for {name}; "
                         f"got {t_in} -> {t_out}.")
    if fixed and (t_in, t_out) != (default_in, default_out):
        raise ValueError(f"{name} is {default_in} -> {default_out} frames by its files; set "
                         f"config.data.in_frames={default_in} and config.data.out_frames="
                         f"{default_out} (or 0 for the dataset's own).")
    return t_in, t_out


def config_name(prefix: str, params: dict) -> str:
    """A tfds builder-config name that changes whenever a parameter that shapes the data does."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    prefix = re.sub(r"[^a-z0-9_]+", "_", prefix.lower()).strip("_") or "cfg"
    return f"{prefix[:40]}_{hashlib.sha1(blob).hexdigest()[:10]}"


def check_split(name: str, split: str, available: Sequence[str], hint: str = "") -> None:
    if split not in available:
        if split in SPLITS:
            raise ValueError(f"Dataset {name} has no '{split}' split (it has {list(available)})."
                             + (f" {hint}" if hint else ""))
        raise ValueError(f"Unknown split {split!r} for dataset {name}; use one of "
                         f"{list(available)}.")


# ----------------------------------------------------------------------------------------
# tfds builders


def _tfds():
    import tensorflow_datasets as tfds
    return tfds


def params_config_class():
    """A BuilderConfig that carries the parameters a builder generates from (created lazily so
    importing tau_jax.data does not import tensorflow_datasets)."""
    global _ParamsConfig
    if _ParamsConfig is None:
        tfds = _tfds()

        @dataclasses.dataclass(eq=False)
        class ParamsConfig(tfds.core.BuilderConfig):
            params: dict = dataclasses.field(default_factory=dict)

        _ParamsConfig = ParamsConfig
    return _ParamsConfig


_ParamsConfig = None


def frames_feature(shape, dtype):
    """A Tensor feature stored as raw bytes (zlib for uint8: video frames compress well)."""
    tfds = _tfds()
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


def _empty_dirs_created(paths_before: set[str], roots: Iterable[pathlib.Path]
                        ) -> list[pathlib.Path]:
    out = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            if dirpath not in paths_before:
                out.append(pathlib.Path(dirpath))
    return out


def _snapshot(roots: Iterable[pathlib.Path]) -> set[str]:
    seen = set()
    for root in roots:
        if root.exists():
            for dirpath, dirnames, filenames in os.walk(root):
                seen.add(dirpath)
                seen.update(os.path.join(dirpath, f) for f in filenames)
    return seen


class _NeverRaised(Exception):
    pass


_LOCAL_TF = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(
        GFile=lambda path, mode="r": open(path, mode), exists=os.path.exists, remove=os.remove)),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised))


@contextlib.contextmanager
def tf_free_spill():
    """tfds' shuffler writes a split larger than its 1 GB memory buffer to temporary bucket
    files through `tf.io.gfile`, i.e. needs TensorFlow (seen: ModuleNotFoundError while
    building a 40 kB split with the buffer lowered). Without TensorFlow, give it local-file
    equivalents for the duration of a prepare, and raise the open-files limit for its 1000
    bucket files."""
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
    tfds = _tfds()
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


def open_split(builder, split: str):
    """The tfds ArrayRecordDataSource of a prepared builder's split, opened through a
    read-only builder on the version directory (so it pickles without the builder class)."""
    return read_only(builder).as_data_source(split=split)


def read_only(builder):
    """`tfds.builder_from_directory` on a prepared builder's version directory."""
    return _tfds().builder_from_directory(os.fspath(builder.data_path))


def metadata(builder) -> dict:
    """The dataset metadata (metadata.json) of a prepared builder."""
    md = read_only(builder).info.metadata
    return dict(md) if md is not None else {}


# ----------------------------------------------------------------------------------------
# Sources


class Source:
    """A random-access source of model-ready sequences for grain (`len`, `[i]`).

    `source[i]`: float32 `(in_frames + out_frames, H, W, C)`, normalised; `raw = x * std + mean`
    with `mean`, `std` float32 `(C,)` arrays (zeros / ones when the data is only scaled to
    [0, 1]). `epoch_size` is the number of indices that make one epoch (`len` except for a
    generating source whose index space covers many epochs).
    """

    name: str
    split: str
    in_frames: int
    out_frames: int
    mean: np.ndarray
    std: np.ndarray

    @property
    def epoch_size(self) -> int:
        return len(self)

    @property
    def shape(self) -> tuple[int, ...]:
        """(T+T', H, W, C) of every item."""
        return tuple(self[0].shape)

    def _index(self, i) -> int:
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {self.name}/{self.split} of length {n}")
        return i

    def __getitems__(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [self[i] for i in indices]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, len={len(self)},"
                f" frames={self.in_frames}+{self.out_frames})")


def _affine(sub, div, channels):
    sub = np.broadcast_to(np.asarray(sub, np.float32), (channels,)).copy()
    div = np.broadcast_to(np.asarray(div, np.float32), (channels,)).copy()
    if np.any(div == 0):
        raise ValueError("normalisation divisor is zero for some channel")
    return sub, div


class RecordSource(Source):
    """Sequences read from a tfds array_record data source.

    layout 'clips': item i is record i's `frames`; layout 'frames': item i stacks records
    `starts[i] .. starts[i] + length - 1` (feature `frame`). Values become
    `(stored - sub) / div` per channel; `mean`, `std` are the statistics that undo the
    normalisation for metrics (they differ from sub/div only for OpenSTL's weather quirk).
    """

    def __init__(self, records, *, name: str, split: str, in_frames: int, out_frames: int,
                 channels: int, sub=0.0, div=1.0, mean=None, std=None,
                 starts: np.ndarray | None = None):
        self._records = records
        self.name = name
        self.split = split
        self.in_frames = int(in_frames)
        self.out_frames = int(out_frames)
        self._sub, self._div = _affine(sub, div, channels)
        self._identity = bool(np.all(self._sub == 0) and np.all(self._div == 1))
        self.mean = np.zeros(channels, np.float32) if mean is None else \
            np.asarray(mean, np.float32).reshape(channels)
        self.std = np.ones(channels, np.float32) if std is None else \
            np.asarray(std, np.float32).reshape(channels)
        self._starts = None if starts is None else np.asarray(starts, np.int64)
        self._length = self.in_frames + self.out_frames

    def __len__(self) -> int:
        return len(self._records) if self._starts is None else len(self._starts)

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        if not self._identity:
            x = (x - self._sub) / self._div
        return x

    def __getitem__(self, i) -> np.ndarray:
        i = self._index(i)
        if self._starts is None:
            x = self._records[i]["frames"]
        else:
            s = int(self._starts[i])
            x = np.stack([r["frame"] for r in self._records.__getitems__(
                list(range(s, s + self._length)))])
        return self._normalise(x)


class ArraySource(Source):
    """Sequences from an in-memory array (tests, small user data): item i is `x[i]`."""

    def __init__(self, array: np.ndarray, *, name: str, split: str, in_frames: int,
                 out_frames: int):
        self._x = np.asarray(array, np.float32)
        self.name, self.split = name, split
        self.in_frames, self.out_frames = int(in_frames), int(out_frames)
        c = self._x.shape[-1]
        self.mean, self.std = np.zeros(c, np.float32), np.ones(c, np.float32)

    def __len__(self) -> int:
        return len(self._x)

    def __getitem__(self, i) -> np.ndarray:
        return self._x[self._index(i)].copy()


# ----------------------------------------------------------------------------------------
# Windows and statistics


def window_starts(segments: Sequence[Sequence[int]], length: int, stride: int) -> np.ndarray:
    """Start record of every window of `length` frames, stepping by `stride`, that fits inside
    one segment `(offset, n_frames)` (windows never cross segments)."""
    out = [off + np.arange(0, n - length + 1, stride, dtype=np.int64)
           for off, n in segments if n >= length]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class RunningStats:
    """Per-channel count / mean / variance (Chan et al. merge, float64) and min / max."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = np.zeros(channels, np.float64)
        self.m2 = np.zeros(channels, np.float64)
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, self.mean.shape[0])
        if not len(x):
            return
        n_b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / n
        self.n = n
        self.min = np.minimum(self.min, x.min(0))
        self.max = np.maximum(self.max, x.max(0))

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))  # population std, as numpy / OpenSTL

    def as_dict(self) -> dict:
        return {"count": int(self.n), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "min": self.min.tolist(), "max": self.max.tolist()}


NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def load_array(path: str | os.PathLike, **kwargs):
    """np.load without pickles, with one ValueError naming the file when it is not a .npy or
    .npz file (numpy reports any other bytes as 'pickled data')."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
        if not (head.startswith(NPY_MAGIC) or head.startswith(ZIP_MAGIC)):
            raise ValueError(f"it starts with {head!r}, not NumPy's .npy header or a .npz (zip) "
                             "archive")
        return np.load(path, allow_pickle=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - truncated headers and archives fail in many ways
        raise ValueError(f"Cannot read {path} as a NumPy array file: {e}.") from None


def check_finite(x: np.ndarray, what: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{what} contains {bad} NaN/Inf values; clean or mask them first.")


# ----------------------------------------------------------------------------------------
# Images


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of `(..., H, W, C)` to `size` = (H', W') with OpenCV's INTER_LINEAR
    sampling (half-pixel centres, edge clamping, no antialiasing); uint8 in -> uint8 out
    (rounded), float in -> float32 out. Matches cv2.resize up to its fixed-point rounding
    (at most one grey level for uint8)."""
    h, w = x.shape[-3], x.shape[-2]
    oh, ow = int(size[0]), int(size[1])
    if (h, w) == (oh, ow):
        return x.copy()

    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        i0 = np.floor(src).astype(np.int64)
        frac = src - i0
        frac = np.where(i0 < 0, 0.0, frac)
        i0 = np.clip(i0, 0, n_in - 1)
        frac = np.where(i0 >= n_in - 1, 0.0, frac)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, frac.astype(np.float32)

    y0, y1, fy = axis(h, oh)
    x0, x1, fx = axis(w, ow)
    xf = x.astype(np.float32)
    rows = xf[..., y0, :, :] * (1 - fy)[:, None, None] + xf[..., y1, :, :] * fy[:, None, None]
    out = rows[..., :, x0, :] * (1 - fx)[:, None] + rows[..., :, x1, :] * fx[:, None]
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(np.float32)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm",
                  ".pgm")


def natural_key(path: pathlib.Path | str):
    """Sort key that puts image_2 before image_10."""
    name = pathlib.Path(path).name
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_image(path: pathlib.Path) -> np.ndarray:
    """An image file as `(H, W, C)`: uint8 for 8-bit images, float32 for 16-bit / float ones."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("1", "P", "LA", "PA", "CMYK", "YCbCr", "HSV", "LAB"):
                im = im.convert("RGBA" if mode in ("PA", "LA") or "transparency" in im.info
                                else ("L" if mode == "1" else "RGB"))
                mode = im.mode
            a = np.asarray(im)
    except Exception as e:  # PIL raises several types for broken files
        raise ValueError(f"Cannot read image {path}: {e}") from None
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
    return a


def image_size(path: pathlib.Path) -> tuple[int, int, str]:
    """(H, W, mode) from the image header only."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0], im.mode
    except Exception as e:
        raise ValueError(f"Cannot read image {path}: {e}") from None


def to_luma(x: np.ndarray) -> np.ndarray:
    """(..., C) -> (..., 1): ITU-R 601 luma for 3/4 channels, unchanged for 1."""
    if x.shape[-1] == 1:
        return x
    if x.shape[-1] < 3:
        return x[..., :1]
    y = x[..., 0:1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114
    if x.dtype == np.uint8:
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return y.astype(np.float32)


def require_file(path: pathlib.Path, instructions: str) -> pathlib.Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. {instructions.strip()}")
    return path


def first_existing(root: pathlib.Path, subdirs: Sequence[str], check: Callable[[pathlib.Path], bool]
                   ) -> pathlib.Path | None:
    """`root` itself or the first `root/<sub>` for which `check` holds (so a manual dir can be
    the dataset's own folder or OpenSTL's `data/` folder that holds it)."""
    for cand in [root, *(root / s for s in subdirs)]:
        if cand.is_dir() and check(cand):
            return cand
    return None


def json_safe(obj: Any) -> Any:
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
