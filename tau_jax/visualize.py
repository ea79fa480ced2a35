"""Labelled pictures of a run: sample grids (PNG), clips (GIF, MP4) and lead-time plots.

Matplotlib draws them (its object API on an Agg canvas: no pyplot, no global backend). A grid is
one image of all frames (fast to draw), upscaled by an integer factor with nearest neighbours so a
64x64 digit is readable, labelled around its edges. Video (1 or 3 channels) is shown as grey or RGB;
a field (weather, traffic, or any other channel count) is drawn channel by channel with a
colormap and a colorbar whose range is the ground truth's, so input, target and prediction share
one scale.
"""

from __future__ import annotations

import contextlib
import pathlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
PANEL_PIXELS = 80      # frames are upscaled (nearest) by an integer factor to at least this size
GAP, BLOCK_GAP = 3, 14  # pixels between panels, and between sequences (or channels)
FIELD_CMAP = "viridis"
GIF_FRAME_MS = 250     # 4 frames a second
METRIC_LABELS = {"mse": "MSE (lower is better)", "mae": "MAE (lower is better)",
                 "rmse": "RMSE (lower is better)",
                 "lwrmse": "lat-weighted RMSE (lower is better)",
                 "acc": "ACC (higher is better)",
                 "ssim": "SSIM (higher is better)", "psnr": "PSNR dB (higher is better)"}


def is_field(channels: int, field: bool | None) -> bool:
    """Draw with a colormap? `field` says so explicitly; None: any channel count but 1 and 3."""
    return channels not in (1, 3) if field is None else bool(field)


def colormap(name: str):
    """Matplotlib's colormap `name`; ValueError naming a few when there is none."""
    import matplotlib
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; matplotlib's include viridis, magma, "
                         "RdBu_r, coolwarm and gray.") from None


