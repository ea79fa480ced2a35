"""SimVP with a PoolFormer translator (3x3 average pooling as token mixer, then an MLP)
on TaxiBJ (OpenSTL configs/taxibj/simvp/SimVP_Poolformer.py)."""

from tau_jax.config import base_config


def get_config():
    config = base_config()
    config.model.update(name="poolformer", in_shape=(4, 32, 32, 2), out_frames=4,
                        hid_S=32, hid_T=256, N_S=2, N_T=8, drop_path=0.1)
    config.data.update(name="taxibj", batch_size=16)
    config.loss.alpha = 0.0  # SimVP trains on plain MSE
    config.optim.update(lr=5e-4, sched="cosine", warmup_epoch=5)
    config.train.epochs = 50
    return config
