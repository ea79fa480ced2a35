"""Frames of any size: the padding around every model call and the crop after it.

A model runs on the frame sizes its strides, patches and windows divide (each family's
`frame_rule`); frames of any other size are padded up to the nearest such size before every model
call and the output is cropped back (`Framing`), in training, evaluation and prediction alike, so
the loss and every metric see the real frame only. The padding is split evenly between the two
sides, the odd pixel after.

How the band is filled (`Padding`) suits the data:

* video (and any field that is not a global grid): `edge` by default, replicating the border
  pixels; `reflect` and `zeros` (the normalised mean) on request (`data.frame_padding`). The
  choice is measured in experiments/frame_padding.py (README, "Frames of any size").
* global latitude-longitude grids (rows = latitude ascending, columns = longitude): the columns
  wrap around (`wrap`), and the rows beyond a pole are the rows on the other side of it, half a
  turn of longitude away (`pole`): what lies beyond the pole on a meridian is its opposite
  meridian. A grid whose rows include the poles (WeatherBench2's `with_poles` grids, 121 or 721
  rows) mirrors without repeating the pole row; a grid whose rows stop half a cell short of the
  poles (32 x 64 at 5.625 degrees) mirrors with it.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

VIDEO_MODES = ("edge", "reflect", "zeros")
_NUMPY = {"edge": "edge", "reflect": "reflect", "zeros": "constant", "wrap": "wrap"}


@dataclasses.dataclass(frozen=True)
class Padding:
    """How the band around a frame is filled; `rows` and `cols` are one of VIDEO_MODES, `rows`
    may be 'pole' (with `pole_row`: the grid's first and last rows lie on the poles) and `cols`
    'wrap'."""

    rows: str = "edge"
    cols: str = "edge"
    pole_row: bool = False

    def __post_init__(self):
        if self.rows not in VIDEO_MODES + ("pole",) or self.cols not in VIDEO_MODES + ("wrap",):
            raise ValueError(f"unknown frame padding {self}.")

    @staticmethod
    def from_json(spec: dict) -> Padding:
        return Padding(**spec)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """In words, for the log."""
        if self.rows == self.cols:
            return _WORDS[self.rows]
        if self.rows == "pole":
            return f"longitude {_WORDS[self.cols]}, latitude {_WORDS['pole']}"
        return f"rows {_WORDS[self.rows]}, columns {_WORDS[self.cols]}"


_WORDS = {"edge": "border replicated", "reflect": "reflected", "zeros": "zeros", "wrap": "wrapped",
          "pole": "folded across the poles"}


def geographic_padding(lat, lon) -> Padding:
    """The padding of a latitude (ascending) x longitude grid: wrapped columns when the
    longitudes go round the globe, rows folded across a pole when the grid reaches it (pole
    rows, or rows half a cell short of them) and the longitudes can be turned by exactly half."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    step = abs(float(lon[1] - lon[0])) if len(lon) > 1 else 0.0
    wraps = step > 0 and np.isclose(step * len(lon), 360.0)
    dlat = abs(float(lat[1] - lat[0])) if len(lat) > 1 else 0.0
    pole_row = bool(np.isclose(abs(lat[0]), 90.0) and np.isclose(abs(lat[-1]), 90.0))
    near_pole = bool(np.isclose(abs(lat[0]) + dlat / 2, 90.0)
                     and np.isclose(abs(lat[-1]) + dlat / 2, 90.0))
    folds = wraps and len(lon) % 2 == 0 and (pole_row or near_pole)
    return Padding(rows="pole" if folds else "edge", cols="wrap" if wraps else "edge",
                   pole_row=pole_row if folds else False)


def pad_amounts(size, padded) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) taking frames of `size` (H, W) to `padded`."""
    return tuple(((p - s) // 2, (p - s) - (p - s) // 2) for s, p in zip(size, padded))


def pad(x, amounts, padding: Padding):
    """(..., H, W, C) frames padded by `amounts` ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = amounts
    lead = ((0, 0),) * (x.ndim - 3)
    if top or bottom:
        if padding.rows == "pole":
            x = _fold_poles(x, top, bottom, padding.pole_row)
        else:
            x = jnp.pad(x, lead + ((top, bottom), (0, 0), (0, 0)), mode=_NUMPY[padding.rows])
    if left or right:
        x = jnp.pad(x, lead + ((0, 0), (left, right), (0, 0)), mode=_NUMPY[padding.cols])
    return x


def _fold_poles(x, top, bottom, pole_row: bool):
    """Rows beyond each pole: the mirrored rows (without the pole row itself when the grid has
    one), turned half way round in longitude."""
    mode = "reflect" if pole_row else "symmetric"
    x = jnp.pad(x, ((0, 0),) * (x.ndim - 3) + ((top, bottom), (0, 0), (0, 0)), mode=mode)
    h, half = x.shape[-3], x.shape[-2] // 2
    south = jnp.roll(x[..., :top, :, :], half, axis=-2)
    north = jnp.roll(x[..., h - bottom:, :, :], half, axis=-2)
    return jnp.concatenate([south, x[..., top:h - bottom, :, :], north], axis=-3)


def crop(y, amounts):
    """(..., H', W', C) model outputs cropped back by `amounts`."""
    (top, bottom), (left, right) = amounts
    return y[..., top:y.shape[-3] - bottom, left:y.shape[-2] - right, :]


EDGE = Padding()  # video's default


@dataclasses.dataclass(frozen=True)
class Framing:
    """Padding by `amounts` with `padding` before a model call, cropping after it."""

    amounts: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    padding: Padding = EDGE

    def pad(self, x):
        return pad(x, self.amounts, self.padding)

    def crop(self, y):
        return crop(y, self.amounts)

    def around(self, call):
        """`call` (frames -> frames) on padded frames, its output cropped."""
        return lambda frames: self.crop(call(self.pad(frames)))


NONE = Framing()
