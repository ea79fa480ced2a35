"""PredRNN++ on Moving MNIST, 10 -> 10 frames of 64x64 (OpenSTL configs/mmnist/PredRNNpp.py).

Four layers of width 128, filter 5, stride 1, no layer norm, patch 4; standard scheduled sampling
(eta from 1 down by 2e-5 per step to 0 at 50k steps).
Loss: MSE over all T+T'-1 one-step predictions (config.loss is not used).
batch 16, 200 epochs (the OpenSTL docs also report 2000), Adam + OneCycle; lr 1e-4.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("predrnnpp")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, num_hidden=(128, 128, 128, 128),
                        filter_size=5, stride=1, patch_size=4, layer_norm=0,
                        reverse_scheduled_sampling=0, scheduled_sampling=1,
                        sampling_stop_iter=50000, sampling_changing_rate=2e-5,
                        r_sampling_step_1=25000, r_sampling_step_2=50000, r_exp_alpha=5000)
    config.data.update(name="moving_mnist", batch_size=16, in_frames=10, out_frames=10)
    config.optim.update(lr=1e-4, sched="onecycle")
    config.train.epochs = 200
    return config
