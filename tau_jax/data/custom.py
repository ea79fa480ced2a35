"""Your own data, with no code: `config.data.name = 'custom'` and `config.data.custom_path` =

* an array file: `.npy` (N, T, H, W, C) or (N, T, C, H, W) (`custom_layout`, or 'auto' when
  the channel axis is the only small one), or `.npz` with one such array or with arrays
  `train` / `val` / `test`;
* a folder of image sequences: one sub-folder of image files per sequence (frames in natural
  name order: frame_2 before frame_10); a folder of images only is one sequence;
* a folder of video files (mp4, avi, mov, mkv, webm, ...), one sequence per video, decoded with
  imageio's ffmpeg plugin (imageio-ffmpeg bundles ffmpeg);
* a folder with `train` / `val` / `test` entries (each any of the above) for explicit splits.

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
from typing import Callable, Iterator

import numpy as np

from tau_jax.data import base

NAME = "custom"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".ogv")
ARRAY_SUFFIXES = (".npy", ".npz")
LAYOUTS = ("auto", "NTHWC", "NTCHW")
CHUNK = 64  # frames read at a time from an array
NORMALIZE = ("auto", "none", "zscore", "minmax")

MANUAL_DOWNLOAD_INSTRUCTIONS = """
custom reads your own files from config.data.custom_path: a .npy/.npz array (N, T, H, W, C) or
(N, T, C, H, W), a folder with one sub-folder of images per sequence, a folder of videos, or a
folder with train/val/test entries of those kinds. Nothing is downloaded.
"""


# ----------------------------------------------------------------------------------------
# Sequences


@dataclasses.dataclass
class Sequence:
    label: str                     # names the file / folder in errors
    length: int
    shape: tuple[int, int, int]    # (H, W, C) as read, before resizing
    dtype: np.dtype                # uint8 or float32 after reading
    chunks: Callable[[int, int], Iterator[np.ndarray]]  # frames [a, b) as (k, H, W, C) arrays


def detect_layout(shape: tuple[int, ...], layout: str, label: str) -> str:
    if len(shape) != 5:
        raise ValueError(f"{label} has shape {shape} (rank {len(shape)}); custom arrays are "
                         "rank 5: "
                         "(N, T, H, W, C) or (N, T, C, H, W) (a single sequence: add an axis, "
                         "x[None]).")
    if layout not in LAYOUTS:
        raise ValueError(f"config.data.custom_layout must be one of {LAYOUTS}; got {layout!r}.")
    if layout != "auto":
        return layout
    d2, d3, d4 = shape[2:]
    last, first = d4 < min(d2, d3), d2 < min(d3, d4)  # channels: the one axis smaller than both
    if last == first:
        raise ValueError(f"{label} has shape {shape}: cannot tell (N, T, H, W, C) from (N, T, C, H,"
                         " W); set config.data.custom_layout to 'NTHWC' or 'NTCHW'.")
    return "NTHWC" if last else "NTCHW"


def _array_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(np.float32)


def array_sequences(array: np.ndarray, label: str, layout: str) -> list[Sequence]:
    """One Sequence per row of a rank-5 array (memory-mapped arrays stay on disk)."""
    layout = detect_layout(array.shape, layout, label)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{label} has dtype {array.dtype}; expected real numbers.")
    if array.shape[0] == 0:
        raise ValueError(f"{label} holds no sequences (N = 0).")
    if np.issubdtype(array.dtype, np.floating):  # NaN/Inf, chunk by chunk
        for n in range(array.shape[0]):
            base.check_finite(np.asarray(array[n]), f"{label} (sequence {n})")
    dtype = _array_dtype(array.dtype)
    n, t = array.shape[:2]
    shape = array.shape[2:] if layout == "NTHWC" else (array.shape[3], array.shape[4],
                                                       array.shape[2])

    def reader(i):
        def chunks(a, b):
            for c in range(a, b, CHUNK):
                x = np.asarray(array[i, c:min(c + CHUNK, b)])
                if layout == "NTCHW":
                    x = x.transpose(0, 2, 3, 1)
                yield x.astype(dtype)
        return chunks

    return [Sequence(f"{label}[{i}]", t, tuple(int(s) for s in shape), dtype, reader(i))
            for i in range(n)]


def load_array_file(path: pathlib.Path, layout: str) -> dict[str | None, list[Sequence]]:
    """{None: sequences} for one array, {split: sequences} for an npz of train/val/test."""
    if path.suffix == ".npy":
        return {None: array_sequences(base.load_array(path, mmap_mode="r"), str(path), layout)}
    z = base.load_array(path)
    try:
        arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise ValueError(f"Cannot read {path} as an .npz archive: {e}") from None
    if not arrays:
        raise ValueError(f"{path} holds no arrays.")
    if set(arrays) <= set(base.SPLITS):
        if "train" not in arrays:
            raise ValueError(f"{path} has split arrays {sorted(arrays)} but no 'train'.")
        return {k: array_sequences(v, f"{path}:{k}", layout) for k, v in arrays.items()}
    if len(arrays) == 1:
        (k, v), = arrays.items()
        return {None: array_sequences(v, f"{path}:{k}", layout)}
    raise ValueError(f"{path} holds arrays {sorted(arrays)}; use one array, or arrays named "
                     "train / val / test.")


def _images_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in base.IMAGE_SUFFIXES), key=base.natural_key)


def image_sequence(folder: pathlib.Path, files: list[pathlib.Path]) -> Sequence:
    """One sequence from a folder's image files; all frames must share one size."""
    sizes = {}
    for f in files:
        h, w, _ = base.image_size(f)
        sizes.setdefault((h, w), f)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise ValueError(f"Frames in {folder} have mixed sizes: {f1.name} is {s1[0]}x{s1[1]}, "
                         f"{f2.name} is {s2[0]}x{s2[1]}; resize them to one size.")
    first = base.read_image(files[0])

    def chunks(a, b):
        for f in files[a:b]:
            x = base.read_image(f)
            if x.shape != first.shape or x.dtype != first.dtype:
                raise ValueError(f"{f} is {x.shape} {x.dtype} but {files[0].name} in the same "
                                 f"folder is {first.shape} {first.dtype}.")
            yield x[None]

    return Sequence(str(folder), len(files), tuple(first.shape), first.dtype, chunks)


