"""gSTA (SimVP v2) on WeatherBench r, t, u, v at 150 / 500 / 850 hPa (12 channels), 5.625 degrees,
6-hourly, 4 -> 4 steps.

hid_S 32, hid_T 256, N_S 2, N_T 8, drop_path 0.1; lr 0.005 cosine with 5 warm-up epochs, batch
16, 50 epochs (OpenSTL's file for this model and setting is not in our reference: the setting's
TAU optimisation).
Years: train 1979-2015, val 2016, test 2017-2018; metrics: OpenSTL's weather conventions (MSE,
RMSE, MAE averaged over the grid, in physical units, per variable).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("gsta")
    config.model.update(in_shape=(4, 32, 64, 12), out_frames=4, hid_S=32, hid_T=256,
                        N_S=2, N_T=8, drop_path=0.1)
    variables = tuple(f"{v}@{level}" for v in "rtuv" for level in (150, 500, 850))
    config.data.update(name="weatherbench", weather_variables=variables, weather_step=6,
                       weather_train_years=(1979, 2015), in_frames=4, out_frames=4,
                       batch_size=16)
    config.loss.alpha = 0.0  # SimVP trains on plain MSE
    config.optim.update(lr=0.005, sched="cosine", warmup_epoch=5)
    config.train.epochs = 50
    return config
