"""`train_and_evaluate(config, workdir)`: one SPMD loop for a laptop CPU, a GPU or a TPU pod.

config -> checks (before anything compiles) -> mesh -> sources -> state (sharded init or resume)
-> jitted train step (donated state) -> metrics every `log_every_steps` -> eval over the whole
test split with OpenSTL's metrics, sample PNG/GIF -> async checkpoints (latest N + best val MSE,
data iterator position included).

Faults: one process trains in a workdir at a time (`train.lock`); SIGTERM checkpoints the step
all processes agree on and raises `Preempted` (the CLI exits 143); a non-finite loss or state
stops the run with the last good checkpoint kept; a damaged checkpoint is moved aside and the one
before it resumed; a failed write is one error naming the path and leaves no temporary folder.

Randomness is a function of (seed, step) and the data order of (seed, position), so a run
resumed from any checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from tau_jax import data, models
from tau_jax.data.pipeline import train_batches
from tau_jax.models.framing import EDGE
from tau_jax.train import console, optim
from tau_jax.train.evaluation import (EvaluationInterrupted, check_checkpoint_choice,
                                      evaluate_split, make_predict_step, picture_style,
                                      save_pictures)
from tau_jax.train.checkpoint import WRITE_ERRNOS, Checkpointer, WriteError, abstract_like
from tau_jax.train.lock import WorkdirLocked, workdir_lock
from tau_jax.train.preemption import Preempted, Preemption
from tau_jax.train.sharding import (batch_sharding, local_batch_size, make_mesh, replicated,
                                    tree_shardings)
from tau_jax.train.state import TrainState
from tau_jax.train.workdir import (LOG_FILE, METRICS_FILE, PARAMETERS_FILE, check_config,
                                   check_source_matches_model, check_workdir, metrics_json,
                                   save_config, save_normalisation, schedule_epochs, write_atomic)
from tau_jax.train.writer import MetricWriter

log = logging.getLogger(__name__)

def loss_fn(model, config, params, batch_stats, frames, key, step, steps_per_epoch=None,
            padding=EDGE):
    """Training loss of one batch (the model family's, on frames padded with `padding` to the
    size the model runs on, its terms on the real frame only) and the updated BatchNorm
    statistics; `steps_per_epoch` (None outside a training run) serves schedules counted in
    epochs."""
    variables = {"params": params, "batch_stats": batch_stats}
    rngs = {"drop_path": jax.random.fold_in(key, 0), "dropout": jax.random.fold_in(key, 1)}
    loss, mutated = models.family_of(config.model.name).loss(
        model, config, variables, frames, rngs, jax.random.fold_in(key, 2), step, steps_per_epoch,
        models.framing_of(config.model, padding))
    return loss, mutated.get("batch_stats", batch_stats)


# ----------------------------------------------------------------------------------------------
# State and steps
# ----------------------------------------------------------------------------------------------

def state_template(config, tx, mesh):
    """(abstract state with shardings, shardings, init function): the abstract state is what a
    checkpoint restores into, so resuming never compiles or runs the random initialisation."""

    def make(key):
        variables = models.init(config.model, key)
        params = variables["params"]
        ema = params if config.optim.ema_decay else None
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params), ema_params=ema)

    shapes = jax.eval_shape(make, jax.random.key(0))
    shardings = tree_shardings(shapes, mesh)
    return abstract_like(shapes, shardings), shardings, make


def init_state(config, tx, mesh) -> tuple[TrainState, TrainState]:
    """(state, shardings): a freshly initialised state placed on the mesh."""
    _, shardings, make = state_template(config, tx, mesh)
    return jax.jit(make, out_shardings=shardings)(jax.random.key(config.train.seed)), shardings


def make_train_step(model, config, tx, state_shardings, mesh, steps_per_epoch=None,
                    padding=EDGE):
    base_key = jax.random.key(config.train.seed)

    def train_step(state: TrainState, frames):
        key = jax.random.fold_in(base_key, state.step)
        grad_fn = jax.value_and_grad(
            functools.partial(loss_fn, model, config, padding=padding), has_aux=True)
        (loss, batch_stats), grads = grad_fn(state.params, state.batch_stats, frames, key,
                                             state.step, steps_per_epoch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree_util.tree_map(jnp.add, state.params, updates)
        ema = state.ema_params
        if ema is not None:
            ema = optim.ema_update(ema, params, config.optim.ema_decay)
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema_params=ema)
        return new, {"loss": loss, "grad_norm": global_norm(grads)}

    return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0,
                   compiler_options=models.compiler_options(config.model))


def global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                        for x in jax.tree_util.tree_leaves(tree)))


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Train `config` in `workdir` (resuming the newest checkpoint there); returns the final
    evaluation metrics. Raises `Preempted` after checkpointing on SIGTERM, `WorkdirLocked` when
    another process trains in `workdir`; a refused run leaves no folder behind."""
    workdir = pathlib.Path(workdir)
    check_config(config)
    model = models.build(config.model)  # model config errors surface here
    check_workdir(workdir, config)
    with job_lock(workdir), Preemption() as preemption:  # a signal from here on stops cleanly
        return _train(config, model, workdir, preemption)