def video_sequence(path: pathlib.Path) -> Sequence:
    import imageio.v2 as iio
    try:
        reader = iio.get_reader(path, format="FFMPEG")
        try:
            length = int(reader.count_frames())
            first = np.asarray(reader.get_data(0))
        finally:
            reader.close()
    except Exception as e:
        msg = str(e).split("\n")[0]
        raise ValueError(f"Cannot read video {path}: {msg}") from None
    if length < 1 or first.ndim != 3:
        raise ValueError(f"Cannot read video {path}: no frames decoded.")

    def chunks(a, b):  # one decoding pass over the segment
        n = a
        r = iio.get_reader(path, format="FFMPEG")
        try:
            for i, frame in enumerate(r.iter_data()):
                if i >= b:
                    break
                if i >= a:
                    n += 1
                    yield np.asarray(frame, np.uint8)[None, :, :, :3]
        finally:
            r.close()
        if n != b:
            raise ValueError(f"Video {path} decoded {n} frames; expected at least {b}.")

    return Sequence(str(path), length, tuple(first[:, :, :3].shape), np.dtype(np.uint8), chunks)


def load_unit(path: pathlib.Path, layout: str) -> dict[str | None, list[Sequence]]:
    """Sequences of one path (an array file, a folder of videos / image folders / images)."""
    if path.is_file():
        if path.suffix.lower() in ARRAY_SUFFIXES:
            return load_array_file(path, layout)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return {None: [video_sequence(path)]}
        raise ValueError(f"{path}: custom data is a .npy/.npz array, a video, or a folder; "
                         f"suffix {path.suffix!r} is none of these.")
    if not path.is_dir():
        raise FileNotFoundError(f"config.data.custom_path: {path} does not exist.")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise ValueError(f"{path} is empty; put one sub-folder of images per sequence, video "
                         "files, or a .npy array there.")
    videos = sorted((p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES),
                    key=base.natural_key)
    folders = sorted((p for p in entries if p.is_dir()), key=base.natural_key)
    images = _images_in(path)
    kinds = [k for k, v in (("videos", videos), ("image folders", folders), ("images", images))
             if v]
    if len(kinds) > 1:
        raise ValueError(f"{path} mixes {' and '.join(kinds)}; use one kind per folder.")
    if videos:
        return {None: [video_sequence(v) for v in videos]}
    if images:
        return {None: [image_sequence(path, images)]}
    if folders:
        seqs = []
        for f in folders:
            files = _images_in(f)
            if not files:
                raise ValueError(f"Sequence folder {f} has no image files "
                                 f"({', '.join(base.IMAGE_SUFFIXES)}).")
            seqs.append(image_sequence(f, files))
        return {None: seqs}
    raise ValueError(f"{path} has no videos, image folders or images.")


