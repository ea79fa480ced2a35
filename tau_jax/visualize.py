"""PNG grids, GIFs and MP4s of inputs, targets and predictions."""

from __future__ import annotations

import contextlib
import pathlib

import numpy as np

from tau_jax.data.preview import video_grid


def save_samples(inputs, targets, preds, stem: str | pathlib.Path,
                 mp4: bool = False) -> tuple[pathlib.Path, ...]:
    """Write `<stem>.png` (per sample: inputs + targets, then inputs + predictions) and
    `<stem>.gif` (per frame: targets above predictions, all samples side by side), and with
    `mp4` the same frames as `<stem>.mp4` (H.264 through imageio's bundled ffmpeg, 5 fps).

    Arrays are (N, T, H, W, C) / (N, T', H, W, C) in display units (de-normalised)."""
    from PIL import Image
    inputs, targets, preds = (np.asarray(a, np.float32) for a in (inputs, targets, preds))
    # Predictions overshoot the data range; clip them to it so the grid is scaled by the data.
    truth = np.concatenate([inputs.reshape(-1), targets.reshape(-1)])
    preds = np.clip(preds, truth.min(), truth.max())
    stem = pathlib.Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = np.stack([np.concatenate([inputs, v], axis=1) for v in (targets, preds)], axis=1)
    rows = rows.reshape((-1,) + rows.shape[2:])
    png = stem.with_suffix(".png")
    with _naming(png):
        Image.fromarray(video_grid(rows, inputs.shape[1])).save(png)

    clip = np.concatenate([np.stack([np.concatenate([inputs, v], 1) for v in (targets, preds)])],
                          axis=0)  # (2, N, T+T', H, W, C): row 0 truth, row 1 prediction
    two, n, t = clip.shape[:3]
    frames = []
    for f in range(t):
        panel = clip[:, :, f].transpose(0, 2, 1, 3, 4)  # (2, H, N, W, C)
        panel = panel.reshape(1, two * panel.shape[1], n * panel.shape[3], panel.shape[4])
        frames.append(Image.fromarray(video_grid(panel[:, None], 0)))
    gif = stem.with_suffix(".gif")
    with _naming(gif):
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=200, loop=0)
    if not mp4:
        return png, gif
    import imageio.v2 as imageio
    video = stem.with_suffix(".mp4")
    rgb = [np.asarray(f.convert("RGB")) for f in frames]
    h, w = rgb[0].shape[:2]  # H.264 (yuv420p) needs even sides: repeat the last row / column
    rgb = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in rgb]
    with _naming(video):
        imageio.mimwrite(video, rgb, fps=5, macro_block_size=1)
    return png, gif, video


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