@contextlib.contextmanager
def job_lock(workdir: pathlib.Path):
    """The workdir lock of the whole job, held by process 0; every process learns whether it
    was taken (a collective: no process may raise before it)."""
    if jax.process_count() == 1:
        with workdir_lock(workdir):
            yield
        return
    with contextlib.ExitStack() as stack:
        error = None
        if jax.process_index() == 0:
            try:
                stack.enter_context(workdir_lock(workdir))
            except (WorkdirLocked, PermissionError) as e:
                error = e
        taken = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if error is not None:
            raise error
        if not taken:
            raise WorkdirLocked(f"process 0 could not lock workdir {workdir}; its log says why.")
        yield


def _train(config, model, workdir: pathlib.Path, preemption: Preemption) -> dict:
    mesh = make_mesh(config.train.mesh)
    train_source = data.get_source(config.data, "train")
    eval_source = data.get_source(config.data, config.data.eval_split)
    check_source_matches_model(train_source, config.model)
    padding = data.frame_padding(config.data, train_source)
    steps_per_epoch = train_source.epoch_size // config.data.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"data.batch_size = {config.data.batch_size} exceeds the "
                         f"{train_source.epoch_size} training sequences of an epoch.")
    total_steps = config.train.max_steps or config.train.epochs * steps_per_epoch
    local_batch_size(config.data.batch_size, mesh)
    local_batch_size(config.data.eval_batch_size, mesh, "data.eval_batch_size")
    tx, lr_fn = optim.create_optimizer(config.optim, steps_per_epoch,
                                       schedule_epochs(config, steps_per_epoch))
    batches = train_batches(train_source, config.data.batch_size, batch_sharding(mesh),
                            config.train.seed)

    abstract, shardings, make = state_template(config, tx, mesh)
    ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
    stack = contextlib.ExitStack()
    try:
        restored = ckpt.restore_latest(abstract)
        if restored is None and ckpt.steps():  # never silently restart over a run's checkpoints
            raise ValueError(
                f"no checkpoint in {ckpt.directory} (steps {ckpt.steps()}) can be restored into "
                "this config's training state (logged above; a different optim section, e.g. "
                "optim.ema_decay or optim.optimizer, changes it): train with the config the "
                "workdir was made with, or move the checkpoints away to start over.")
        save_config(config, workdir)  # after the checks: a refused run leaves the workdir as it was
        stack.enter_context(log_file(workdir / LOG_FILE))
        if restored is not None:
            step0, state, data_state = restored
            if data_state:
                batches.set_state(data_state)
                log.info("Resumed from step %d in %s.", step0, ckpt.directory)
            else:  # a converted workdir (`tau-jax convert`): weights, no data position
                log.info("Resumed from step %d in %s; its checkpoint holds no data-iterator "
                         "state (a converted workdir), so the data iterator starts fresh.",
                         step0, ckpt.directory)
        else:
            state = jax.jit(make, out_shardings=shardings)(jax.random.key(config.train.seed))
        if jax.process_index() == 0:
            save_normalisation(workdir, train_source, padding)  # what predict needs of the data
            write_atomic(workdir / PARAMETERS_FILE, console.parameter_overview(state.params))
            log.info("%s", console.start_block(
                config, state.params, mesh, train_source, eval_source, total_steps=total_steps,
                steps_per_epoch=steps_per_epoch, start_step=int(state.step), workdir=workdir))
            log_framing(config.model, padding)
            if int(state.step) < total_steps:
                # the final metrics of an earlier, shorter run: not this run's until it finishes
                (workdir / METRICS_FILE).unlink(missing_ok=True)
        if preemption.requested:  # before any step: the workdir already holds all there is
            raise Preempted(f"stopped by {signal.Signals(preemption.signum).name} before "
                            "training started; nothing new to save.", preemption.signum)
        metrics = _loop(config, model, workdir, mesh, tx, lr_fn, shardings, state, batches,
                        eval_source, ckpt, total_steps, steps_per_epoch, preemption, padding)
        ckpt.close()
    except OSError as e:
        ckpt.abandon()
        if isinstance(e, WriteError) or e.errno not in WRITE_ERRNOS:
            raise
        raise WriteError(ckpt.failure(e.filename or f"a file in {workdir}", e.strerror)) from e
    except BaseException:
        ckpt.abandon()  # no half-written checkpoint left behind, whatever ended the run
        raise
    finally:
        stack.close()
    if jax.process_index() == 0 and metrics:  # {}: the run had already finished
        write_atomic(workdir / METRICS_FILE, metrics_json(metrics))
    return metrics


