"""PhyDNet on Moving MNIST, 10 -> 10 frames of 64x64 (OpenSTL configs/mmnist/PhyDNet.py).

OpenSTL's hard-coded widths (encoder 32 / 64, PhyCell 64 with 49 7x7 moments, ConvLSTM 128, 128,
64), patch 4: 3,091,732 parameters. Loss: the model's own (per-step MSE summed over the T+T'-1
steps + the PhyCell moment constraint), teacher forcing with ratio max(0, 1 - 0.003 epoch)
(config.loss is not used).
batch 16, 200 epochs, Adam + OneCycle; lr 1e-3.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("phydnet")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, patch_size=4)
    config.data.update(name="moving_mnist", batch_size=16, in_frames=10, out_frames=10)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 200
    return config
