"""Test metrics exactly as OpenSTL reports them (openstl/core/metrics.py), in bounded memory.

Videos are channels-last arrays (N, T, H, W, C). The order of operations is OpenSTL's:
de-normalise both arrays (x * std + mean), compute MSE / MAE / RMSE on the unclipped
prediction, clip only the prediction to `clip_range`, compute SSIM and PSNR on the clipped one.

* MSE / MAE: per-frame sums over C*H*W averaged over samples and frames (so Moving MNIST MSE is
  a sum over 4096 pixels); with `spatial_norm=True` the sum becomes a mean (WeatherBench).
  RMSE = sqrt(MSE), i.e. the root of the test-set mean, not a mean of per-sample roots.
* PSNR: -10 * log10(frame MSE) with peak 1, per frame in float32, averaged over frames.
* SSIM: scikit-image's (<= 0.19) default, which OpenSTL calls: 7x7 box window with reflect
  boundary, K1 = 0.01, K2 = 0.03, sample covariance, map cropped by 3 pixels, per channel then
  averaged. OpenSTL passes float32 frames and no data range, so skimage uses 2 (its float range
  [-1, 1]); that value is kept to reproduce the published numbers.
* `channel_names` (multi-variable WeatherBench): the channels split into equal contiguous groups;
  MSE / MAE / RMSE are computed per group (keys 'mse_<name>', ...) and the plain keys hold the
  mean over groups.

`MetricAccumulator` keeps per-lead-time running sums, so a test set of any size is evaluated
batch by batch in constant memory; `evaluate` is one accumulator update over whole arrays.
Results are Python floats; with `per_frame=True` every key k also has 'k_per_frame', a float64
array of shape (T,) with the metric at each lead time. Those curves average to the scalars,
except RMSE, whose curve is sqrt of the per-frame MSE (the usual lead-time RMSE).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import uniform_filter

KNOWN_METRICS = ("mse", "mae", "rmse", "ssim", "psnr")
_GROUPED = ("mse", "mae", "rmse")  # metrics reported per channel group

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_DATA_RANGE = 2.0  # skimage's implicit range for float input, which OpenSTL relies on

_CHUNK_ELEMENTS = 1 << 21  # values per chunk inside update(): bounds SSIM's float64 temporaries


def ssim_per_frame(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM of each (H, W, C) frame of (..., H, W, C) arrays, as skimage with OpenSTL's settings."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    size = (1,) * (x.ndim - 3) + (SSIM_WINDOW, SSIM_WINDOW, 1)

    def box(a):
        return uniform_filter(a, size=size, mode="reflect")

    n = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n / (n - 1)
    ux, uy = box(x), box(y)
    vx = cov_norm * (box(x * x) - ux * ux)
    vy = cov_norm * (box(y * y) - uy * uy)
    vxy = cov_norm * (box(x * y) - ux * uy)
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (SSIM_WINDOW - 1) // 2
    per_channel = s[..., pad:-pad, pad:-pad, :].mean(axis=(-3, -2))
    return per_channel.mean(axis=-1)


def psnr_per_frame(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PSNR (peak 1) of each (H, W, C) frame, in float32 as OpenSTL; inf where the frames agree."""
    mse = np.mean(np.square(np.asarray(x, np.float32) - np.asarray(y, np.float32)),
                  axis=(-3, -2, -1)).astype(np.float64)
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not names:
        raise ValueError("metrics is empty; choose from " + ", ".join(KNOWN_METRICS) + ".")
    for name in names:
        if name == "lpips":
            raise ValueError("LPIPS is not available: it needs pretrained AlexNet weights.")
        if name not in KNOWN_METRICS:
            raise ValueError(f"Unknown metric {name!r}; known metrics are "
                             + ", ".join(KNOWN_METRICS) + ".")
    return tuple(dict.fromkeys(names))