def _loop(config, model, workdir, mesh, tx, lr_fn, shardings, state, batches, eval_source, ckpt,
          total_steps, steps_per_epoch, preemption, padding) -> dict:
    """Train from `state` to total_steps, evaluating and checkpointing on the way."""
    train_step = make_train_step(model, config, tx, shardings, mesh, steps_per_epoch, padding)
    predict_step = make_predict_step(model, config, mesh, padding)
    eval_every = config.train.eval_every_steps or steps_per_epoch
    ckpt_every = config.train.checkpoint_every_steps or eval_every
    step = int(state.step)
    writer = MetricWriter(workdir, total_steps, data.metric_conventions(config.data)["metrics"])
    style = picture_style(config, eval_source)
    sums, count, last_eval = None, 0, {}
    progress = None  # made after the first step, so its rate and ETA leave the compilation out
    stack = contextlib.ExitStack()

    def run_eval(step):
        metrics, shown = evaluate_split(predict_step, state.eval_variables(
            bool(config.optim.ema_decay)), eval_source, config, mesh, config.train.num_samples,
            interrupted=preemption.requested_between_steps)
        writer.scalars(step, metrics, "eval")
        if jax.process_index() == 0:
            save_pictures(workdir / "samples", step, metrics, shown, writer, style)
        return metrics

    if step == total_steps and not (workdir / METRICS_FILE).exists():
        try:  # a run preempted during its final evaluation: evaluate now
            return run_eval(step)
        except EvaluationInterrupted:
            raise Preempted(f"stopped by {signal.Signals(preemption.signum).name} during the "
                            f"final evaluation (checkpoint {step} is saved); run the same "
                            "command again to evaluate.", preemption.signum) from None
    try:
        while step < total_steps:
            if progress is None:
                log.info("Compiling the train step (the first step includes it)...")
                start = time.perf_counter()
            state, metrics = train_step(state, next(batches))
            step += 1
            if progress is None:
                jax.block_until_ready(metrics)
                log.info("First step done in %.1f s (compilation included).",
                         time.perf_counter() - start)
                writer.restart_clock(step)
                progress = stack.enter_context(console.progress_bar(total_steps, step - 1))
            progress.update(1)
            sums = metrics if sums is None else jax.tree_util.tree_map(jnp.add, sums, metrics)
            count += 1
            last = step == total_steps
            stop = preemption.reached(step)
            saving = step % ckpt_every == 0 or last or stop
            if step % config.train.log_every_steps == 0 or saving:
                means = {k: float(v) / count for k, v in sums.items()}
                if not np.isfinite(means["loss"]):
                    _non_finite(ckpt, step, f"the training loss became {means['loss']}")
                rate, eta = writer.rate(step)
                means["lr"] = float(lr_fn(step - 1))
                if np.isfinite(rate):
                    means.update(steps_per_s=rate, eta_s=eta)
                writer.scalars(step, means, "train")
                progress.set_postfix(loss=f"{means['loss']:.4g}")
                sums, count = None, 0
            if (step % eval_every == 0 or last) and not stop:
                try:
                    last_eval = run_eval(step)
                except EvaluationInterrupted:  # a signal: the checkpoint first, the rest later
                    log.warning("Evaluation at step %d given up to save the checkpoint.", step)
                    stop = saving = True
                    last_eval = {}
            if saving:
                val = last_eval.get("mse") if step % eval_every == 0 or last else None
                try:
                    ckpt.save(step, state, batches.get_state(), val)
                except FloatingPointError:
                    _non_finite(ckpt, step, "the training state (parameters or optimiser "
                                            "state) became non-finite")
            if stop:
                ckpt.close()
                raise Preempted(f"stopped by {signal.Signals(preemption.signum).name} at step "
                                f"{step} after saving checkpoint {ckpt.directory / str(step)};"
                                " run the same command again to resume.", preemption.signum)
    finally:
        stack.close()
        writer.close()
    return last_eval


