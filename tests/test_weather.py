"""Weather runs score with OpenSTL's weather conventions: MSE / RMSE / MAE averaged over the grid
in physical units, per variable, everywhere a run reports metrics; and with WeatherBench2's
latitude-weighted RMSE and ACC beside them."""

import calendar
import json

import numpy as np
import pytest

from test_data_builders import write_nc
from test_train import cli
from tau_jax import data, train, visualize
from tau_jax.config import base_config
from tau_jax.train.workdir import check_config

YEARS = dict(weather_train_years=(2010, 2011), weather_val_years=(2012, 2012),
             weather_test_years=(2013, 2013))


@pytest.fixture(scope="module")
def weather_files(tmp_path_factory):
    """WeatherBench 5.625-degree NetCDF files of t2m and t (500, 850 hPa), 20 hours a year."""
    root = tmp_path_factory.mktemp("weather")
    man = root / "manual" / "weather_5_625deg"
    for year in (2010, 2011, 2012, 2013):
        write_nc(man, "2m_temperature", "t2m", year, 20)
        write_nc(man, "temperature", "t", year, 20, levels=[500, 850])
    return root


def netcdf_series(root, years=(2010, 2011, 2012, 2013)):
    """(frames (N, 32, 64, 2) of t2m and t@850, datetime64 times) of the fixture's NetCDF files,
    read with netCDF4 alone."""
    import netCDF4
    man = root / "manual" / "weather_5_625deg"
    frames, times = [], []
    for year in years:
        with netCDF4.Dataset(man / "2m_temperature" / f"2m_temperature_{year}_5.625deg.nc") as a, \
                netCDF4.Dataset(man / "temperature" / f"temperature_{year}_5.625deg.nc") as b:
            frames.append(np.stack([a["t2m"][:], b["t"][:, 1]], -1))
            tv = a["time"]
            times += [np.datetime64(d, "s") for d in netCDF4.num2date(
                tv[:], tv.units, tv.calendar, only_use_cftime_datetimes=False)]
    return np.concatenate(frames), np.array(times)


def weather_config(root, **data_fields):
    config = base_config()
    config.model.update(in_shape=(3, 32, 64, 2), out_frames=2, hid_S=8, hid_T=16, N_S=2, N_T=2,
                        dw_impl="lax")
    config.data.update(name="weatherbench", weather_variables=("t2m", "t@850"),
                       data_dir=str(root / "tfds"), manual_dir=str(root / "manual"), in_frames=3,
                       out_frames=2, batch_size=8, eval_batch_size=8, **YEARS, **data_fields)
    config.train.update(epochs=1, max_steps=2, log_every_steps=1, num_samples=2)
    return config


def openstl_weather_metric(pred, true):
    """OpenSTL's metric(..., spatial_norm=True, channel_names=[...]) in plain numpy, float64:
    per channel the grid-mean squared / absolute error over all samples and lead times, RMSE the
    root of that MSE; the plain keys the mean over channels."""
    err = pred.astype(np.float64) - true.astype(np.float64)
    mse = np.mean(err ** 2, axis=(0, 1, 2, 3))
    mae = np.mean(np.abs(err), axis=(0, 1, 2, 3))
    out = {"mse": mse.mean(), "mae": mae.mean(), "rmse": np.sqrt(mse).mean()}
    for k, name in enumerate(("t2m", "t@850")):
        out.update({f"mse_{name}": mse[k], f"mae_{name}": mae[k], f"rmse_{name}": np.sqrt(mse[k])})
    return out


