"""SimVP with a PoolFormer translator (3x3 average pooling as token mixer, then an MLP)
on Moving MNIST (OpenSTL configs/mmnist/simvp/SimVP_Poolformer.py)."""

from tau_jax.config import base_config


def get_config():
    config = base_config()
    config.model.update(name="poolformer", in_shape=(10, 64, 64, 1), out_frames=10,
                        hid_S=64, hid_T=512, N_S=4, N_T=8, drop_path=0.0)
    config.data.update(name="moving_mnist", batch_size=16)
    config.loss.alpha = 0.0  # SimVP trains on plain MSE
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 200
    return config
