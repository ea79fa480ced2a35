"""SimVP with a ViT translator (global self-attention over all latent pixels)
on KTH, 10 -> 20 (OpenSTL configs/kth/simvp/SimVP_ViT.py, 4 GPUs x 2).

The file's global batch is 8; OpenSTL's MetaVP KTH table reports 2 GPUs x 8, the global
16 used here.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config()
    config.model.update(name="vit", in_shape=(10, 128, 128, 1), out_frames=20,
                        hid_S=64, hid_T=256, N_S=2, N_T=4, drop_path=0.1)
    config.data.update(name="kth", batch_size=16, eval_batch_size=16)
    config.loss.alpha = 0.0  # SimVP trains on plain MSE
    config.optim.update(lr=1.3e-3, sched="onecycle")
    config.train.epochs = 100
    return config
