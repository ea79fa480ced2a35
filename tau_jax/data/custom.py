"""Your own data, with no code: `config.data.name = 'custom'` and `config.data.custom_path` =

* an array file: `.npy` (N, T, H, W, C) or (N, T, C, H, W) (`custom_layout`, or 'auto' when
  the channel axis is the only small one), or `.npz` with one such array or with arrays
  `train` / `val` / `test`;
* a folder of image sequences: one sub-folder of image files per sequence (frames in natural
  name order: frame_2 before frame_10); a folder of images only is one sequence;
* a folder of video files (mp4, avi, mov, mkv, webm, ...), one sequence per video, decoded with
  imageio's ffmpeg plugin (imageio-ffmpeg bundles ffmpeg);
* a folder with `train` / `val` / `test` entries (each any of the above) for explicit splits
  (all read by `tau_jax.data.readers`).

Without explicit splits the last `custom_test_fraction` of the sequences (in name / array
order) are the test split and the `custom_val_fraction` before them the val split; when there
are too few sequences to give train and every split with a non-zero fraction at least one
(e.g. one long video), every sequence is cut in time instead (first part train, then val,
then test). Windows of T + T' frames start every `custom_stride`
frames inside a sequence (never across two). Frames can be resized (`custom_resize`, bilinear)
and reduced to one luma channel (`custom_grayscale`).

Frames are stored once (uint8 when the input is 8-bit, else float32). Per-channel statistics
(mean, population std, min, max) of the training frames are saved in the dataset metadata;
`custom_normalize` picks what the source returns: 'auto' (uint8 / 255 with mean 0, std 1 as
for the image benchmarks; float data z-scored), 'none', 'zscore', 'minmax'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import ClassVar

import numpy as np

from tau_jax.data import base, readers, sources, tfds_base

NAME = "custom"
NORMALIZE = ("auto", "none", "zscore", "minmax")

MANUAL_DOWNLOAD_INSTRUCTIONS = """
custom reads your own files from config.data.custom_path: a .npy/.npz array (N, T, H, W, C) or
(N, T, C, H, W), a folder with one sub-folder of images per sequence, a folder of videos, or a
folder with train/val/test entries of those kinds. Nothing is downloaded.
"""


# ----------------------------------------------------------------------------------------
# Splits and plan


@dataclasses.dataclass
class Segment:
    seq: readers.Sequence
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def split_sequences(found, val_frac: float, test_frac: float, length: int
                    ) -> dict[str, list[Segment]]:
    """Segments of every split (see the module doc)."""
    for name, frac in (("custom_val_fraction", val_frac), ("custom_test_fraction", test_frac)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"config.data.{name} must be in [0, 1); got {frac}.")
    if val_frac + test_frac >= 1.0:
        raise ValueError("config.data.custom_val_fraction + custom_test_fraction must be < 1.")

    def whole(seqs):
        for s in seqs:
            if s.length < length:
                raise ValueError(f"{s.label} has {s.length} frames, fewer than T + T' = {length}.")
        return [Segment(s, 0, s.length) for s in seqs]

    if set(found) != {None}:
        return {split: whole(seqs) for split, seqs in found.items()}
    seqs = found[None]
    n = len(seqs)

    def share(frac):  # a non-zero fraction gets at least one sequence
        return 0 if frac == 0 else max(1, int(np.floor(frac * n + 0.5)))

    n_test, n_val = share(test_frac), share(val_frac)
    by_sequence = n - n_test - n_val >= 1
    if by_sequence:
        n_train = n - n_test - n_val
        out = {"train": whole(seqs[:n_train])}
        if n_val:
            out["val"] = whole(seqs[n_train:n_train + n_val])
        if n_test:
            out["test"] = whole(seqs[n_train + n_val:])
        return out
    # too few sequences: cut each one in time
    out = {"train": [], "val": [], "test": []}
    for s in seqs:
        m = s.length
        m_test, m_val = (int(np.floor(f * m + 0.5)) for f in (test_frac, val_frac))
        cuts = {"train": (0, m - m_val - m_test), "val": (m - m_val - m_test, m - m_test),
                "test": (m - m_test, m)}
        for split, (a, b) in cuts.items():
            if b - a == 0:
                continue
            if b - a < length:
                raise ValueError(f"{s.label} has {m} frames: cut in time for the "
                                 f"{split} split ({b - a} frames) it has fewer than T + T' = "
                                 f"{length}; use longer sequences, smaller fractions, or train/"
                                 "val/test folders.")
            out[split].append(Segment(s, a, b))
    return {k: v for k, v in out.items() if v}


def signature(path: pathlib.Path) -> str:
    """Hash of the input files' names, sizes and modification times (so changed data is
    prepared anew)."""
    h = hashlib.sha1()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}|{st.st_size}|"
                 f"{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def spec(data_config) -> dict:
    if not data_config.custom_path:
        raise ValueError("config.data.custom_path is empty; set it to your .npy/.npz array or "
                         "folder of image sequences / videos.")
    path = pathlib.Path(data_config.custom_path).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"config.data.custom_path: {path} does not exist.")
    in_f, out_f = int(data_config.in_frames or 0), int(data_config.out_frames or 0)
    if in_f < 1 or out_f < 1:
        raise ValueError("custom data needs config.data.in_frames and config.data.out_frames "
                         f"(T and T' > 0); got {in_f} -> {out_f}.")
    stride = int(data_config.custom_stride)
    if stride < 1:
        raise ValueError(f"config.data.custom_stride must be >= 1; got {stride}.")
    resize = tuple(int(v) for v in data_config.custom_resize)
    if len(resize) != 2 or min(resize) < 0 or (0 in resize and resize != (0, 0)):
        raise ValueError(f"config.data.custom_resize must be (H, W) > 0 or (0, 0); got {resize}.")
    normalize = str(data_config.custom_normalize)
    if normalize not in NORMALIZE:
        raise ValueError(f"config.data.custom_normalize must be one of {NORMALIZE}; got "
                         f"{normalize!r}.")
    layout = str(data_config.custom_layout)
    if layout not in readers.LAYOUTS:
        raise ValueError(f"config.data.custom_layout must be one of {readers.LAYOUTS}; got "
                         f"{layout!r}.")
    return {"path": str(path), "signature": signature(path), "layout": layout,
            "in_frames": in_f, "out_frames": out_f, "stride": stride, "resize": resize,
            "grayscale": bool(data_config.custom_grayscale),
            "val_fraction": float(data_config.custom_val_fraction),
            "test_fraction": float(data_config.custom_test_fraction)}


def make_plan(s: dict) -> dict:
    """Reads headers / metadata of every input, checks them, and fixes the splits."""
    found = readers.discover(pathlib.Path(s["path"]), s["layout"])
    length = s["in_frames"] + s["out_frames"]
    segments = split_sequences(found, s["val_fraction"], s["test_fraction"], length)
    seqs = [seg.seq for segs in segments.values() for seg in segs]
    channels = {q.shape[2] if not s["grayscale"] else 1 for q in seqs}
    if len(channels) > 1:
        raise ValueError(f"{s['path']}: sequences have different channel counts "
                         f"{sorted(channels)}; convert them (or set config.data.custom_grayscale"
                         "=True for images / videos).")
    sizes = {tuple(q.shape[:2]) for q in seqs}
    if len(sizes) > 1 and s["resize"] == (0, 0):
        raise ValueError(f"{s['path']}: sequences have different frame sizes {sorted(sizes)}; set "
                         "config.data.custom_resize=(H, W).")
    hw = s["resize"] if s["resize"] != (0, 0) else sizes.pop()
    dtype = np.dtype(np.uint8) if all(q.dtype == np.uint8 for q in seqs) else \
        np.dtype(np.float32)
    return {"segments": segments, "shape": (int(hw[0]), int(hw[1]), channels.pop()),
            "dtype": dtype.name}


def converted_chunks(p: dict, segments: list[Segment]):
    """The frames of `segments` as stored: chunks (k, H, W, C) checked for NaN/Inf, reduced to
    luma and resized as the parameters `p` (spec and plan) say."""
    shape, dtype = tuple(p["plan"]["shape"]), np.dtype(p["plan"]["dtype"])
    for seg in segments:
        for x in seg.seq.chunks(seg.start, seg.stop):
            base.check_finite(x, seg.seq.label)
            if p["grayscale"]:
                x = base.to_luma(x)
            if p["resize"] != (0, 0):
                x = base.resize_bilinear(x, p["resize"])
            yield x.astype(dtype, copy=False).reshape((len(x),) + shape)


# ----------------------------------------------------------------------------------------
# tfds builder


class Custom(tfds_base.Builder, skip_registration=True):
    """User frames (H, W, C) uint8 / float32; segments and statistics in the metadata."""

    name = "tau_custom"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        tfds_base.VERSION: "Arrays, image folders and videos."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def feature_spec(self):
        plan = self.params["plan"]
        if plan is None:  # a prepared variant: read back from its files, not from this feature
            return (1, 1, 1), np.uint8
        return plan["shape"], plan["dtype"]

    def _split_generators(self, dl_manager):
        del dl_manager
        p = self.params
        plan = p["plan"]
        segs = {}
        for split, segments in plan["segments"].items():
            offsets = np.cumsum([0] + [g.length for g in segments])
            segs[split] = [[int(o), int(g.length)] for o, g in zip(offsets, segments)]
        self.info.metadata.update(tfds_base.json_safe({
            "in_frames": p["in_frames"], "out_frames": p["out_frames"],
            "stride": p["stride"], "path": p["path"], "shape": plan["shape"],
            "dtype": plan["dtype"], "segments": segs,
            "sources": {s: [[g.seq.label, g.start, g.stop] for g in v]
                        for s, v in plan["segments"].items()}}))
        return {split: self._generate_examples(
                    self._recording_stats(split, converted_chunks(p, segments),
                                          plan["shape"][-1]),
                    sum(seg.length for seg in segments))
                for split, segments in plan["segments"].items()}


def _identity(s: dict) -> dict:
    return {k: s[k] for k in ("path", "signature", "layout", "in_frames", "out_frames", "stride",
                              "resize", "grayscale", "val_fraction", "test_fraction")}


def builder(data_config) -> Custom:
    """The builder of the data at config.data.custom_path; when that is not prepared yet, with
    the inputs read and checked (`make_plan`), so that nothing is written for bad inputs."""
    s = spec(data_config)
    name = tfds_base.config_name(pathlib.Path(s["path"]).stem or "data", _identity(s))
    b = Custom.for_variant(data_config, name, dict(s, plan=None))
    if b.is_prepared():
        return b
    return Custom.for_variant(data_config, name, dict(s, plan=make_plan(s)))


def prepare(data_config) -> Custom:
    b = builder(data_config)
    tfds_base.ensure_prepared(b)
    return b


def normalisation(stats: dict, dtype: str, mode: str):
    """(sub, div, mean, std) for a normalisation mode and the training statistics."""
    mean = np.asarray(stats["mean"], np.float32)
    std = np.asarray(stats["std"], np.float32)
    lo, hi = np.asarray(stats["min"], np.float32), np.asarray(stats["max"], np.float32)
    zeros, ones = np.zeros_like(mean), np.ones_like(mean)
    if mode == "auto":
        mode = "scale255" if dtype == "uint8" else "zscore"
    if mode == "scale255":
        return zeros, ones * 255.0, zeros, ones
    if mode == "none":
        return zeros, ones, zeros, ones
    if mode == "zscore":
        std = np.where(std > 0, std, 1.0).astype(np.float32)
        return mean, std, mean, std
    if mode == "minmax":
        span = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
        return lo, span, lo, span
    raise ValueError(f"config.data.custom_normalize must be one of {NORMALIZE}; got {mode!r}.")


def get_source(data_config, split: str) -> sources.Source:
    if split not in base.SPLITS:
        base.check_split(NAME, split, base.SPLITS)
    b = prepare(data_config)
    md = tfds_base.metadata(b)
    available = tuple(k for k in base.SPLITS if k in md["segments"])
    base.check_split(NAME, split, available,
                     "Set config.data.custom_val_fraction / custom_test_fraction, or add "
                     f"{split}/ next to train/ in config.data.custom_path.")
    sub, div, mean, std = normalisation(md["stats"]["train"], md["dtype"],
                                        str(data_config.custom_normalize))
    length = md["in_frames"] + md["out_frames"]
    starts = sources.window_starts(md["segments"][split], length, md["stride"])
    return sources.RecordSource(tfds_base.open_split(b, split), name=NAME, split=split,
                                in_frames=md["in_frames"], out_frames=md["out_frames"],
                                channels=md["shape"][-1], sub=sub, div=div, mean=mean, std=std,
                                starts=starts)


def conventions(data_config) -> base.Conventions:
    """Video conventions (MSE / MAE summed over a frame, SSIM and PSNR on predictions clipped
    to [0, 1]); for fields in physical units set config.data.spatial_norm / clip_range / metrics."""
    del data_config
    return base.VIDEO