def _check_channel_names(channel_names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if channel_names is None:
        return None
    names = (channel_names,) if isinstance(channel_names, str) else tuple(channel_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"channel_names must be non-empty and distinct, got {list(names)}.")
    return names


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


class MetricAccumulator:
    """Running per-lead-time sums of OpenSTL's metrics over batches; memory independent of N.

    `update` takes (B, T, H, W, C) predictions and targets, with an optional (B,) bool mask that
    marks real samples (False = padding, e.g. the filler of a last, partial batch).
    """

    def __init__(self, metrics: Sequence[str] | str = ("mse", "mae", "ssim", "psnr"),
                 mean=None, std=None, spatial_norm: bool = False,
                 clip_range: tuple[float, float] = (0.0, 1.0),
                 channel_names: Sequence[str] | str | None = None):
        self.metrics = check_metrics(metrics)
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together to de-normalise.")
        self.mean = None if mean is None else np.asarray(mean, np.float64)
        self.std = None if std is None else np.asarray(std, np.float64)
        self.spatial_norm = bool(spatial_norm)
        lo, hi = (float(v) for v in clip_range)
        if not lo < hi:
            raise ValueError(f"clip_range must be (low, high) with low < high, got {clip_range}.")
        self.clip_range = (lo, hi)
        self.channel_names = _check_channel_names(channel_names)
        self.reset()

    def reset(self):
        """Forget all updates."""
        self.count = 0        # real samples seen
        self._shape = None    # (T, H, W, C) fixed by the first update
        self._sq = self._abs = None   # (G, T) error sums per channel group and lead time
        self._ssim = self._psnr = None  # (T,) sums of per-frame values

    def _check_batch(self, pred, true, mask):
        pred = np.asarray(pred)
        true = np.asarray(true)
        if pred.shape != true.shape:
            raise ValueError(f"pred and true shapes differ: {pred.shape} vs {true.shape}.")
        if pred.ndim != 5:
            raise ValueError(f"Expected (N, T, H, W, C) arrays, got shape {pred.shape}.")
        if self._shape is not None and pred.shape[1:] != self._shape:
            raise ValueError(f"Batch frames {pred.shape[1:]} differ from earlier batches' "
                             f"{self._shape}.")
        _, h, w, c = pred.shape[1:]
        if "ssim" in self.metrics and min(h, w) < SSIM_WINDOW:
            raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, "
                             f"got {h}x{w}.")
        groups = len(self.channel_names) if self.channel_names else 1
        if c % groups:
            raise ValueError(f"{c} channels do not split into {groups} equal groups "
                             f"for channel_names {list(self.channel_names)}.")
        for name, stat in (("mean", self.mean), ("std", self.std)):
            if stat is not None and not _broadcasts_to(stat.shape, pred.shape):
                raise ValueError(f"{name} of shape {stat.shape} does not broadcast to the "
                                 f"batch shape {pred.shape}.")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != pred.shape[:1] or mask.dtype != bool:
                raise ValueError(f"mask must be a bool array of shape {pred.shape[:1]}, got "
                                 f"{mask.dtype} {mask.shape}.")
            pred, true = pred[mask], true[mask]
        step = max(1, _CHUNK_ELEMENTS // int(np.prod(pred.shape[1:])))
        chunks = [slice(s, s + step) for s in range(0, pred.shape[0], step)]
        if not all(np.isfinite(a[k]).all() for k in chunks for a in (pred, true)):
            raise ValueError("pred or true holds NaN or infinite values.")
        return pred, true, groups, chunks

    def update(self, pred, true, mask=None):
        """Add a batch, in chunks of samples so float64 temporaries stay small."""
        pred, true, groups, chunks = self._check_batch(pred, true, mask)
        if self._shape is None:
            self._shape = pred.shape[1:]
            t = self._shape[0]
            self._sq, self._abs = np.zeros((groups, t)), np.zeros((groups, t))
            self._ssim, self._psnr = np.zeros(t), np.zeros(t)
        for k in chunks:
            self._accumulate(pred[k].astype(np.float64), true[k].astype(np.float64), groups)

    def _accumulate(self, pred, true, groups):
        if self.mean is not None:
            pred = pred * self.std + self.mean
            true = true * self.std + self.mean
        b, t, h, w, c = pred.shape
        err = (pred - true).reshape(b, t, h, w, groups, c // groups)
        self._sq += np.square(err).sum(axis=(0, 2, 3, 5)).T
        self._abs += np.abs(err).sum(axis=(0, 2, 3, 5)).T
        clipped = np.clip(pred, *self.clip_range)
        if "ssim" in self.metrics:
            self._ssim += ssim_per_frame(clipped, true).sum(axis=0)
        if "psnr" in self.metrics:
            self._psnr += psnr_per_frame(clipped, true).sum(axis=0)
        self.count += b

    def result(self, per_frame: bool = False) -> dict:
        """Metrics over everything seen; with per_frame, also 'key_per_frame' (T,) curves."""
        if not self.count:
            raise ValueError("No samples accumulated; call update() with unmasked data first.")
        _, h, w, c = self._shape
        groups = self._sq.shape[0]
        norm = (c // groups) * h * w if self.spatial_norm else 1
        curves = {"mse": self._sq / (self.count * norm), "mae": self._abs / (self.count * norm)}
        curves["rmse"] = np.sqrt(curves["mse"])
        scalars = {"mse": curves["mse"].mean(axis=1), "mae": curves["mae"].mean(axis=1)}
        scalars["rmse"] = np.sqrt(scalars["mse"])  # root of the overall mean, per group

        out = {}
        for name in self.metrics:
            if name in _GROUPED:
                out[name] = float(scalars[name].mean())
                if per_frame:
                    out[name + "_per_frame"] = curves[name].mean(axis=0)
                for g, cname in enumerate(self.channel_names or ()):
                    out[f"{name}_{cname}"] = float(scalars[name][g])
                    if per_frame:
                        out[f"{name}_{cname}_per_frame"] = curves[name][g]
            else:
                curve = (self._ssim if name == "ssim" else self._psnr) / self.count
                out[name] = float(curve.mean())
                if per_frame:
                    out[name + "_per_frame"] = curve
        return out


def evaluate(pred, true, metrics: Sequence[str] | str = ("mse", "mae", "ssim", "psnr"),
             mean=None, std=None, spatial_norm: bool = False,
             clip_range: tuple[float, float] = (0.0, 1.0),
             channel_names: Sequence[str] | str | None = None,
             per_frame: bool = False) -> dict:
    """OpenSTL's `metric()` on whole (N, T, H, W, C) arrays: one MetricAccumulator update."""
    acc = MetricAccumulator(metrics, mean=mean, std=std, spatial_norm=spatial_norm,
                            clip_range=clip_range, channel_names=channel_names)
    acc.update(pred, true)
    return acc.result(per_frame=per_frame)
