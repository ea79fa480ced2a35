"""Training system: `train_and_evaluate(config, workdir)` and `evaluate(workdir)`."""

from tau_jax.train.loop import evaluate, train_and_evaluate
from tau_jax.train.workdir import load_config

__all__ = ["evaluate", "load_config", "train_and_evaluate"]