@pytest.mark.parametrize("files", ["netcdf", "zarr"])
def test_a_weather_run_reports_openstl_weather_metrics(weather_files, tmp_path, files):
    """A real training run on WeatherBench's NetCDF files or a WeatherBench2 zarr store."""
    run = tmp_path / "run"
    if files == "zarr":
        times, t2m, t = write_wb2_store(tmp_path / "era5.zarr")
        # (time, lon, lat descending) -> (time, lat ascending, lon); t@850 is level index 2
        series = (np.stack([t2m[:, :, ::-1], t[:, 2, :, ::-1]], -1).transpose(0, 2, 1, 3), times)
        config = weather_config(tmp_path, weather_zarr=str(tmp_path / "era5.zarr"))
    else:
        series = netcdf_series(weather_files)
        config = weather_config(weather_files)
    final = train.train_and_evaluate(config, run)
    assert "ssim" not in final and "psnr" not in final
    metrics = train.evaluate(run, checkpoint="latest", save_predictions=True)
    saved = {k: np.load(f"{metrics['predictions']}/{k}.npy") for k in ("trues", "preds")}
    assert 240 < float(saved["trues"][..., 0].mean()) < 270  # kelvin, not normalised
    want = openstl_weather_metric(saved["preds"], saved["trues"])
    for key, value in want.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5), key
        assert final[key] == pytest.approx(value, rel=1e-5), key
    assert metrics["rmse_t2m_per_frame"].shape == (2,)
    # WeatherBench2's latitude-weighted RMSE: on this regular grid without poles the cell-area
    # weights are cos(latitude) normalised to mean 1; squared errors weighted, averaged over
    # the grid, then over forecasts per lead time, then the root
    lat = np.linspace(-87.1875, 87.1875, 32)
    w = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean()
    err = saved["preds"].astype(np.float64) - saved["trues"]
    wmse = (err ** 2 * w[:, None, None]).mean(axis=(2, 3)).mean(axis=0)  # (T', C)
    for k, name in enumerate(("t2m", "t@850")):
        np.testing.assert_allclose(metrics[f"lwrmse_{name}_per_frame"], np.sqrt(wmse[:, k]),
                                   rtol=1e-5)
        assert metrics[f"lwrmse_{name}"] == pytest.approx(np.sqrt(wmse[:, k]).mean(), rel=1e-5)
    assert "copy_last_lwrmse_t2m" in metrics
    # WeatherBench2's ACC against the climatology of the training years (2010-2011), the
    # climatology and the frames' valid times taken from the files themselves
    frames, times = series
    fit, test = (np.flatnonzero((times >= np.datetime64(f"{a}-01-01")) &
                                (times < np.datetime64(f"{b + 1}-01-01")))[:-1]  # OpenSTL
                 for a, b in ((2010, 2011), (2013, 2013)))
    valid = test[np.arange(len(saved["trues"]))[:, None] + 3 + np.arange(2)]  # (B, T')
    np.testing.assert_allclose(saved["trues"], frames[valid], rtol=1e-6)  # the times line up
    clim = wb2_climatology(frames[fit], times[fit], times[valid].ravel()).reshape(
        saved["trues"].shape)
    inputs = np.load(f"{metrics['predictions']}/inputs.npy")
    model, persistence = (wb2_acc(p, saved["trues"], clim, lat)
                          for p in (saved["preds"], np.repeat(inputs[:, -1:], 2, axis=1)))
    for k, name in enumerate(("t2m", "t@850")):
        for got in (metrics, final):
            np.testing.assert_allclose(got[f"acc_{name}_per_frame"], model[:, k], rtol=1e-5)
        np.testing.assert_allclose(metrics[f"copy_last_acc_{name}_per_frame"],
                                   persistence[:, k], rtol=1e-5)
    assert metrics["acc"] == pytest.approx(model.mean(), rel=1e-5)
    titles = [ax.get_title() for ax in visualize.lead_time_figure(metrics).axes]
    assert "ACC t2m (higher is better)" in titles
    # the baseline under the same conventions, and the labels of the run's pictures
    last = saved["trues"] * 0 + np.load(f"{metrics['predictions']}/inputs.npy")[:, -1:]
    assert metrics["copy_last_mse"] == pytest.approx(
        openstl_weather_metric(last, saved["trues"])["mse"], rel=1e-5)
    assert (run / "samples" / "step_00000002.png").exists()
    assert (run / "samples" / "step_00000002_map.png").exists()  # latitude / longitude maps
    assert data.channel_labels(config.data) == ("t2m (K)", "t@850 (K)")


