"""TPS (temporal patch shift) translator in the SimVP frame on TaxiBJ, 4 -> 4 frames of 32x32x2.

Not an OpenSTL model. Encoder/decoder are OpenSTL's TaxiBJ SimVP ones (hid_S 32, N_S 2: 16x16
latents); the translator (models/translators/tps.py) runs 8x8 window attention on 16x16 tokens per
frame with alternating channel / patch shifts, width hid_T, depth N_T. With T = 4 the pattern's
offsets (-4..+4) alias modulo 4 (see tps.py). Loss (MSE + 0.1 DDR), optimiser and schedule are
OpenSTL's TaxiBJ TAU settings (Adam 5e-4, cosine with 5 warm-up epochs, 50 epochs, batch 16,
drop_path 0.1).
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("tps")
    config.model.update(in_shape=(4, 32, 32, 2), out_frames=4, hid_S=32, hid_T=256, N_S=2,
                        N_T=8, mlp_ratio=4.0, drop_path=0.1, num_heads=8, latent_patch=1,
                        window_size=8, shift_ratio=1.0, channel_shift_ratio=0.125,
                        relative_bias="3d")
    config.data.update(name="taxibj", batch_size=16)
    config.loss.alpha = 0.1  # DDR weight, as TAU
    config.optim.update(lr=5e-4, sched="cosine", warmup_epoch=5)
    config.train.epochs = 50
    return config
