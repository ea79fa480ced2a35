"""PhyDNet on KTH actions, 10 -> 20 frames of 128x128 (OpenSTL configs/kth/PhyDNet.py).

OpenSTL's hard-coded widths, patch 4: 3,091,732 parameters. Loss: the model's own (per-step MSE
summed over the T+T'-1 steps + the PhyCell moment constraint), teacher forcing with ratio
max(0, 1 - 0.003 epoch) (config.loss is not used).
1 GPU x batch 16 (docs), 100 epochs, Adam + OneCycle; lr 1e-3.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("phydnet")
    config.model.update(in_shape=(10, 128, 128, 1), out_frames=20, patch_size=4)
    config.data.update(name="kth", batch_size=16, eval_batch_size=16, in_frames=10, out_frames=20)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 100
    return config
