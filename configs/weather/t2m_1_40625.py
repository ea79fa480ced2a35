"""WeatherBench t2m at 1.40625 degrees (128 x 256), 12 -> 12 hours,
for TAU, gSTA, IncepU, PredRNN, ConvLSTM and the two attention translators:
`--config configs/weather/t2m_1_40625.py:MODEL` (MODEL one of those names; default tau).

Years: train 2010-2015, val 2016, test 2017-2018 (the defaults).
Models: TAU as OpenSTL's configs/weather/t2m_1_40625/TAU.py (N_S 4, lr 5e-3 cosine);
gSTA and IncepU take TAU's settings (their files are not in our reference); PredRNN /
ConvLSTM with patch 4 (OpenSTL's parameter counts confirm it); the translators on TAU's
frame (N_S 4).
Metrics: OpenSTL's weather conventions (MSE, RMSE, MAE averaged over the grid, in physical units,
per variable) and WeatherBench2's latitude-weighted RMSE. 50 epochs, batch 16, as OpenSTL.
"""

from tau_jax.config import base_config

SIMVP = dict(hid_S=32, hid_T=256, N_S=4, N_T=8, drop_path=0.1)  # OpenSTL's weather SimVP frame
RECURRENT = dict(num_hidden=(128,) * 4, filter_size=5, stride=1, patch_size=4, layer_norm=0)
ATTENTION = dict(SIMVP, num_heads=8, latent_patch=1)  # the translators on TAU's frame
# model -> (model fields, loss.alpha: DDR for TAU and the translators, optim fields)
MODELS = {
    "tau": (SIMVP, 0.1, dict(lr=5e-3, sched="cosine")),
    "gsta": (SIMVP, 0.0, dict(lr=5e-3, sched="cosine")),
    "incepu": (SIMVP, 0.0, dict(lr=5e-3, sched="cosine")),
    "predrnn": (RECURRENT, 0.0, dict(lr=5e-4, sched="onecycle")),
    "convlstm": (RECURRENT, 0.0, dict(lr=5e-4, sched="onecycle")),
    "timesformer": (ATTENTION, 0.1, dict(lr=5e-3, sched="cosine")),
    "tps": (dict(ATTENTION, window_size=8), 0.1, dict(lr=5e-3, sched="cosine")),
}


def get_config(model: str = "tau"):
    if model not in MODELS:
        raise ValueError(f"configs/weather/t2m_1_40625.py:MODEL: MODEL must be one of "
                         f"{sorted(MODELS)}, got {model!r}.")
    fields, alpha, optim = MODELS[model]
    config = base_config(model)
    config.model.update(in_shape=(12, 128, 256, 1), out_frames=12, **fields)
    config.data.update(name="weatherbench", weather_variables=("t2m",),
                       weather_resolution=1.40625, in_frames=12, out_frames=12,
                       batch_size=16)
    config.loss.alpha = alpha
    config.optim.update(**optim)
    config.train.epochs = 50
    return config
