"""WeatherBench2 ERA5 2m temperature at 1.5 degrees (its 240 x 121 grid, both poles included),
6-hourly, 12 -> 12 steps (three days in, three days out), read straight from WeatherBench2's
public zarr store: `--config configs/weather/t2m_1_5.py:MODEL` (MODEL tau or predrnn; default
tau). Reading gs:// needs `pip install gcsfs`; a local copy of the store works as well
(`--config.data.weather_zarr=/path/to/store.zarr`).

The grid has 121 latitude rows, which no stride or patch divides: the models run on it padded
to 124 x 240 around every call (tau_jax/models/framing.py), longitude wrapped round the globe
and latitude folded across the poles, and the loss, the latitude-weighted RMSE, the ACC and the
maps are computed on the 121 x 240 grid itself.

Years: train 2010-2015, val 2016, test 2017-2018 (the defaults). Models: TAU with OpenSTL's
weather SimVP frame and recipe (configs/weather/t2m_1_40625.py: N_S 4, lr 5e-3 cosine, 50
epochs); PredRNN with patch 4 as OpenSTL's weather PredRNN. Batch 16, as OpenSTL.
"""

from tau_jax.config import base_config

STORE = ("gs://weatherbench2/datasets/era5/"
         "1959-2023_01_10-6h-240x121_equiangular_with_poles_conservative.zarr")
MODELS = {  # model -> (model fields, loss.alpha: TAU's DDR weight, optim fields)
    "tau": (dict(hid_S=32, hid_T=256, N_S=4, N_T=8, drop_path=0.1), 0.1,
            dict(lr=5e-3, sched="cosine")),
    "predrnn": (dict(num_hidden=(128,) * 4, filter_size=5, stride=1, patch_size=4,
                     layer_norm=0), 0.0, dict(lr=5e-4, sched="onecycle")),
}


def get_config(model: str = "tau"):
    if model not in MODELS:
        raise ValueError(f"configs/weather/t2m_1_5.py:MODEL: MODEL must be one of "
                         f"{sorted(MODELS)}, got {model!r}.")
    fields, alpha, optim = MODELS[model]
    config = base_config(model)
    config.model.update(in_shape=(12, 121, 240, 1), out_frames=12, **fields)
    config.data.update(name="weatherbench", weather_zarr=STORE, weather_variables=("t2m",),
                       weather_step=1,  # the store's own 6-hour step
                       in_frames=12, out_frames=12, batch_size=16)
    config.loss.alpha = alpha
    config.optim.update(**optim)
    config.train.epochs = 50
    return config
