"""Metric logging: console lines (with steps/s and ETA) and TensorBoard event files.

clu's metric writers import TensorFlow, which accelerator images and this project's default
install lack; tensorboardX writes the same event files with protobuf alone. Only process 0 writes.
"""

from __future__ import annotations

import logging
import pathlib
import time

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str | pathlib.Path, total_steps: int):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
        self._last = (time.perf_counter(), None)

    def restart_clock(self, step: int) -> None:
        """Measure steps/s from now and `step` on (after the compilation)."""
        self._last = (time.perf_counter(), step)

    def rate(self, step: int) -> tuple[float, float]:
        """(steps/s since the previous call, seconds left at that rate)."""
        now, prev_step = time.perf_counter(), self._last[1]
        t0 = self._last[0]
        self._last = (now, step)
        if prev_step is None or step <= prev_step:
            return float("nan"), float("nan")
        rate = (step - prev_step) / (now - t0)
        return rate, (self.total_steps - step) / rate

    def scalars(self, step: int, values: dict, prefix: str) -> None:
        if not self.enabled:
            return
        for key, value in values.items():
            if np.ndim(value) == 0:
                self._tb.add_scalar(f"{prefix}/{key}", float(value), step)
            else:  # a lead-time curve: one scalar per frame
                for t, v in enumerate(np.asarray(value)):
                    self._tb.add_scalar(f"{prefix}/{key}/frame_{t + 1:02d}", float(v), step)
        self._tb.flush()
        shown = ", ".join(f"{k} {float(v):.6g}" for k, v in values.items() if np.ndim(v) == 0)
        logging.info("step %d %s: %s", step, prefix, shown)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        if self.enabled:
            self._tb.add_image(tag, image, step, dataformats="HWC")
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
