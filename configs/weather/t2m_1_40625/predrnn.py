"""PredRNN on WeatherBench t2m at 1.40625 degrees (128 x 256), 12 -> 12 hours.

Four layers of width 128, filter 5, patch 4 (OpenSTL's weather settings, which its tables'
parameter counts confirm), OpenSTL's scheduled sampling; optimisation as its recurrent configs
for the other datasets (Adam 5e-4, OneCycle), batch 16, 50 epochs.
Years: train 2010-2015, val 2016, test 2017-2018 (the defaults); metrics: OpenSTL's weather
conventions (MSE, RMSE, MAE averaged over the grid, in physical units, per variable).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("predrnn")
    config.model.update(in_shape=(12, 128, 256, 1), out_frames=12,
                        num_hidden=(128, 128, 128, 128), filter_size=5, stride=1,
                        patch_size=4, layer_norm=0)
    config.data.update(name="weatherbench", weather_variables=("t2m",),
                       weather_resolution=1.40625, in_frames=12, out_frames=12,
                       batch_size=16)
    config.optim.update(lr=5e-4, sched="onecycle")
    config.train.epochs = 50
    return config
