"""SimVP with a PoolFormer translator (3x3 average pooling as token mixer, then an MLP)
on KTH, 10 -> 20 (OpenSTL configs/kth/simvp/SimVP_Poolformer.py, 2 GPUs x 8)."""

from tau_jax.config import base_config


def get_config():
    config = base_config()
    config.model.update(name="poolformer", in_shape=(10, 128, 128, 1), out_frames=20,
                        hid_S=64, hid_T=256, N_S=2, N_T=6, drop_path=0.1)
    config.data.update(name="kth", batch_size=16, eval_batch_size=16)
    config.loss.alpha = 0.0  # SimVP trains on plain MSE
    config.optim.update(lr=5e-4, sched="onecycle")
    config.train.epochs = 100
    return config
