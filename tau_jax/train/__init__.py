"""Training system: `train_and_evaluate(config, workdir)` and `evaluate(workdir)`."""

from tau_jax.train.loop import evaluate, load_config, train_and_evaluate

__all__ = ["evaluate", "load_config", "train_and_evaluate"]
