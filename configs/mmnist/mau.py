"""MAU on Moving MNIST, 10 -> 10 frames of 64x64 (OpenSTL configs/mmnist/MAU.py).

Four motion-aware units of width 64 on a 16x16 grid (sr_size 4: a 1x1 and two stride-2 encoder
convs, two transposed-conv decoders), attention over tau = 5 past steps, filter 5, stride 1,
patch 1, 'normal' cell and model modes (its LayerNorms are always on; layer_norm is unused);
standard scheduled sampling (eta from 1 down by 2e-5 per step to 0 at 50k steps).
Loss: MSE over all T+T'-1 one-step predictions (config.loss is not used).
batch 16, 200 epochs, Adam + OneCycle; lr 1e-3.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("mau")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, num_hidden=(64, 64, 64, 64),
                        filter_size=5, stride=1, patch_size=1, layer_norm=0, sr_size=4, tau=5,
                        cell_mode="normal", model_mode="normal", reverse_scheduled_sampling=0,
                        scheduled_sampling=1, sampling_stop_iter=50000,
                        sampling_changing_rate=2e-5)
    config.data.update(name="moving_mnist", batch_size=16, in_frames=10, out_frames=10)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 200
    return config
