"""WeatherBench2's metrics beside OpenSTL's unweighted weather metrics: the latitude-weighted RMSE
and the anomaly correlation coefficient (ACC) against a climatology of the training split.

WeatherBench2 (Rasp et al., 2024; github google-research/weatherbench2, `metrics.py`) weights
every grid row by the area of its cells: with cell bounds halfway between the latitudes (and at
+-90 degrees), w_i = sin(upper_i) - sin(lower_i), normalised to mean 1 over the rows. Its MSE of
one forecast is the weighted spatial mean of the squared error; MSE is averaged over forecasts
(init times) for each lead time, and RMSE is its square root (taken after the time average, as
WeatherBench2 recommends). Here every test sequence is a forecast, every output frame a lead
time, and the values are in physical units (K for t2m). Reported per variable and lead time as
`lwrmse_<variable>` / `lwrmse_<variable>_per_frame`, and `lwrmse`, the mean over variables.

ACC (its `metrics.ACC`): with the climatology c at the valid time's day of year and hour of day,
fa = forecast - c and oa = truth - c; ACC = sum(w fa oa) / sqrt(sum(w fa^2) sum(w oa^2)) over
the grid with the same weights, one per forecast and lead time, then averaged over forecasts.
Reported as `acc_<variable>[_per_frame]` and `acc`, as the RMSE is.

The climatology is that of its `scripts/compute_climatology.py` (hourly, default 'explicit'
method, 61-day window): for each hour of day, the years' values are stacked by day of year
(1..366, a non-leap year's day 366 repeating its day 365), and day d's climatology is their
weighted mean over the years and the days d-30..d+30 (wrapping around the year end), weights
1 - |k|/30. Days a split lacks (partial years, hours `weather_step` skips) are left out of the
mean, as xarray's weighted mean skips missing values: with whole years this is WeatherBench2's
climatology. A day and hour without training frames in its window gives NaN, and so does the
ACC of forecasts valid then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

WINDOW_DAYS = 61  # WeatherBench2's default smoothing window


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


def day_and_hour(times) -> tuple[np.ndarray, np.ndarray]:
    """Day of year (1..366) and hour of day of datetime64 `times`, as xarray's `.dt` gives."""
    t = np.asarray(times, "datetime64[s]")
    day = t.astype("datetime64[D]")
    return ((day - t.astype("datetime64[Y]")).astype(np.int64) + 1,
            (t - day).astype("timedelta64[h]").astype(np.int64))


class Climatology:
    """WeatherBench2's hourly climatology: `mean` (366, len(hours), H, W, C) by day of year and
    the `hours` of day that the training frames have, in physical units."""

    def __init__(self, mean, hours):
        self.mean, self.hours = mean, np.asarray(hours, np.int64)

    @classmethod
    def of_frames(cls, chunks: Iterable[np.ndarray], times, window: int = WINDOW_DAYS):
        """From (k, H, W, C) chunks of frames, in order, whose valid times are `times`."""
        if window < 3 or window % 2 == 0:
            raise ValueError(f"the climatology window must be an odd number of days; got "
                             f"{window}.")
        times = np.asarray(times, "datetime64[s]")
        day, hour = day_and_hour(times)
        year = times.astype("datetime64[Y]").astype(np.int64) + 1970
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        hours = np.unique(hour)
        slot = np.searchsorted(hours, hour)
        sums = counts = None  # per (day of year, hour) over the years
        i = 0
        for frame in (f for chunk in chunks for f in np.asarray(chunk, np.float64)):
            if sums is None:
                sums = np.zeros((366, len(hours), *frame.shape))
                counts = np.zeros((366, len(hours)))
            days = [day[i] - 1] + ([365] if day[i] == 365 and not leap[i] else [])  # 366 := 365
            for d in days:
                sums[d, slot[i]] += frame
                counts[d, slot[i]] += 1
            i += 1
        if sums is None or i != len(times):
            raise ValueError(f"{i} frames for {len(times)} time stamps.")
        half = window // 2
        mean = np.empty(sums.shape, np.float32)
        for h in range(len(hours)):
            num, den = np.zeros(sums.shape[:1] + sums.shape[2:]), np.zeros(366)
            for k in range(1 - half, half):  # day d sees day d + k; +-half weigh 0
                w = 1 - abs(k) / half
                num += w * np.roll(sums[:, h], -k, axis=0)
                den += w * np.roll(counts[:, h], -k)
            with np.errstate(invalid="ignore"):  # 0 / 0: no frame in the window
                mean[:, h] = num / den.reshape(-1, *[1] * (num.ndim - 1))
        return cls(mean, hours)

    def at(self, times) -> np.ndarray:
        """float64 (*times.shape, H, W, C) at datetime64 `times`; NaN at hours it lacks."""
        day, hour = day_and_hour(times)
        slot = np.searchsorted(self.hours, hour).clip(max=len(self.hours) - 1)
        out = np.asarray(self.mean[day - 1, slot], np.float64)
        out[self.hours[slot] != hour] = np.nan
        return out


