"""Checkpoints with orbax: async saves, the latest N plus the best by validation MSE, the data
iterator's position alongside the state, and resume that skips an unreadable checkpoint.

Layout: `<workdir>/checkpoints/<step>/{state, data}`; `data` is grain's iterator state (JSON).
"""

from __future__ import annotations

import logging
import pathlib

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = "val_mse"


class Checkpointer:
    """Saves and restores (TrainState, data iterator state) under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str | pathlib.Path, keep: int):
        # BestN keeps the tail of the sorted order: reverse=True (descending) keeps the lowest MSE.
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=True, n=1,
                                      keep_checkpoints_without_metrics=False),
        ])
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "data"),
            options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                                 cleanup_tmp_directories=True))

    def save(self, step: int, state, data_state: dict, val_mse: float | None = None) -> None:
        """Start an async save (returns before the files are written)."""
        metrics = None if val_mse is None else {BEST_METRIC: float(val_mse)}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            metrics=metrics, force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state):
        """(step, state, data_state) of the newest readable checkpoint, or None if there is none.

        A checkpoint that fails to load (truncated or corrupted files) is reported and skipped in
        favour of the one before it.
        """
        for step in reversed(self.steps()):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - any read failure means: try an older one
                logging.error("Checkpoint %s is unreadable (%s: %s); falling back to the "
                              "previous one.", self.directory / str(step), type(e).__name__,
                              str(e).splitlines()[0] if str(e) else "")
                continue
            return step, restored.state, restored.data
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with shardings, the target orbax restores into."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
