"""Reproduce OpenSTL's TAU on TaxiBJ, 50 epochs (MSE 0.3108, MAE 14.93, SSIM 0.9848, PSNR 39.74):
configs/taxibj/tau.py as it is (bs 16, Adam, cosine 5e-4 with 5 warm-up epochs, drop_path 0.1).

    tau-jax train --config experiments/reproduce/taxibj_tau.py --workdir runs/taxibj_tau
"""

import pathlib

from tau_jax.config import load_config_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def get_config():
    config = load_config_file(CONFIGS / "taxibj" / "tau.py")
    config.train.epochs = 50  # OpenSTL's traffic table
    return config