class _PerLead:
    """Sums over forecasts of a per-(forecast, variable, lead) score on a latitude grid."""

    key = ""

    def __init__(self, lat, channel_names: Sequence[str]):
        self.weights = latitude_weights(lat)
        self.names = tuple(channel_names)
        self.count = 0
        self._sum = 0.0  # (C, T') once updated

    def _checked(self, pred, true, mask):
        """(pred, true) as float64 without the padding rows of a batch (`mask` (B,)), and the
        index of the real rows."""
        keep = slice(None) if mask is None else np.asarray(mask, bool)
        pred, true = (np.asarray(a, np.float64)[keep] for a in (pred, true))
        if pred.shape[2] != len(self.weights) or pred.shape[-1] != len(self.names):
            raise ValueError(f"frames {pred.shape[2:]} do not match {len(self.weights)} "
                             f"latitudes and channels {list(self.names)}.")
        self.count += pred.shape[0]
        return pred, true, keep

    def _spatial_mean(self, x):
        """(B, T', H, W, C) -> (B, T', C): the latitude-weighted mean over the grid."""
        return (x * self.weights[:, None, None]).mean(axis=(2, 3))

    def _per_frame(self) -> np.ndarray:
        return self._sum / self.count

    def result(self) -> dict:
        if not self.count:
            raise ValueError("No samples accumulated.")
        per_frame = self._per_frame()  # (C, T')
        out = {self.key: float(per_frame.mean()), f"{self.key}_per_frame": per_frame.mean(0)}
        for name, curve in zip(self.names, per_frame):
            out[f"{self.key}_{name}"] = float(curve.mean())
            out[f"{self.key}_{name}_per_frame"] = curve
        return out


class LatitudeWeightedRMSE(_PerLead):
    """WeatherBench2's latitude-weighted RMSE per (variable, lead)."""

    key = "lwrmse"

    def update(self, pred, true, mask=None):
        """(B, T', H, W, C) predictions and targets in physical units; `mask` (B,) marks the
        real rows of a padded batch."""
        pred, true, _ = self._checked(pred, true, mask)
        self._sum = self._sum + self._spatial_mean(np.square(pred - true)).sum(0).T

    def _per_frame(self) -> np.ndarray:
        return np.sqrt(self._sum / self.count)  # the root after the average over forecasts


class AnomalyCorrelation(_PerLead):
    """WeatherBench2's ACC per (variable, lead) against `climatology` (a Climatology)."""

    key = "acc"

    def __init__(self, lat, channel_names: Sequence[str], climatology: Climatology):
        super().__init__(lat, channel_names)
        self.climatology = climatology

    def update(self, pred, true, times, mask=None):
        """As LatitudeWeightedRMSE.update, with the datetime64 (B, T') valid times."""
        pred, true, keep = self._checked(pred, true, mask)
        clim = self.climatology.at(np.asarray(times)[keep])
        fa, oa = pred - clim, true - clim
        acc = self._spatial_mean(fa * oa) / np.sqrt(self._spatial_mean(fa ** 2)
                                                    * self._spatial_mean(oa ** 2))
        self._sum = self._sum + acc.sum(0).T


class WeatherBench2Metrics:
    """The latitude-weighted RMSE of a geographic field and, given a climatology, its ACC."""

    def __init__(self, lat, channel_names: Sequence[str], climatology: Climatology | None = None):
        self.rmse = LatitudeWeightedRMSE(lat, channel_names)
        self.acc = None if climatology is None else AnomalyCorrelation(lat, channel_names,
                                                                       climatology)

    def update(self, pred, true, times=None, mask=None):
        """As AnomalyCorrelation.update; `times` only with a climatology."""
        self.rmse.update(pred, true, mask)
        if self.acc is not None:
            self.acc.update(pred, true, times, mask)

    def result(self) -> dict:
        return {**self.rmse.result(), **({} if self.acc is None else self.acc.result())}
