"""SwinLSTM-D on Moving MNIST, 10 -> 10 frames of 64x64 (OpenSTL configs/mmnist/SwinLSTM-D.py).

Patch 2, embed_dim 128, window 4; down path depths 2, 6 with 4, 8 heads, up path depths 6, 2
(read backwards by level, as OpenSTL): 20,191,969 parameters. DropPath linspace(0, 0.1) (OpenSTL's
hard-coded rate). Loss: MSE over all T+T'-1 step outputs (config.loss is not used).
batch 16, 200 epochs (OpenSTL's default), Adam + OneCycle, lr 1e-4.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("swinlstm_d")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, depths_downsample=(2, 6),
                        depths_upsample=(6, 2), num_heads=(4, 8), patch_size=2, window_size=4,
                        embed_dim=128, drop_path_rate=0.1)
    config.data.update(name="moving_mnist", batch_size=16, in_frames=10, out_frames=10)
    config.optim.update(lr=1e-4, sched="onecycle")
    config.train.epochs = 200
    return config
