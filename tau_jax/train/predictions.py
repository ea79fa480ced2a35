"""Predictions over a whole evaluation split, saved as OpenSTL saves them: `inputs.npy`,
`trues.npy` and `preds.npy` under `<workdir>/predictions/<step>/` (with `metrics.json`).

Unlike OpenSTL's (normalised, N x T x C x H x W) arrays these are in the dataset's units and
channels-last, float32 `(N, T, H, W, C)`, as `tau-jax predict` writes them. They are written
through memory maps (a 10,000-sequence Moving MNIST test split is 3.3 GB) into a temporary folder
that is renamed into place at the end: a folder under predictions/ is always complete.
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np

from tau_jax.train.workdir import metrics_json

FOLDER = "predictions"
ARRAYS = ("inputs", "trues", "preds")


class PredictionWriter:
    """Collect batches of (inputs, trues, preds) in order; `commit` publishes the folder."""

    def __init__(self, workdir: pathlib.Path, step: int, count: int, in_shape, out_shape):
        self.final = pathlib.Path(workdir) / FOLDER / str(step)
        self.tmp = self.final.with_name(f".{step}.tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        shapes = {"inputs": in_shape, "trues": out_shape, "preds": out_shape}
        self._arrays = {k: np.lib.format.open_memmap(self.tmp / f"{k}.npy", "w+", np.float32,
                                                     (count, *shapes[k])) for k in ARRAYS}
        self._n = 0

    def add(self, inputs, trues, preds) -> None:
        k = len(inputs)
        for name, batch in zip(ARRAYS, (inputs, trues, preds)):
            self._arrays[name][self._n:self._n + k] = batch
        self._n += k

    def commit(self, metrics: dict) -> pathlib.Path:
        for array in self._arrays.values():
            array.flush()
        self._arrays.clear()
        (self.tmp / "metrics.json").write_text(metrics_json(metrics))
        if self.final.exists():
            shutil.rmtree(self.final)
        self.tmp.rename(self.final)
        return self.final

    def abandon(self) -> None:
        self._arrays.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def saved_steps(workdir: pathlib.Path) -> list[int]:
    folder = pathlib.Path(workdir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir()
                  if p.name.isdigit() and all((p / f"{k}.npy").is_file() for k in ARRAYS))


def load(workdir: pathlib.Path, step: int | None = None) -> tuple[int, dict]:
    """(step, {'inputs', 'trues', 'preds'} memory-mapped arrays) saved by `tau-jax eval
    --save_predictions`; the newest step when `step` is None."""
    steps = saved_steps(workdir)
    folder = pathlib.Path(workdir) / FOLDER
    if not steps:
        raise FileNotFoundError(f"no saved predictions in {folder}: run `tau-jax eval --workdir "
                                f"{workdir} --save_predictions` first.")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no predictions of step {step} in {folder}; saved steps: "
                                f"{', '.join(map(str, steps))}.")
    return step, {k: np.load(folder / str(step) / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
