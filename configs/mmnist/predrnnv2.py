"""PredRNN-V2 on Moving MNIST, 10 -> 10 frames of 64x64 (OpenSTL configs/mmnist/PredRNNv2.py).

Four layers of width 128, filter 5, stride 1, no layer norm, patch 4; reverse scheduled sampling
(r_eta 0.5 -> 1 and eta 0.5 -> 0 between steps 25k and 50k) and the decoupling loss.
Loss: MSE over all T+T'-1 one-step predictions + beta * decoupling (config.loss is not used).
batch 16, 200 epochs (the OpenSTL docs also report 2000), Adam + OneCycle; lr 5e-4.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("predrnnv2")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, num_hidden=(128, 128, 128, 128),
                        filter_size=5, stride=1, patch_size=4, layer_norm=0,
                        reverse_scheduled_sampling=1, decouple_beta=0.1, scheduled_sampling=1,
                        sampling_stop_iter=50000, sampling_changing_rate=2e-5,
                        r_sampling_step_1=25000, r_sampling_step_2=50000, r_exp_alpha=5000)
    config.data.update(name="moving_mnist", batch_size=16, in_frames=10, out_frames=10)
    config.optim.update(lr=5e-4, sched="onecycle")
    config.train.epochs = 200
    return config
