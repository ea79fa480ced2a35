"""What the dataset modules share besides tfds: config fields, reading arrays and images,
per-channel statistics. `tau_jax.predict` reads its inputs with these too, so this module does
not import tensorflow_datasets (the CLI and the train loop import without it).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------
# Config fields


@dataclasses.dataclass(frozen=True)
class Conventions:
    """How OpenSTL scores a dataset (tau_jax.metrics): its metric list; whether MSE / MAE
    average a frame's values (`spatial_norm`, weather) or sum them (video); the range
    predictions are clipped to before SSIM / PSNR; the channel groups reported one by one. And
    how pictures name the channels (`labels`, with units; None: by number)."""

    metrics: tuple[str, ...]
    spatial_norm: bool
    clip_range: tuple[float, float] = (0.0, 1.0)
    channel_names: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None


VIDEO = Conventions(("mse", "mae", "ssim", "psnr"), spatial_norm=False)  # MMNIST, TaxiBJ, KTH


def data_dir_of(data_config) -> pathlib.Path:
    """`data_config.data_dir`, or tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    raw = data_config.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return pathlib.Path(raw).expanduser().absolute()


def manual_dir_of(data_config) -> pathlib.Path:
    """`data_config.manual_dir`, or `<data_dir>/downloads/manual` (tfds' default)."""
    if data_config.manual_dir:
        return pathlib.Path(data_config.manual_dir).expanduser().absolute()
    return data_dir_of(data_config) / "downloads" / "manual"


def frames_of(data_config, default_in: int, default_out: int, name: str,
              fixed: bool = False) -> tuple[int, int]:
    """(T, T') from `data.in_frames` / `data.out_frames`; 0 means the dataset's own numbers.
    A dataset whose files fix them (`fixed`) rejects other values."""
    t_in = int(data_config.in_frames or default_in)
    t_out = int(data_config.out_frames or default_out)
    if t_in < 1 or t_out < 1:
        raise ValueError(f"config.data.in_frames / out_frames must be positive for {name}; "
                         f"got {t_in} -> {t_out}.")
    if fixed and (t_in, t_out) != (default_in, default_out):
        raise ValueError(f"{name} is {default_in} -> {default_out} frames by its files; set "
                         f"config.data.in_frames={default_in} and config.data.out_frames="
                         f"{default_out} (or 0 for the dataset's own).")
    return t_in, t_out


def check_split(name: str, split: str, available: Sequence[str], hint: str = "") -> None:
    if split not in available:
        if split in SPLITS:
            raise ValueError(f"Dataset {name} has no '{split}' split (it has {list(available)})."
                             + (f" {hint}" if hint else ""))
        raise ValueError(f"Unknown split {split!r} for dataset {name}; use one of "
                         f"{list(available)}.")


def first_existing(root: pathlib.Path, subdirs: Sequence[str], check: Callable[[pathlib.Path], bool]
                   ) -> pathlib.Path | None:
    """`root` itself or the first `root/<sub>` for which `check` holds (so a manual dir can be
    the dataset's own folder or OpenSTL's `data/` folder that holds it)."""
    for cand in [root, *(root / s for s in subdirs)]:
        if cand.is_dir() and check(cand):
            return cand
    return None


# ----------------------------------------------------------------------------------------
# Arrays


NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def load_array(path: str | os.PathLike, **kwargs):
    """np.load without pickles, with one ValueError naming the file when it is not a .npy or
    .npz file (numpy reports any other bytes as 'pickled data')."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
        if not head.startswith((NPY_MAGIC, ZIP_MAGIC)):
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
    except Exception as e:  # noqa: BLE001 - PIL raises several types for broken files
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
    except Exception as e:  # noqa: BLE001 - as in read_image
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


# ----------------------------------------------------------------------------------------
# Statistics


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

