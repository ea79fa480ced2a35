"""WeatherBench r, t, u, v at 150 / 500 / 850 hPa (12 channels),
5.625 degrees, 6-hourly, 4 -> 4 steps,
for TAU, gSTA, IncepU, PredRNN, ConvLSTM and the two attention translators:
`--config configs/weather/mv_4_s6_5_625.py:MODEL` (MODEL one of those names; default tau).

Years: train 1979-2015, val 2016, test 2017-2018.
Models: TAU as OpenSTL's configs/weather/mv_4_s6_5_625/TAU.py (hid_S 32, hid_T 256, N_S 2,
N_T 8, drop_path 0.1, lr 5e-3 cosine with 5 warm-up epochs); gSTA and IncepU take TAU's
settings (OpenSTL's files for them are not in our reference); PredRNN / ConvLSTM and the
translators as in t2m_5_625.py.
Metrics: OpenSTL's weather conventions (MSE, RMSE, MAE averaged over the grid, in physical units,
per variable) and WeatherBench2's latitude-weighted RMSE. 50 epochs, batch 16, as OpenSTL.
"""

from tau_jax.config import base_config

SIMVP = dict(hid_S=32, hid_T=256, N_S=2, N_T=8, drop_path=0.1)  # OpenSTL's weather SimVP frame
RECURRENT = dict(num_hidden=(128,) * 4, filter_size=5, stride=1, patch_size=2, layer_norm=0)
ATTENTION = dict(SIMVP, num_heads=8, latent_patch=1)  # the translators on TAU's frame
# model -> (model fields, loss.alpha: DDR for TAU and the translators, optim fields)
MODELS = {
    "tau": (SIMVP, 0.1, dict(lr=5e-3, sched="cosine", warmup_epoch=5)),
    "gsta": (SIMVP, 0.0, dict(lr=5e-3, sched="cosine", warmup_epoch=5)),
    "incepu": (SIMVP, 0.0, dict(lr=5e-3, sched="cosine", warmup_epoch=5)),
    "predrnn": (RECURRENT, 0.0, dict(lr=5e-4, sched="onecycle")),
    "convlstm": (RECURRENT, 0.0, dict(lr=5e-4, sched="onecycle")),
    "timesformer": (ATTENTION, 0.1, dict(lr=5e-3, sched="cosine")),
    "tps": (dict(ATTENTION, window_size=8), 0.1, dict(lr=5e-3, sched="cosine")),
}


def get_config(model: str = "tau"):
    if model not in MODELS:
        raise ValueError(f"configs/weather/mv_4_s6_5_625.py:MODEL: MODEL must be one of "
                         f"{sorted(MODELS)}, got {model!r}.")
    fields, alpha, optim = MODELS[model]
    config = base_config(model)
    config.model.update(in_shape=(4, 32, 64, 12), out_frames=4, **fields)
    variables = tuple(f"{v}@{level}" for v in "rtuv" for level in (150, 500, 850))
    config.data.update(name="weatherbench", weather_variables=variables, weather_step=6,
                       weather_train_years=(1979, 2015), in_frames=4, out_frames=4,
                       batch_size=16)
    config.loss.alpha = alpha
    config.optim.update(**optim)
    config.train.epochs = 50
    return config
