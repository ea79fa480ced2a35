"""PredRNN-V2 on TaxiBJ crowd flows, 4 -> 4 frames of 32x32x2 (OpenSTL configs/taxibj/PredRNNv2.py).

Four layers of width 128, filter 5, stride 1, no layer norm, patch 2; reverse scheduled sampling
(r_eta 0.5 -> 1 and eta 0.5 -> 0 between steps 25k and 50k) and the decoupling loss.
Loss: MSE over all T+T'-1 one-step predictions + beta * decoupling (config.loss is not used).
batch 16, 50 epochs, Adam + cosine with 5 warm-up epochs; lr 5e-4.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("predrnnv2")
    config.model.update(in_shape=(4, 32, 32, 2), out_frames=4, num_hidden=(128, 128, 128, 128),
                        filter_size=5, stride=1, patch_size=2, layer_norm=0,
                        reverse_scheduled_sampling=1, decouple_beta=0.1, scheduled_sampling=1,
                        sampling_stop_iter=50000, sampling_changing_rate=2e-5,
                        r_sampling_step_1=25000, r_sampling_step_2=50000, r_exp_alpha=5000)
    config.data.update(name="taxibj", batch_size=16, in_frames=4, out_frames=4)
    config.optim.update(lr=5e-4, sched="cosine", warmup_epoch=5)
    config.train.epochs = 50
    return config
