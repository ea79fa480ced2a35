"""WeatherBench: hourly global fields from the WeatherBench NetCDF files (5.625 degrees: a
32 x 64 grid; other resolutions work the same), 12 -> 12 frames.

`config.data.weather_variables` lists channels by WeatherBench's short names: single-level
`t2m`, `tcc`, `u10`, `v10`, `tp`, `tisr` (`uv10` = u10 then v10), and pressure-level `r`, `t`,
`u`, `v`, `z`, `q`, `pv`, `vo` either bare (the last level stored in the file, as OpenSTL's
single-variable settings use) or with a level in hPa (`t@850`). Years (inclusive ranges) give
the splits: train 2010-2015, val 2016, test 2017-2018 by default. As OpenSTL does, the last
time stamp of each split is dropped before keeping every `weather_step`-th hour, and windows
start at 0 .. n - (T + T') - 1 (its anchor range, one window fewer than would fit).

Frames are stored once in physical units (float32 (H, W, C)); the per-channel mean / std over
the stored training frames (population std) are saved in the dataset metadata, and the source
returns z-scored windows with `source.mean`, `source.std` = those training statistics. With
`weather_openstl_norm=True`, val / test windows are z-scored with their own split's statistics
(OpenSTL's single-variable loader) while `mean` / `std` stay the training ones.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from tau_jax.data import base, climatology, sources, tfds_base, weatherbench2

NAME = "weatherbench"
SINGLE = {"t2m": "2m_temperature", "tcc": "total_cloud_cover",
          "u10": "10m_u_component_of_wind", "v10": "10m_v_component_of_wind",
          "tp": "total_precipitation", "tisr": "toa_incident_solar_radiation"}
LEVELS = {"r": "relative_humidity", "t": "temperature", "u": "u_component_of_wind",
          "v": "v_component_of_wind", "z": "geopotential", "q": "specific_humidity",
          "pv": "potential_vorticity", "vo": "vorticity"}
GROUPS = {"uv10": ("u10", "v10")}
UNITS = {"t2m": "K", "t": "K", "tcc": "0-1", "r": "%", "u10": "m/s", "v10": "m/s", "u": "m/s",
         "v": "m/s", "z": "m\N{SUPERSCRIPT TWO}/s\N{SUPERSCRIPT TWO}", "q": "kg/kg", "tp": "m",
         "tisr": "J/m\N{SUPERSCRIPT TWO}", "pv": "K m\N{SUPERSCRIPT TWO}/(kg s)", "vo": "1/s"}
MANUAL_SUBDIRS = ("weather_5_625deg", "weather", "weatherbench", "WeatherBench")

MANUAL_DOWNLOAD_INSTRUCTIONS = """
WeatherBench needs its NetCDF files, one folder per variable as the archive unpacks them:
<manual_dir>/2m_temperature/2m_temperature_<year>_5.625deg.nc, relative_humidity/...,
total_cloud_cover/..., 10m_u_component_of_wind/..., 10m_v_component_of_wind/..., temperature/...
Download the 5.625-degree archives of the variables you use from the WeatherBench data
repository of the Technical University of Munich (linked from the WeatherBench project page
of Rasp et al., 2020, and from OpenSTL's docs on preparing data) and unzip them into the manual
dir (config.data.manual_dir, `--manual_dir`; OpenSTL's `data/weather_5_625deg/` folder works
too). The years of config.data.weather_train/val/test_years must be present.
Or read ERA5 from WeatherBench2's zarr stores instead: config.data.weather_zarr = a local copy or
gs://weatherbench2/datasets/era5/1959-2023_01_10-6h-64x32_equiangular_conservative.zarr
(needs gcsfs; steps are then 6-hourly).
"""


@dataclasses.dataclass(frozen=True)
class Channel:
    short: str            # variable name inside the file
    folder: str           # WeatherBench folder
    level: int | None     # hPa; None = the file's last level for pressure-level variables

    @property
    def label(self) -> str:
        return self.short if self.level is None else f"{self.short}@{self.level}"


def parse_variables(names) -> list[Channel]:
    if isinstance(names, str):
        names = (names,)
    out = []
    for raw in names:
        name, _, level = str(raw).partition("@")
        if name in GROUPS:
            if level:
                raise ValueError(f"config.data.weather_variables: {raw!r} takes no level.")
            out += [Channel(s, SINGLE[s], None) for s in GROUPS[name]]
        elif name in SINGLE:
            if level:
                raise ValueError(f"config.data.weather_variables: {name!r} is a single-level "
                                 f"field; drop '@{level}'.")
            out.append(Channel(name, SINGLE[name], None))
        elif name in LEVELS:
            try:
                lev = int(level) if level else None
            except ValueError:
                raise ValueError(f"config.data.weather_variables: level in {raw!r} must be an "
                                 "integer in hPa (e.g. 't@850').") from None
            out.append(Channel(name, LEVELS[name], lev))
        else:
            raise ValueError(f"config.data.weather_variables: unknown variable {raw!r}; use "
                             f"{sorted(SINGLE) + sorted(GROUPS) + sorted(LEVELS)} (levels as "
                             "'t@850').")
    if not out:
        raise ValueError("config.data.weather_variables is empty.")
    return out


def _years(data_config, split) -> tuple[int, int]:
    field = f"weather_{split}_years"
    years = tuple(int(y) for y in data_config[field])
    if len(years) != 2 or years[0] > years[1]:
        raise ValueError(f"config.data.{field} must be (first, last) years; got {years}.")
    return years


# ----------------------------------------------------------------------------------------
# Reading NetCDF


def _open(path: pathlib.Path):
    import netCDF4
    try:
        ds = netCDF4.Dataset(path, "r")
    except Exception as e:  # noqa: BLE001 - netCDF4 raises OSError / RuntimeError
        raise ValueError(f"Cannot read NetCDF file {path}: {e}") from None
    ds.set_auto_mask(False)
    return ds


def _times_of(ds, path) -> tuple[np.ndarray, np.ndarray | None]:
    """(years, datetime64 times) of the time steps; times None for a non-real-world calendar."""
    import netCDF4
    if "time" not in ds.variables:
        raise ValueError(f"{path} has no 'time' variable.")
    tv = ds.variables["time"]
    units = getattr(tv, "units", None)
    if units is None:
        raise ValueError(f"{path}: the time variable has no units.")
    dates = np.atleast_1d(netCDF4.num2date(tv[:], units, getattr(tv, "calendar", "standard"),
                                           only_use_cftime_datetimes=False))
    real = all(isinstance(d, datetime.datetime) for d in dates)
    return (np.array([d.year for d in dates], np.int64),
            np.array(dates, "datetime64[s]") if real else None)


@dataclasses.dataclass
class FileTimes:
    path: pathlib.Path
    years: np.ndarray           # year of each time step in the file
    times: np.ndarray | None    # datetime64 of each time step (None: not a real calendar)


def scan_channel(root: pathlib.Path, ch: Channel) -> list[FileTimes]:
    folder = root / ch.folder
    files = sorted(folder.glob("*.nc")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"No NetCDF files for {ch.label} in {folder} (expected e.g. {folder.name}/"
            f"{folder.name}_2016_5.625deg.nc). {MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    out = []
    for f in files:
        ds = _open(f)
        try:
            if ch.short not in ds.variables:
                raise ValueError(f"{f} has no variable {ch.short!r} (it has "
                                 f"{sorted(ds.variables)}).")
            out.append(FileTimes(f, *_times_of(ds, f)))
        finally:
            ds.close()
    return out


def read_block(ft: FileTimes, ch: Channel, index: np.ndarray) -> np.ndarray:
    """float32 (len(index), H, W) of channel `ch` at the file's time indices `index`."""
    ds = _open(ft.path)
    try:
        var = ds.variables[ch.short]
        dims = var.dimensions
        if dims[0] != "time":
            raise ValueError(f"{ft.path}: {ch.short} has dimensions {dims}; time must be first.")
        lo, hi = int(index.min()), int(index.max()) + 1
        if len(dims) == 3:
            if ch.level is not None:
                raise ValueError(f"{ft.path}: {ch.short} has no level dimension; drop "
                                 f"'@{ch.level}'.")
            a = np.asarray(var[lo:hi])
        elif len(dims) == 4:
            li = -1
            if ch.level is not None:
                levels = np.asarray(ds.variables[dims[1]][:]) if dims[1] in ds.variables else None
                hits = [] if levels is None else np.flatnonzero(np.isclose(levels, ch.level))
                if not len(hits):
                    raise ValueError(f"{ft.path}: level {ch.level} not among {dims[1]} "
                                     f"{None if levels is None else levels.tolist()}.")
                li = int(hits[0])
            a = np.asarray(var[lo:hi, li])
        else:
            raise ValueError(f"{ft.path}: {ch.short} has rank {len(dims)}; expected (time, lat, "
                             "lon) or (time, level, lat, lon).")
    finally:
        ds.close()
    a = a[index - lo].astype(np.float32)
    base.check_finite(a, f"{ft.path} ({ch.short})")
    return a


def grid_of(path: pathlib.Path, ch: Channel) -> dict:
    ds = _open(path)
    try:
        var = ds.variables[ch.short]
        lat_name, lon_name = var.dimensions[-2], var.dimensions[-1]
        grid = {"shape": [int(s) for s in var.shape[-2:]]}
        for key, name in (("lat", lat_name), ("lon", lon_name)):
            if name in ds.variables:
                grid[key] = np.asarray(ds.variables[name][:], np.float64).tolist()
        return grid
    finally:
        ds.close()


# ----------------------------------------------------------------------------------------
# Planning: which files and time steps make each split


def plan(root: pathlib.Path, channels: list[Channel], years: dict[str, tuple[int, int]],
         step: int, length: int) -> dict:
    """{split: [(file per channel, time indices in the files), ...] in time order}."""
    scans = [scan_channel(root, ch) for ch in channels]
    plans = {}
    for split, (a, b) in years.items():
        per_channel = []
        for ch, files in zip(channels, scans):
            blocks = []
            for ft in sorted(files, key=lambda f: (f.years.min() if len(f.years) else 0,
                                                   f.path.name)):
                idx = np.flatnonzero((ft.years >= a) & (ft.years <= b))
                if len(idx):
                    blocks.append((ft, idx))
            have = {y for ft, idx in blocks for y in ft.years[idx].tolist()}
            missing = [y for y in range(a, b + 1) if y not in have]
            if missing:
                raise FileNotFoundError(
                    f"WeatherBench {ch.label}: no data for {split} year(s) {missing} in "
                    f"{root / ch.folder} (expected e.g. {ch.folder}_{missing[0]}_5.625deg.nc). "
                    f"{MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
            per_channel.append(blocks)
        counts = [sum(len(i) for _, i in blocks) for blocks in per_channel]
        if len(set(counts)) != 1:
            detail = ", ".join(f"{c.label}: {n}" for c, n in zip(channels, counts))
            raise ValueError(f"WeatherBench variables have different numbers of time steps in "
                             f"the {split} years {a}-{b} ({detail}).")
        total = counts[0]
        keep = np.arange(0, total - 1, step)  # OpenSTL: isel(time=slice(None, -1, step))
        if len(keep) - length < 1:
            raise ValueError(f"WeatherBench {split} years {a}-{b} give {len(keep)} frames after "
                             f"step {step}; windows of T + T' = {length} need more than {length}.")
        stamps = [ft.times if ft.times is None else ft.times[idx] for ft, idx in per_channel[0]]
        times = None if any(t is None for t in stamps) else np.concatenate(stamps)[keep]
        plans[split] = {"blocks": per_channel, "keep": keep, "n_frames": len(keep),
                        "n_windows": len(keep) - length, "times": times}
    return plans


def iter_frames(plan_split: dict, channels: list[Channel]):
    """Kept frames of one split, float32 (H, W, C), in time order."""
    blocks = plan_split["blocks"]
    keep = plan_split["keep"]
    # global time index ranges of channel 0's files; other channels are read at the same
    # global indices from whichever of their files hold them
    offsets = [np.cumsum([0] + [len(i) for _, i in bl]) for bl in blocks]
    starts0 = offsets[0]
    for b in range(len(blocks[0])):
        g0, g1 = starts0[b], starts0[b + 1]
        want = keep[(keep >= g0) & (keep < g1)]
        if not len(want):
            continue
        parts = []
        for c, ch in enumerate(channels):
            chunks = []
            for k, (ft, idx) in enumerate(blocks[c]):
                lo, hi = offsets[c][k], offsets[c][k + 1]
                sel = want[(want >= lo) & (want < hi)]
                if len(sel):
                    chunks.append(read_block(ft, ch, idx[sel - lo]))
            parts.append(np.concatenate(chunks))
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"WeatherBench variables have different grids: {sorted(shapes)}.")
        yield from np.stack(parts, axis=-1)


def checked_plan(root: pathlib.Path, s: dict) -> tuple[list[Channel], dict, dict]:
    """(channels, plan, grid of the first file) for the parameters `s` of `spec()`: every file
    and year checked, and the grid against config.data.weather_resolution."""
    channels = parse_variables(s["variables"])
    plans = plan(root, channels, {k: tuple(v) for k, v in s["years"].items()}, s["step"],
                 s["in_frames"] + s["out_frames"])
    first = plans["train"]["blocks"][0][0][0].path
    grid = grid_of(first, channels[0])
    if tuple(grid["shape"]) != tuple(s["grid"]):
        raise ValueError(f"{first} has a {grid['shape'][0]}x{grid['shape'][1]} grid but "
                         f"config.data.weather_resolution={s['resolution']} means "
                         f"{s['grid'][0]}x{s['grid'][1]}.")
    return channels, plans, grid


def checked_frames(frames, shape: tuple[int, ...]):
    """`frames`, each as a chunk of one frame, checked to have the first file's grid."""
    for frame in frames:
        if frame.shape != shape:
            raise ValueError(f"WeatherBench grid {frame.shape[:2]} differs from the "
                             f"{shape[:2]} of the first file.")
        yield frame[None]


# ----------------------------------------------------------------------------------------
# Config -> what to build


def spec(data_config) -> dict:
    t_in, t_out = base.frames_of(data_config, 12, 12, NAME)
    channels = parse_variables(data_config.weather_variables)
    step = int(data_config.weather_step)
    if step < 1:
        raise ValueError(f"config.data.weather_step must be >= 1; got {step}.")
    years = {s: _years(data_config, s) for s in ("train", "val", "test")}
    deg = float(data_config.weather_resolution)
    zarr = str(data_config.weather_zarr)
    if zarr:  # the store's own grid (WeatherBench2's with-poles grids have 180 / deg + 1 rows)
        grid = tuple(weatherbench2.grid_of(weatherbench2.open_store(zarr), channels[0],
                                           zarr)["shape"])
    else:
        grid = (round(180.0 / deg), round(360.0 / deg)) if deg > 0 else (0, 0)
        if deg <= 0 or abs(grid[0] * deg - 180.0) > 1e-6:
            raise ValueError(f"config.data.weather_resolution must be a WeatherBench grid "
                             f"spacing (5.625, 2.8125, 1.40625); got {deg}.")
    return {"in_frames": t_in, "out_frames": t_out, "variables": [c.label for c in channels],
            "years": years, "step": step, "resolution": deg, "grid": grid, "zarr": zarr}


# ----------------------------------------------------------------------------------------
# tfds builder


class WeatherBench(tfds_base.Builder, skip_registration=True):
    """WeatherBench frames float32 (H, W, C) in physical units; window plan and per-split
    statistics in the metadata."""

    name = "tau_weatherbench"
    VERSION = tfds.core.Version("1.1.0")  # 1.1.0: frame times in the metadata, for ACC
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.1.0": "Frame times recorded (ACC)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def feature_spec(self):
        h, w = self.params["grid"]
        return (h, w, len(self.params["variables"])), np.float32

    def _split_generators(self, dl_manager):
        p = self.params
        if p["zarr"]:  # a WeatherBench2 zarr store (weatherbench2.py)
            ds, channels, plans = store_plan(p)
            grid = weatherbench2.grid_of(ds, channels[0], p["zarr"])
            chunks = {s: (f[None] for f in weatherbench2.iter_frames(
                ds, p["zarr"], channels, q["index"])) for s, q in plans.items()}
        else:
            channels, plans, grid = checked_plan(pathlib.Path(dl_manager.manual_dir), p)
            shape = self.feature_spec()[0]
            chunks = {s: checked_frames(iter_frames(q, channels), shape)
                      for s, q in plans.items()}
        self.info.metadata.update(tfds_base.json_safe({
            "in_frames": p["in_frames"], "out_frames": p["out_frames"],
            "variables": p["variables"], "years": p["years"], "step": p["step"],
            "lat": grid.get("lat"), "lon": grid.get("lon"), "source": p["zarr"] or None,
            "n_frames": {s: q["n_frames"] for s, q in plans.items()},
            "n_windows": {s: q["n_windows"] for s, q in plans.items()},
            "times": {s: climatology.encode_times(q["times"]) for s, q in plans.items()}}))
        return {s: self._generate_examples(self._recording_stats(s, chunks[s], len(channels)),
                                           q["n_frames"])
                for s, q in plans.items()}


def store_plan(p: dict):
    """(store, channels, plan) of a WeatherBench2 zarr store for the parameters `p` of `spec()`:
    every variable, level and year checked."""
    channels, ds = parse_variables(p["variables"]), weatherbench2.open_store(p["zarr"])
    return ds, channels, weatherbench2.plan(ds, p["zarr"], channels,
                                            {k: tuple(v) for k, v in p["years"].items()},
                                            p["step"], p["in_frames"] + p["out_frames"])


def _root(data_config) -> pathlib.Path:
    manual = base.manual_dir_of(data_config)
    channels = parse_variables(data_config.weather_variables)
    deg = f"{float(data_config.weather_resolution):g}".replace(".", "_")
    found = base.first_existing(manual, (f"weather_{deg}deg",) + MANUAL_SUBDIRS,
                                lambda p: (p / channels[0].folder).is_dir())
    if found is None:
        raise FileNotFoundError(
            f"WeatherBench folder {channels[0].folder}/ not found in {manual} (nor in its "
            f"weather_{deg}deg/ folder). {MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    return found


def builder(data_config) -> WeatherBench:
    s = spec(data_config)
    ident = {k: s[k] for k in ("in_frames", "out_frames", "variables", "years", "step",
                               "resolution")}
    res = f"{s['resolution']:g}".replace(".", "_") if not s["zarr"] else "wb2"
    ident["zarr"] = s["zarr"]
    name = tfds_base.config_name("_".join(s["variables"]).replace("@", "_") + f"_{res}deg", ident)
    return WeatherBench.for_variant(data_config, name, s)


def prepare(data_config) -> WeatherBench:
    """The prepared builder; preparing also computes the training split's climatology (ACC)."""
    b = builder(data_config)
    if b.is_prepared():
        return b
    if b.params["zarr"]:
        store_plan(b.params)  # every variable, level and year before anything is written
        tfds_base.ensure_prepared(b)
    else:
        root = _root(data_config)
        checked_plan(root, b.params)  # every file and year before anything is written
        tfds_base.ensure_prepared(b, root)
    climatology.training_climatology(b)
    return b


def get_source(data_config, split: str) -> sources.Source:
    base.check_split(NAME, split, ("train", "val", "test"))
    b = prepare(data_config)
    md = tfds_base.metadata(b)
    train = md["stats"]["train"]
    norm = md["stats"][split] if data_config.weather_openstl_norm else train
    starts = np.arange(md["n_windows"][split], dtype=np.int64)
    source = sources.RecordSource(tfds_base.open_split(b, split), name=NAME, split=split,
                                  in_frames=md["in_frames"], out_frames=md["out_frames"],
                                  channels=len(md["variables"]), sub=norm["mean"],
                                  div=norm["std"], mean=train["mean"], std=train["std"],
                                  starts=starts)
    if md["lat"] is not None and md["lon"] is not None:
        source.lat, source.lon = np.asarray(md["lat"]), np.asarray(md["lon"])
    source.times = climatology.window_times(md, split, starts)
    return source


def conventions(data_config) -> base.Conventions:
    """OpenSTL's WeatherBench metrics: MSE, RMSE and MAE averaged over the grid (spatial_norm),
    in physical units; with several channels also per channel (mse_t2m, ...), the plain keys
    then being the mean over channels."""
    channels = parse_variables(data_config.weather_variables)
    labels = tuple(c.label for c in channels)
    return base.Conventions(("mse", "rmse", "mae"), spatial_norm=True,
                            channel_names=labels if len(labels) > 1 else None,
                            labels=tuple(f"{c.label} ({UNITS[c.short]})" for c in channels))
