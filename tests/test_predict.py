"""Inference: `tau_jax.predict.load(workdir).predict(frames, horizon)` at any horizon for SimVP and
PredRNN runs, inputs from arrays / image folders / videos, errors, jax.export round trip, and
OpenSTL weights -> workdir (`tau-jax convert`) -> eval / predict."""

import json
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import load_bundle
from test_train import cli, make_dataset, tiny_config, write_config_file
from test_train_families import tiny_family_config
from tau_jax import predict
from tau_jax.config import base_config
from tau_jax.train import loop


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


@pytest.fixture(scope="module")
def simvp_run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("simvp") / "run"
    loop.train_and_evaluate(tiny_config(dataset, max_steps=2), run)
    return run


@pytest.fixture(scope="module")
def clips(dataset):
    return np.load(dataset[0])


@pytest.mark.parametrize("horizon", [1, 3, 4, 9])
def test_simvp_any_horizon(simvp_run, clips, horizon):
    predictor = predict.load(simvp_run)
    assert predictor.step == 2
    out = predictor.predict(clips[:5, :4], horizon, batch_size=2)
    assert out.shape == (5, horizon, 16, 16, 1) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    # frame k does not depend on the horizon; the first T' frames are the model's own pass
    four = predictor.predict(clips[:5, :4], 4)
    k = min(horizon, 4)
    np.testing.assert_allclose(out[:, :k], four[:, :k], atol=1e-5)
    model_out = predictor.model.apply(predictor.variables, clips[:5, :4], train=False)
    np.testing.assert_allclose(four, model_out, atol=1e-5)
    if horizon == 9:  # the second pass is fed the first pass's output
        again = predictor.predict(four, 4)
        np.testing.assert_allclose(out[:, 4:8], again, atol=1e-4)


def test_longer_inputs_use_their_last_t_frames(simvp_run, clips):
    predictor = predict.load(simvp_run)
    np.testing.assert_allclose(predictor.predict(clips[:2], 2), predictor.predict(clips[:2, 4:], 2),
                               atol=1e-6)
    assert (simvp_run / predict.NORM_FILE).exists()  # derived from the config once, then saved


def test_predrnn_any_horizon(dataset, tmp_path):
    run = tmp_path / "run"
    loop.train_and_evaluate(tiny_family_config("predrnn", dataset), run)
    predictor = predict.load(run)
    frames = np.load(dataset[0])[:3, :4]
    for horizon in (2, 4, 6):
        out = predictor.predict(frames, horizon)
        assert out.shape == (3, horizon, 16, 16, 1) and np.all(np.isfinite(out))
    np.testing.assert_allclose(predictor.predict(frames, 6)[:, :4], predictor.predict(frames, 4),
                               atol=1e-5)


