"""MAU on TaxiBJ crowd flows, 4 -> 4 frames of 32x32x2 (OpenSTL configs/taxibj/MAU.py).

Four motion-aware units of width 64 on a 16x16 grid (sr_size 2: a 1x1 and one stride-2 encoder
conv, one transposed-conv decoder), attention over tau = 5 past steps, filter 5, stride 1,
patch 1, 'normal' cell and model modes (its LayerNorms are always on; layer_norm is unused);
standard scheduled sampling (eta from 1 down by 2e-5 per step to 0 at 50k steps).
Loss: MSE over all T+T'-1 one-step predictions (config.loss is not used).
batch 16, 50 epochs, Adam + cosine with 5 warm-up epochs; lr 1e-3.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("mau")
    config.model.update(in_shape=(4, 32, 32, 2), out_frames=4, num_hidden=(64, 64, 64, 64),
                        filter_size=5, stride=1, patch_size=1, layer_norm=0, sr_size=2, tau=5,
                        cell_mode="normal", model_mode="normal", reverse_scheduled_sampling=0,
                        scheduled_sampling=1, sampling_stop_iter=50000,
                        sampling_changing_rate=2e-5)
    config.data.update(name="taxibj", batch_size=16, in_frames=4, out_frames=4)
    config.optim.update(lr=1e-3, sched="cosine", warmup_epoch=5)
    config.train.epochs = 50
    return config