def test_conventions_per_dataset_and_overrides(weather_files):
    config = weather_config(weather_files)
    assert data.metric_conventions(config.data) == dict(
        metrics=("mse", "rmse", "mae"), spatial_norm=True, clip_range=(0.0, 1.0),
        channel_names=("t2m", "t@850"))
    config.data.update(weather_variables=("t2m",), metrics=("mse", "ssim"), spatial_norm="sum",
                       clip_range=(200.0, 320.0))
    assert data.metric_conventions(config.data) == dict(
        metrics=("mse", "ssim"), spatial_norm=False, clip_range=(200.0, 320.0),
        channel_names=None)
    video = base_config()
    assert data.metric_conventions(video.data) == dict(
        metrics=("mse", "mae", "ssim", "psnr"), spatial_norm=False, clip_range=(0.0, 1.0),
        channel_names=None)


@pytest.mark.parametrize("field,value,message", [
    ("metrics", ("mse", "lpips"), "config.data.metrics: LPIPS is not available"),
    ("spatial_norm", "average", "config.data.spatial_norm must be 'auto', 'sum' or 'mean'"),
    ("clip_range", (1.0, 0.0), r"config.data.clip_range must be \(\) or \(low, high\)"),
])
def test_bad_conventions_are_refused_before_any_work(weather_files, field, value, message):
    config = weather_config(weather_files)
    config.data[field] = value
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_eval_command_prints_weather_metrics(weather_files, tmp_path):
    run = tmp_path / "run"
    train.train_and_evaluate(weather_config(weather_files), run)
    proc = cli("eval", f"--workdir={run}", "--checkpoint=latest")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "rmse_t2m" in out and "ssim" not in out
    assert "lwrmse_t2m" in out and "acc_t2m" in out and "copy_last_acc_t2m" in out
    assert json.loads((run / "eval_metrics.json").read_text())["mse"] > 0


# OpenSTL's published parameter counts of its weather models (its weather benchmark tables), in
# millions; every shipped config of a model OpenSTL has is listed.
PUBLISHED = {
    "t2m_5_625": {"tau": 12.22, "gsta": 12.76, "incepu": 14.67, "predrnn": 23.57,
                  "convlstm": 14.98},
    "mv_4_s6_5_625": {"tau": 9.55, "gsta": 9.96, "incepu": 13.80, "predrnn": 24.56,
                      "convlstm": 15.50},
    "t2m_1_40625": {"tau": 12.29, "gsta": 12.76, "incepu": 14.67, "predrnn": 23.84,
                    "convlstm": 15.08},
}
# Rows whose published count is not the model of OpenSTL's config for that setting (see README):
# t2m ConvLSTM's 14.98M is the 2-channel (uv10) model's; the 1.40625-degree gSTA / IncepU rows
# are the 5.625-degree models' (N_S 2); 1.40625-degree TAU (N_S 4, as its config) has 12.28M.
OTHER_MODEL = {("t2m_5_625", "convlstm"): dict(in_shape=(12, 32, 64, 2)),
               ("t2m_1_40625", "gsta"): dict(N_S=2, in_shape=(12, 32, 64, 1)),
               ("t2m_1_40625", "incepu"): dict(N_S=2, in_shape=(12, 32, 64, 1)),
               ("t2m_1_40625", "tau"): None}


