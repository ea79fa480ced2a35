"""Inference: `tau_jax.predict.load(workdir).predict(frames, horizon)` at any horizon for SimVP and
PredRNN runs, inputs from arrays / image folders / videos, errors, jax.export round trip, and
OpenSTL weights -> workdir (`tau-jax convert`) -> eval / predict."""

import functools
import json
import logging
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import load_bundle
from test_train import cli, make_dataset, tiny_config, write_config_file
from test_train_families import tiny_family_config
from tau_jax import convert, predict, train
from tau_jax.train.workdir import NORM_FILE
from tau_jax.config import base_config
from tau_jax.models.recurrent import model as recurrent_model
from tau_jax.train import loop
from tau_jax.train.sharding import make_mesh


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
    saved = json.loads((simvp_run / NORM_FILE).read_text())  # written when training started
    np.testing.assert_allclose(predictor.normalisation["sub"], saved["sub"])


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
    with pytest.raises(ValueError, match=r"\(N, >=4, H, W, 1\)"):
        predictor.predict(np.zeros((4, 16, 16, 1), np.float32), 2)
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


def identity_norm(channels=1):
    return {"sub": [0.0] * channels, "div": [1.0] * channels}


def model_at(config, size):
    """The model of `config` built for frames of `size` (H, W) (same parameters)."""
    cfg = config.model.copy_and_resolve_references()
    cfg.in_shape = (cfg.in_shape[0], *size, cfg.in_shape[3])
    return loop.models.build(cfg)


@pytest.mark.parametrize("size", [(15, 13), (21, 18)])
def test_frames_of_another_size_are_padded_predicted_and_cropped(simvp_run, clips, size):
    predictor = predict.load(simvp_run)
    assert predictor.in_shape[1:3] == (16, 16)
    h, w = size
    big = np.pad(clips, ((0, 0), (0, 0), (0, 8), (0, 8), (0, 0)), mode="reflect")[:, :, :h, :w]
    frames = big[:3, :4]
    norm = predictor.normalisation
    out = predictor.predict(frames, 9, batch_size=2)
    assert out.shape == (3, 9, h, w, 1) and np.all(np.isfinite(out))
    # by hand: N_S = 2 -> stride 2 -> the next even size, edge padding, the odd pixel after
    padded = (h + h % 2, w + w % 2)
    assert predictor.padded_size(h, w) == padded
    model = model_at(predictor.config, padded)
    pad = ((0, 0), (0, 0), (0, h % 2), (0, w % 2), (0, 0))

    apply = jax.jit(functools.partial(model.apply, train=False))

    def one_pass(x):  # normalised (B, 4, h, w, 1) -> the next 4 frames, cropped
        return np.asarray(apply(predictor.variables, np.pad(x, pad, mode="edge")))[:, :, :h, :w]

    first = one_pass((frames - norm["sub"]) / norm["div"])
    second = one_pass(first)  # T = T' = 4: the cropped first pass is the next input
    third = one_pass(second)
    manual = np.concatenate([first, second, third], axis=1)[:, :9] * norm["div"] + norm["sub"]
    np.testing.assert_allclose(out, manual, atol=1e-5)
    # a roll-out equals chained calls of predict (crop and re-pad between passes)
    np.testing.assert_allclose(out[:, 4:8], predictor.predict(out[:, :4], 4), atol=1e-5)