def log_framing(model_config, padding) -> None:
    """Say so when the frames run padded (framing.py)."""
    framing = models.framing_of(model_config, padding)
    if framing.amounts != ((0, 0), (0, 0)):
        _, h, w, _ = model_config.in_shape
        (top, bottom), (left, right) = framing.amounts
        log.info("The %dx%d frames run padded to %dx%d (%s); the loss and the metrics see the "
                 "%dx%d frames only.", h, w, h + top + bottom, w + left + right,
                 padding.describe(), h, w)


@contextlib.contextmanager
def log_file(path: pathlib.Path):
    """Copy tau-jax's log lines (and every library's warnings) to `path`, appended on resume
    (process 0)."""
    if jax.process_index() != 0:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(lambda r: r.name.startswith("tau_jax") or r.levelno >= logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _non_finite(ckpt, step: int, what: str):
    ckpt.wait()
    good = ckpt.last_complete()
    raise FloatingPointError(
        f"{what} by step {step}; "
        + (f"the last good checkpoint (step {good}) is kept in {ckpt.directory}"
           if good is not None else "no checkpoint was written")
        + "; lower optim.lr or set optim.clip_grad.")


def restore_state(config, workdir: str | os.PathLike, mesh,
                  checkpoint: str | int = "latest") -> tuple[int, TrainState]:
    """(step, state) of checkpoint 'latest', 'best' or STEP in `workdir`, placed on `mesh`;
    reads only (an unreadable checkpoint is skipped, not moved)."""
    checkpoint = check_checkpoint_choice(checkpoint)
    tx, _ = optim.create_optimizer(config.optim, 1, config.train.epochs)
    ckpt = Checkpointer(workdir, config.train.keep_checkpoints, writable=False)
    try:
        restored = ckpt.restore_chosen(checkpoint, state_template(config, tx, mesh)[0])
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no readable checkpoint in {pathlib.Path(workdir) / 'checkpoints'}.")
    return restored
