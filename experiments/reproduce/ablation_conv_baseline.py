"""TAU paper ablation row "Conv Baseline" (MMNIST MSE 58.9, TaxiBJ MSE x 100 43.5, 6.1 GFLOPs):
TAU's translator reduced to its 1x1 convs, without attention and MLP (our reading of the
paper's baseline, see tau_jax/models/translators/tau.py).
Everything else is the ablated recipe of this folder: mmnist_tau_200ep by default, another
one after a colon (the paper's TaxiBJ column: taxibj_tau).

    tau-jax train --config experiments/reproduce/ablation_conv_baseline.py --workdir DIR
    tau-jax train --config experiments/reproduce/ablation_conv_baseline.py:taxibj_tau --workdir DIR
"""

import pathlib

from tau_jax.config import load_config_file

HERE = pathlib.Path(__file__).resolve().parent


def get_config(recipe: str = "mmnist_tau_200ep"):
    """`recipe`: the recipe file of this folder to ablate, without '.py'."""
    config = load_config_file(HERE / f"{recipe}.py")
    config.model.tau_ablation = "conv_baseline"
    return config
