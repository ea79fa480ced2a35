"""TAU paper ablation row "w/o SA" (MMNIST MSE 23.2, TaxiBJ MSE x 100 40.8, 15.3 GFLOPs):
TAU without the statical attention: the gating unit is DA(u) * u.
Everything else is the ablated recipe of this folder: mmnist_tau_200ep by default, another
one after a colon (the paper's TaxiBJ column: taxibj_tau).

    tau-jax train --config experiments/reproduce/ablation_no_sa.py --workdir DIR
    tau-jax train --config experiments/reproduce/ablation_no_sa.py:taxibj_tau --workdir DIR
"""

import pathlib

from tau_jax.config import load_config_file

HERE = pathlib.Path(__file__).resolve().parent


def get_config(recipe: str = "mmnist_tau_200ep"):
    """`recipe`: the recipe file of this folder to ablate, without '.py'."""
    config = load_config_file(HERE / f"{recipe}.py")
    config.model.tau_ablation = "no_sa"
    return config
