"""User sequences read frame chunk by chunk from an array file (.npy / .npz), a folder of
image files, image folders or videos, or a video file: the inputs of the custom dataset, and
of `tau_jax.predict` (which needs no tfds, so neither does this module).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterator

import numpy as np

from tau_jax.data import base

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".ogv")
ARRAY_SUFFIXES = (".npy", ".npz")
LAYOUTS = ("auto", "NTHWC", "NTCHW")
CHUNK = 64  # frames read at a time from an array


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
    except Exception as e:  # noqa: BLE001 - broken archives fail in many ways
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
    except Exception as e:  # noqa: BLE001 - ffmpeg failures surface as many types
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