@pytest.mark.parametrize("setting", sorted(PUBLISHED))
def test_weather_configs_and_openstl_parameter_counts(setting):
    import jax
    from tau_jax import models
    from tau_jax.config import load_config_file
    from test_train import ROOT

    def millions(model_config):
        shapes = jax.eval_shape(lambda: models.init(model_config, jax.random.key(0)))
        return round(models.count_params(shapes["params"]) / 1e6, 2)

    path = ROOT / "configs" / "weather" / f"{setting}.py"
    for name in ("tau", "gsta", "incepu", "predrnn", "convlstm", "timesformer", "tps"):
        config = load_config_file(f"{path}:{name}")
        assert config.model.name == name
        check_config(config)
        t, h, w, c = config.model.in_shape
        conventions = data.metric_conventions(config.data)
        assert conventions["metrics"] == ("mse", "rmse", "mae") and conventions["spatial_norm"]
        assert (conventions["channel_names"] is None) == (c == 1)
        assert (config.data.in_frames, config.data.out_frames) == (t, config.model.out_frames)
        if name not in PUBLISHED[setting]:
            continue  # the attention translators are not OpenSTL models
        other = OTHER_MODEL.get((setting, name), {})
        if other is None:  # no model we know of has the published count
            assert millions(config.model) == 12.28
            continue
        model_config = config.model.copy_and_resolve_references()
        model_config.update(other)
        assert millions(model_config) == PUBLISHED[setting][name], (setting, name)
    assert load_config_file(path).model.name == "tau"  # without :MODEL
    with pytest.raises(ValueError, match="MODEL must be one of"):
        load_config_file(f"{path}:vivit")


# OpenSTL's code (c74deb5, SimVP_Model with each configs/weather/t2m_5_625/SimVP_<X>.py) at the
# t2m 5.625-degree setting; its published table gives ConvMixer 1.13M, Poolformer 9.98M and
# Uniformer 12.02M for these (rounded down), the other seven to the rounding of these counts.
ZOO_T2M_5_625 = {"convmixer": 1_135_905, "convnext": 10_087_585, "hornet": 12_416_097,
                 "mlpmixer": 11_100_257, "moganet": 12_762_121, "poolformer": 9_985_313,
                 "swin": 12_417_633, "uniformer": 12_028_705, "van": 12_149_921,
                 "vit": 12_414_497}


# OpenSTL's published t2m 5.625-degree counts (its weather table, millions) of the recurrent zoo
# models it has a config for there (E3D-LSTM's row has no config file).
RECURRENT_ZOO_T2M_5_625 = {"predrnnpp": 38.31, "mim": 37.75, "mau": 5.46}


def test_weather_zoo_configs_have_openstl_parameter_counts():
    import jax
    from tau_jax import models
    from tau_jax.config import load_config_file
    from test_train import ROOT

    for name, count in ZOO_T2M_5_625.items():
        config = load_config_file(f"{ROOT / 'configs' / 'weather' / 't2m_5_625.py'}:{name}")
        check_config(config)
        shapes = jax.eval_shape(lambda: models.init(config.model, jax.random.key(0)))
        assert models.count_params(shapes["params"]) == count, name
    for name, millions in RECURRENT_ZOO_T2M_5_625.items():
        config = load_config_file(f"{ROOT / 'configs' / 'weather' / 't2m_5_625.py'}:{name}")
        check_config(config)
        shapes = jax.eval_shape(lambda: models.init(config.model, jax.random.key(0)))
        assert round(models.count_params(shapes["params"]) / 1e6, 2) == millions, name


def write_wb2_store(path, years=(2010, 2011, 2012, 2013), per_year=20):
    """A small zarr store in WeatherBench2's ERA5 layout: 6-hourly, (time, [level,] longitude,
    latitude) on the 64 x 32 equiangular grid, latitude stored descending (north first)."""
    import pandas as pd
    import xarray as xr
    rng = np.random.default_rng(0)
    times = np.concatenate([pd.date_range(f"{y}-01-01", periods=per_year, freq="6h").values
                            for y in years])
    lat = np.linspace(87.1875, -87.1875, 32)
    lon = np.arange(64) * 5.625
    t2m = 250 + 20 * rng.random((len(times), 64, 32)).astype(np.float32)
    t = 200 + 10 * rng.random((len(times), 3, 64, 32)).astype(np.float32)
    ds = xr.Dataset({"2m_temperature": (("time", "longitude", "latitude"), t2m),
                     "temperature": (("time", "level", "longitude", "latitude"), t)},
                    coords={"time": times, "level": [500, 700, 850], "longitude": lon,
                            "latitude": lat})
    ds.to_zarr(path, zarr_format=2)  # WeatherBench2 stores are zarr v2
    return times, t2m, t


