"""Training system: `train_and_evaluate(config, workdir)` and `evaluate(workdir)`; a run stopped
by SIGTERM or Ctrl-C raises `Preempted` after its checkpoint, one refused because another process
trains in the workdir raises `WorkdirLocked`."""

from tau_jax.train.lock import WorkdirLocked
from tau_jax.train.evaluation import evaluate
from tau_jax.train.loop import train_and_evaluate
from tau_jax.train.preemption import Preempted
from tau_jax.train.workdir import load_config

__all__ = ["Preempted", "WorkdirLocked", "evaluate", "load_config", "train_and_evaluate"]