class _Painter:
    """Turns frames into RGB panels on one scale per channel: the data's own [0, 1] for video,
    the truth's min-max otherwise (predictions overshoot; they are clipped to it)."""

    def __init__(self, truth: np.ndarray, field: bool | None, cmap: str | None = None):
        lo, hi = truth.min(axis=(0, 1, 2, 3)), truth.max(axis=(0, 1, 2, 3))
        if lo.min() >= -1e-6 and hi.max() <= 1 + 1e-6:
            lo, hi = np.zeros_like(lo), np.ones_like(hi)
        self.lo, self.hi = lo, np.where(hi > lo, hi, lo + 1)
        self.field = cmap is not None or is_field(truth.shape[-1], field)
        self.cmap = colormap(cmap or FIELD_CMAP)
        h, w = truth.shape[2:4]
        self.zoom = max(1, -(-PANEL_PIXELS // max(h, w)))
        self.size = (h * self.zoom, w * self.zoom)

    def channels(self) -> list:
        """What one block of rows shows: every channel of a field, or the whole frame."""
        return list(range(len(self.lo))) if self.field else [None]

    def __call__(self, frame: np.ndarray, channel) -> np.ndarray:
        """(H, W, C) frame -> upscaled (H', W', 3) float RGB of `channel` (None: grey / RGB)."""
        x = np.clip((frame - self.lo) / (self.hi - self.lo), 0, 1)
        if channel is not None:
            x = self.cmap(x[..., channel])[..., :3]
        elif x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        return x.repeat(self.zoom, 0).repeat(self.zoom, 1)

    def colorbar(self, fig, rect, channel, label: str) -> None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        mappable = ScalarMappable(Normalize(self.lo[channel], self.hi[channel]), self.cmap)
        bar = fig.colorbar(mappable, cax=fig.add_axes(rect))
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)


def _canvas(width_px: int, height_px: int, left: int, top: int, right: int, bottom: int):
    """A figure holding one pixel-exact image axes of width_px x height_px with margins (pixels)
    for labels; returns (figure, axes)."""
    fw, fh = width_px + left + right, height_px + top + bottom
    fig = Figure(figsize=(fw / DPI, fh / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / fw, bottom / fh, width_px / fw, height_px / fh))
    ax.set_axis_off()
    return fig, ax


def _bar_rect(fig, ax, top: int, rows: int, height: int) -> tuple[float, float, float, float]:
    """Figure-fraction rectangle of a colorbar 10 px right of the mosaic (`height` pixel rows),
    beside its rows top .. top + rows."""
    box = ax.get_position()
    return (box.x1 + 10 / fig.bbox.width, box.y0 + box.height * (1 - (top + rows) / height),
            12 / fig.bbox.width, box.height * rows / height)


def sample_figure(inputs, targets, preds, *, field: bool | None = None, channel_names=None,
                  title: str = "", cmap: str | None = None, ids=None,
                  spatial_norm: bool = False) -> Figure:
    """Per sequence (and channel, for a field) three rows: the T inputs (t = -T+1 .. 0), the
    T' targets and the T' predictions (lead +1 .. +T'), the prediction row labelled with the
    sequence's MSE (a frame's squared errors summed, or averaged with `spatial_norm`, as the
    dataset's metrics are). Arrays are (N, T, H, W, C) / (N, T', H, W, C) in display units;
    `targets` may be None (predictions of new data); `ids` name the sequences (default 0, 1,
    ...)."""
    from tau_jax.metrics import evaluate
    inputs, preds = np.asarray(inputs, np.float32), np.asarray(preds, np.float32)
    targets = None if targets is None else np.asarray(targets, np.float32)
    n, t_in, _, _, c = inputs.shape
    t_out = preds.shape[1]
    paint = _Painter(inputs if targets is None else np.concatenate([inputs, targets], 1), field,
                     cmap)
    names = list(channel_names or [f"channel {k}" for k in range(c)])
    kinds = ["input"] + ([] if targets is None else ["target"]) + ["prediction"]
    ids = list(range(n)) if ids is None else list(ids)
    blocks = [(i, k) for i in range(n) for k in paint.channels()]
    ph, pw = paint.size
    cols = max(t_in, t_out)
    block_h = len(kinds) * ph + (len(kinds) - 1) * GAP
    width = cols * pw + (cols - 1) * GAP
    height = len(blocks) * block_h + (len(blocks) - 1) * BLOCK_GAP
    mosaic = np.ones((height, width, 3), np.float32)
    fig, ax = _canvas(width, height, left=110, top=60 if title else 40,
                      right=90 if paint.field else 10, bottom=10)
    labels = []
    for b, (i, k) in enumerate(blocks):
        y_block = b * (block_h + BLOCK_GAP)
        part = slice(None) if k is None else slice(k, k + 1)  # a field: the channel's MSE
        mse = None if targets is None else evaluate(
            preds[i:i + 1, ..., part], targets[i:i + 1, ..., part], "mse",
            spatial_norm=spatial_norm)["mse"]
        for r, kind in enumerate(kinds):
            frames = {"input": inputs, "target": targets, "prediction": preds}[kind][i]
            y = y_block + r * (ph + GAP)
            for j, frame in enumerate(frames):
                x = j * (pw + GAP)
                mosaic[y:y + ph, x:x + pw] = paint(frame, k)
            label = f"#{ids[i]}" + (f" {names[k]}" if k is not None else "") + f"\n{kind}"
            if kind == "prediction" and mse is not None:
                label += f"\nMSE {mse:.4g}"
            labels.append((y + ph / 2, label))
    ax.imshow(mosaic, interpolation="nearest")
    for y, label in labels:
        ax.text(-8, y, label, ha="right", va="center", fontsize=8)
    ax.text(-8, -6, "input time t\noutput lead", ha="right", va="bottom", fontsize=8)
    for j in range(cols):  # column headings: time of the inputs, lead of the outputs
        heading = (f"t={j - t_in + 1}" if j < t_in else "") + "\n" + (
            f"+{j + 1}" if j < t_out else "")
        ax.text(j * (pw + GAP) + pw / 2, -6, heading, ha="center", va="bottom", fontsize=8)
    if paint.field:
        for b, (_, k) in enumerate(blocks):
            paint.colorbar(fig, _bar_rect(fig, ax, b * (block_h + BLOCK_GAP), block_h, height),
                           k, names[k])
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 8 / fig.bbox.height, va="top")
    return fig