@pytest.mark.parametrize("where", ["local", "fsspec"])
def test_weatherbench2_zarr_store_gives_the_frames_of_its_years(tmp_path, where):
    """A local store, and one behind an fsspec URL (the path a gs:// store takes, here fsspec's
    in-memory file system)."""
    store = str(tmp_path / "era5.zarr") if where == "local" else f"memory://{tmp_path}/era5.zarr"
    times, t2m, t = write_wb2_store(store)
    config = weather_config(tmp_path, weather_zarr=store, weather_step=2)
    source = data.get_source(config.data, "test")
    years = times.astype("datetime64[Y]").astype(int) + 1970
    index = np.flatnonzero(years == 2013)[:-1][::2]  # OpenSTL: last stamp dropped, every 2nd
    assert len(source) == len(index) - 5
    # (time, lon, lat descending) -> (time, lat ascending, lon); t@850 is level index 2
    frames = np.stack([t2m[index][:, :, ::-1].transpose(0, 2, 1),
                       t[index, 2][:, :, ::-1].transpose(0, 2, 1)], -1)
    for i in (0, len(source) - 1):
        np.testing.assert_allclose(source[i] * source.std + source.mean, frames[i:i + 5],
                                   rtol=1e-5)
    assert source[0].shape == (5, 32, 64, 2)


def test_weatherbench2_1_5_degree_store_keeps_its_121_rows_with_the_poles(tmp_path):
    """WeatherBench2's 240x121 grid (poles included) comes out as it is, latitude ascending."""
    import pandas as pd
    import xarray as xr
    times = pd.date_range("2013-01-01", periods=12, freq="6h").values
    lat = np.linspace(90, -90, 121)
    t2m = 250 + 20 * np.random.default_rng(1).random((12, 240, 121)).astype(np.float32)
    xr.Dataset({"2m_temperature": (("time", "longitude", "latitude"), t2m)},
               coords={"time": times, "longitude": np.arange(240) * 1.5, "latitude": lat}
               ).to_zarr(tmp_path / "era5_240x121.zarr", zarr_format=2)
    config = weather_config(tmp_path, weather_zarr=str(tmp_path / "era5_240x121.zarr"))
    config.data.update(weather_variables=("t2m",), weather_train_years=(2013, 2013),
                       weather_val_years=(2013, 2013), weather_test_years=(2013, 2013))
    source = data.get_source(config.data, "test")
    assert source[0].shape == (5, 121, 240, 1)
    np.testing.assert_allclose(source.lat, lat[::-1])
    np.testing.assert_allclose(source[0][0, ..., 0] * source.std[0] + source.mean[0],
                               t2m[0].T[::-1], rtol=1e-5)


@pytest.mark.parametrize("fields,message", [
    (dict(weather_variables=("t2m", "r@850")), r"has no variable 'relative_humidity' \(for "
                                               r"r@850\); it has \['2m_temperature', "
                                               r"'temperature'\]"),
    (dict(weather_variables=("t@600",)), r"temperature has no level 600; it has levels "
                                         r"\[500, 700, 850\]"),
    (dict(weather_test_years=(2013, 2014)), r"has no test year\(s\) \[2014\]; it covers "
                                            r"2010-2013"),
])
def test_weatherbench2_errors_name_what_the_store_has(tmp_path, fields, message):
    write_wb2_store(tmp_path / "era5.zarr")
    config = weather_config(tmp_path, weather_zarr=str(tmp_path / "era5.zarr"))
    config.data.update(fields)
    with pytest.raises(ValueError, match=message):
        data.get_source(config.data, "train")
    assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").rglob("*.array_record*"))


