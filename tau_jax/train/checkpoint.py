"""Checkpoints with orbax: async saves, the latest N plus the best by validation MSE, the data
iterator's position alongside the state, and resume that survives a corrupt checkpoint.

Layout: `<workdir>/checkpoints/<step>/{state, data, metrics}`; `data` is grain's iterator state
(JSON), `metrics` the validation MSE the best-checkpoint policy reads back after a resume.
A training run moves a checkpoint that cannot be read aside to `checkpoints/unreadable/<step>/`
(never deleted) and goes on from the one before; eval and predict only skip it.
Guarantees: a state with a non-finite leaf is never written, and a failed write (disk full,
read-only folder) is one `WriteError` naming the folder and the cause, with orbax's
temporary folders removed, so the next run resumes from the last complete checkpoint.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

log = logging.getLogger(__name__)

BEST_METRIC = "val_mse"
UNREADABLE = "unreadable"
TMP_MARK = ".orbax-checkpoint-tmp"


class _ExpectedWarnings(logging.Filter):
    """orbax warnings about what this module does on purpose: saves between evaluations carry
    no validation MSE; eval and predict open the folder read-only."""

    EXPECTED = ("did not provide metrics", "read_only=True, setting",
                "Given directory is read only")

    def filter(self, record):
        return not any(text in record.getMessage() for text in self.EXPECTED)


logging.getLogger("absl").addFilter(_ExpectedWarnings())


class WriteError(OSError):
    """A file of the run could not be written: the message names it, the cause and the last
    complete checkpoint, which the same command resumes from."""


# errors of a disk that cannot take a write: full, over quota, read-only, file too large, denied
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM,
                errno.EIO)


class Checkpointer:
    """Saves and restores (TrainState, data iterator state) under `<workdir>/checkpoints`.

    `writable=False` (eval, predict) opens the folder read-only: nothing is created, cleaned or
    moved.
    """

    def __init__(self, workdir: str | os.PathLike, keep: int, writable: bool = True):
        # BestN keeps the tail of the sorted order: reverse=True (descending) keeps the lowest MSE.
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(get_metric_fn=_best_metric, reverse=True, n=1,
                                      keep_checkpoints_without_metrics=False),
        ])
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.writable = writable
        self._pending = None  # step of the save that may still be running
        self._view = None  # read-only: a folder of links to the sound steps, if some are damaged
        # best_fn makes orbax write each step's metrics, so the best survives a resume
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=_best_metric, best_mode="min", create=writable,
            cleanup_tmp_directories=writable, read_only=not writable)
        try:
            self.manager = ocp.CheckpointManager(self._readable_directory(),
                                                 item_names=("state", "data"), options=options)
        except OSError as e:
            raise WriteError(f"cannot use checkpoint folder {self.directory}: "
                             f"{e.strerror or e}.") from None

    def _readable_directory(self) -> pathlib.Path:
        """The folder orbax may open: orbax reads every step's small JSON files when it starts
        and fails on one damaged file, so damaged steps are moved aside first (writable) or
        left out of a folder of links to the others (read-only)."""
        damaged = [p for p in self._step_dirs() if not _small_files_readable(p)]
        for p in damaged:
            log.warning("Checkpoint %s has damaged metadata files.", p)
        if not damaged:
            return self.directory
        if self.writable:
            for p in damaged:
                self._move_aside(int(p.name), reload=False)
            return self.directory
        self._view = tempfile.TemporaryDirectory(prefix="tau_jax_checkpoints_")
        for p in self._step_dirs():
            if p not in damaged:
                (pathlib.Path(self._view.name) / p.name).symlink_to(p, target_is_directory=True)
        return pathlib.Path(self._view.name)

    def _step_dirs(self) -> list[pathlib.Path]:
        if not self.directory.is_dir():
            return []
        return sorted((p for p in self.directory.iterdir() if p.name.isdigit()),
                      key=lambda p: int(p.name))

    # -- saving ----------------------------------------------------------------------------------
    def save(self, step: int, state, data_state: dict, val_mse: float | None = None) -> None:
        """Start an async save (returns before the files are written). FloatingPointError, and
        nothing written, when a leaf of `state` is not finite."""
        if not all_finite(state):
            raise FloatingPointError(f"the training state of step {step} holds non-finite values; "
                                     "it was not saved.")
        metrics = None if val_mse is None else {BEST_METRIC: float(val_mse)}
        self._guard(lambda: self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            metrics=metrics, force=True))
        self._pending = step

    def wait(self) -> None:
        self._guard(self.manager.wait_until_finished)
        self._pending = None

    def close(self) -> None:
        self.wait()
        self.manager.close()
        if self._view is not None:
            self._view.cleanup()

    def abandon(self) -> None:
        """Close after a failure: let a running save end (its own error is not the one to
        report) and remove any temporary folder it left."""
        try:
            self.manager.wait_until_finished()
            self.manager.close()
        except Exception:  # noqa: BLE001 - the run is already failing with a better error
            pass
        if self.writable:
            self.remove_temporary()

    def _guard(self, call) -> None:
        """Run an orbax call; a failed (earlier async) write becomes one WriteError."""
        try:
            call()
        except (OSError, ValueError, RuntimeError) as e:
            step = self._pending
            self._pending = None
            self.remove_temporary()
            raise WriteError(self.failure(f"checkpoint {step} in {self.directory}", _cause(e),
                                          skip=step)) from e

    def failure(self, what: str, cause: str, skip: int | None = None) -> str:
        """'could not write <what>: <cause>; the last complete checkpoint is ...'."""
        last = self.last_complete(skip)
        return (f"could not write {what}: {cause}; "
                + (f"the last complete checkpoint is step {last}: " if last is not None else
                   "no checkpoint was completed: ")
                + "fix that and run the same command again to resume.")

    def remove_temporary(self) -> None:
        """Delete orbax's unfinished `*.orbax-checkpoint-tmp*` folders (process 0)."""
        if jax.process_index() != 0 or not self.directory.is_dir():
            return
        for p in self.directory.iterdir():
            if TMP_MARK in p.name:
                shutil.rmtree(p, ignore_errors=True)

    def last_complete(self, skip: int | None = None) -> int | None:
        """The newest step whose folder is complete on disk (orbax renames a save's temporary
        folder only when it is whole), other than `skip`."""
        steps = [int(p.name) for p in self._step_dirs() if int(p.name) != skip]
        return steps[-1] if steps else None

    # -- restoring -------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def restore(self, step: int, abstract_state, part: bool = False):
        """(state, data_state) of checkpoint `step`, placed as `abstract_state` says; with
        `part`, `abstract_state` names some of the saved state's entries and only they are
        read."""
        if part:
            state = ocp.args.PyTreeRestore(
                abstract_state, ocp.checkpoint_utils.construct_restore_args(abstract_state),
                partial_restore=True)
        else:
            state = ocp.args.StandardRestore(abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=state, data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def restore_chosen(self, which: str | int, abstract_state, part: bool = False):
        """(step, state) of checkpoint `which`: 'latest' (the newest readable), 'best' (the
        lowest validation MSE; the newest readable when it cannot be read or no step has one)
        or a step number (an error when it is missing or unreadable)."""
        if which == "latest":
            restored = self.restore_latest(abstract_state, part)
            return None if restored is None else restored[:2]
        if which == "best":
            best = self.best_step()
            if best is not None:
                try:
                    return best, self.restore(best, abstract_state, part)[0]
                except Exception as e:  # noqa: BLE001 - fall back as for the newest
                    log.warning("The best checkpoint %s is unreadable (%s); using the newest "
                                "readable one.", self.directory / str(best), _first_line(e))
            else:
                log.warning("No checkpoint in %s has a validation MSE; using the newest.",
                            self.directory)
            return self.restore_chosen("latest", abstract_state, part)
        step = int(which)
        if step not in self.steps():
            raise FileNotFoundError(f"no checkpoint {step} in {self.directory}; it has steps "
                                    f"{self.steps()}.")
        try:
            return step, self.restore(step, abstract_state, part)[0]
        except Exception as e:  # noqa: BLE001 - the user asked for this one
            raise ValueError(f"checkpoint {self.directory / str(step)} is unreadable "
                             f"({type(e).__name__}: {_first_line(e)}).") from None

    def restore_latest(self, abstract_state, part: bool = False):
        """(step, state, data_state) of the newest readable checkpoint, or None if none is.

        A checkpoint that fails to load is reported and skipped for the one before it. When
        writable, one whose files are damaged (not one of another config's training state: its
        layout differs from `abstract_state`) is moved to `checkpoints/unreadable/<step>/`, so
        the run can write that step again.
        """
        for step in reversed(self.steps()):
            try:
                state, data_state = self.restore(step, abstract_state, part)
            except Exception as e:  # noqa: BLE001 - any read failure means: try an older one
                log.warning("Checkpoint %s is unreadable (%s: %s); falling back to the "
                            "previous one.", self.directory / str(step), type(e).__name__,
                            _first_line(e))
                if self.writable and not self._other_layout(step, abstract_state):
                    self._move_aside(step)
                continue
            return step, state, data_state
        return None

    def _other_layout(self, step: int, abstract_state) -> bool:
        """Whether checkpoint `step` is readable metadata of a differently shaped state."""
        try:
            saved = self.manager.item_metadata(step)["state"]
            saved = getattr(saved, "tree", saved)
        except Exception:  # noqa: BLE001 - unreadable metadata: the files are damaged
            return False
        return _layout(saved) != _layout(abstract_state)

    def _move_aside(self, step: int, reload: bool = True) -> None:
        if jax.process_index() == 0:
            target = self.directory / UNREADABLE / str(step)
            n = 1
            while target.exists():
                target, n = self.directory / UNREADABLE / f"{step}.{n}", n + 1
            target.parent.mkdir(exist_ok=True)
            os.replace(self.directory / str(step), target)
            log.warning("Moved unreadable checkpoint %s aside to %s.", step, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"tau_jax_move_aside_{step}")
        if reload:
            self.manager.reload()


def _small_files_readable(step_dir: pathlib.Path) -> bool:
    """Whether the JSON files orbax reads when it opens the folder parse (when present)."""
    for name in ("_CHECKPOINT_METADATA", "metrics/metrics"):
        path = step_dir / name
        try:
            if path.is_file():
                json.loads(path.read_text())
        except (OSError, ValueError):
            return False
    return True


def _best_metric(metrics: dict) -> float:
    return metrics[BEST_METRIC]


def _layout(tree) -> list[tuple]:
    """Sorted (shape, dtype) of the array leaves: what must agree for a restore to fit."""
    leaves = jax.tree_util.tree_leaves(tree)
    return sorted((tuple(x.shape), str(np.dtype(x.dtype))) for x in leaves
                  if hasattr(x, "shape") and hasattr(x, "dtype"))


@jax.jit
def _all_finite(tree):
    leaves = [x for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def all_finite(tree) -> bool:
    """Whether every floating-point leaf of `tree` is finite (one reduction on the device)."""
    return bool(_all_finite(tree))


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _cause(e: BaseException) -> str:
    """The operating system's words for a failed write, else the error's first line."""
    for link in _chain(e):
        if isinstance(link, OSError) and link.strerror:
            return link.strerror
        code = re.search(r"os_error_code='?(\d+)", str(link))
        if code:
            return os.strerror(int(code.group(1)))
    return _first_line(e)[:300]


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def has_checkpoints(workdir: str | os.PathLike) -> bool:
    """Whether `<workdir>/checkpoints` holds a step folder (read without opening orbax)."""
    directory = pathlib.Path(workdir) / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def restore_part(workdir: str | os.PathLike, abstract, which: str | int):
    """(step, entries) of checkpoint `which` ('best', 'latest' or a step, as `restore_chosen`)
    in `workdir`: only the saved state's entries that `abstract` names (e.g. {'params': ...}),
    so inference needs no optimiser. Reads only; FileNotFoundError when none is readable."""
    ckpt = Checkpointer(workdir, keep=1, writable=False)
    try:
        restored = ckpt.restore_chosen(which, abstract, part=True)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no readable checkpoint in {ckpt.directory}.")
    return restored


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with shardings, the target orbax restores into."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
