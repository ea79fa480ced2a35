"""PhyDNet on TaxiBJ crowd flows, 4 -> 4 frames of 32x32x2 (OpenSTL configs/taxibj/PhyDNet.py).

OpenSTL's hard-coded widths, patch 2: 3,092,309 parameters. Loss: the model's own (per-step MSE
summed over the T+T'-1 steps + the PhyCell moment constraint), teacher forcing with ratio
max(0, 1 - 0.003 epoch) (config.loss is not used).
batch 16, 50 epochs, Adam + cosine with 5 warm-up epochs; lr 5e-4.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("phydnet")
    config.model.update(in_shape=(4, 32, 32, 2), out_frames=4, patch_size=2)
    config.data.update(name="taxibj", batch_size=16, in_frames=4, out_frames=4)
    config.optim.update(lr=5e-4, sched="cosine", warmup_epoch=5)
    config.train.epochs = 50
    return config
