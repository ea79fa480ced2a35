"""The README's quickstart, end to end through the CLI, at a reduced size: `tau-jax train
--config configs/mmnist/quickstart.py` (Moving MNIST generated into a scratch data dir), then
`tau-jax eval` and `tau-jax predict --gif` on clips of the test split; and the tutorial script
(experiments/tutorial.py) at its --tiny size."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from test_train import ROOT, cli
from tau_jax import data, predict
from tau_jax.visualize import GIF_FRAME_MS
from tau_jax.train.workdir import load_config

T, HORIZON = 5, 15  # 5 -> 5 frames (Moving MNIST frames stay 64x64); 15 = three roll-out passes
SHRINK = [  # the quickstart config, shrunk to seconds: 2 steps of 4 clips, 4 test clips
    f"--config.model.in_shape=({T}, 64, 64, 1)", f"--config.model.out_frames={T}",
    f"--config.data.in_frames={T}", f"--config.data.out_frames={T}",
    "--config.data.mmnist_train_size=8", "--config.data.mmnist_test_size=4",
    "--config.data.batch_size=4", "--config.data.eval_batch_size=4",
    "--config.train.max_steps=2", "--config.train.log_every_steps=1",
    "--config.train.num_samples=2",
]


def run(*args, timeout=300):
    proc = cli(*args)
    log, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, log[-3000:]
    return log


def gif_frames(path):
    """(frames, total duration in ms) of a GIF; PIL merges identical consecutive frames into one
    longer frame, so the duration is what counts the frames shown."""
    with Image.open(path) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
            assert gif.convert("RGB").size[0] > 0
    return len(durations), sum(durations)


@pytest.mark.xdist_group("subprocesses")  # one at a time: each starts JAX processes
def test_quickstart_train_eval_predict(tmp_path):
    workdir, data_dir = tmp_path / "quickstart", tmp_path / "tfds"
    run("train", f"--config={ROOT / 'configs' / 'mmnist' / 'quickstart.py'}",
        f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *SHRINK)
    metrics = json.loads((workdir / "eval_metrics.json").read_text())
    assert np.isfinite(metrics["mse"]) and metrics["copy_last_mse"] > 0
    assert (workdir / "samples" / "step_00000002.png").exists()
    assert (workdir / "samples" / "step_00000002_lead_time.png").exists()
    frames, ms = gif_frames(workdir / "samples" / "step_00000002.gif")
    assert (frames, ms) == (2 * T, 2 * T * GIF_FRAME_MS)  # inputs, then T' targets / predictions

    log = run("eval", f"--workdir={workdir}")
    evaluated = json.loads(log.strip().splitlines()[-1])
    assert evaluated["mse"] == pytest.approx(metrics["mse"], rel=1e-5)
    assert evaluated["copy_last_mse"] == pytest.approx(metrics["copy_last_mse"], rel=1e-6)

    # clips of the test split in its stored units (uint8), as a user would have them
    source = data.get_source(load_config(workdir).data, "test")
    clips = np.stack([source[i][:T] for i in range(2)])
    inputs = tmp_path / "clips.npy"
    np.save(inputs, np.round(clips * 255).astype(np.uint8))
    out = tmp_path / "pred" / "out.npy"
    run("predict", f"--workdir={workdir}", f"--input={inputs}", f"--horizon={HORIZON}",
        f"--output={out}", "--gif")
    pred = np.load(out)
    assert pred.shape == (2, HORIZON, 64, 64, 1) and np.all(np.isfinite(pred))
    assert out.with_suffix(".png").exists()
    frames, ms = gif_frames(out.with_suffix(".gif"))
    assert (frames, ms) == (T + HORIZON, (T + HORIZON) * GIF_FRAME_MS)  # each titled: none merged


@pytest.mark.xdist_group("subprocesses")  # one at a time: each starts JAX processes
def test_tutorial_runs_tiny(tmp_path):
    """experiments/tutorial.py top to bottom at its --tiny size (the quickstart test's shapes,
    so the two share compiled programs through the compilation cache)."""
    workdir = tmp_path / "tutorial"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "tutorial.py"), "--tiny",
         f"--workdir={workdir}", f"--data_dir={tmp_path / 'tfds'}"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    assert "copy last frame" in log and "tutorial done" in log
    assert (workdir / "tutorial_prediction.gif").exists()
    exported = predict.load_exported(workdir / "tau.jaxexport")
    assert exported.horizon == 20 and exported.in_shape == (T, 64, 64, 1)