def clip_frames(inputs, targets, preds, *, field: bool | None = None, channel_names=None,
                title: str = "", cmap: str | None = None, ids=None) -> list[np.ndarray]:
    """RGB frames of a clip: per time step, the truth (inputs, then targets) above the
    prediction (one row without targets) for each sequence side by side, titled with the time
    or lead. A field shows its first channel with a colormap and a colorbar."""
    inputs, preds = np.asarray(inputs, np.float32), np.asarray(preds, np.float32)
    targets = None if targets is None else np.asarray(targets, np.float32)
    n, t_in = inputs.shape[:2]
    t_out = preds.shape[1]
    paint = _Painter(inputs if targets is None else np.concatenate([inputs, targets], 1), field,
                     cmap)
    channel = 0 if paint.field else None
    rows = ["truth", "prediction"] if targets is not None else ["input, then\nprediction"]
    ph, pw = paint.size
    width, height = n * pw + (n - 1) * GAP, len(rows) * ph + (len(rows) - 1) * GAP
    fig, ax = _canvas(width, height, left=80, top=45, right=80 if paint.field else 10,
                      bottom=10)
    mosaic = np.ones((height, width, 3), np.float32)
    image = ax.imshow(mosaic, interpolation="nearest")
    for r, row in enumerate(rows):
        ax.text(-8, r * (ph + GAP) + ph / 2, row, ha="right", va="center", fontsize=9)
    for i in range(n):
        ax.text(i * (pw + GAP) + pw / 2, -5, f"#{i if ids is None else ids[i]}", ha="center",
                va="bottom", fontsize=9)
    if paint.field:
        name = (list(channel_names) if channel_names else ["channel 0"])[0]
        paint.colorbar(fig, _bar_rect(fig, ax, 0, height, height), 0, name)
    heading = fig.suptitle("", fontsize=10, y=1 - 6 / fig.bbox.height, va="top")
    out = []
    for f in range(t_in + t_out):
        shown = [inputs[:, f] if f < t_in else preds[:, f - t_in]]
        if targets is not None:
            shown.insert(0, inputs[:, f] if f < t_in else targets[:, f - t_in])
        for r, frames in enumerate(shown):
            for i in range(n):
                y, x = r * (ph + GAP), i * (pw + GAP)
                mosaic[y:y + ph, x:x + pw] = paint(frames[i], channel)
        image.set_data(mosaic)
        when = f"input t={f - t_in + 1}" if f < t_in else f"prediction +{f - t_in + 1}"
        heading.set_text(f"{title}   {when}".strip())
        fig.canvas.draw()
        out.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    return out


def save_samples(inputs, targets, preds, stem: str | pathlib.Path, mp4: bool = False, *,
                 field: bool | None = None, channel_names=None, title: str = "",
                 cmap: str | None = None, ids=None,
                 spatial_norm: bool = False) -> tuple[pathlib.Path, ...]:
    """Write `<stem>.png` (sample_figure), `<stem>.gif` (clip_frames, 4 frames a second) and
    with `mp4` the same clip as `<stem>.mp4` (H.264 through imageio's bundled ffmpeg). A
    `cmap` draws every channel with that colormap (as a field)."""
    from PIL import Image
    stem = pathlib.Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    kw = dict(field=field, channel_names=channel_names, title=title, cmap=cmap, ids=ids)
    png = stem.with_suffix(".png")
    with _naming(png):
        sample_figure(inputs, targets, preds, spatial_norm=spatial_norm, **kw).savefig(png)
    frames = clip_frames(inputs, targets, preds, **kw)
    gif = stem.with_suffix(".gif")
    with _naming(gif):
        pictures = [Image.fromarray(f) for f in frames]
        pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=GIF_FRAME_MS,
                         loop=0)
    if not mp4:
        return png, gif
    import imageio.v2 as imageio
    video = stem.with_suffix(".mp4")
    h, w = frames[0].shape[:2]  # H.264 (yuv420p) needs even sides: repeat the last row / column
    frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
    with _naming(video):
        imageio.mimwrite(video, frames, fps=1000 / GIF_FRAME_MS, macro_block_size=1)
    return png, gif, video


