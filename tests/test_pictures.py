"""What a user looks at: labelled sample grids and clips, lead-time plots, the progress bar."""

import fcntl
import os
import pathlib
import pty
import struct
import subprocess
import sys
import termios
import textwrap

import numpy as np
import pytest
from PIL import Image

from tau_jax import visualize
from tau_jax.metrics import evaluate

ROOT = pathlib.Path(__file__).parents[1]


def clips(n=2, t=4, h=16, w=16, c=1, seed=0):
    x = np.random.default_rng(seed).uniform(size=(n, 2 * t, h, w, c)).astype(np.float32)
    return x[:, :t], x[:, t:]


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [fig._suptitle.get_text()
                                                                  if fig._suptitle else ""]


def test_sample_grid_labels_rows_times_and_each_sequences_mse():
    inputs, targets = clips()
    preds = targets[:, ::-1].copy()
    fig = visualize.sample_figure(inputs, targets, preds, title="step 7")
    shown = texts(fig)
    for i in range(2):
        mse = evaluate(preds[i:i + 1], targets[i:i + 1], "mse")["mse"]
        assert f"#{i}\nprediction\nMSE {mse:.4g}" in shown
        assert f"#{i}\ninput" in shown and f"#{i}\ntarget" in shown
    assert "t=-3\n+1" in shown and "t=0\n+4" in shown and "step 7" in shown
    # one image of every frame, each upscaled 5x (16 px -> 80 px), grey on the data's [0, 1]
    mosaic = fig.axes[0].get_images()[0].get_array()
    assert mosaic.shape == (2 * (3 * 80 + 2 * visualize.GAP) + visualize.BLOCK_GAP,
                            4 * 80 + 3 * visualize.GAP, 3)
    np.testing.assert_allclose(mosaic[:80:5, :80:5, 0], inputs[0, 0, ..., 0], atol=1e-6)
    np.testing.assert_array_equal(mosaic[..., 0], mosaic[..., 2])  # grey


def test_a_field_gets_a_colormap_and_a_colorbar_per_channel():
    inputs, targets = clips(n=1, h=8, w=16, c=2)
    inputs, targets = 250 + 40 * inputs, 250 + 40 * targets  # physical units, not [0, 1]
    fig = visualize.sample_figure(inputs, targets, targets + 1, channel_names=["t2m", "z500"])
    bars = [ax for ax in fig.axes[1:]]
    assert [ax.get_ylabel() for ax in bars] == ["t2m", "z500"]
    lo, hi = bars[0].get_ylim()
    truth = np.concatenate([inputs, targets], 1)[..., 0]
    assert (lo, hi) == pytest.approx((truth.min(), truth.max()))  # the truth's range
    mosaic = fig.axes[0].get_images()[0].get_array()
    assert np.abs(mosaic[..., 0] - mosaic[..., 2]).max() > 0.1  # coloured, not grey
    # per-channel MSE of the sequence (OpenSTL: summed over the 8 x 16 pixels of a frame)
    assert "#0 z500\nprediction\nMSE 128" in texts(fig)


def test_clip_has_a_labelled_frame_per_time_step(tmp_path):
    inputs, targets = clips(n=3)
    frames = visualize.clip_frames(inputs, targets, targets)
    assert len(frames) == 8 and frames[0].dtype == np.uint8
    alone = visualize.clip_frames(inputs, None, targets)  # new data: one row, no truth
    assert len(alone) == 8 and alone[0].shape[0] < frames[0].shape[0]
    png, gif = visualize.save_samples(inputs, targets, targets, tmp_path / "s", ids=[5, 6, 7])
    assert Image.open(gif).n_frames == 8
    assert Image.open(png).size[0] > 4 * 80


def test_lead_time_plot_sets_the_model_against_copying_the_last_frame(tmp_path):
    metrics = {"mse": 1.0, "mse_per_frame": np.array([1.0, 2.0, 3.0]),
               "copy_last_mse_per_frame": np.array([2.0, 4.0, 6.0]),
               "ssim_per_frame": np.array([0.9, 0.8, 0.7]),
               "copy_last_ssim_per_frame": np.array([0.8, 0.7, 0.6])}
    fig = visualize.lead_time_figure(metrics, "step 3")
    mse, ssim = fig.axes
    assert mse.get_title() == "MSE (lower is better)"
    assert ssim.get_title() == "SSIM (higher is better)"
    model, baseline = mse.get_lines()
    np.testing.assert_array_equal(model.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(baseline.get_ydata(), [2.0, 4.0, 6.0])
    assert baseline.get_label() == "copy last input frame"
    assert visualize.save_lead_time(metrics, tmp_path / "lead.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no per-frame metrics"):
        visualize.lead_time_figure({"mse": 1.0})


def test_unknown_colormap_is_one_sentence():
    with pytest.raises(ValueError, match="unknown colormap 'viridiss'"):
        visualize.colormap("viridiss")


def test_log_lines_are_printed_above_the_progress_bar():
    """In a terminal, a log line never lands inside the bar: the bar is cleared, the line
    printed at the start of a row, the bar drawn again below it."""
    script = textwrap.dedent("""
        import logging, time
        from absl import app
        def main(_):
            from tau_jax.train import console
            with console.progress_bar(3, 0) as bar:
                for i in range(3):
                    bar.update(1)
                    time.sleep(0.05)
                    logging.getLogger("tau_jax.test").info("line %d", i)
        app.run(main)
    """)
    master, slave = pty.openpty()  # the child writes to a 100-column pseudo-terminal
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=slave,
                             stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert child.wait(timeout=120) == 0, out
    text = out.decode(errors="replace")
    assert "3/3" in text  # the bar was drawn
    for i in range(3):
        row = next(r for r in text.split("\r\n") if f"line {i}" in r)
        assert row.split("\r")[-1].startswith("I"), row  # the line starts its own row
        assert "|" not in row.split("\r")[-1]


def test_eval_and_vis_help_mention_saved_predictions():
    result = subprocess.run([sys.executable, "-m", "tau_jax.cli", "eval", "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "--save_predictions" in result.stdout and "tau-jax vis" in result.stdout


def test_map_figure_draws_fields_on_latitude_longitude_axes():
    lat = np.linspace(87.1875, -87.1875, 32)  # north first, as WeatherBench2 stores it
    lon = np.arange(64) * 5.625
    truth = np.stack([np.broadcast_to(lat[:, None], (32, 64)), np.ones((32, 64))], -1) + 273
    pred = truth + 0.5
    fig = visualize.map_figure(truth, pred, lat, lon, labels=("t2m (K)", "r (%)"), title="x")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [
        "t2m: truth", "t2m: prediction", "t2m: prediction - truth",
        "r: truth", "r: prediction", "r: prediction - truth"]
    assert all(ax.get_xlabel() == "longitude (\N{DEGREE SIGN}E)" for ax in axes)
    assert all(ax.get_ylabel() == "latitude (\N{DEGREE SIGN}N)" for ax in axes)
    image = axes[0].get_images()[0]
    assert image.origin == "lower"
    assert image.get_array()[0, 0] == pytest.approx(273 - 87.1875)  # south row first
    assert image.get_clim() == pytest.approx((273 - 87.1875, 273 + 87.1875))
    error = axes[2].get_images()[0]
    assert error.get_clim() == pytest.approx((-0.5, 0.5))
    bars = [ax.get_ylabel() for ax in fig.axes if not ax.get_title()]
    assert bars == ["t2m (K)"] * 3 + ["r (%)"] * 3