def discover(path: pathlib.Path, layout: str) -> dict[str | None, list[Sequence]]:
    """{None: sequences} or {split: sequences} for explicit train/val/test entries."""
    if path.is_dir():
        named = {}
        for p in path.iterdir():
            stem = p.name if p.is_dir() else p.stem
            if stem in base.SPLITS and (p.is_dir() or p.suffix.lower() in ARRAY_SUFFIXES):
                if stem in named:
                    raise ValueError(f"{path} has two '{stem}' entries: {named[stem].name}, "
                                     f"{p.name}.")
                named[stem] = p
        if named:
            if "train" not in named:
                raise ValueError(f"{path} has {sorted(named)} entries but no 'train'.")
            out = {}
            for split, p in named.items():
                unit = load_unit(p, layout)
                if set(unit) != {None}:
                    raise ValueError(f"{p}: nested split arrays inside a split entry.")
                out[split] = unit[None]
            return out
    return load_unit(path, layout)


# ----------------------------------------------------------------------------------------
# Splits and plan


@dataclasses.dataclass
class Segment:
    seq: Sequence
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
    raw = str(data_config.get("custom_path", "") or "")
    if not raw:
        raise ValueError("config.data.custom_path is empty; set it to your .npy/.npz array or "
                         "folder of image sequences / videos.")
    path = pathlib.Path(raw).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"config.data.custom_path: {path} does not exist.")
    in_f, out_f = int(data_config.get("in_frames", 0) or 0), int(data_config.get("out_frames", 0)
                                                                  or 0)
    if in_f < 1 or out_f < 1:
        raise ValueError("custom data needs config.data.in_frames and config.data.out_frames "
                         f"(T and T' > 0); got {in_f} -> {out_f}.")
    stride = int(data_config.get("custom_stride", 1))
    if stride < 1:
        raise ValueError(f"config.data.custom_stride must be >= 1; got {stride}.")
    resize = tuple(int(v) for v in data_config.get("custom_resize", (0, 0)))
    if len(resize) != 2 or min(resize) < 0 or (0 in resize and resize != (0, 0)):
        raise ValueError(f"config.data.custom_resize must be (H, W) > 0 or (0, 0); got {resize}.")
    normalize = str(data_config.get("custom_normalize", "auto"))
    if normalize not in NORMALIZE:
        raise ValueError(f"config.data.custom_normalize must be one of {NORMALIZE}; got "
                         f"{normalize!r}.")
    layout = str(data_config.get("custom_layout", "auto"))
    if layout not in LAYOUTS:
        raise ValueError(f"config.data.custom_layout must be one of {LAYOUTS}; got {layout!r}.")
    return {"path": str(path), "signature": signature(path), "layout": layout,
            "in_frames": in_f, "out_frames": out_f, "stride": stride, "resize": resize,
            "grayscale": bool(data_config.get("custom_grayscale", False)),
            "val_fraction": float(data_config.get("custom_val_fraction", 0.0)),
            "test_fraction": float(data_config.get("custom_test_fraction", 0.1))}


def make_plan(s: dict) -> dict:
    """Reads headers / metadata of every input, checks them, and fixes the splits."""
    found = discover(pathlib.Path(s["path"]), s["layout"])
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


def _convert(x: np.ndarray, s: dict, shape, dtype) -> np.ndarray:
    if s["grayscale"]:
        x = base.to_luma(x)
    if s["resize"] != (0, 0):
        x = base.resize_bilinear(x, s["resize"])
    return x.astype(dtype, copy=False).reshape((len(x),) + tuple(shape))


# ----------------------------------------------------------------------------------------
# tfds builder


