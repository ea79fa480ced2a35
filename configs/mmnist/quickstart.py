"""A small TAU on Moving MNIST that trains on a 2-core laptop CPU in about ten minutes.

Same data, loss (MSE + 0.1 DDR) and optimiser (Adam, OneCycle) as configs/mmnist/tau.py, but
hid_S 8, hid_T 64, N_T 2, mlp_ratio 4 (156,977 parameters instead of 44.7M), one epoch
of 6,400 sequences (400 steps of 16) instead of 200 x 10,000, and 1,000 test sequences.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config()
    config.model.update(name="tau", in_shape=(10, 64, 64, 1), out_frames=10,
                        hid_S=8, hid_T=64, N_S=4, N_T=2, mlp_ratio=4.0)
    config.data.update(name="moving_mnist", batch_size=16, eval_batch_size=50,
                       mmnist_train_size=6400, mmnist_test_size=1000)
    config.loss.alpha = 0.1  # DDR weight
    config.optim.update(lr=3e-3, sched="onecycle")
    config.train.update(epochs=1, log_every_steps=50)
    return config
