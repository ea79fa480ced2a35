"""PredFormer on WeatherBench t2m at 5.625 degrees (32 x 64), 12 -> 12 hours:
`--config configs/weather/predformer.py[:VARIANT]`.

The official t2m config (patch 4, dim 256, 8 heads of 32, SwiGLU x2, dropout and attention
dropout 0.1, drop path 0.25) with the variant's equal-budget depth (FacTS, the default, the
variant of the official training script: 4 layers each; quadruplet 2, triplet 3, full 8) and
that script's training: AdamW lr 5e-4, weight decay 1e-2, cosine without warm-up, batch 16,
50 epochs, MSE. Data and metrics as configs/weather/t2m_5_625.py (train 2010-2015, val 2016,
test 2017-2018; OpenSTL's weather conventions and WeatherBench2's latitude-weighted RMSE).
"""

from tau_jax.config import base_config
from tau_jax.models.predformer import equal_budget_ndepth


def get_config(variant: str = "fac_ts"):
    config = base_config("predformer")
    config.model.update(variant=variant, in_shape=(12, 32, 64, 1), out_frames=12, patch_size=4,
                        dim=256, heads=8, dim_head=32, scale_dim=2,
                        Ndepth=equal_budget_ndepth(variant, 2), dropout=0.1, attn_dropout=0.1,
                        drop_path=0.25)
    config.data.update(name="weatherbench", weather_variables=("t2m",), in_frames=12,
                       out_frames=12, batch_size=16)
    config.optim.update(optimizer="adamw", lr=5e-4, weight_decay=1e-2, sched="cosine",
                        warmup_epoch=0)
    config.train.epochs = 50
    return config
