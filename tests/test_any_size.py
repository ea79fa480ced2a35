"""Frames of any size (tau_jax/models/framing.py): the pole fold and longitude wrap, the loss and
the metrics on the real frame only, 30 x 30 video clips and WeatherBench2's 240 x 121 grid
trained, evaluated and predicted, and the one-sentence refusal of models whose parameters fix
the grid."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_train import ROOT, tiny_config
from test_weather import YEARS, weather_config
from tau_jax import data, losses, models, predict, train
from tau_jax.config import base_config, load_config_file
import tau_jax.models.framing as framing
from tau_jax.models.framing import Framing, Padding, geographic_padding
from tau_jax.models.recurrent import model as recurrent_model
from tau_jax.train import evaluation, loop
from tau_jax.train.predictions import load as load_predictions
from tau_jax.train.workdir import NORM_FILE, check_config


# -- the padding itself ------------------------------------------------------------------------

def test_pole_fold_and_longitude_wrap():
    """Beyond a pole lies the opposite meridian: rows mirrored across the pole (without the pole
    row itself when the grid has one) turned half way round; longitude wraps."""
    lon = np.arange(8) * 45.0
    grid = np.arange(5 * 8, dtype=np.float32).reshape(1, 5, 8, 1)
    with_poles = geographic_padding(np.linspace(-90, 90, 5), lon)
    assert with_poles == Padding("pole", "wrap", pole_row=True)
    out = np.asarray(framing.pad(jnp.asarray(grid), ((1, 2), (1, 1)), with_poles))[0, ..., 0]
    g = grid[0, ..., 0]
    np.testing.assert_array_equal(out[0, 1:-1], np.roll(g[1], 4))      # south of -90: row -45
    np.testing.assert_array_equal(out[-2, 1:-1], np.roll(g[3], 4))     # north of +90: row 45
    np.testing.assert_array_equal(out[-1, 1:-1], np.roll(g[2], 4))
    np.testing.assert_array_equal(out[1:6, 0], g[:, -1])               # west of 0: 315
    np.testing.assert_array_equal(out[1:6, -1], g[:, 0])
    np.testing.assert_array_equal(framing.crop(out[None, ..., None], ((1, 2), (1, 1)))[0, ..., 0], g)
    # rows half a cell short of the poles (the 5.625-degree grid): the edge row is mirrored too
    short = geographic_padding(np.linspace(-87.1875, 87.1875, 32), np.arange(64) * 5.625)
    assert short == Padding("pole", "wrap", pole_row=False)
    x = np.random.default_rng(0).random((1, 32, 64, 1)).astype(np.float32)
    out = np.asarray(framing.pad(jnp.asarray(x), ((2, 2), (0, 0)), short))
    np.testing.assert_array_equal(out[0, 1], np.roll(x[0, 0], 32, axis=0))
    np.testing.assert_array_equal(out[0, 0], np.roll(x[0, 1], 32, axis=0))
    # a regional grid neither wraps nor folds; an odd longitude count cannot turn by half
    assert geographic_padding(np.linspace(30, 60, 31), np.arange(40) * 1.0) == Padding()
    assert geographic_padding(np.linspace(-90, 90, 5), np.arange(9) * 40.0) == Padding("edge", "wrap")


def test_frame_padding_field(tmp_path):
    config = tiny_config((tmp_path / "x.npy", tmp_path))
    video = type("Source", (), {"lat": None, "lon": None})()
    assert data.frame_padding(config.data, video) == Padding("edge", "edge")
    config.data.frame_padding = "reflect"
    assert data.frame_padding(config.data, video) == Padding("reflect", "reflect")
    config.data.frame_padding = "circular"
    with pytest.raises(ValueError, match=r"config\.data\.frame_padding must be one of \('auto', "
                                         r"'edge', 'reflect', 'zeros'\), got 'circular'\."):
        check_config(config)


# -- the loss sees the real frame only ---------------------------------------------------------

class PoisonedBand:
    """A model whose outputs carry NaN wherever the padding band lies: a loss that read any of
    it would be NaN."""

    def __init__(self, model, amounts):
        self.model, self.amounts = model, amounts

    def clone(self, **fields):
        return PoisonedBand(self.model.clone(**fields), self.amounts)

    def apply(self, *args, **kwargs):
        out = self.model.apply(*args, **kwargs)
        return jax.tree_util.tree_map(self._poison, out)

    def _poison(self, y):
        if y.ndim != 5:
            return y
        (top, bottom), (left, right) = self.amounts
        real = jnp.zeros(y.shape[2:4], bool).at[top:y.shape[2] - bottom,
                                                left:y.shape[3] - right].set(True)
        return jnp.where(real[:, :, None], y, jnp.nan)


def small_model_config(name):
    config = base_config(name)
    if name == "tau":
        config.model.update(in_shape=(3, 30, 30, 1), out_frames=2, hid_S=4, hid_T=8, N_S=4,
                            N_T=2, dw_impl="lax")
    else:
        config.model.update(in_shape=(3, 30, 30, 1), out_frames=2, num_hidden=(4, 4),
                            patch_size=4, filter_size=3)
    return config


@pytest.mark.parametrize("name", ["tau", "predrnnv2"])
def test_the_loss_sees_the_real_frame_only(name, monkeypatch):
    config = small_model_config(name)
    model, variables = models.build(config.model), models.init(config.model, jax.random.key(0))
    fr = models.framing_of(config.model, Padding("reflect", "reflect"))
    assert fr.amounts == ((1, 1), (1, 1))
    frames = jnp.asarray(np.random.default_rng(0).random((2, 5, 30, 30, 1)), jnp.float32)
    seen = []  # the maps PredRNN-V2's decoupling term is taken over
    if name == "predrnnv2":
        term = recurrent_model.decouple_term
        monkeypatch.setattr(recurrent_model, "decouple_term",
                            lambda a, b: seen.append(a.shape) or term(a, b))
    args = (config, variables["params"], variables.get("batch_stats", {}), frames,
            jax.random.key(1), 0)
    loss, _ = loop.loss_fn(model, *args, padding=fr.padding)
    poisoned, _ = loop.loss_fn(PoisonedBand(model, fr.amounts), *args, padding=fr.padding)
    assert np.isfinite(float(poisoned)) and float(poisoned) == float(loss)
    if name == "tau":  # and it is the model's loss on the frames padded as asked
        pred, _ = model.apply(variables, framing.pad(frames[:, :3], fr.amounts, fr.padding),
                              train=True, mutable=["batch_stats"],
                              rngs={"drop_path": jax.random.fold_in(jax.random.key(1), 0)})
        by_hand = losses.tau_loss(pred[:, :, 1:31, 1:31], frames[:, 3:], 0.1, 0.1)
        np.testing.assert_allclose(float(loss), float(by_hand), rtol=1e-6)
    else:  # 32 x 32 padded = 8 x 8 cells of 4: a band of 1 pixel holds no whole cell
        assert seen and all(s[1:3] == (8, 8) for s in seen)
        # a band of 5 pixels round 30 x 30 frames: 10 x 10 cells, the outer ring all padding
        cfg = config.model.copy_and_resolve_references()
        cfg.in_shape = (3, 40, 40, 1)
        seen.clear()
        wide = Framing(((5, 5), (5, 5)), Padding())
        loss, _ = models.family_of(name).loss(models.build(cfg), config, variables, frames, {},
                                              jax.random.key(1), 0, framing=wide)
        assert np.isfinite(float(loss)) and seen and all(s[1:3] == (8, 8) for s in seen)


# -- models whose parameters fix the grid -----------------------------------------------------

def test_fixed_grid_models_refuse_in_one_sentence_before_anything_runs(tmp_path):
    config = tiny_config((tmp_path / "clips.npy", tmp_path / "tfds"))
    config.model = base_config("predformer").model
    config.model.update(in_shape=(4, 30, 30, 1), out_frames=4, patch_size=4)
    with pytest.raises(ValueError, match=r"^model 'predformer' cannot pad its frames \(its "
                                         r"sinusoidal position code numbers the tokens of the "
                                         r"in_shape grid\): model\.in_shape's H and W must be "
                                         r"multiples of 4, got 30x30; use frames of H 28 or 32 "
                                         r"and W 28 or 32\.$"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- video clips of 30 x 30 --------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips30(tmp_path_factory):
    """16 smooth clips of 8 frames, 30 x 30 x 1 in [0, 1] (no stride or patch divides 30 by 4)."""
    root = tmp_path_factory.mktemp("clips30")
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(16, 1, 30, 30, 1))
    drift = np.linspace(0, 1, 8)[None, :, None, None, None]
    np.save(root / "clips.npy", np.clip(0.5 * base + 0.5 * np.sin(3 * drift + 6 * base), 0, 1)
            .astype(np.float32))
    return root / "clips.npy", root / "tfds"


def video_config(name, clips30):
    config = tiny_config(clips30, max_steps=2)
    config.model = small_model_config(name).model
    config.model.update(in_shape=(4, 30, 30, 1), out_frames=4)
    return config


@pytest.mark.parametrize("name", ["tau", "predrnn"])
def test_video_clips_of_30x30_train_evaluate_and_predict(name, clips30, tmp_path):
    config = video_config(name, clips30)
    assert models.framing_of(config.model).amounts == ((1, 1), (1, 1))
    run = tmp_path / "run"
    metrics = train.train_and_evaluate(config, run)
    assert np.isfinite(metrics["mse"]) and np.isfinite(metrics["ssim"])
    assert json.loads((run / NORM_FILE).read_text())["frame_padding"] == Padding().to_json()
    evaluated = evaluation.evaluate(run, checkpoint="latest", save_predictions=True)
    _, saved = load_predictions(run)
    assert saved["preds"].shape[1:] == (4, 30, 30, 1) == saved["trues"].shape[1:]
    # the metrics are those of the saved 30 x 30 predictions, which are what `predict` gives
    acc = evaluation.MetricAccumulator(**data.metric_conventions(config.data))
    acc.update(saved["preds"], saved["trues"])
    np.testing.assert_allclose(acc.result()["mse"], evaluated["mse"], rtol=1e-5)
    predictor = predict.load(run, checkpoint="latest")
    np.testing.assert_allclose(predictor.predict(saved["inputs"], 4), saved["preds"], atol=1e-5)
    assert predictor.predict(saved["inputs"][:2], 7).shape == (2, 7, 30, 30, 1)


# -- WeatherBench2's 1.5-degree grid: 240 longitudes x 121 latitudes, both poles ---------------

@pytest.fixture(scope="module")
def wb2_240x121(tmp_path_factory):
    """A zarr store in WeatherBench2's layout on its 240 x 121 grid (2m_temperature)."""
    import pandas as pd
    import xarray as xr
    root = tmp_path_factory.mktemp("wb2")
    times = np.concatenate([pd.date_range(f"{y}-01-01", periods=10, freq="6h").values
                            for y in (2010, 2011, 2012, 2013)])
    lat, lon = np.linspace(90, -90, 121), np.arange(240) * 1.5
    phase = np.arange(len(times))[:, None, None] / 4
    field = (260 + 30 * np.cos(np.deg2rad(lat))[None, None, :]
             + 5 * np.sin(np.deg2rad(lon)[None, :, None] + phase)).astype(np.float32)
    xr.Dataset({"2m_temperature": (("time", "longitude", "latitude"), field)},
               coords={"time": times, "longitude": lon, "latitude": lat}
               ).to_zarr(root / "era5.zarr", zarr_format=2)
    return root


