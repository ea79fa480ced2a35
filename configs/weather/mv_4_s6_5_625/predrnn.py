"""PredRNN on WeatherBench r, t, u, v at 150 / 500 / 850 hPa (12 channels), 5.625 degrees,
6-hourly, 4 -> 4 steps.

Four layers of width 128, filter 5, patch 2 (OpenSTL's weather settings, which its tables'
parameter counts confirm), OpenSTL's scheduled sampling; optimisation as its recurrent configs
for the other datasets (Adam 5e-4, OneCycle), batch 16, 50 epochs.
Years: train 1979-2015, val 2016, test 2017-2018; metrics: OpenSTL's weather conventions (MSE,
RMSE, MAE averaged over the grid, in physical units, per variable).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("predrnn")
    config.model.update(in_shape=(4, 32, 64, 12), out_frames=4,
                        num_hidden=(128, 128, 128, 128), filter_size=5, stride=1,
                        patch_size=2, layer_norm=0)
    variables = tuple(f"{v}@{level}" for v in "rtuv" for level in (150, 500, 850))
    config.data.update(name="weatherbench", weather_variables=variables, weather_step=6,
                       weather_train_years=(1979, 2015), in_frames=4, out_frames=4,
                       batch_size=16)
    config.optim.update(lr=5e-4, sched="onecycle")
    config.train.epochs = 50
    return config
