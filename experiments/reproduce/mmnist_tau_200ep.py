"""Reproduce OpenSTL's TAU on Moving MNIST, 200 epochs (MSE 24.60, MAE 71.93, SSIM 0.9454,
PSNR 23.19): configs/mmnist/tau.py (bs 16, Adam, OneCycle 1e-3, DDR alpha 0.1, seed 42) on
OpenSTL's data: 10,000 fresh training sequences an epoch made from MNIST's 60,000 training
digits, tested on the standard mnist_test_seq.npy (put both files in the manual dir).

    tau-jax train --config experiments/reproduce/mmnist_tau_200ep.py --workdir runs/mmnist_tau_200ep
"""

import pathlib

from tau_jax.config import load_config_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def get_config():
    config = load_config_file(CONFIGS / "mmnist" / "tau.py")
    config.data.mmnist_online = True  # fresh sequences every epoch, as OpenSTL's loader
    config.data.mmnist_digits = "idx"  # train-images-idx3-ubyte.gz, OpenSTL's digits
    config.train.epochs = 200  # OpenSTL's 200-epoch table (its 2000-epoch row: 15.69 MSE)
    return config