def test_sizes_per_family(dataset):
    """Each family pads to the sizes its layers and parameters take, or names what it takes."""
    def predictor_of(config):
        variables = loop.models.init(config.model, jax.random.key(0))
        return predict.Predictor(config, variables, normalisation=identity_norm())

    rng = np.random.default_rng(0)
    frames = lambda h, w: rng.uniform(size=(2, 4, h, w, 1)).astype(np.float32)  # noqa: E731
    # TPS: stride 2 x window 4 on the token grid -> multiples of 8
    tps = predictor_of(tiny_family_config("tps", dataset))
    assert tps.padded_size(13, 13) == (16, 16) and tps.padded_size(17, 9) == (24, 16)
    out = tps.predict(frames(13, 11), 4)
    assert out.shape == (2, 4, 13, 11, 1) and np.all(np.isfinite(out))
    # PredRNN: multiples of patch_size 4
    rnn = predictor_of(tiny_family_config("predrnn", dataset))
    assert rnn.padded_size(13, 11) == (16, 12) and rnn.padded_size(20, 24) == (20, 24)
    x = frames(13, 11)
    out = rnn.predict(x, 6)
    assert out.shape == (2, 6, 13, 11, 1) and np.all(np.isfinite(out))
    model = model_at(rnn.config, (16, 12))
    by_hand = jax.jit(functools.partial(recurrent_model.rollout, model, horizon=4))(
        rnn.variables, np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1), (0, 0)), mode="edge"))
    by_hand = np.asarray(by_hand)[:, :, 1:14, :11]
    np.testing.assert_allclose(out[:, :4], by_hand, atol=1e-5)
    # parameters sized for in_shape's grid: smaller frames are padded up to it, larger refused
    timesformer = predictor_of(tiny_family_config("timesformer", dataset))
    assert timesformer.padded_size(13, 9) == (16, 16)
    assert timesformer.predict(frames(13, 9), 4).shape == (2, 4, 13, 9, 1)
    with pytest.raises(ValueError, match=r"'timesformer' takes only 16x16 frames.*24x16"):
        timesformer.predict(frames(24, 16), 4)
    config = tiny_family_config("predrnn", dataset)
    config.model.layer_norm = 1
    with pytest.raises(ValueError, match=r"'predrnn' takes only 16x16.*layer_norm"):
        predictor_of(config).predict(frames(16, 20), 2)


def test_padded_export_round_trip(simvp_run, clips, tmp_path):
    predictor = predict.load(simvp_run)
    frames = clips[:3, :4, :15, :13]
    path = predictor.export(tmp_path / "model.jaxexport", horizon=6, frame_size=(15, 13))
    exported = predict.load_exported(path)
    assert exported.in_shape == (4, 15, 13, 1)
    np.testing.assert_allclose(exported.predict(frames), predictor.predict(frames, 6), atol=1e-5)
    with pytest.raises(ValueError, match=r"expects 15x13.*frame_size=\(16, 16\)"):
        exported.predict(clips[:1, :4])


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
               f"--output={target}", "--mp4", "--grayscale")
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    assert np.load(target).shape == (1, 6, 16, 16, 1)
    assert target.with_suffix(".png").exists() and target.with_suffix(".gif").exists()
    with iio.get_reader(target.with_suffix(".mp4")) as reader:  # 4 inputs + 6 predictions
        assert reader.count_frames() == 10


def test_export_round_trip(simvp_run, clips, tmp_path):
    predictor = predict.load(simvp_run)
    path = predictor.export(tmp_path / "model.jaxexport", horizon=6)
    exported = predict.load_exported(path)
    assert exported.horizon == 6 and exported.in_shape == (4, 16, 16, 1)
    np.testing.assert_allclose(exported.predict(clips[:3, :4], batch_size=2),
                               predictor.predict(clips[:3, :4], 6), atol=1e-5)
    with pytest.raises(ValueError, match="expects 1"):
        exported.predict(np.zeros((1, 4, 16, 16, 2), np.float32))
    nan = clips[:2, :4].copy()
    nan[1, 2, 3, 4] = np.nan
    for p in (predictor, exported):  # the CLI's input check holds for the Python API too
        with pytest.raises(ValueError, match="frames contains 1 NaN/Inf values"):
            p.predict(nan, 6) if p is predictor else p.predict(nan)
    (tmp_path / "garbage.jaxexport").write_bytes(b"\x00\x01not a flatbuffer" * 3)
    with pytest.raises(ValueError, match="garbage.jaxexport is not a model written by "
                                         "Predictor.export"):
        predict.load_exported(tmp_path / "garbage.jaxexport")


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
    run = convert.convert_openstl(state_dict, config, tmp_path / "run")
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "tau"
    predictor = predict.load(run, normalisation={"sub": [0.0, 0.0], "div": [1.0, 1.0]})
    assert predictor.step == 0
    np.testing.assert_allclose(predictor.predict(x, 4), y_eval, atol=1e-4)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        convert.convert_openstl(state_dict, config, run)
    other = base_config()
    other.model.update(config.model.to_dict(), hid_S=16)
    with pytest.raises(ValueError, match="does not fit the model config"):
        convert.convert_openstl(state_dict, other, tmp_path / "other")


