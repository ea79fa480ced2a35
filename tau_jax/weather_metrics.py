"""WeatherBench2's latitude-weighted RMSE, beside OpenSTL's unweighted weather metrics.

WeatherBench2 (Rasp et al., 2024; github google-research/weatherbench2, `metrics.py`) weights
every grid row by the area of its cells: with cell bounds halfway between the latitudes (and at
+-90 degrees), w_i = sin(upper_i) - sin(lower_i), normalised to mean 1 over the rows. Its MSE of
one forecast is the weighted spatial mean of the squared error; MSE is averaged over forecasts
(init times) for each lead time, and RMSE is its square root (taken after the time average, as
WeatherBench2 recommends). Here every test sequence is a forecast, every output frame a lead
time, and the values are in physical units (K for t2m). Reported per variable and lead time as
`lwrmse_<variable>` / `lwrmse_<variable>_per_frame`, and `lwrmse`, the mean over variables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latitude_weights(lat) -> np.ndarray:
    """WeatherBench2's cell-area weights of grid rows at latitudes `lat` (degrees), mean 1."""
    lat = np.deg2rad(np.asarray(lat, np.float64))
    if lat.ndim != 1 or len(lat) < 2:
        raise ValueError(f"latitudes must be a 1-D array of at least 2 rows, got {lat.shape}.")
    flip = lat[0] > lat[-1]
    if flip:
        lat = lat[::-1]
    bounds = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    weights = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    weights /= weights.mean()
    return weights[::-1] if flip else weights


class LatitudeWeightedRMSE:
    """Running sums of WeatherBench2's latitude-weighted squared error per (variable, lead)."""

    def __init__(self, lat, channel_names: Sequence[str]):
        self.weights = latitude_weights(lat)
        self.names = tuple(channel_names)
        self.count = 0
        self._sq = None  # (C, T') sums over forecasts of the weighted spatial mean

    def update(self, pred, true, mask=None):
        """(B, T', H, W, C) predictions and targets in physical units; `mask` (B,) marks the
        real rows of a padded batch."""
        pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
        if mask is not None:
            pred, true = pred[np.asarray(mask, bool)], true[np.asarray(mask, bool)]
        if pred.shape[2] != len(self.weights) or pred.shape[-1] != len(self.names):
            raise ValueError(f"frames {pred.shape[2:]} do not match {len(self.weights)} "
                             f"latitudes and channels {list(self.names)}.")
        se = np.square(pred - true) * self.weights[:, None, None]
        spatial = se.mean(axis=(2, 3))  # (B, T', C): one weighted MSE per forecast and lead
        self._sq = spatial.sum(0).T + (0 if self._sq is None else self._sq)
        self.count += pred.shape[0]

    def result(self) -> dict:
        if not self.count:
            raise ValueError("No samples accumulated.")
        per_frame = np.sqrt(self._sq / self.count)  # (C, T')
        out = {"lwrmse": float(per_frame.mean()), "lwrmse_per_frame": per_frame.mean(0)}
        for name, curve in zip(self.names, per_frame):
            out[f"lwrmse_{name}"] = float(curve.mean())
            out[f"lwrmse_{name}_per_frame"] = curve
        return out
