"""gSTA (SimVP v2) on WeatherBench t2m at 5.625 degrees (32 x 64), 12 -> 12 hours.

hid_S 32, hid_T 256, N_S 2, N_T 8, drop_path 0.1; lr 0.005 cosine, batch 16, 50 epochs (OpenSTL
configs/weather/t2m_5_625/SimVP_gSTA.py).
Years: train 2010-2015, val 2016, test 2017-2018 (the defaults); metrics: OpenSTL's weather
conventions (MSE, RMSE, MAE averaged over the grid, in physical units, per variable).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("gsta")
    config.model.update(in_shape=(12, 32, 64, 1), out_frames=12, hid_S=32, hid_T=256,
                        N_S=2, N_T=8, drop_path=0.1)
    config.data.update(name="weatherbench", weather_variables=("t2m",), in_frames=12,
                       out_frames=12, batch_size=16)
    config.loss.alpha = 0.0  # SimVP trains on plain MSE
    config.optim.update(lr=0.005, sched="cosine", warmup_epoch=0)
    config.train.epochs = 50
    return config
