"""OpenSTL weights -> a workdir that `tau-jax eval`, `predict` and `train` (fine-tuning) accept."""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp

from tau_jax.convert.state_dict import from_openstl
from tau_jax.train import loop, optim
from tau_jax.train.checkpoint import Checkpointer, has_checkpoints
from tau_jax.train.lock import workdir_lock
from tau_jax.train.sharding import make_mesh
from tau_jax.train.state import TrainState
from tau_jax.train.workdir import check_config, check_workdir, save_config


def convert_openstl(state_dict, config, workdir: str | os.PathLike) -> pathlib.Path:
    """Write `config` and a step-0 checkpoint holding the converted OpenSTL `state_dict` (a
    mapping of PyTorch key -> array, e.g. from `tau_jax.convert.load_pth`) with a fresh
    optimiser state into `workdir`, for `tau-jax eval` / `predict`, and for `tau-jax train`,
    which fine-tunes from it (the checkpoint holds no data-iterator position, so training reads
    its data from the start of the shuffled order, as a new run does)."""
    workdir = pathlib.Path(workdir)
    check_config(config)
    variables = from_openstl(config.model, state_dict)  # errors name the bad keys
    check_workdir(workdir, config)
    if has_checkpoints(workdir):
        raise ValueError(f"{workdir / 'checkpoints'} already holds checkpoints; convert into a "
                         "new workdir.")
    tx, _ = optim.create_optimizer(config.optim, 1, config.train.epochs)
    abstract, _, _ = loop.state_template(config, tx, make_mesh((1, 1), jax.devices()[:1]))
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                       ema_params=params if config.optim.ema_decay else None)
    # same tree, shapes and dtypes as a trained run's checkpoint
    state = jax.tree_util.tree_map(lambda a, s: jax.device_put(jnp.asarray(a, s.dtype),
                                                               s.sharding), state, abstract)
    with workdir_lock(workdir):  # not while a `train` writes there
        save_config(config, workdir)
        ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
        ckpt.save(0, state, {})
        ckpt.close()
    return workdir
