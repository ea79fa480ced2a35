"""A PNG grid of a few sequences of a source (`tau-jax data show`)."""

from __future__ import annotations

import math
import pathlib

import numpy as np


def grid(source, indices, gap: int = 2, split_gap: int = 6, min_height: int = 64) -> np.ndarray:
    """uint8 image of sequences `indices` of a source, de-normalised (x * std + mean)."""
    seqs = np.stack([source[int(i)] for i in indices]) * source.std + source.mean
    return video_grid(seqs, source.in_frames, gap, split_gap, min_height)


def video_grid(seqs: np.ndarray, t_in: int, gap: int = 2, split_gap: int = 6,
               min_height: int = 64) -> np.ndarray:
    """uint8 image of videos (N, T, H, W, C): one row per sequence (per channel, unless C is 1 or
    3), one column per frame, a wider gap after the first `t_in` frames. Data in [0, 1] is shown
    as is, anything else min-max scaled per channel."""
    seqs = np.asarray(seqs, np.float32)
    n, t, h, w, c = seqs.shape
    lo, hi = seqs.min(axis=(0, 1, 2, 3)), seqs.max(axis=(0, 1, 2, 3))
    if lo.min() >= -1e-6 and hi.max() <= 1 + 1e-6:
        lo, hi = np.zeros(c), np.ones(c)
    seqs = (seqs - lo) / np.where(hi > lo, hi - lo, 1.0)
    seqs = np.clip(np.rint(seqs * 255), 0, 255).astype(np.uint8)
    if c == 3:
        rows = [s for s in seqs]                                # (t, h, w, 3)
    else:
        rows = [np.repeat(s[..., k:k + 1], 3, -1) for s in seqs for k in range(c)]
    k = max(1, math.ceil(min_height / h))
    if k > 1:
        rows = [r.repeat(k, axis=1).repeat(k, axis=2) for r in rows]
        h, w = h * k, w * k
    width = t * w + (t - 1) * gap + (split_gap - gap if 0 < t_in < t else 0)
    height = len(rows) * h + (len(rows) - 1) * gap
    out = np.full((height, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = r * (h + gap)
        for f in range(t):
            x = f * (w + gap) + (split_gap - gap if 0 < t_in <= f else 0)
            out[y:y + h, x:x + w] = row[f]
    return out


def save_grid(source, path: str | pathlib.Path, num: int = 4) -> pathlib.Path:
    from PIL import Image
    n = len(source)
    if n == 0:
        raise ValueError(f"{source.name}/{source.split} is empty.")
    num = max(1, min(int(num), n))
    indices = [int(i) for i in np.linspace(0, n - 1, num).round()]
    path = pathlib.Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    Image.fromarray(grid(source, indices)).save(path)
    return path
