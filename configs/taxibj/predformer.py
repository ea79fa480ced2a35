"""PredFormer on TaxiBJ crowd flows, 4 -> 4 frames of 32x32x2:
`--config configs/taxibj/predformer.py[:VARIANT]`.

The official TaxiBJ config (patch 4, dim 256, 8 heads of 32, SwiGLU x4, dropout, attention
dropout and drop path 0.1) with the variant's equal-budget depth (Triplet-STS, the default, the
variant of the official training script: 3 blocks; quadruplet 2, triplet 3, fac / binary 4,
full 8) and that script's training: AdamW lr 1e-3, weight decay 1e-2, OneCycle, batch 16,
200 epochs, MSE.
"""

from tau_jax.config import base_config
from tau_jax.models.predformer import equal_budget_ndepth


def get_config(variant: str = "triplet_sts"):
    config = base_config("predformer")
    config.model.update(variant=variant, in_shape=(4, 32, 32, 2), out_frames=4, patch_size=4,
                        dim=256, heads=8, dim_head=32, scale_dim=4,
                        Ndepth=equal_budget_ndepth(variant, 2), dropout=0.1, attn_dropout=0.1,
                        drop_path=0.1)
    config.data.update(name="taxibj", batch_size=16)
    config.optim.update(optimizer="adamw", lr=1e-3, weight_decay=1e-2, sched="onecycle")
    config.train.epochs = 200
    return config
