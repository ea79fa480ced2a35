"""TAU on KTH actions, 10 -> 20 frames of 128x128 (OpenSTL configs/kth/TAU.py).

OpenSTL ran it as 4 GPUs x batch 4; the batch here is global. T' = 20 is two roll-out passes.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config()
    config.model.update(name="tau", in_shape=(10, 128, 128, 1), out_frames=20,
                        hid_S=64, hid_T=256, N_S=2, N_T=6, drop_path=0.1)
    config.data.update(name="kth", batch_size=16, eval_batch_size=16)
    config.loss.alpha = 0.1  # DDR weight
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 100
    return config
