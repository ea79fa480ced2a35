"""WeatherBench2 input: ERA5 (or any dataset) in WeatherBench2's zarr layout, read with xarray.

WeatherBench2 publishes ERA5 as zarr stores (e.g. `gs://weatherbench2/datasets/era5/
1959-2023_01_10-6h-64x32_equiangular_conservative.zarr`, 6-hourly at 5.625 degrees, or the
`240x121_equiangular_with_poles_conservative` one at 1.5 degrees): one data variable per field under
the same long names as the WeatherBench NetCDF folders (`2m_temperature`, `temperature`, ...),
dimensions `(time, [level,] longitude, latitude)`, levels in hPa. `config.data.weather_zarr`
names a local store or a `gs://` URL (read through fsspec; install gcsfs for Google Cloud
Storage); the variables, years and steps are chosen as for the NetCDF files
(`weatherbench.py`), frames come out as (latitude ascending, longitude) grids in physical units,
and `weather_step` counts the store's own time steps (6-hourly stores: 1 = 6 h).
"""

from __future__ import annotations

import numpy as np

from tau_jax.data import base

CHUNK = 64  # time steps read at once


def open_store(path: str):
    """The store as a lazy xarray Dataset; one sentence when it cannot be opened."""
    try:
        import xarray as xr
    except ImportError:
        raise ImportError("config.data.weather_zarr needs xarray and zarr: pip install xarray "
                          "zarr (gcsfs too for gs:// stores).") from None
    try:
        return xr.open_zarr(path, decode_timedelta=False)
    except ImportError as e:
        raise ImportError(f"config.data.weather_zarr = {path!r}: {e} (gs:// stores need "
                          "gcsfs: pip install gcsfs).") from None
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"config.data.weather_zarr = {path!r} is not a readable zarr store "
                         f"({type(e).__name__}: {e}).") from None


def field(ds, ch, path: str):
    """DataArray (time, latitude, longitude) of channel `ch` (weatherbench.Channel), latitude
    ascending; ValueError naming what the store has when the variable or level is missing."""
    if ch.folder not in ds.data_vars:
        raise ValueError(f"WeatherBench2 store {path} has no variable {ch.folder!r} (for "
                         f"{ch.label}); it has {sorted(ds.data_vars)}.")
    da = ds[ch.folder]
    if "level" in da.dims:
        levels = [int(v) for v in np.asarray(ds["level"])]
        if ch.level is None:
            da = da.isel(level=-1)  # OpenSTL: the last level for a bare pressure-level name
        elif ch.level in levels:
            da = da.sel(level=ch.level)
        else:
            raise ValueError(f"WeatherBench2 store {path}: {ch.folder} has no level "
                             f"{ch.level}; it has levels {levels}.")
    elif ch.level is not None:
        raise ValueError(f"WeatherBench2 store {path}: {ch.folder} has no level dimension; "
                         f"drop '@{ch.level}'.")
    missing = {"time", "latitude", "longitude"} - set(da.dims)
    if missing:
        raise ValueError(f"WeatherBench2 store {path}: {ch.folder} has dimensions {da.dims}; "
                         f"expected time, latitude and longitude.")
    return da.transpose("time", "latitude", "longitude").sortby("latitude")


def plan(ds, path: str, channels, years: dict, step: int, length: int) -> dict:
    """{split: {'index': time indices of the kept frames, 'n_frames', 'n_windows', 'times'}}:
    OpenSTL's selection (the split's years, the last time stamp dropped, every `step`-th kept)
    and the frames' datetime64 times (None for calendars other than the real-world one)."""
    for ch in channels:
        field(ds, ch, path)
    have = np.asarray(ds["time"].dt.year)
    stamps = np.asarray(ds["time"])  # datetime64, or cftime objects for other calendars
    plans = {}
    for split, (a, b) in years.items():
        missing = [y for y in range(a, b + 1) if y not in set(have.tolist())]
        if missing:
            raise ValueError(f"WeatherBench2 store {path} has no {split} year(s) {missing}; it "
                             f"covers {int(have.min())}-{int(have.max())}.")
        index = np.flatnonzero((have >= a) & (have <= b))[:-1][::step]
        if len(index) - length < 1:
            raise ValueError(f"WeatherBench2 {split} years {a}-{b} give {len(index)} frames "
                             f"after step {step}; windows of T + T' = {length} need more.")
        plans[split] = {"index": index, "n_frames": len(index),
                        "n_windows": len(index) - length,
                        "times": stamps[index] if stamps.dtype.kind == "M" else None}
    return plans


def grid_of(ds, ch, path: str) -> dict:
    da = field(ds, ch, path)
    return {"shape": [int(da.sizes["latitude"]), int(da.sizes["longitude"])],
            "lat": np.asarray(da["latitude"], np.float64).tolist(),
            "lon": np.asarray(da["longitude"], np.float64).tolist()}


def iter_frames(ds, path: str, channels, index: np.ndarray):
    """Frames float32 (H, W, C) at the store's time indices `index`, in order."""
    fields = [field(ds, ch, path) for ch in channels]
    for s in range(0, len(index), CHUNK):
        part = index[s:s + CHUNK]
        block = np.stack([np.asarray(f.isel(time=part), np.float32) for f in fields], axis=-1)
        base.check_finite(block, f"WeatherBench2 store {path}")
        yield from block
