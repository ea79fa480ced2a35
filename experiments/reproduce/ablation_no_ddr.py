"""TAU paper ablation row "w/o DDR" (MMNIST MSE 21.1, TaxiBJ MSE x 100 37.7, 16.0 GFLOPs):
TAU trained on plain MSE, the differential divergence regularisation off.
Everything else is the ablated recipe of this folder: mmnist_tau_200ep by default, another
one after a colon (the paper's TaxiBJ column: taxibj_tau).

    tau-jax train --config experiments/reproduce/ablation_no_ddr.py --workdir DIR
    tau-jax train --config experiments/reproduce/ablation_no_ddr.py:taxibj_tau --workdir DIR
"""

import pathlib

from tau_jax.config import load_config_file

HERE = pathlib.Path(__file__).resolve().parent


def get_config(recipe: str = "mmnist_tau_200ep"):
    """`recipe`: the recipe file of this folder to ablate, without '.py'."""
    config = load_config_file(HERE / f"{recipe}.py")
    config.loss.alpha = 0.0
    return config
