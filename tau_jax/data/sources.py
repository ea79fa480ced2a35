"""The random-access sources the input pipeline reads: model-ready, normalised sequences, and
the normalisation that makes them (which `tau_jax.predict` applies to new inputs)."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np


class Source:
    """A random-access source of model-ready sequences for grain (`len`, `[i]`).

    `source[i]`: float32 `(in_frames + out_frames, H, W, C)`, normalised: `(stored - sub) /
    div` per channel, `stored` being the data in the units the dataset stores (0..255 for
    8-bit images). `x * std + mean` gives the scale metrics are computed on: the stored units,
    or [0, 1] where 8-bit images are divided by 255 (mean 0, std 1, as OpenSTL). `sub`, `div`,
    `mean`, `std` are float32 `(C,)` arrays. `epoch_size` is the number of indices that make
    one epoch (`len` except for a generating source whose index space covers many epochs).
    `lat`, `lon`: the grid's latitudes and longitudes in degrees for geographic fields (None
    for video), which the run's map pictures are drawn on. `times`: datetime64 `(len, T+T')`,
    the valid time of every sequence's frames where the files give them (weather; None
    elsewhere), which WeatherBench2's ACC needs.
    """

    name: str
    split: str
    in_frames: int
    out_frames: int
    sub: np.ndarray
    div: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    times: np.ndarray | None = None

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


def per_channel(value, channels: int) -> np.ndarray:
    """A scalar or `(C,)` value as a float32 `(C,)` array."""
    return np.broadcast_to(np.asarray(value, np.float32), (channels,)).copy()


class RecordSource(Source):
    """Sequences read from a tfds array_record data source.

    layout 'clips': item i is record i's `frames`; layout 'frames': item i stacks records
    `starts[i] .. starts[i] + length - 1` (feature `frame`).
    """

    def __init__(self, records, *, name: str, split: str, in_frames: int, out_frames: int,
                 channels: int, sub=0.0, div=1.0, mean=0.0, std=1.0,
                 starts: np.ndarray | None = None):
        self._records = records
        self.name = name
        self.split = split
        self.in_frames = int(in_frames)
        self.out_frames = int(out_frames)
        self.sub, self.div = per_channel(sub, channels), per_channel(div, channels)
        if np.any(self.div == 0):
            raise ValueError("normalisation divisor is zero for some channel")
        self._identity = bool(np.all(self.sub == 0) and np.all(self.div == 1))
        self.mean, self.std = per_channel(mean, channels), per_channel(std, channels)
        self._starts = None if starts is None else np.asarray(starts, np.int64)
        self._length = self.in_frames + self.out_frames

    def __len__(self) -> int:
        return len(self._records) if self._starts is None else len(self._starts)

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        if not self._identity:
            x = (x - self.sub) / self.div
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


def window_starts(segments: Sequence[Sequence[int]], length: int, stride: int) -> np.ndarray:
    """Start record of every window of `length` frames, stepping by `stride`, that fits inside
    one segment `(offset, n_frames)` (windows never cross segments)."""
    out = [off + np.arange(0, n - length + 1, stride, dtype=np.int64)
           for off, n in segments if n >= length]
    return np.concatenate(out) if out else np.zeros(0, np.int64)
