"""TimeSformer translator on WeatherBench t2m at 1.40625 degrees (128 x 256), 12 -> 12 hours.

Not an OpenSTL model: the SimVP frame of this setting's TAU (hid_S 32, N_S 4) with the attention
translator at width 256, depth 8, 8 heads; MSE + 0.1 DDR, Adam 5e-3 cosine, batch 16, 50 epochs.
Years: train 2010-2015, val 2016, test 2017-2018 (the defaults); metrics: OpenSTL's weather
conventions (MSE, RMSE, MAE averaged over the grid, in physical units, per variable).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("timesformer")
    config.model.update(in_shape=(12, 128, 256, 1), out_frames=12, hid_S=32, hid_T=256,
                        N_S=4, N_T=8, drop_path=0.1, num_heads=8, latent_patch=1)
    config.data.update(name="weatherbench", weather_variables=("t2m",),
                       weather_resolution=1.40625, in_frames=12, out_frames=12,
                       batch_size=16)
    config.loss.alpha = 0.1  # DDR, as TAU
    config.optim.update(lr=5e-3, sched="cosine")
    config.train.epochs = 50
    return config