def test_latitude_weights_are_weatherbench2_cell_areas():
    from tau_jax.weather_metrics import latitude_weights
    lat = np.linspace(-90, 90, 121)  # WeatherBench2's 240x121 grid, poles included
    edges = np.deg2rad(np.clip(np.concatenate([[lat[0]], (lat[:-1] + lat[1:]) / 2, [lat[-1]]]),
                               -90, 90))
    area = np.sin(edges[1:]) - np.sin(edges[:-1])  # a pole row is half a cell
    np.testing.assert_allclose(latitude_weights(lat), area / area.mean(), rtol=1e-12)
    np.testing.assert_allclose(latitude_weights(lat[::-1]), (area / area.mean())[::-1],
                               rtol=1e-12)
    assert latitude_weights(lat).mean() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------
# WeatherBench2's ACC against the climatology of the training split


def wb2_climatology(frames, times, at, window=61):
    """WeatherBench2's hourly climatology (scripts/compute_climatology.py, 'explicit' method) at
    the day of year and hour of each time of `at`, in plain numpy and pandas: for that hour,
    every year's frames on a 366-day calendar (missing days NaN; a non-leap year's day 366 is
    its day 365), wrapped around the year end, and the mean over the years and the window's
    days weighted 1 - |k| / 30, missing values left out (as xarray's weighted mean does)."""
    import pandas as pd
    times, at = pd.DatetimeIndex(times), pd.DatetimeIndex(at)
    years, half = sorted(set(times.year)), window // 2
    weights = 1 - np.abs(np.arange(-half, half + 1)) / half
    out = {}
    for hour in set(at.hour):
        cal = np.full((len(years), 366, *frames.shape[1:]), np.nan)
        for i in np.flatnonzero(times.hour == hour):
            cal[years.index(times.year[i]), times.day_of_year[i] - 1] = frames[i]
        for y, year in enumerate(years):
            if not calendar.isleap(year):
                cal[y, 365] = cal[y, 364]
        for day in set(at.day_of_year[at.hour == hour]):
            values = cal[:, (day - 1 + np.arange(-half, half + 1)) % 366]  # (years, window, ...)
            w = np.where(np.isnan(values), 0.0, weights.reshape(1, -1, 1, 1, 1))
            with np.errstate(invalid="ignore"):
                out[day, hour] = np.nansum(values * w, axis=(0, 1)) / w.sum(axis=(0, 1))
    return np.stack([out[d, h] for d, h in zip(at.day_of_year, at.hour)])


def wb2_acc(pred, true, clim, lat):
    """WeatherBench2's metrics.ACC per (lead, variable): anomalies from the climatology, the
    cell-area (here cos-latitude) weighted spatial means of fa * oa, fa^2 and oa^2, one ACC per
    forecast, then the mean over forecasts. (B, T', H, W, C) in, (T', C) out."""
    w = np.cos(np.deg2rad(lat))[:, None, None]
    fa, oa = pred.astype(np.float64) - clim, true.astype(np.float64) - clim
    mean = lambda x: (x * w).mean(axis=(2, 3))  # noqa: E731
    return (mean(fa * oa) / np.sqrt(mean(fa ** 2) * mean(oa ** 2))).mean(axis=0)


def synthetic_year(seed=0, start="2011-01-01", end="2012-12-31 18:00", grid=(4, 5, 2)):
    """6-hourly fields over a non-leap and a leap year: a seasonal cycle, a daily cycle, noise."""
    import pandas as pd
    times = pd.date_range(start, end, freq="6h")
    rng = np.random.default_rng(seed)
    season = np.sin(2 * np.pi * times.day_of_year / 365.25) + 0.3 * np.cos(np.pi * times.hour / 12)
    frames = 280 + 10 * season.values[:, None, None, None] + rng.normal(size=(len(times), *grid))
    return frames, times


