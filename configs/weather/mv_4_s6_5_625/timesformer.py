"""TimeSformer translator on WeatherBench r, t, u, v at 150 / 500 / 850 hPa (12 channels), 5.625 degrees,
6-hourly, 4 -> 4 steps.

Not an OpenSTL model: the SimVP frame of this setting's TAU (hid_S 32, N_S 2) with the attention
translator at width 256, depth 8, 8 heads; MSE + 0.1 DDR, Adam 5e-3 cosine, batch 16, 50 epochs.
Years: train 1979-2015, val 2016, test 2017-2018; metrics: OpenSTL's weather conventions (MSE,
RMSE, MAE averaged over the grid, in physical units, per variable).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("timesformer")
    config.model.update(in_shape=(4, 32, 64, 12), out_frames=4, hid_S=32, hid_T=256,
                        N_S=2, N_T=8, drop_path=0.1, num_heads=8, latent_patch=1)
    variables = tuple(f"{v}@{level}" for v in "rtuv" for level in (150, 500, 850))
    config.data.update(name="weatherbench", weather_variables=variables, weather_step=6,
                       weather_train_years=(1979, 2015), in_frames=4, out_frames=4,
                       batch_size=16)
    config.loss.alpha = 0.1  # DDR, as TAU
    config.optim.update(lr=5e-3, sched="cosine")
    config.train.epochs = 50
    return config