@pytest.mark.parametrize("name", ["tau", "predrnn"])
def test_weatherbench2_240x121_trains_evaluates_and_predicts(name, wb2_240x121):
    """configs/weather/t2m_1_5.py as it is, but for the store, years, frames and widths."""
    config = load_config_file(f"{ROOT / 'configs' / 'weather' / 't2m_1_5.py'}:{name}")
    check_config(config)
    assert models.run_config(config.model).in_shape == (12, 124, 240, 1)
    small = small_model_config(name).model
    config.model.update({k: small[k] for k in ("hid_S", "hid_T", "N_T", "num_hidden",
                                               "filter_size", "dw_impl", "drop_path")
                         if k in config.model})
    config.model.update(in_shape=(2, 121, 240, 1), out_frames=2)
    weather = weather_config(wb2_240x121)
    config.data.update(weather_zarr=str(wb2_240x121 / "era5.zarr"), in_frames=2, out_frames=2,
                       batch_size=8, eval_batch_size=8, data_dir=weather.data.data_dir,
                       manual_dir=weather.data.manual_dir, **YEARS)
    config.train.update(weather.train)
    run = wb2_240x121 / name
    metrics = train.train_and_evaluate(config, run)
    for key in ("lwrmse", "acc", "mse", "copy_last_lwrmse"):
        assert np.isfinite(metrics[key]), key
    assert json.loads((run / NORM_FILE).read_text())["frame_padding"] == dict(
        rows="pole", cols="wrap", pole_row=True)
    assert models.framing_of(config.model).amounts == ((1, 2), (0, 0))
    source = data.get_source(config.data, "test")
    raw = np.stack([source[i] for i in range(3)]) * source.std + source.mean
    out = predict.load(run).predict(raw[:, :2], 3)
    assert out.shape == (3, 3, 121, 240, 1) and np.all(np.isfinite(out))
