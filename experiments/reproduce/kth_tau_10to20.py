"""Reproduce OpenSTL's TAU on KTH 10 -> 20, 100 epochs (MSE 45.32, MAE 421.7, SSIM 0.9086,
PSNR 27.10): configs/kth/tau.py as it is. OpenSTL ran 4 GPUs x batch 4; the batch here is
global (16), split over the devices of the mesh.

    tau-jax train --config experiments/reproduce/kth_tau_10to20.py --workdir runs/kth_tau_10to20
"""

import pathlib

from tau_jax.config import load_config_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def get_config():
    config = load_config_file(CONFIGS / "kth" / "tau.py")
    config.train.epochs = 100  # OpenSTL's KTH table
    return config
