"""PredRNN++ on TaxiBJ crowd flows, 4 -> 4 frames of 32x32x2 (OpenSTL configs/taxibj/PredRNNpp.py).

Four layers of width 128, filter 5, stride 1, no layer norm, patch 2; standard scheduled sampling
(eta from 1 down by 2e-5 per step to 0 at 50k steps).
Loss: MSE over all T+T'-1 one-step predictions (config.loss is not used).
batch 16, 50 epochs, Adam + cosine with 5 warm-up epochs; lr 1e-4.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("predrnnpp")
    config.model.update(in_shape=(4, 32, 32, 2), out_frames=4, num_hidden=(128, 128, 128, 128),
                        filter_size=5, stride=1, patch_size=2, layer_norm=0,
                        reverse_scheduled_sampling=0, scheduled_sampling=1,
                        sampling_stop_iter=50000, sampling_changing_rate=2e-5,
                        r_sampling_step_1=25000, r_sampling_step_2=50000, r_exp_alpha=5000)
    config.data.update(name="taxibj", batch_size=16, in_frames=4, out_frames=4)
    config.optim.update(lr=1e-4, sched="cosine", warmup_epoch=5)
    config.train.epochs = 50
    return config