def test_climatology_is_weatherbench2s_hourly_61_day_climatology():
    from tau_jax.weather_metrics import Climatology
    import pandas as pd
    frames, times = synthetic_year()
    every_slot = pd.date_range("2012-01-01", "2012-12-31 18:00", freq="6h")  # days 1..366
    # whole years: WeatherBench2's climatology exactly; read in chunks, as from the records
    clim = Climatology.of_frames(np.array_split(frames, 7), times.values)
    assert clim.mean.shape == (366, 4, 4, 5, 2) and list(clim.hours) == [0, 6, 12, 18]
    np.testing.assert_allclose(clim.at(every_slot.values),
                               wb2_climatology(frames, times, every_slot), rtol=1e-6)
    # missing days (a gap in March 2011, every third day's 06:00) are left out of the means
    gone = ((times.year == 2011) & (times.month == 3)) | ((times.hour == 6)
                                                         & (times.day_of_year % 3 == 0))
    clim = Climatology.of_frames([frames[~gone]], times.values[~gone])
    np.testing.assert_allclose(clim.at(every_slot.values),
                               wb2_climatology(frames[~gone], times[~gone], every_slot), rtol=1e-6)
    # the window wraps around the year end: 1 January is mostly late December and early January
    assert clim.at(np.array(["2030-01-01T00"], "datetime64[s]"))[0].mean() == pytest.approx(
        frames[(times.day_of_year <= 30) | (times.day_of_year >= 337)][::4].mean(), abs=1.5)
    assert np.isnan(clim.at(np.array(["2030-01-01T03"], "datetime64[s]"))).all()  # no 03:00


def test_acc_is_weatherbench2s_acc():
    from tau_jax.weather_metrics import AnomalyCorrelation, Climatology
    import pandas as pd
    lat = np.array([-67.5, -22.5, 22.5, 67.5])  # no poles: cell areas are cos-latitude
    frames, times = synthetic_year()
    clim = Climatology.of_frames([frames], times.values)
    valid = pd.date_range("2013-02-27", periods=9 * 3, freq="6h").values.reshape(9, 3)
    rng = np.random.default_rng(1)
    true = 280 + 10 * rng.normal(size=(9, 3, 4, 5, 2))
    pred = true + 8 * rng.normal(size=true.shape)
    acc = AnomalyCorrelation(lat, ["a", "b"], clim)
    junk = np.full((2, 3, 4, 5, 2), 1e6)  # the padding rows of a last batch
    acc.update(np.concatenate([pred[:5], junk]), np.concatenate([true[:5], junk]),
               np.concatenate([valid[:5], valid[:2]]), mask=[1] * 5 + [0, 0])
    acc.update(pred[5:], true[5:], valid[5:])
    want = wb2_acc(pred, true, wb2_climatology(frames, times, valid.ravel()).reshape(
        true.shape), lat)
    got = acc.result()
    for k, name in enumerate("ab"):
        np.testing.assert_allclose(got[f"acc_{name}_per_frame"], want[:, k], rtol=1e-6)
        assert got[f"acc_{name}"] == pytest.approx(want[:, k].mean(), rel=1e-6)
    assert got["acc"] == pytest.approx(want.mean(), rel=1e-6)


def test_acc_is_one_for_a_perfect_forecast_and_near_zero_for_climatology_plus_noise():
    from tau_jax.weather_metrics import AnomalyCorrelation, Climatology
    import pandas as pd
    lat = np.linspace(-87.1875, 87.1875, 32)
    frames, times = synthetic_year(grid=(32, 64, 1), start="2011-01-01", end="2011-03-31")
    clim = Climatology.of_frames([frames], times.values)
    valid = pd.date_range("2014-01-10", periods=20 * 2, freq="6h").values.reshape(20, 2)
    c = clim.at(valid)
    rng = np.random.default_rng(2)
    true = c + rng.normal(size=c.shape)

    def acc(pred):
        score = AnomalyCorrelation(lat, ["t2m"], clim)
        score.update(pred, true, valid)
        return score.result()

    assert acc(true)["acc"] == pytest.approx(1.0, abs=1e-12)
    assert acc(c + 3 * (true - c))["acc"] == pytest.approx(1.0, abs=1e-12)  # anomaly scale
    assert acc(c - (true - c))["acc"] == pytest.approx(-1.0, abs=1e-12)
    assert abs(acc(c + rng.normal(size=c.shape))["acc"]) < 0.02  # no skill
    # anomalies are not centred: a bias costs ACC (a plain correlation would stay 1)
    assert acc(true + 1.0)["acc"] < 0.8