def test_errors(simvp_run, clips, tmp_path):
    predictor = predict.load(simvp_run)
    with pytest.raises(ValueError, match="horizon"):
        predictor.predict(clips[:1], 0)
    with pytest.raises(ValueError, match=r"16x16.*expects 8x8|expects 16x16"):
        predictor.predict(np.zeros((1, 4, 8, 8, 1), np.float32), 2)
    with pytest.raises(ValueError, match="3 channel.*expects 1"):
        predictor.predict(np.zeros((1, 4, 16, 16, 3), np.float32), 2)
    with pytest.raises(ValueError, match="needs 4 input frames, got 3"):
        predictor.predict(clips[:1, :3], 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(simvp_run / "config.json", empty / "config.json")
    with pytest.raises(FileNotFoundError, match=str(empty)):
        predict.load(empty)
    with pytest.raises(FileNotFoundError, match="config.json"):
        predict.load(tmp_path / "nothing")


def test_inputs_from_image_folder_and_video(simvp_run, clips, tmp_path):
    import imageio.v2 as iio
    frames = (clips[0] * 255).round().astype(np.uint8)  # (8, 16, 16, 1)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f[..., 0]).save(folder / f"frame_{i}.png")
    x = predict.read_inputs(folder, 4, 1)
    np.testing.assert_array_equal(x, frames[None, 4:].astype(np.float32))
    out = predict.load(simvp_run).predict(x, 5)
    assert out.shape == (1, 5, 16, 16, 1)

    video = tmp_path / "clip.mp4"
    iio.mimwrite(video, np.repeat(frames, 3, -1), fps=5, macro_block_size=1)
    target = tmp_path / "out" / "pred.npy"
    proc = cli("predict", f"--workdir={simvp_run}", f"--input={video}", "--horizon=6",
               f"--output={target}", "--gif", "--grayscale")
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    assert np.load(target).shape == (1, 6, 16, 16, 1)
    assert target.with_suffix(".png").exists() and target.with_suffix(".gif").exists()


def test_export_round_trip(simvp_run, clips, tmp_path):
    predictor = predict.load(simvp_run)
    path = predictor.export(tmp_path / "model.jaxexport", horizon=6)
    exported = predict.load_exported(path)
    assert exported.horizon == 6 and exported.in_shape == (4, 16, 16, 1)
    np.testing.assert_allclose(exported.predict(clips[:3, :4], batch_size=2),
                               predictor.predict(clips[:3, :4], 6), atol=1e-5)
    with pytest.raises(ValueError, match="expects 1"):
        exported.predict(np.zeros((1, 4, 16, 16, 2), np.float32))


def bundle_config(name="simvp_tau_tiny"):
    meta, arrays, state_dict = load_bundle(name)
    t, c, h, w = meta["in_shape"]
    config = base_config()
    config.model.update(name=meta["model_type"].lower(), in_shape=(t, h, w, c), out_frames=t,
                        hid_S=meta["hid_S"], hid_T=meta["hid_T"], N_S=meta["N_S"],
                        N_T=meta["N_T"], drop_path_schedule="linear")
    nhwc = lambda a: np.transpose(a, (0, 1, 3, 4, 2)).astype(np.float32)  # noqa: E731
    return config, state_dict, nhwc(arrays["x"]), nhwc(arrays["y_eval"])


def test_convert_state_dict_round_trip(tmp_path):
    config, state_dict, x, y_eval = bundle_config()
    run = predict.convert_openstl(state_dict, config, tmp_path / "run")
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "tau"
    predictor = predict.load(run, normalisation={"sub": [0.0, 0.0], "div": [1.0, 1.0]})
    assert predictor.step == 0
    np.testing.assert_allclose(predictor.predict(x, 4), y_eval, atol=1e-4)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        predict.convert_openstl(state_dict, config, run)
    other = base_config()
    other.model.update(config.model.to_dict(), hid_S=16)
    with pytest.raises(ValueError, match="does not fit the model config"):
        predict.convert_openstl(state_dict, other, tmp_path / "other")


def test_convert_cli_from_pth_then_eval(dataset, tmp_path):
    torch = pytest.importorskip("torch", reason="reading .pth files needs PyTorch")
    # a tiny SimVP model's own params under OpenSTL key names, saved as a .pth file
    config = tiny_config(dataset)
    variables = jax.tree_util.tree_map(np.asarray, loop.models.init(config.model,
                                                                    jax.random.key(3)))
    from tau_jax import convert
    from flax import traverse_util
    state_dict = {}
    for path, leaf in traverse_util.flatten_dict(variables).items():
        key, _ = convert.simvp_key(path[0], path[1:], leaf.shape, config.model)
        to_torch = {4: (3, 2, 0, 1), 2: (1, 0)}.get(leaf.ndim)
        value = leaf if to_torch is None else np.transpose(leaf, to_torch)
        if key.startswith("dec.dec.") and ".conv.conv.0." in key:  # PixelShuffle channel order
            value = value[np.argsort(np.asarray(convert.pixel_shuffle_order()(
                np.arange(value.shape[0]))))]
        state_dict["model." + key] = torch.from_numpy(np.array(value))
    pth = tmp_path / "openstl.pth"
    torch.save({"state_dict": state_dict}, pth)
    config_file = write_config_file(config, tmp_path / "tiny.py")
    run = tmp_path / "run"
    proc = cli("convert", f"--from-openstl={pth}", f"--config={config_file}",
               f"--workdir={run}")
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    predictor = predict.load(run)
    np.testing.assert_allclose(
        predictor.predict(np.load(dataset[0])[:2, :4], 4),
        predictor.model.apply(variables, np.load(dataset[0])[:2, :4], train=False), atol=1e-5)
    assert np.isfinite(loop.evaluate(run)["mse"])
