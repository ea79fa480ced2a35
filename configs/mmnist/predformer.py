"""PredFormer on Moving MNIST, 10 -> 10 frames: `--config configs/mmnist/predformer.py[:VARIANT]`.

The official Moving MNIST config (patch 8, dim 256, 8 heads of 32, SwiGLU x4, no dropout) with the
variant's equal-budget depth (Quadruplet-TSST, the default and the paper's best: 6 blocks,
25,297,728 parameters; full 24, fac / binary 12, triplet 8) and the official training script:
AdamW lr 1e-3, weight decay 1e-2, OneCycle, batch 16, 2000 epochs, MSE.
"""

from tau_jax.config import base_config
from tau_jax.models.predformer import equal_budget_ndepth


def get_config(variant: str = "quadruplet_tsst"):
    config = base_config("predformer")
    config.model.update(variant=variant, in_shape=(10, 64, 64, 1), out_frames=10, patch_size=8,
                        dim=256, heads=8, dim_head=32, scale_dim=4,
                        Ndepth=equal_budget_ndepth(variant, 6), dropout=0.0, attn_dropout=0.0,
                        drop_path=0.0)
    config.data.update(name="moving_mnist", batch_size=16)
    config.optim.update(optimizer="adamw", lr=1e-3, weight_decay=1e-2, sched="onecycle")
    config.train.epochs = 2000
    return config