def builder_class():
    global _Builder
    if _Builder is not None:
        return _Builder
    import tensorflow_datasets as tfds

    class Custom(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """User frames (H, W, C) uint8 / float32; segments and statistics in the metadata."""

        name = "tau_custom"
        VERSION = tfds.core.Version(base.VERSION)
        RELEASE_NOTES = {base.VERSION: "Arrays, image folders and videos."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

        def _info(self):
            p = self.builder_config.params
            return tfds.core.DatasetInfo(
                builder=self, description=__doc__,
                features=tfds.features.FeaturesDict(
                    {"frame": base.frames_feature(p["shape"], p["dtype"])}),
                disable_shuffling=True, metadata=tfds.core.MetadataDict())

        def _split_generators(self, dl_manager):
            del dl_manager
            p = self.builder_config.params
            plan = p["plan"]
            segs = {}
            for split, segments in plan["segments"].items():
                offsets = np.cumsum([0] + [g.length for g in segments])
                segs[split] = [[int(o), int(g.length)] for o, g in zip(offsets, segments)]
            self.info.metadata.update(base.json_safe({
                "in_frames": p["in_frames"], "out_frames": p["out_frames"],
                "stride": p["stride"], "path": p["path"], "shape": plan["shape"],
                "dtype": plan["dtype"], "segments": segs,
                "sources": {s: [[g.seq.label, g.start, g.stop] for g in v]
                            for s, v in plan["segments"].items()}}))
            self.info.metadata["stats"] = {}
            return {s: self._generate_examples(s) for s in plan["segments"]}

        def _generate_examples(self, split):
            p = self.builder_config.params
            shape, dtype = p["plan"]["shape"], np.dtype(p["plan"]["dtype"])
            stats = base.RunningStats(shape[-1])
            segments = p["plan"]["segments"][split]
            n = sum(seg.length for seg in segments)
            i = 0
            for seg in segments:
                for x in seg.seq.chunks(seg.start, seg.stop):
                    base.check_finite(x, seg.seq.label)
                    x = _convert(x, p, shape, dtype)
                    stats.update(x)
                    for frame in x:
                        yield base.ordered_key(i, n), {"frame": frame}
                        i += 1
            self.info.metadata["stats"][split] = stats.as_dict()

    _Builder = Custom
    return _Builder


_Builder = None


def _identity(s: dict) -> dict:
    return {k: s[k] for k in ("path", "signature", "layout", "in_frames", "out_frames", "stride",
                              "resize", "grayscale", "val_fraction", "test_fraction")}


def builder(s: dict, data_config, plan: dict | None = None):
    params = dict(s, plan=plan or {"shape": (1, 1, 1), "dtype": "uint8", "segments": {}})
    params["shape"] = params["plan"]["shape"]
    params["dtype"] = params["plan"]["dtype"]
    stem = pathlib.Path(s["path"]).stem or "data"
    cfg = base.params_config_class()(name=base.config_name(stem, _identity(s)),
                                     version=base.VERSION, description="custom data",
                                     params=params)
    return builder_class()(data_dir=str(base.data_dir_of(data_config)), config=cfg,
                           file_format="array_record")


def _prepared(data_config):
    s = spec(data_config)
    b = builder(s, data_config)
    if not b.is_prepared():
        plan = make_plan(s)  # every check before anything is written
        b = builder(s, data_config, plan)
        base.ensure_prepared(b)
    return b, s


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


def get_source(data_config, split: str) -> base.Source:
    if split not in base.SPLITS:
        base.check_split(NAME, split, base.SPLITS)
    b, s = _prepared(data_config)
    md = base.metadata(b)
    available = tuple(k for k in base.SPLITS if k in md["segments"])
    base.check_split(NAME, split, available,
                     "Set config.data.custom_val_fraction / custom_test_fraction, or add "
                     f"{split}/ next to train/ in config.data.custom_path.")
    sub, div, mean, std = normalisation(md["stats"]["train"], md["dtype"],
                                        str(data_config.get("custom_normalize", "auto")))
    length = md["in_frames"] + md["out_frames"]
    starts = base.window_starts(md["segments"][split], length, md["stride"])
    return base.RecordSource(base.open_split(b, split), name=NAME, split=split,
                             in_frames=md["in_frames"], out_frames=md["out_frames"],
                             channels=md["shape"][-1], sub=sub, div=div, mean=mean, std=std,
                             starts=starts)


def prepare(data_config):
    return _prepared(data_config)[0]
