"""TPS (temporal patch shift) translator in the SimVP frame on Moving MNIST, 10 -> 10 frames.

Not an OpenSTL model. Encoder/decoder are OpenSTL's Moving MNIST SimVP ones (hid_S 64, N_S 4:
16x16 latents); the translator (models/translators/tps.py) runs 8x8 window attention on 16x16 tokens
per frame with alternating channel / patch shifts, width hid_T, depth N_T. Loss (MSE + 0.1 DDR),
optimiser and schedule are OpenSTL's Moving MNIST TAU settings (Adam 1e-3, OneCycle, 200 epochs,
batch 16).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("tps")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, hid_S=64, hid_T=256, N_S=4,
                        N_T=8, mlp_ratio=4.0, drop_path=0.0, num_heads=8, latent_patch=1,
                        window_size=8, shift_ratio=1.0, channel_shift_ratio=0.125,
                        relative_bias="3d")
    config.data.update(name="moving_mnist", batch_size=16)
    config.loss.alpha = 0.1  # DDR weight, as TAU
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 200
    return config