def lead_time_figure(metrics: dict, title: str = "") -> Figure:
    """One panel per metric with a per-frame curve (`<m>_per_frame`): the model against copying
    the last input frame (`copy_last_<m>_per_frame`), by lead time; a row per metric, its
    per-variable curves (`<m>_<variable>_per_frame`, multi-variable weather) beside it."""
    names = [k[:-len("_per_frame")] for k, v in metrics.items()
             if k.endswith("_per_frame") and not k.startswith("copy_last_") and np.ndim(v) == 1]
    if not names:
        raise ValueError("no per-frame metrics ('<metric>_per_frame') to plot.")
    rows = [[m] + [n for n in names if n.startswith(m + "_")] for m in names if "_" not in m]
    if all(len(row) == 1 for row in rows):  # no per-variable curves: the metrics side by side
        rows = [[row[0] for row in rows]]
    cols = max(map(len, rows))
    height = 2.6 * len(rows) + (0.3 if title else 0.0)
    fig = Figure(figsize=(3.5 * cols, height), dpi=DPI)  # fixed margins (inches): fast to draw
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.25 / cols, right=0.99, bottom=0.45 / height,
                        top=1 - (0.6 if title else 0.3) / height, wspace=0.3, hspace=0.55)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for row, panels in zip(axes, rows):
        for ax, name in zip(row, panels):
            model = np.asarray(metrics[f"{name}_per_frame"])
            lead = np.arange(1, len(model) + 1)
            ax.plot(lead, model, "o-", ms=3, label="model")
            baseline = metrics.get(f"copy_last_{name}_per_frame")
            if baseline is not None:
                ax.plot(lead, np.asarray(baseline), "s--", ms=3, color="0.5",
                        label="copy last input frame")
            ax.set_xlabel("lead time (frames)")
            metric, _, variable = name.partition("_")
            label = METRIC_LABELS.get(metric, metric)
            ax.set_title(label.replace(" (", f" {variable} (", 1) if variable else label,
                         fontsize=9)
            ax.set_xticks(lead if len(lead) <= 12 else lead[::max(1, len(lead) // 10)])
            ax.grid(alpha=0.3)
        for ax in row[len(panels):]:
            ax.set_visible(False)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_lead_time(metrics: dict, path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path):
        lead_time_figure(metrics, title).savefig(path)
    return path


def map_figure(truth, pred, lat, lon, *, labels=None, title: str = "") -> Figure:
    """Per channel a row of three maps on latitude / longitude axes: the truth and the
    prediction on one colour scale (the truth's range; the colorbar names the channel and its
    units) and their difference on a diverging scale centred on 0. `truth`, `pred` are
    (H, W, C) in physical units; `lat` (H,) and `lon` (W,) in degrees."""
    truth, pred = np.asarray(truth, np.float32), np.asarray(pred, np.float32)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    if lat[0] > lat[-1]:  # north first: flip to south first, as origin='lower' draws
        truth, pred, lat = truth[::-1], pred[::-1], lat[::-1]
    c = truth.shape[-1]
    dlat = (lat[-1] - lat[0]) / max(len(lat) - 1, 1) / 2
    dlon = (lon[-1] - lon[0]) / max(len(lon) - 1, 1) / 2
    extent = (lon[0] - dlon, lon[-1] + dlon, lat[0] - dlat, lat[-1] + dlat)
    fig = Figure(figsize=(13, 2.6 * c + (0.5 if title else 0.2)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for row, k in zip(fig.subplots(c, 3, squeeze=False), range(c)):
        name = labels[k] if labels else f"channel {k}"
        lo, hi = float(truth[..., k].min()), float(truth[..., k].max())
        err = pred[..., k] - truth[..., k]
        lim = float(np.abs(err).max()) or 1.0
        for ax, image, what, scale in (
                (row[0], truth[..., k], "truth", dict(cmap="viridis", vmin=lo, vmax=hi)),
                (row[1], pred[..., k], "prediction", dict(cmap="viridis", vmin=lo, vmax=hi)),
                (row[2], err, "prediction - truth", dict(cmap="RdBu_r", vmin=-lim, vmax=lim))):
            drawn = ax.imshow(image, origin="lower", extent=extent, **scale)
            ax.set_title(f"{name.split(' (')[0]}: {what}", fontsize=9)
            ax.set_xlabel("longitude (\N{DEGREE SIGN}E)", fontsize=8)
            ax.set_ylabel("latitude (\N{DEGREE SIGN}N)", fontsize=8)
            ax.tick_params(labelsize=7)
            fig.colorbar(drawn, ax=ax, shrink=0.85).set_label(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_map(truth, pred, lat, lon, path: str | pathlib.Path, **kwargs) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path):
        map_figure(truth, pred, lat, lon, **kwargs).savefig(path)
    return path


def figure_array(path: pathlib.Path) -> np.ndarray:
    """An RGB array of a written PNG (for TensorBoard)."""
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@contextlib.contextmanager
def _naming(path: pathlib.Path):
    """Give a write error the file's name (PIL's flush fails without one, e.g. on a full disk)."""
    try:
        yield
    except OSError as e:
        path.unlink(missing_ok=True)  # no half-written picture
        if e.filename or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e
