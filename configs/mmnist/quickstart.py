"""A small TAU on Moving MNIST that trains on a 2-core laptop CPU in about ten minutes.

Same data, loss (MSE + 0.1 DDR) and optimiser (Adam, OneCycle) as configs/mmnist/tau.py, but
hid_S 8, hid_T 64, N_T 2, mlp_ratio 4 (156,977 parameters instead of 44.7M), three epochs of
4,800 sequences in batches of 4 (3,600 steps) instead of 200 x 10,000 in batches of 16, and 1,000
test sequences. Batch 4 is what the recipe runs measured best (experiments/quickstart_recipe.py):
more, smaller steps beat fewer large ones at this budget. About 3,600 steps are what it takes to
beat copying the last frame on SSIM too (2,800 reach 0.655 against its 0.661; README).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config()
    config.model.update(name="tau", in_shape=(10, 64, 64, 1), out_frames=10,
                        hid_S=8, hid_T=64, N_S=4, N_T=2, mlp_ratio=4.0)
    config.data.update(name="moving_mnist", batch_size=4, eval_batch_size=50,
                       mmnist_train_size=4800, mmnist_test_size=1000)
    config.loss.alpha = 0.1  # DDR weight
    config.optim.update(lr=3e-3, sched="onecycle")
    config.train.update(epochs=3, log_every_steps=100)
    return config
