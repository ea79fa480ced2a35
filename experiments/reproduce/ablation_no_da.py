"""TAU paper ablation row "w/o DA" (MMNIST MSE 22.4, TaxiBJ MSE x 100 38.4, 16.0 GFLOPs):
TAU without the dynamical attention: the gating unit is SA(u) * u.
Everything else is the ablated recipe of this folder: mmnist_tau_200ep by default, another
one after a colon (the paper's TaxiBJ column: taxibj_tau).

    tau-jax train --config experiments/reproduce/ablation_no_da.py --workdir DIR
    tau-jax train --config experiments/reproduce/ablation_no_da.py:taxibj_tau --workdir DIR
"""

import pathlib

from tau_jax.config import load_config_file

HERE = pathlib.Path(__file__).resolve().parent


def get_config(recipe: str = "mmnist_tau_200ep"):
    """`recipe`: the recipe file of this folder to ablate, without '.py'."""
    config = load_config_file(HERE / f"{recipe}.py")
    config.model.tau_ablation = "no_da"
    return config
