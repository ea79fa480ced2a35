"""WeatherBench t2m at 5.625 degrees (32 x 64), 12 -> 12 hours,
for TAU, gSTA, IncepU, the MetaFormer zoo, PredRNN, ConvLSTM, PredRNN++, MIM, MAU, PhyDNet and
the two attention translators:
`--config configs/weather/t2m_5_625.py:MODEL` (MODEL one of those names; default tau).

Years: train 2010-2015, val 2016, test 2017-2018 (the defaults).
Models: SimVP family as OpenSTL's configs/weather/t2m_5_625/ files (hid_S 32,
hid_T 256, N_S 2, N_T 8, drop_path 0.1; TAU lr 5e-3 OneCycle (its file sets no sched),
gSTA 5e-3 cosine, IncepU 1e-2 cosine; the zoo translators as their SimVP_<X>.py files there,
cosine, learning rates 5e-4 to 1e-2, MogaNet drop_path 0.2); PredRNN / ConvLSTM: OpenSTL's
weather architecture (4 x 128, filter 5, patch 2) with its other recurrent configs' optimisation
(Adam 5e-4, OneCycle); PredRNN++ / MIM / MAU as their files there (patch 2 / 4 / 1, MAU 4 x 64 with
sr_size 2, cosine at 5e-4 / 1e-3 (MIM's file sets no lr: OpenSTL's default) / 1e-4); PhyDNet as
its file there (patch 2, cosine, lr 1e-4, no warm-up);
TimeSformer / TPS (not OpenSTL models): TAU's frame, width 256, depth 8, 8 heads, MSE + 0.1 DDR,
Adam 5e-3 cosine.
Metrics: OpenSTL's weather conventions (MSE, RMSE, MAE averaged over the grid, in physical units,
per variable) and WeatherBench2's latitude-weighted RMSE. 50 epochs, batch 16, as OpenSTL.
"""

from tau_jax.config import base_config

SIMVP = dict(hid_S=32, hid_T=256, N_S=2, N_T=8, drop_path=0.1)  # OpenSTL's weather SimVP frame
RECURRENT = dict(num_hidden=(128,) * 4, filter_size=5, stride=1, patch_size=2, layer_norm=0)
ATTENTION = dict(SIMVP, num_heads=8, latent_patch=1)  # the translators on TAU's frame
# model -> (model fields, loss.alpha: DDR for TAU and the translators, optim fields)
MODELS = {
    "tau": (SIMVP, 0.1, dict(lr=5e-3, sched="onecycle")),
    "gsta": (SIMVP, 0.0, dict(lr=5e-3, sched="cosine")),
    "incepu": (SIMVP, 0.0, dict(lr=1e-2, sched="cosine")),
    **{name: (SIMVP, 0.0, dict(lr=lr, sched="cosine")) for name, lr in (
        ("convmixer", 1e-2), ("convnext", 1e-2), ("hornet", 1e-3), ("mlpmixer", 1e-3),
        ("poolformer", 5e-4), ("swin", 1e-3), ("uniformer", 5e-3), ("van", 5e-3),
        ("vit", 1e-3))},
    "moganet": (dict(SIMVP, drop_path=0.2), 0.0, dict(lr=5e-3, sched="cosine")),
    "predrnn": (RECURRENT, 0.0, dict(lr=5e-4, sched="onecycle")),
    "convlstm": (RECURRENT, 0.0, dict(lr=5e-4, sched="onecycle")),
    "predrnnpp": (RECURRENT, 0.0, dict(lr=5e-4, sched="cosine")),
    "mim": (dict(RECURRENT, patch_size=4), 0.0, dict(lr=1e-3, sched="cosine")),
    "mau": (dict(RECURRENT, num_hidden=(64,) * 4, patch_size=1, sr_size=2, tau=5), 0.0,
            dict(lr=1e-4, sched="cosine")),
    "phydnet": (dict(patch_size=2), 0.0, dict(lr=1e-4, sched="cosine")),
    "timesformer": (ATTENTION, 0.1, dict(lr=5e-3, sched="cosine")),
    "tps": (dict(ATTENTION, window_size=8), 0.1, dict(lr=5e-3, sched="cosine")),
}


def get_config(model: str = "tau"):
    if model not in MODELS:
        raise ValueError(f"configs/weather/t2m_5_625.py:MODEL: MODEL must be one of "
                         f"{sorted(MODELS)}, got {model!r}.")
    fields, alpha, optim = MODELS[model]
    config = base_config(model)
    config.model.update(in_shape=(12, 32, 64, 1), out_frames=12, **fields)
    config.data.update(name="weatherbench", weather_variables=("t2m",), in_frames=12,
                       out_frames=12, batch_size=16)
    config.loss.alpha = alpha
    config.optim.update(**optim)
    config.train.epochs = 50
    return config
