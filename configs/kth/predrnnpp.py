"""PredRNN++ on KTH actions, 10 -> 20 frames of 128x128 (OpenSTL configs/kth/PredRNNpp.py).

Four layers of width 128, filter 5, stride 1, no layer norm, patch 2; standard scheduled sampling
(eta from 1 down by 2e-5 per step to 0 at 50k steps).
Loss: MSE over all T+T'-1 one-step predictions (config.loss is not used).
1 GPU x batch 16 (docs), 100 epochs, Adam + OneCycle; lr 1e-3.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("predrnnpp")
    config.model.update(in_shape=(10, 128, 128, 1), out_frames=20, num_hidden=(128, 128, 128, 128),
                        filter_size=5, stride=1, patch_size=2, layer_norm=0,
                        reverse_scheduled_sampling=0, scheduled_sampling=1,
                        sampling_stop_iter=50000, sampling_changing_rate=2e-5,
                        r_sampling_step_1=25000, r_sampling_step_2=50000, r_exp_alpha=5000)
    config.data.update(name="kth", batch_size=16, eval_batch_size=16, in_frames=10, out_frames=20)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 100
    return config
