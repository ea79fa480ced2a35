"""The training system with the other model families: PredRNN (recurrent: scheduled-sampling mask
drawn inside the jitted step, loss over all T+T'-1 predictions) and the attention translators
TPS and TimeSformer, each trained 2 steps on a tiny custom .npy dataset, evaluated, checkpointed
(PredFormer's tiny config is here too; tests/test_predformer.py trains it)."""

import json

import numpy as np
import pytest

from test_train import make_dataset
from tau_jax import train
from tau_jax.config import base_config
from tau_jax.train import loop


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The .npy file and the tfds data dir it is prepared into, shared by the module's tests."""
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


def tiny_family_config(name, dataset):
    clips, data_dir = dataset
    if name == "predrnn":
        config = base_config("predrnn")
        config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, num_hidden=(8, 8),
                            patch_size=4, filter_size=3)
    elif name == "predformer":  # 4x4 patches: 16 tokens a frame; dropout and drop path on
        config = base_config("predformer")
        config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, patch_size=4, dim=16,
                            heads=2, dim_head=8, scale_dim=2, Ndepth=1, dropout=0.1,
                            attn_dropout=0.1, drop_path=0.1)
    else:  # SimVP frame: 16x16 frames, N_S 2 -> 8x8 latent maps; windows of 4 tile them
        config = base_config(name)
        config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, hid_S=8, hid_T=16, N_S=2,
                            N_T=2)
        if name in ("tps", "timesformer"):
            config.model.update(num_heads=2, window_size=4)
    config.data.update(name="custom", custom_path=str(clips), custom_layout="NTHWC",
                       custom_normalize="none", custom_stride=8, custom_test_fraction=0.25,
                       in_frames=4, out_frames=4, data_dir=str(data_dir), batch_size=8,
                       eval_batch_size=8)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.update(epochs=3, log_every_steps=1, num_samples=2, max_steps=2)
    return config


@pytest.mark.parametrize("name", ["predrnn", "tps", "timesformer"])
def test_two_steps_evaluate_and_checkpoint(name, dataset, tmp_path):
    config = tiny_family_config(name, dataset)
    run = tmp_path / "run"
    metrics = loop.train_and_evaluate(config, run)
    assert set(metrics) >= {"mse", "mae", "ssim", "psnr", "mse_per_frame"}
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert len(metrics["mse_per_frame"]) == 4 and np.all(np.isfinite(metrics["mse_per_frame"]))
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2"}
    saved = json.loads((run / "config.json").read_text())["model"]
    assert saved["name"] == name
    # the checkpoint restores and reproduces the final metrics
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)
