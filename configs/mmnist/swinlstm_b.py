"""SwinLSTM-B on Moving MNIST, 10 -> 10 frames of 64x64.

OpenSTL has no Moving MNIST SwinLSTM-B config: this is its Human3.6M one
(configs/human/SwinLSTM-B.py: one cell of 12 blocks, 4 heads, patch 2, window 4, embed_dim 128)
sized for Moving MNIST's 64x64 single-channel frames: 2,778,417 parameters. DropPath 0.1 on every
block (OpenSTL's hard-coded rate). Loss: MSE over all T+T'-1 step outputs (config.loss is not
used). batch 16, 200 epochs (OpenSTL's default), Adam + OneCycle, lr 1e-4 (the Human3.6M
config's).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("swinlstm_b")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, depths=12, num_heads=4,
                        patch_size=2, window_size=4, embed_dim=128, drop_path_rate=0.1)
    config.data.update(name="moving_mnist", batch_size=16, in_frames=10, out_frames=10)
    config.optim.update(lr=1e-4, sched="onecycle")
    config.train.epochs = 200
    return config