def openstl_state_dict(config, variables):
    """`variables` of a tiny SimVP model under OpenSTL key names and layouts (numpy arrays)."""
    from flax import traverse_util
    from tau_jax.models import openstl_names, simvp
    state_dict = {}
    for path, leaf in traverse_util.flatten_dict(variables).items():
        key, _ = simvp.openstl_key(path[0], path[1:], leaf.shape, config.model)
        to_torch = {4: (3, 2, 0, 1), 2: (1, 0)}.get(leaf.ndim)
        value = leaf if to_torch is None else np.transpose(leaf, to_torch)
        if key.startswith("dec.dec.") and ".conv.conv.0." in key:  # PixelShuffle channel order
            value = value[np.argsort(np.asarray(openstl_names.pixel_shuffle_order()(
                np.arange(value.shape[0]))))]
        state_dict["model." + key] = np.array(value)
    return state_dict


def test_convert_cli_from_pth_then_eval(dataset, tmp_path):
    torch = pytest.importorskip("torch", reason="reading .pth files needs PyTorch")
    # a tiny SimVP model's own params under OpenSTL key names, saved as a .pth file
    config = tiny_config(dataset)
    variables = jax.tree_util.tree_map(np.asarray, loop.models.init(config.model,
                                                                    jax.random.key(3)))
    state_dict = {k: torch.from_numpy(v) for k, v in openstl_state_dict(config,
                                                                         variables).items()}
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
    assert np.isfinite(train.evaluate(run)["mse"])


def test_train_fine_tunes_a_converted_workdir(dataset, tmp_path, caplog):
    """`tau-jax train` on a converted workdir starts from the OpenSTL weights; the checkpoint
    has no data-iterator state, so the data iterator starts fresh (and says so)."""
    config = tiny_config(dataset, max_steps=2)
    variables = jax.tree_util.tree_map(np.asarray, loop.models.init(config.model,
                                                                    jax.random.key(3)))
    run = convert.convert_openstl(openstl_state_dict(config, variables), config, tmp_path / "run")
    caplog.set_level(logging.INFO)
    metrics = loop.train_and_evaluate(config, run)
    assert "no data-iterator state" in caplog.text and "starts fresh" in caplog.text
    assert np.isfinite(metrics["mse"])
    step, state = loop.restore_state(config, run, make_mesh((1, 1), jax.devices()[:1]))
    assert step == 2
    # two small OneCycle steps away from the converted weights, far from a fresh init (seed 42)
    def largest_difference(a, b):
        return max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
            lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)))

    assert 0 < largest_difference(state.params, variables["params"]) < 1e-3
    fresh = loop.models.init(config.model, jax.random.key(config.train.seed))["params"]
    assert largest_difference(state.params, fresh) > 1e-2


def test_train_on_a_workdir_it_cannot_restore_is_an_error(dataset, tmp_path):
    """A converted workdir trained with another optimiser state (EMA on) is refused, not
    silently started over from a random init; the workdir is left as it was."""
    config = tiny_config(dataset, max_steps=1)
    variables = jax.tree_util.tree_map(np.asarray, loop.models.init(config.model,
                                                                    jax.random.key(3)))
    run = convert.convert_openstl(openstl_state_dict(config, variables), config, tmp_path / "run")
    saved = (run / "config.json").read_text()
    config.optim.ema_decay = 0.999
    with pytest.raises(ValueError, match=r"no checkpoint in .*checkpoints \(steps \[0\]\).*"
                                         r"optim.ema_decay"):
        loop.train_and_evaluate(config, run)
    assert (run / "config.json").read_text() == saved
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()] == ["0"]
